"""Lazy Pirate client (the Guide's ``lpclient``): numbered requests, retried on silence.

Run ``python -m transportkit.examples.lpclient --connect tcp://localhost:5555``
against ``lpserver`` (or a Simple/Paranoid Pirate queue's front end). Exits with status
1 when the server stays silent through every retry.

Each request is its number as the only frame, and the server is expected to echo it,
as with the Guide's ``lpclient``; any REP echo server will do. ``--sequenced`` uses
transportkit's sequenced wire format instead (for ``lpserver --sequenced``).
``--curve-server-key FILE`` (the server's public certificate) talks CURVE, with this
client's ``--curve-secret FILE`` or a key pair made for the run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from transportkit import ServiceUnavailableError
from transportkit.examples._main import add_attempts_option, program_parser, run_main
from transportkit.examples._security import add_client_security, client_security
from transportkit.patterns.lazy_pirate import (
    REQUEST_ATTEMPTS,
    REQUEST_TIMEOUT,
    LazyPirateClient,
    LazyPirateWire,
)
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "lpclient",
        "Lazy Pirate client: sends numbered requests, retrying on timeouts.",
    )
    parser.add_argument(
        "--connect", default="tcp://localhost:5555", help="server endpoint (%(default)s)"
    )
    parser.add_argument(
        "--requests", type=int, default=10, metavar="N", help="requests to send (%(default)s)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=REQUEST_TIMEOUT,
        metavar="S",
        help="seconds to wait for each reply (%(default)s)",
    )
    add_attempts_option(parser, default=REQUEST_ATTEMPTS)
    parser.add_argument(
        "--sequenced",
        action="store_true",
        help="send a sequence frame first (transportkit's opt-in wire format)",
    )
    add_client_security(parser)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Send the requests; 0 if all were answered, 1 when the server went away."""
    with ZmqNetwork(name="lpclient") as net:
        async with LazyPirateClient(
            net,
            args.connect,
            timeout=args.timeout,
            attempts=args.attempts,
            wire=LazyPirateWire.SEQUENCED if args.sequenced else LazyPirateWire.PLAIN,
            options=client_security(args),
        ) as client:
            for i in range(1, args.requests + 1):
                try:
                    reply = await client.request([b"%d" % i])
                except ServiceUnavailableError as exc:
                    print(f"E: server seems to be offline, abandoning: {exc}", flush=True)
                    return 1
                if reply == [b"%d" % i]:
                    print(f"I: server replied OK ({reply!r})", flush=True)
                else:
                    print(f"W: reply is not the request echoed: {reply!r}", flush=True)
            stats = client.stats
            print(f"I: {stats.replies} replies, {stats.retries} retries", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
