"""Titanic client (the Guide's ``ticlient``): store a request, wait for its reply, close.

Run ``python -m transportkit.examples.ticlient --broker tcp://localhost:5555``
against ``mdbroker`` and ``titanic``: it sends ``--body`` to ``--service`` through
Titanic, prints ``I: request UUID <uuid>``, polls ``titanic.reply`` every ``--poll``
seconds until the reply comes (an ``mdworker`` may start long after), prints
``I: reply: <frames>`` and closes the request. Exits with status 1 if Titanic refuses
the request or stops answering, or after ``--max-polls`` pending answers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from transportkit import ServiceUnavailableError
from transportkit.examples._main import program_parser, run_main
from transportkit.patterns.majordomo import MDP_HEARTBEAT_INTERVAL
from transportkit.patterns.titanic import TitanicClient, TitanicError
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "ticlient",
        "Titanic (9/TSP) client: one request, stored, served whenever possible.",
    )
    parser.add_argument(
        "--broker", default="tcp://localhost:5555", help="broker endpoint (%(default)s)"
    )
    parser.add_argument("--service", default="echo", help="service name (%(default)s)")
    parser.add_argument("--body", default="Hello world", help="request body (%(default)s)")
    parser.add_argument(
        "--poll", type=float, default=1.0, metavar="S",
        help="seconds between polls for the reply (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-polls", type=int, default=None, metavar="N",
        help="give up after N pending answers (default: never)",
    )  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=MDP_HEARTBEAT_INTERVAL, metavar="S",
        help="seconds to wait for each answer of Titanic (%(default)s)",
    )  # fmt: skip
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Store, poll, close; 0 once the reply came."""
    with ZmqNetwork(name="ticlient") as net:
        async with TitanicClient(net, args.broker, timeout=args.timeout) as client:
            try:
                uuid = await client.request(args.service.encode(), [args.body.encode()])
                print(f"I: request UUID {uuid.decode()}", flush=True)
                polls = 0
                while (reply := await client.reply(uuid)) is None:
                    polls += 1
                    if args.max_polls is not None and polls >= args.max_polls:
                        print(f"E: no reply after {polls} polls", flush=True)
                        return 1
                    print("I: no reply yet, trying again...", flush=True)
                    await asyncio.sleep(args.poll)
                print(f"I: reply: {reply!r}", flush=True)
                await client.close_request(uuid)
            except (TitanicError, ServiceUnavailableError) as exc:
                print(f"E: {exc}", flush=True)
                return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
