"""Paranoid Pirate queue (the Guide's ``ppqueue``): heartbeats workers, purges dead ones.

Run ``python -m transportkit.examples.ppqueue`` with ``ppworker`` workers on
``--backend`` and ``lpclient`` clients on ``--frontend``. Prints
``READY <frontend> <backend>`` once bound.
SIGTERM or SIGINT stops it gracefully (``shutdown``): the front end is no longer read,
the replies to the requests workers hold are forwarded within ``--shutdown-timeout``,
and it exits 0.
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
    shutdown_options,
)
from transportkit.patterns.paranoid_pirate import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    ParanoidPirateQueue,
)
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "ppqueue",
        "Paranoid Pirate queue: load balancing with heartbeats both ways.",
    )
    parser.add_argument(
        "--frontend", default="tcp://*:5555", help="endpoint for clients (%(default)s)"
    )
    parser.add_argument(
        "--backend", default="tcp://*:5556", help="endpoint for workers (%(default)s)"
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=HEARTBEAT_INTERVAL,
        metavar="S",
        help="seconds between heartbeats (%(default)s)",
    )
    parser.add_argument(
        "--liveness",
        type=int,
        default=HEARTBEAT_LIVENESS,
        metavar="N",
        help="heartbeats a worker may miss (%(default)s)",
    )
    add_shutdown_option(parser)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Bind, announce READY, and queue until stopped by a signal."""
    with (
        ZmqNetwork(name="ppqueue") as net,
        ParanoidPirateQueue(
            net,
            frontend=args.frontend,
            backend=args.backend,
            heartbeat_interval=args.heartbeat_interval,
            liveness=args.liveness,
            options=shutdown_options(args),
        ) as queue,
    ):
        return await serve_server(
            queue, args, f"READY {queue.frontend_endpoint} {queue.backend_endpoint}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
