"""Market-data forwarder (the Guide's ``wuproxy``): XSUB facing the feeds, XPUB facing
the traders, subscriptions flowing upstream through it.

Run ``python -m transportkit.examples.mdforwarder --upstream tcp://localhost:5556``
to forward a feed that binds (such as the market-data example's exchange publisher), or ``--frontend
tcp://*:5569`` for feeds that connect. Traders connect their SUB to ``--backend``
(default ``tcp://*:5570``); a feed only sends the topics some trader subscribed to.
``--capture`` binds a PUB that copies every message in both directions (updates and
subscriptions); ``--control`` binds a REP taking ``PAUSE``, ``RESUME``,
``STATISTICS`` and ``TERMINATE`` (see :mod:`transportkit.patterns.proxy`).

It prints ``READY <xsub> <xpub> <control>`` once bound: the XSUB's endpoint (the last
it bound or connected to), the XPUB's, and the control REP's (``-`` without one).
SIGTERM or SIGINT stops it gracefully (:meth:`~transportkit.patterns.proxy.Proxy.shutdown`:
nothing more is read, a message it holds is delivered within ``--shutdown-timeout``,
the sockets close with ``--linger``), as ``TERMINATE`` on the control socket stops it at
once; either way it prints ``STATISTICS`` and libzmq's eight counters, then exits 0 (a
second signal forces the stop: exit 143 or 130).
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
from transportkit.patterns.proxy import forwarder
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "mdforwarder",
        "Forward market data from feeds (XSUB) to traders (XPUB).",
    )
    parser.add_argument(
        "--upstream", action="append", default=[], help="feed endpoint to connect to (repeat)"
    )
    parser.add_argument(
        "--frontend", action="append", default=[], help="XSUB endpoint to bind for feeds (repeat)"
    )
    parser.add_argument(
        "--backend", default="tcp://*:5570", help="XPUB endpoint to bind (%(default)s)"
    )
    parser.add_argument("--capture", default=None, help="capture PUB endpoint to bind")
    parser.add_argument("--control", default=None, help="control REP endpoint to bind")
    add_shutdown_option(parser)
    args = parser.parse_args(argv)
    if not args.upstream and not args.frontend:
        args.upstream = ["tcp://localhost:5556"]
    return args


async def serve(args: argparse.Namespace) -> int:
    """Bind, announce READY, and forward until TERMINATE or a signal (exit 0)."""
    with (
        ZmqNetwork(name="mdforwarder") as net,
        forwarder(
            net,
            frontend=args.frontend,
            upstream=args.upstream,
            backend=args.backend,
            capture=args.capture,
            control=args.control,
            options=shutdown_options(args),
        ) as proxy,
    ):
        control = "-" if proxy.control is None else proxy.control.last_endpoint
        frontend = proxy.frontend.last_endpoint
        status = await serve_server(
            proxy, args, f"READY {frontend} {proxy.backend.last_endpoint} {control}"
        )
        counters = " ".join(str(n) for n in proxy.stats.libzmq_counters())
        print(f"STATISTICS {counters}", flush=True)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, serve, argv)


if __name__ == "__main__":
    sys.exit(main())
