"""Simple Pirate worker (the Guide's ``spworker``): an echo worker that crashes on purpose.

Run ``python -m transportkit.examples.spworker --connect tcp://localhost:5556``
against ``spqueue``. ``--crash-after`` and ``--overload-chance`` make it fail as the
Guide's does. Prints ``READY <endpoint>`` once its socket is connecting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from collections.abc import Sequence

from transportkit import Frame, Message, SocketOptions
from transportkit.examples._main import program_parser, run_main
from transportkit.patterns.load_balancing import run_load_balancing_worker
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "spworker",
        "Simple Pirate worker (REQ, says READY, echoes requests).",
    )
    parser.add_argument(
        "--connect", default="tcp://localhost:5556", help="queue back end (%(default)s)"
    )
    parser.add_argument("--identity", help="routing id to present (default: random)")
    parser.add_argument(
        "--crash-after",
        type=int,
        metavar="N",
        help="exit abruptly (simulated crash) when request N+1 arrives",
    )
    parser.add_argument(
        "--overload-chance",
        type=float,
        default=0.0,
        metavar="P",
        help="probability of a slow answer (simulated overload) (%(default)s)",
    )
    parser.add_argument(
        "--overload-delay",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds a slow answer takes (%(default)s)",
    )
    parser.add_argument("--seed", type=int, help="seed of the failure simulation")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Connect, announce READY, and work until killed."""
    rng = random.Random(args.seed)
    identity = args.identity or os.urandom(4).hex("-", 2).upper()
    cycles = 0

    async def work(body: Message) -> Sequence[Frame]:
        nonlocal cycles
        cycles += 1
        if args.crash_after is not None and cycles > args.crash_after:
            print(f"I: ({identity}) simulating a crash", flush=True)
            os._exit(3)
        if rng.random() < args.overload_chance:
            print(f"I: ({identity}) simulating CPU overload", flush=True)
            await asyncio.sleep(args.overload_delay)
        print(f"I: ({identity}) normal reply", flush=True)
        return body

    options = SocketOptions(routing_id=identity.encode())
    with ZmqNetwork(name="spworker") as net:
        print(f"READY {args.connect}", flush=True)
        await run_load_balancing_worker(net, args.connect, work, options=options)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
