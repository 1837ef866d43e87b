"""Load-balancing broker (the Guide's ``lbbroker``, as ``LoadBalancingBroker``).

Run ``python -m transportkit.examples.lbbroker --workers 3`` for a
self-contained demo (echo workers in the same process), or start workers separately
(``spworker``) against ``--backend``. Clients (REQ, or ``lpclient``) connect to
``--frontend``. Prints ``READY <frontend> <backend>`` once bound.
SIGTERM or SIGINT stops it gracefully (``shutdown``): the front end is no longer read,
the replies to the requests workers hold are forwarded within ``--shutdown-timeout``,
and it exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from transportkit import Message
from transportkit.examples._main import (
    add_shutdown_option,
    program_parser,
    run_main,
    serve_server,
    shutdown_options,
)
from transportkit.patterns.load_balancing import LoadBalancingBroker, run_load_balancing_worker
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "lbbroker",
        "Load-balancing broker: ROUTER front end for clients, ROUTER back end "
        "for workers that say READY.",
    )
    parser.add_argument(
        "--frontend", default="tcp://*:5555", help="endpoint for clients (%(default)s)"
    )
    parser.add_argument(
        "--backend", default="tcp://*:5556", help="endpoint for workers (%(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="echo workers to run inside this process, for a demo (%(default)s)",
    )
    add_shutdown_option(parser)
    return parser.parse_args(argv)


def echo(body: Message) -> Message:
    """The demo workers' work: echo the request."""
    return body


async def run(args: argparse.Namespace) -> int:
    """Bind, announce READY, and broker until stopped by a signal."""
    with (
        ZmqNetwork(name="lbbroker") as net,
        LoadBalancingBroker(
            net, frontend=args.frontend, backend=args.backend, options=shutdown_options(args)
        ) as broker,
    ):
        workers = [
            asyncio.ensure_future(run_load_balancing_worker(net, broker.backend_endpoint, echo))
            for _ in range(args.workers)
        ]
        try:
            return await serve_server(
                broker, args, f"READY {broker.frontend_endpoint} {broker.backend_endpoint}"
            )
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
