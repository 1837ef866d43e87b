"""Last-value cache (the Guide's ``lvcache``): SUB upstream, XPUB downstream.

Run ``python -m transportkit.examples.lvcache --upstream tcp://localhost:5557``.
It forwards every update from the publisher on ``--downstream`` (an XPUB with
``xpub_verbose``) and, when a subscriber subscribes, sends the newest value of every
cached topic that subscription matches, as the Guide's lvcache does: the Guide's
clients, plain SUBs, need nothing else. ``--snapshots`` also binds the opt-in snapshot
ROUTER for :class:`~transportkit.patterns.conflation.LastValueSubscriber` (see
:mod:`transportkit.patterns.conflation`). It prints ``READY <downstream> <snapshots>``
once bound (``-`` without a snapshot ROUTER). SIGTERM or SIGINT stops it
gracefully (``shutdown``: the snapshots in progress finish within
``--shutdown-timeout``) and it exits 0.
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
from transportkit.patterns.conflation import LastValueCache
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "lvcache",
        "Cache the newest value per topic; send it to each new subscriber.",
    )
    parser.add_argument(
        "--upstream", default="tcp://localhost:5557", help="publisher endpoint (%(default)s)"
    )
    parser.add_argument(
        "--downstream", default="tcp://*:5558", help="XPUB endpoint to bind (%(default)s)"
    )
    parser.add_argument(
        "--snapshots", default=None, help="snapshot ROUTER endpoint to bind (default: none)"
    )
    parser.add_argument(
        "--topic", action="append", default=[], help="upstream prefix (repeat; default all)"
    )
    add_shutdown_option(parser)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    """Bind, announce READY, and serve until stopped by a signal."""
    topics = [t.encode() for t in args.topic] or [b""]
    async with (
        ZmqNetwork(name="lvcache") as net,
        LastValueCache(
            net,
            upstream=args.upstream,
            downstream=args.downstream,
            snapshots=args.snapshots,
            topics=topics,
            options=shutdown_options(args),
        ) as cache,
    ):
        snapshots = "-" if cache.snapshots is None else cache.snapshots.last_endpoint
        return await serve_server(
            cache, args, f"READY {cache.downstream.last_endpoint} {snapshots}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, serve, argv)


if __name__ == "__main__":
    sys.exit(main())
