"""Majordomo client (the Guide's ``mdclient``): N requests to one service.

Run ``python -m transportkit.examples.mdclient --broker tcp://localhost:5555
--service echo --requests 10`` against ``mdbroker`` and an ``mdworker``. ``--risk``
sends the demo's orders (to a ``--handler risk`` worker) and prints the verdicts;
``--service mmi.service --body echo`` asks the broker whether ``echo`` has workers.
Exits with status 1 when the service stays silent through every retry.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from transportkit import ServiceUnavailableError
from transportkit.examples._main import add_attempts_option, program_parser, run_main
from transportkit.examples._security import add_client_security, client_security
from transportkit.patterns.majordomo import MDP_HEARTBEAT_INTERVAL, MajordomoClient
from transportkit.trading import ValidationResult, demo_orders
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "mdclient",
        "Majordomo (7/MDP) client: sends requests to a service and prints replies.",
    )
    parser.add_argument(
        "--broker", default="tcp://localhost:5555", help="broker endpoint (%(default)s)"
    )
    parser.add_argument("--service", default="echo", help="service name (%(default)s)")
    parser.add_argument(
        "--requests", type=int, default=10, metavar="N", help="requests to send (%(default)s)"
    )
    parser.add_argument(
        "--body", default="Hello world", help="request body; '{n}' becomes its number"
    )
    parser.add_argument(
        "--risk", action="store_true", help="send the demo's orders instead of --body"
    )
    parser.add_argument(
        "--timeout", type=float, default=MDP_HEARTBEAT_INTERVAL, metavar="S",
        help="seconds to wait for each reply (%(default)s)",
    )  # fmt: skip
    add_attempts_option(parser, default=3)
    add_client_security(parser)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Send the requests; 0 if all were answered, 1 when the service went away."""
    orders = demo_orders()
    service = args.service.encode()
    with ZmqNetwork(name="mdclient") as net:
        async with MajordomoClient(
            net,
            args.broker,
            timeout=args.timeout,
            attempts=args.attempts,
            options=client_security(args),
        ) as client:
            for n in range(1, args.requests + 1):
                if args.risk:
                    order = orders[(n - 1) % len(orders)]
                    body = order.SerializeToString()
                else:
                    body = args.body.replace("{n}", str(n)).encode()
                try:
                    reply = await client.request(service, [body])
                except ServiceUnavailableError as exc:
                    print(f"E: {exc}", flush=True)
                    return 1
                if args.risk:
                    result = ValidationResult.FromString(reply[0])
                    verdict = "approved" if result.approved else f"rejected: {result.reason}"
                    print(f"REPLY {n} {result.order_id} {verdict}", flush=True)
                else:
                    print(f"REPLY {n} {reply!r}", flush=True)
            stats = client.stats
            print(f"I: {stats.replies} replies, {stats.timeouts} timeouts", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
