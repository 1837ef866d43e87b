"""Majordomo broker (the Guide's ``mdbroker``): 7/MDP on one ROUTER socket.

Run ``python -m transportkit.examples.mdbroker --bind tcp://*:5555``, then
``mdworker`` and ``mdclient`` against it. Prints ``READY <endpoint>`` once bound (the
endpoint resolved, so ``tcp://*:*`` shows the port it got). SIGTERM or SIGINT stops it
gracefully (:meth:`~transportkit.patterns.majordomo.MajordomoBroker.shutdown`): new
requests are dropped, those already handed to workers are answered within
``--shutdown-timeout``, the workers get DISCONNECT, and it exits 0.

The ``--max-pending*`` options set the broker's bounds on pending requests (see
:class:`~transportkit.patterns.majordomo.MajordomoBroker`). The Guide's ``mdclient2``
sends 100,000 requests before it reads a reply, past the default bounds (the broker
drops what is over them, and the client then times out); serve it with
``--max-pending 100000 --max-pending-per-service 100000 --max-pending-per-client 100000
--max-pending-bytes-per-client 67108864``.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence

from transportkit.examples._main import (
    add_shutdown_option,
    program_parser,
    run_main,
    serve_server,
    shutdown_options,
)
from transportkit.examples._security import add_server_security, server_security
from transportkit.patterns._limits import DEFAULT_MAX_MESSAGE_BYTES
from transportkit.patterns.majordomo import (
    MDP_HEARTBEAT_INTERVAL,
    MDP_HEARTBEAT_LIVENESS,
    MDP_MAX_REQUEUES,
    MajordomoBroker,
)
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "mdbroker",
        "Majordomo (7/MDP) broker: routes client requests to service workers.",
    )
    parser.add_argument("--bind", default="tcp://*:5555", help="endpoint to bind (%(default)s)")
    parser.add_argument(
        "--heartbeat-interval", type=float, default=MDP_HEARTBEAT_INTERVAL, metavar="S",
        help="seconds between heartbeats to workers (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--liveness", type=int, default=MDP_HEARTBEAT_LIVENESS, metavar="N",
        help="silent heartbeat intervals before a worker is forgotten (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--request-ttl", type=float, default=30.0, metavar="S",
        help="seconds a request may wait for a worker (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-requeues", type=int, default=MDP_MAX_REQUEUES, metavar="N",
        help="times a request is handed again after its worker died or left (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES, metavar="B",
        help="largest message accepted; larger ones are dropped (%(default)s)",
    )  # fmt: skip
    for name, default in _PENDING_BOUNDS.items():
        unit = "B" if "bytes" in name else "N"
        what = "bytes of pending requests" if unit == "B" else "pending requests"
        scope = name.removeprefix("max_pending").removeprefix("_bytes").replace("_", " ")
        parser.add_argument(
            "--" + name.replace("_", "-"), type=int, default=default, metavar=unit,
            help=f"most {what}{scope or ' in all'} (%(default)s)",
        )  # fmt: skip
    add_server_security(parser)
    add_shutdown_option(parser)
    return parser.parse_args(argv)


_PENDING_BOUNDS: dict[str, int] = {
    name: param.default
    for name, param in inspect.signature(MajordomoBroker).parameters.items()
    if name.startswith("max_pending")
}


async def run(args: argparse.Namespace) -> int:
    """Bind, announce READY, and broker until stopped by a signal."""
    with ZmqNetwork(name="mdbroker") as net:
        broker = MajordomoBroker(
            net,
            args.bind,
            heartbeat_interval=args.heartbeat_interval,
            heartbeat_liveness=args.liveness,
            request_ttl=args.request_ttl,
            max_requeues=args.max_requeues,
            max_message_bytes=args.max_message_bytes,
            **{name: getattr(args, name) for name in _PENDING_BOUNDS},
            options=server_security(args, net, shutdown_options(args)),
        )
        return await serve_server(broker, args, f"READY {broker.bind()}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
