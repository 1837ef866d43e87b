"""Binary Star server (the Guide's ``bstarsrv``): one of a primary/backup echo pair.

Run a primary and a backup::

    python -m transportkit.examples.bstarsrv --primary
    python -m transportkit.examples.bstarsrv --backup

By default the primary serves clients on ``tcp://*:5001`` and publishes its state on
``tcp://*:5003``, the backup on 5002 and 5004, each subscribing to the other's state, as
in the Guide. Kill the active one and, at the next client request, the other takes over.
It prints ``READY <front end endpoint>`` once bound and ``STATE <old> <new> <event>``
on every change of state. SIGTERM or SIGINT stops it gracefully
(:meth:`~transportkit.patterns.BinaryStarServer.shutdown`): the request being handled
is answered within ``--shutdown-timeout``, no new one is read, and it exits 0 (1 after
a fatal split brain).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from transportkit import Message
from transportkit.examples._main import (
    add_shutdown_option,
    program_parser,
    run_main,
    serve_server,
    shutdown_options,
)
from transportkit.patterns.binary_star import (
    BinaryStarServer,
    BStarEvent,
    BStarState,
    SplitBrainError,
)
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "bstarsrv",
        "Binary Star echo server (primary or backup).",
    )
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--primary", action="store_true", help="run as the primary")
    role.add_argument("--backup", action="store_true", help="run as the backup")
    parser.add_argument("--frontend", help="client ROUTER endpoint (5001 primary, 5002 backup)")
    parser.add_argument("--state-pub", help="state PUB endpoint (5003 primary, 5004 backup)")
    parser.add_argument("--state-sub", help="the peer's state endpoint (its --state-pub)")
    parser.add_argument(
        "--heartbeat", type=float, default=1.0, help="seconds between states (%(default)s)"
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds each reply takes (a slow request, to watch a graceful stop) (%(default)s)",
    )
    add_shutdown_option(parser)
    args = parser.parse_args(argv)
    mine, peer = (("5001", "5003"), "5004") if args.primary else (("5002", "5004"), "5003")
    args.frontend = args.frontend or f"tcp://*:{mine[0]}"
    args.state_pub = args.state_pub or f"tcp://*:{mine[1]}"
    args.state_sub = args.state_sub or f"tcp://127.0.0.1:{peer}"
    return args


async def serve(args: argparse.Namespace) -> int:
    """Bind, announce READY, and serve until stopped by a signal (or a fatal split brain)."""

    def changed(old: BStarState, new: BStarState, event: BStarEvent) -> None:
        print(f"STATE {old.name} {new.name} {event.name}", flush=True)

    async def echo(request: Message) -> Message:
        if args.delay > 0:
            await asyncio.sleep(args.delay)
        return request

    with ZmqNetwork(name="bstarsrv") as net:
        server = BinaryStarServer(
            net,
            primary=args.primary,
            frontend=args.frontend,
            state_pub=args.state_pub,
            state_sub=args.state_sub,
            heartbeat=args.heartbeat,
            on_state_change=changed,
            handler=echo,
            options=shutdown_options(args),
        )

        try:
            return await serve_server(server, args, f"READY {server.frontend_endpoint}")
        except SplitBrainError:
            return 1
        finally:
            await server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, serve, argv)


if __name__ == "__main__":
    sys.exit(main())
