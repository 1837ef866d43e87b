"""Resilient subscriber (``ResilientSubscriber``): reconnects when the publisher is silent.

Run ``python -m transportkit.examples.resilientsub --connect tcp://localhost:5556``
next to ``hbpublisher``. Heartbeats are hidden; data messages are printed, and so is every
reconnect (after ``--silence`` seconds without hearing anything, heartbeats included).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from transportkit import Message
from transportkit.examples._main import program_parser, run_main
from transportkit.patterns.resilience import ResilientSubscriber
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "resilientsub",
        "Subscribe, hide heartbeats, reconnect after a silence.",
    )
    parser.add_argument(
        "--connect", default="tcp://localhost:5556", help="publisher endpoint (%(default)s)"
    )
    parser.add_argument(
        "--topic", action="append", default=[], help="data topic prefix (repeat; default all)"
    )
    parser.add_argument(
        "--silence", type=float, default=10.0, help="seconds of silence to reconnect after"
    )
    parser.add_argument(
        "--recv-timeout", type=float, default=5.0, help="seconds per receive (%(default)s)"
    )
    parser.add_argument("--heartbeat-topic", default="HEARTBEAT", help="(%(default)s)")
    parser.add_argument(
        "--count", type=int, default=0, help="exit after N data messages, 0 for never"
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Receive and print data messages until ``--count`` is reached."""
    topics = [t.encode() for t in args.topic] or [b""]
    async with ZmqNetwork(name="resilientsub") as net:
        sub = ResilientSubscriber(
            net,
            connect=args.connect,
            topics=topics,
            silence=args.silence,
            recv_timeout=args.recv_timeout,
            heartbeat_topic=args.heartbeat_topic.encode(),
            on_reconnect=lambda silence: print(
                f"W: no messages for {silence:.3f} s, reconnecting...", flush=True
            ),
        )
        print(f"Connected to {args.connect}", flush=True)

        def show(message: Message) -> None:
            print(" ".join(repr(frame) for frame in message), flush=True)

        async with sub:
            async for message in sub:
                show(message)
                if args.count and sub.received >= args.count:
                    break
        print(f"received {sub.received}, reconnects {sub.reconnects}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
