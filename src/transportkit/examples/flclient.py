"""Freelance client (the Guide's ``flclient3``): requests over several servers, no broker.

Run ``python -m transportkit.examples.flclient --connect tcp://localhost:5555
--connect tcp://localhost:5556`` next to ``flserver`` processes; kill some of them and
watch the requests move to the live ones. Prints the average round trip, or exits with
status 1 when no server answered a request in time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from transportkit import ServiceUnavailableError
from transportkit.examples._main import program_parser, run_main
from transportkit.patterns.freelance import (
    GLOBAL_TIMEOUT,
    PING_INTERVAL,
    SERVER_TTL,
    FreelanceClient,
)
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "flclient",
        "Freelance client (10/FLP): one ROUTER connected to every server.",
    )
    parser.add_argument(
        "--connect",
        action="append",
        metavar="ENDPOINT",
        help="a server endpoint (repeat; default tcp://localhost:5555, :5556, :5557)",
    )
    parser.add_argument(
        "--requests", type=int, default=1000, metavar="N", help="requests to send (%(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=GLOBAL_TIMEOUT, metavar="S",
        help="seconds a request waits for any server (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--ping-interval", type=float, default=PING_INTERVAL, metavar="S",
        help="seconds between pings of each server (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--server-ttl", type=float, default=SERVER_TTL, metavar="S",
        help="seconds of silence before a server is taken for dead (%(default)s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.connect = args.connect or [f"tcp://localhost:{port}" for port in (5555, 5556, 5557)]
    return args


async def run(args: argparse.Namespace) -> int:
    """Send the requests; 0 if all were answered, 1 when no server answered one."""
    loop = asyncio.get_running_loop()
    with (
        ZmqNetwork(name="flclient") as net,
        FreelanceClient(
            net,
            args.connect,
            timeout=args.timeout,
            ping_interval=args.ping_interval,
            server_ttl=args.server_ttl,
        ) as client,
    ):
        start = loop.time()
        for _ in range(args.requests):
            try:
                await client.request([b"random name"])
            except ServiceUnavailableError as exc:
                print(f"E: name service not available, aborting: {exc}", flush=True)
                return 1
        elapsed = loop.time() - start
        per_request = 1e6 * elapsed / max(1, args.requests)
        print(f"Average round trip cost: {per_request:.0f} usec", flush=True)
        print(f"I: {client.stats}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
