"""Heartbeat publisher (``HeartbeatPublisher``): heartbeats and data on one PUB.

Run ``python -m transportkit.examples.hbpublisher --bind tcp://*:5556`` next to
``resilientsub``. It publishes ``[HEARTBEAT, timestamp]`` every ``--interval`` seconds
and, with ``--data-interval``, ``[DATA, timestamp, n]`` updates between them. It prints
``READY <endpoint>`` once bound. Kill it (even with SIGKILL) and start it again to watch
a resilient subscriber notice the silence and reconnect. SIGTERM or SIGINT stops it
publishing, prints its totals and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

from transportkit.examples._main import program_parser, run_main, serve_until_signalled
from transportkit.patterns.resilience import HeartbeatPublisher, StampedPublisher
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "hbpublisher",
        "Publish heartbeats (and optional data) on a PUB socket.",
    )
    parser.add_argument("--bind", default="tcp://*:5556", help="endpoint to bind (%(default)s)")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between heartbeats (%(default)s)"
    )
    parser.add_argument("--topic", default="HEARTBEAT", help="heartbeat topic (%(default)s)")
    parser.add_argument("--data-topic", default="DATA", help="data topic (%(default)s)")
    parser.add_argument(
        "--data-interval",
        type=float,
        default=0.0,
        help="seconds between data updates, 0 for none (%(default)s)",
    )
    parser.add_argument(
        "--duration", type=float, default=0.0, help="seconds to run, 0 for ever (%(default)s)"
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    """Bind, announce READY, publish until the duration ends or a signal stops it."""
    async with ZmqNetwork(name="hbpublisher") as net:
        pub = net.publisher(bind=args.bind)
        beats = HeartbeatPublisher(
            pub, net.time_ns, interval=args.interval, topic=args.topic.encode()
        )
        stamped = StampedPublisher(pub, net.time_ns)

        async def data() -> None:
            n = 0
            while args.data_interval > 0:
                n += 1
                await stamped.publish(args.data_topic.encode(), b"%d" % n)
                await asyncio.sleep(args.data_interval)

        tasks = [asyncio.ensure_future(beats.run()), asyncio.ensure_future(data())]

        async def publish() -> None:
            with contextlib.suppress(TimeoutError):
                done = await asyncio.wait_for(
                    asyncio.gather(*tasks, return_exceptions=True),
                    args.duration if args.duration > 0 else None,
                )
                for outcome in done:
                    if isinstance(outcome, Exception):
                        raise outcome

        async def stop() -> bool:
            for task in tasks:  # nothing is in flight on a PUB: stop publishing
                task.cancel()
            return True

        try:
            code = await serve_until_signalled(publish(), stop, ready=f"READY {pub.last_endpoint}")
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks)
        print(f"sent {beats.sent} heartbeats and {stamped.published} updates", flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, serve, argv)


if __name__ == "__main__":
    sys.exit(main())
