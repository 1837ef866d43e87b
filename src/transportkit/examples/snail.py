"""Suicidal Snail (the Guide's ``suisnail``): a subscriber that dies when it lags.

Run ``python -m transportkit.examples.snail --work 0.002``. A publisher sends a
timestamped update every ``--interval`` seconds; the subscriber spends ``--work`` seconds
on each. When it falls more than ``--max-delay`` seconds behind it stops with
:class:`~transportkit.StaleDataError` (exit status 1) instead of acting on stale data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

from transportkit import StaleDataError
from transportkit.examples._main import program_parser, run_main
from transportkit.patterns.resilience import StampedPublisher, SuicidalSubscriber
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "snail",
        "A publisher and a slow subscriber that kills itself when it lags.",
    )
    parser.add_argument(
        "--endpoint", default="inproc://snail", help="endpoint to use (%(default)s)"
    )
    parser.add_argument(
        "--interval", type=float, default=0.001, help="seconds between updates (%(default)s)"
    )
    parser.add_argument(
        "--work", type=float, default=0.002, help="seconds spent per update (%(default)s)"
    )
    parser.add_argument(
        "--max-delay", type=float, default=1.0, help="seconds of lag tolerated (%(default)s)"
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds to run at most (%(default)s)"
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Run publisher and subscriber; return 1 if the subscriber died of staleness."""
    async with ZmqNetwork(name="snail") as net:
        pub = net.publisher(bind=args.endpoint)
        sub = net.subscriber(connect=pub.last_endpoint or args.endpoint)
        stamped = StampedPublisher(pub, net.time_ns)
        snail = SuicidalSubscriber(sub, net.time_ns, max_delay=args.max_delay)

        async def publish() -> None:
            while True:
                await stamped.publish(b"UPDATE", b"%d" % stamped.published)
                await asyncio.sleep(args.interval)

        async def consume() -> None:
            while True:
                await snail.recv()
                await asyncio.sleep(args.work)

        publisher = asyncio.ensure_future(publish())
        try:
            await asyncio.wait_for(consume(), args.duration)
        except StaleDataError as exc:
            print(f"E: {exc}", flush=True)
            return 1
        except TimeoutError:
            print(f"OK: {snail.received} updates, max lag {snail.max_lag:.6f} s", flush=True)
            return 0
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
