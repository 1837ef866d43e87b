"""Paranoid Pirate worker (the Guide's ``ppworker``): heartbeats, reconnects, backs off.

Run ``python -m transportkit.examples.ppworker --connect tcp://localhost:5556``
against ``ppqueue``; kill the queue and watch the worker reconnect with a doubling
wait. ``--crash-after`` and ``--overload-chance`` make it fail on purpose. Prints
``READY <endpoint>`` once its socket is connecting.

It echoes each request as the Guide's does: the queue's ``[client, b"", request]``
comes back unchanged, so the Guide's ``lpclient`` (or any plain Lazy Pirate client)
gets its own request back. ``--tag`` (off by default, not the Guide's) puts the
worker's ``--name`` before each reply body, to tell workers apart in a demo; a tagged
reply is ``[client, b"", name, *request]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from collections.abc import Sequence

from transportkit import Frame, Message
from transportkit.examples._main import program_parser, run_main
from transportkit.patterns.paranoid_pirate import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_LIVENESS,
    RECONNECT_INITIAL,
    RECONNECT_MAX,
    ParanoidPirateWorker,
)
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "ppworker",
        "Paranoid Pirate worker (DEALER, heartbeats, reconnect back-off).",
    )
    parser.add_argument(
        "--connect", default="tcp://localhost:5556", help="queue back end (%(default)s)"
    )
    parser.add_argument(
        "--name", default="worker", help="the worker's name in its log lines (%(default)s)"
    )
    parser.add_argument(
        "--tag",
        action="store_true",
        help="put --name before each reply body (not the Guide's echo; off by default)",
    )
    parser.add_argument(
        "--heartbeat-interval", type=float, default=HEARTBEAT_INTERVAL, metavar="S",
        help="seconds between heartbeats (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--liveness", type=int, default=HEARTBEAT_LIVENESS, metavar="N",
        help="heartbeats the queue may miss (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--reconnect-initial", type=float, default=RECONNECT_INITIAL, metavar="S",
        help="first wait before reconnecting (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--reconnect-max", type=float, default=RECONNECT_MAX, metavar="S",
        help="longest wait before reconnecting (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--crash-after", type=int, metavar="N",
        help="exit abruptly (simulated crash) when request N+1 arrives",
    )  # fmt: skip
    parser.add_argument(
        "--overload-chance", type=float, default=0.0, metavar="P",
        help="probability of a slow answer (simulated overload) (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--overload-delay", type=float, default=2.0, metavar="S",
        help="seconds a slow answer takes (%(default)s)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, help="seed of the failure simulation")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Connect, announce READY, and work until killed."""
    rng = random.Random(args.seed)
    name = args.name.encode()
    cycles = 0

    async def work(body: Message) -> Sequence[Frame]:
        nonlocal cycles
        cycles += 1
        if args.crash_after is not None and cycles > args.crash_after:
            print(f"I: ({args.name}) simulating a crash", flush=True)
            os._exit(3)
        if rng.random() < args.overload_chance:
            print(f"I: ({args.name}) simulating CPU overload", flush=True)
            await asyncio.sleep(args.overload_delay)
        print(f"I: ({args.name}) normal reply", flush=True)
        return [name, *body] if args.tag else body

    with ZmqNetwork(name="ppworker") as net:
        worker = ParanoidPirateWorker(
            net,
            args.connect,
            work,
            heartbeat_interval=args.heartbeat_interval,
            liveness=args.liveness,
            reconnect_initial=args.reconnect_initial,
            reconnect_max=args.reconnect_max,
        )
        print(f"READY {args.connect}", flush=True)
        await worker.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
