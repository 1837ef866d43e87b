"""Asynchronous Majordomo client (the Guide's ``mdclient2``): requests pipelined.

Run ``python -m transportkit.examples.mdclient2 --broker tcp://localhost:5555
--requests 100000`` against ``mdbroker`` and an ``mdworker``. The Guide's client sends
every request before reading any reply; this one keeps at most ``--window`` requests in
flight (default 100, transportkit's broker's ``max_pending_per_client``: the broker drops
what one client has pending past that bound, and 7/MDP has no error reply). Prints how
many replies came back and the rate; exits with status 1 if a reply is missing after
``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from transportkit import Timeout
from transportkit.examples._main import program_parser, run_main
from transportkit.patterns.majordomo import MDP_HEARTBEAT_INTERVAL, AsyncMajordomoClient
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "mdclient2",
        "Asynchronous Majordomo (7/MDP) client: pipelines requests to a service.",
    )
    parser.add_argument(
        "--broker", default="tcp://localhost:5555", help="broker endpoint (%(default)s)"
    )
    parser.add_argument("--service", default="echo", help="service name (%(default)s)")
    parser.add_argument(
        "--requests", type=int, default=100_000, metavar="N", help="requests to send (%(default)s)"
    )
    parser.add_argument(
        "--window", type=int, default=100, metavar="N",
        help="most requests in flight at once (%(default)s)",
    )  # fmt: skip
    parser.add_argument("--body", default="Hello world", help="request body (%(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=MDP_HEARTBEAT_INTERVAL, metavar="S",
        help="seconds to wait for each reply (%(default)s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.requests < 0 or args.window < 1:
        parser.error("--requests must be >= 0 and --window >= 1")
    return args


async def run(args: argparse.Namespace) -> int:
    """Send the requests; 0 if every one was answered, 1 otherwise."""
    service, body = args.service.encode(), args.body.encode()
    count = 0
    with ZmqNetwork(name="mdclient2") as net:
        async with AsyncMajordomoClient(net, args.broker, timeout=args.timeout) as client:
            start = time.perf_counter()
            sent = 0
            try:
                while count < args.requests:
                    while sent < args.requests and sent - count < args.window:
                        await client.send(service, [body])
                        sent += 1
                    await client.recv()
                    count += 1
            except Timeout:
                print(f"E: no reply after {args.timeout} s, abandoning", flush=True)
            elapsed = time.perf_counter() - start
    rate = count / elapsed if elapsed > 0 else 0.0
    print(f"{count} requests/replies processed ({rate:.0f}/s)", flush=True)
    return 0 if count == args.requests else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
