"""Binary Star client (the Guide's ``bstarcli``): requests that survive a failover.

Run ``python -m transportkit.examples.bstarcli`` next to a ``bstarsrv`` pair.
It sends numbered requests, one every ``--interval`` seconds, prints ``REPLY <n>`` for
each reply, and fails over between the two servers when one stays silent.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from transportkit import ServiceUnavailableError
from transportkit.examples._main import add_attempts_option, program_parser, run_main
from transportkit.patterns.binary_star import BinaryStarClient
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "bstarcli",
        "Binary Star client with Lazy Pirate failover.",
    )
    parser.add_argument("--primary", default="tcp://127.0.0.1:5001", help="(%(default)s)")
    parser.add_argument("--backup", default="tcp://127.0.0.1:5002", help="(%(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=1.0, help="seconds per attempt (%(default)s)"
    )
    parser.add_argument(
        "--settle-delay", type=float, default=2.0, help="seconds after a switch (%(default)s)"
    )
    add_attempts_option(
        parser,
        default=4,
        retries_meant=lambda n: n + 1,
        why="it counts every send, the first included; --retries counted those after it",
    )
    parser.add_argument("--count", type=int, default=10, help="requests to send (%(default)s)")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between requests (%(default)s)"
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Send ``--count`` requests; return 1 if the service became unavailable."""
    with ZmqNetwork(name="bstarcli") as net:
        client = BinaryStarClient(
            net,
            (args.primary, args.backup),
            timeout=args.timeout,
            settle_delay=args.settle_delay,
            attempts=args.attempts,
        )
        with client:
            for n in range(1, args.count + 1):
                try:
                    reply = await client.request([str(n).encode()])
                except ServiceUnavailableError as exc:
                    print(f"E: {exc}", flush=True)
                    return 1
                print(f"REPLY {reply[0].decode(errors='replace')} from {client.endpoint}")
                await asyncio.sleep(args.interval)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
