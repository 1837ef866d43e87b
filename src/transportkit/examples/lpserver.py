"""Lazy Pirate server (the Guide's ``lpserver``): an echo server that can fail on purpose.

Run ``python -m transportkit.examples.lpserver --bind tcp://*:5555`` next to
``lpclient``. ``--crash-after`` and ``--overload-chance`` make it misbehave as the Guide's
does (a crash after some cycles, random slow replies), to show the client recovering.
It prints ``READY <endpoint>`` once bound. SIGTERM or SIGINT stops it gracefully: the
request being handled (a slow one included) is answered, or gets the wire format's
error reply once ``--shutdown-timeout`` has passed; no new request is read; it exits 0
(see ``_main``).

It echoes each request unchanged, as the Guide's does, so it serves the Guide's
``lpclient`` (the sequence number as the only frame). ``--sequenced`` serves
transportkit's sequenced wire format instead (``lpclient --sequenced``).
``--curve-secret FILE`` serves over CURVE, ``--allow-keys DIR`` admits only the
clients whose certificates are in DIR (see ``keygen``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from collections.abc import Sequence

from transportkit import Frame, Message
from transportkit.examples._main import (
    add_shutdown_option,
    program_parser,
    run_main,
    serve_until_signalled,
    shutdown_options,
)
from transportkit.examples._security import add_server_security, server_security
from transportkit.patterns._shutdown import GracefulStop
from transportkit.patterns.lazy_pirate import LazyPirateWire, serve_lazy_pirate
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "lpserver",
        "Lazy Pirate echo server (REP) that can simulate crashes and overload.",
    )
    parser.add_argument("--bind", default="tcp://*:5555", help="endpoint to bind (%(default)s)")
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
        help="probability of answering slowly (simulated overload), 0 to 1 (%(default)s)",
    )
    parser.add_argument(
        "--overload-delay",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds a slow answer takes (%(default)s)",
    )
    parser.add_argument("--seed", type=int, help="seed of the failure simulation")
    parser.add_argument("--quiet", action="store_true", help="do not print each request")
    parser.add_argument(
        "--sequenced",
        action="store_true",
        help="expect and echo a sequence frame first (transportkit's opt-in wire format)",
    )
    add_server_security(parser)
    add_shutdown_option(parser)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    """Bind, announce READY, and echo requests until stopped by a signal."""
    rng = random.Random(args.seed)
    cycles = 0

    async def echo(request: Message) -> Sequence[Frame]:
        nonlocal cycles
        cycles += 1
        if args.crash_after is not None and cycles > args.crash_after:
            print("I: simulating a crash", flush=True)
            os._exit(3)
        if rng.random() < args.overload_chance:
            if not args.quiet:
                print("I: simulating CPU overload", flush=True)
            await asyncio.sleep(args.overload_delay)
        if not args.quiet:
            print(f"I: normal request {request!r}", flush=True)
        return request

    with (
        ZmqNetwork(name="lpserver") as net,
        net.worker(
            bind=args.bind, options=server_security(args, net, shutdown_options(args))
        ) as rep,
    ):
        wire = LazyPirateWire.SEQUENCED if args.sequenced else LazyPirateWire.PLAIN
        stop = GracefulStop()
        return await serve_until_signalled(
            serve_lazy_pirate(rep, echo, wire=wire, stop=stop),
            lambda: stop.shutdown(args.shutdown_timeout),
            ready=f"READY {rep.last_endpoint}",
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, serve, argv)


if __name__ == "__main__":
    sys.exit(main())
