"""Majordomo worker (the Guide's ``mdworker``): serves one named service.

Run ``python -m transportkit.examples.mdworker --broker tcp://localhost:5555``
for an ``echo`` service, or ``--service risk --handler risk`` for the pre-trade
risk check (one Order frame in, one ValidationResult frame out, against the demo
limits). Prints ``READY <broker endpoint>`` once it has sent READY. SIGTERM or SIGINT
stops it gracefully (:meth:`~transportkit.patterns.MajordomoWorker.shutdown`): the
request it holds is answered within ``--shutdown-timeout`` (else given back to the
broker), it sends DISCONNECT and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from transportkit import Frame, Message
from transportkit.examples._main import (
    add_shutdown_option,
    program_parser,
    run_main,
    serve_until_signalled,
    shutdown_options,
)
from transportkit.examples._security import add_client_security, client_security
from transportkit.patterns.majordomo import (
    MDP_HEARTBEAT_INTERVAL,
    MDP_HEARTBEAT_LIVENESS,
    MDP_RECONNECT_INTERVAL,
    MajordomoHandler,
    MajordomoWorker,
)
from transportkit.trading import DEMO_LIMITS, RiskBook, risk_handler
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "mdworker",
        "Majordomo (7/MDP) worker: registers a service and answers its requests.",
    )
    parser.add_argument(
        "--broker", default="tcp://localhost:5555", help="broker endpoint (%(default)s)"
    )
    parser.add_argument("--service", default="echo", help="service name (%(default)s)")
    parser.add_argument(
        "--handler", choices=("echo", "risk"), default="echo",
        help="echo the request, or run the pre-trade risk check (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--heartbeat-interval", type=float, default=MDP_HEARTBEAT_INTERVAL, metavar="S",
        help="seconds between heartbeats (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--liveness", type=int, default=MDP_HEARTBEAT_LIVENESS, metavar="N",
        help="silent heartbeat intervals before reconnecting (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--reconnect", type=float, default=MDP_RECONNECT_INTERVAL, metavar="S",
        help="seconds to wait before reconnecting (%(default)s)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="do not print each request")
    add_client_security(parser)
    parser.add_argument(
        "--delay", type=float, default=0.0, metavar="S",
        help="seconds each reply takes (a slow request, to watch a graceful stop) (%(default)s)",
    )  # fmt: skip
    add_shutdown_option(parser)
    return parser.parse_args(argv)


def _echo(request: Message) -> Sequence[Frame]:
    return request


async def run(args: argparse.Namespace) -> int:
    """Connect, announce READY, and serve until stopped by a signal."""
    handler: MajordomoHandler = (
        risk_handler(RiskBook(DEMO_LIMITS)) if args.handler == "risk" else _echo
    )

    async def logged(request: Message) -> Sequence[Frame]:
        if args.delay > 0:
            await asyncio.sleep(args.delay)
        reply = handler(request)
        if not isinstance(reply, Sequence):
            reply = await reply
        if not args.quiet:
            print(f"I: {args.service}: {request!r} -> {list(reply)!r}", flush=True)
        return reply

    with ZmqNetwork(name="mdworker") as net:
        async with MajordomoWorker(
            net,
            args.broker,
            args.service.encode(),
            heartbeat_interval=args.heartbeat_interval,
            heartbeat_liveness=args.liveness,
            reconnect_interval=args.reconnect,
            options=client_security(args, shutdown_options(args)),
        ) as worker:
            return await serve_until_signalled(
                worker.serve(logged),
                lambda: worker.shutdown(args.shutdown_timeout),
                ready=f"READY {args.broker}",
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
