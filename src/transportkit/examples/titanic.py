"""Titanic (the Guide's ``titanic``): disconnected reliability over a Majordomo broker.

Run ``python -m transportkit.examples.titanic --broker tcp://localhost:5555
--directory .titanic`` beside ``mdbroker``; then ``ticlient`` stores a request, and an
``mdworker`` started at any later time serves it. Requests and replies are kept in
``--directory`` (9/TSP, one file per request and per reply): kill this process and
start it again on the same directory, and no accepted request is lost. Prints
``READY <broker endpoint>`` once it has loaded the directory. SIGTERM or SIGINT stops
it gracefully (``shutdown``: its services DISCONNECT, the dispatch in flight gets
``--shutdown-timeout`` for its reply to be stored) and it exits 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from transportkit.examples._main import (
    add_shutdown_option,
    program_parser,
    run_main,
    serve_server,
)
from transportkit.patterns.majordomo import MDP_HEARTBEAT_INTERVAL
from transportkit.patterns.titanic import Titanic
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "titanic",
        "Titanic (9/TSP) server: stores requests on disk and serves them later.",
    )
    parser.add_argument(
        "--broker", default="tcp://localhost:5555", help="broker endpoint (%(default)s)"
    )
    parser.add_argument(
        "--directory", default=".titanic", help="where requests and replies are kept (%(default)s)"
    )
    parser.add_argument(
        "--heartbeat-interval", type=float, default=MDP_HEARTBEAT_INTERVAL, metavar="S",
        help="seconds between heartbeats; use the broker's (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--dispatch-interval", type=float, default=1.0, metavar="S",
        help="seconds between passes over pending requests (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--request-timeout", type=float, default=MDP_HEARTBEAT_INTERVAL, metavar="S",
        help="seconds to wait for a service's reply (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-requests", type=int, default=10_000, metavar="N",
        help="requests stored at once (%(default)s)",
    )  # fmt: skip
    add_shutdown_option(parser)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Serve until stopped by a signal."""
    with ZmqNetwork(name="titanic") as net:
        titanic = Titanic(
            net,
            args.broker,
            args.directory,
            heartbeat_interval=args.heartbeat_interval,
            dispatch_interval=args.dispatch_interval,
            request_timeout=args.request_timeout,
            max_requests=args.max_requests,
        )
        stored = titanic.load()
        print(f"I: {stored} requests stored in {args.directory}", flush=True)
        return await serve_server(titanic, args, f"READY {args.broker}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
