"""Simple Pirate queue (the Guide's ``spqueue``): the load-balancing broker, unchanged.

Run ``python -m transportkit.patterns.examples.spqueue`` with ``spworker`` workers on
``--backend`` and ``lpclient`` clients on ``--frontend``; clients retry what a crashed
worker lost. Prints ``READY <frontend> <backend>`` once bound.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from transportkit.patterns.examples._main import run_main
from transportkit.patterns.load_balancing import SimplePirateQueue
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m transportkit.patterns.examples.spqueue",
        description="Simple Pirate queue: a load-balancing broker for Lazy Pirate clients.",
    )
    parser.add_argument(
        "--frontend", default="tcp://*:5555", help="endpoint for clients (%(default)s)"
    )
    parser.add_argument(
        "--backend", default="tcp://*:5556", help="endpoint for workers (%(default)s)"
    )
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Bind, announce READY, and queue until killed."""
    with (
        ZmqNetwork(name="spqueue") as net,
        SimplePirateQueue(net, frontend=args.frontend, backend=args.backend) as queue,
    ):
        print(f"READY {queue.frontend_endpoint} {queue.backend_endpoint}", flush=True)
        await queue.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
