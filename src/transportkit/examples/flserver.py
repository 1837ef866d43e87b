"""Freelance server (the Guide's ``flserver3``): answers PING with PONG, requests with OK.

Run ``python -m transportkit.examples.flserver --bind tcp://*:5555`` (and more
on other ports) next to ``flclient``. Its routing id is its public endpoint
(``--endpoint``, by default the bound one with ``*`` read as ``localhost``), which is
what clients connect to. Prints ``READY <endpoint>`` once bound. SIGTERM or SIGINT
stops it gracefully (``shutdown``: the request being handled is answered within
``--shutdown-timeout``, nothing more is read) and it exits 0.
"""

from __future__ import annotations

import argparse
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
from transportkit.patterns.freelance import FreelanceServer
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "flserver",
        "Freelance server (10/FLP): a ROUTER whose identity is its endpoint.",
    )
    parser.add_argument("--bind", default="tcp://*:5555", help="endpoint to bind (%(default)s)")
    parser.add_argument(
        "--endpoint",
        help="the public endpoint clients connect to, its routing id "
        "(default: --bind, with * as localhost)",
    )
    parser.add_argument(
        "--reply", default="OK", help="the reply body to every request (%(default)s)"
    )
    add_shutdown_option(parser)
    args = parser.parse_args(argv)
    args.endpoint = args.endpoint or args.bind.replace("://*:", "://localhost:")
    return args


async def run(args: argparse.Namespace) -> int:
    """Bind, announce READY, and serve until stopped by a signal."""
    reply = [args.reply.encode()]

    def answer(body: Message) -> Message:
        return reply

    with (
        ZmqNetwork(name="flserver") as net,
        FreelanceServer(
            net,
            bind=args.bind,
            endpoint=args.endpoint,
            handler=answer,
            options=shutdown_options(args),
        ) as server,
    ):
        return await serve_server(server, args, f"READY {server.endpoint}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
