"""The trading risk server: :func:`~transportkit.trading.serve_risk` with a
:class:`~transportkit.trading.RiskBook` behind a REP socket.

Run ``python -m transportkit.examples.riskserver --bind tcp://*:5555`` next to
``riskclient``. The book's limits come from the flags, whose defaults are the demo's
(:data:`~transportkit.trading.DEMO_LIMITS`: one million of capital, AAPL 1000, MSFT
500, 1000 for any other symbol); ``--max-position SYMBOL=N`` (repeatable) replaces the
per-symbol limits. Each request is one Order frame and gets one ValidationResult
frame, so any REQ client of this risk protocol (``RiskClient``,
``ReliableRiskClient``) is served. Requests are bounded by ``--max-message-bytes``
(default 1 MiB, also the socket's ``maxmsgsize``).

It prints ``READY <endpoint>`` once bound. SIGTERM or SIGINT stops it gracefully: no
new request is read, the one being judged is answered, it exits 0 (see ``_main``).
``--curve-secret FILE`` serves over CURVE, ``--allow-keys DIR`` admits only the
clients whose certificates are in DIR (see ``keygen``). ``--metrics-port N`` serves
Prometheus metrics on ``http://127.0.0.1:N/metrics`` (0: a free port; the program
prints ``METRICS <url>`` before ``READY``): the network's sockets and the server's
:class:`~transportkit.trading.RiskServerStats` (``transportkit_risk_server_*``, label
``name="risk"``); it needs the ``metrics`` extra (``prometheus-client``).

``--service-time S`` (for tests and demos, default 0) spends S seconds on each
request before judging it (:func:`~transportkit.trading.risk_handler`'s simulated
work, served by :func:`~transportkit.patterns.serve_lazy_pirate`: the same wire, the
same counters), and prints ``I: request in service`` as each request starts, so a
request can be seen in flight; a request still being worked on
when ``--shutdown-timeout`` runs out gets the plain Lazy Pirate error reply (one
empty frame), which a risk client reads as a protocol error.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Awaitable, Sequence

from transportkit import Message
from transportkit.examples._main import (
    add_shutdown_option,
    program_parser,
    run_main,
    serve_until_signalled,
    shutdown_options,
)
from transportkit.examples._security import add_server_security, server_security
from transportkit.metrics import MetricsRegistry, MetricsServer, start_http_server
from transportkit.patterns._shutdown import GracefulStop
from transportkit.patterns.lazy_pirate import serve_lazy_pirate
from transportkit.trading import (
    DEMO_LIMITS,
    MAX_SERVICE_TIME,
    RiskBook,
    RiskLimits,
    RiskServerStats,
    risk_handler,
    risk_server_options,
    serve_risk,
)
from transportkit.zmq_backend import ZmqNetwork

__all__ = ["main", "parse_args", "serve"]

METRICS_NAME = "risk"
"""The ``name`` label of the server's counters in the metrics."""


def _position(text: str) -> tuple[str, int]:
    symbol, sep, limit = text.partition("=")
    try:
        if not sep or not symbol:
            raise ValueError
        return symbol, int(limit)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SYMBOL=N, got {text!r}") from None


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {value}")
    return value


def _service_time(text: str) -> float:
    value = float(text)
    if not 0 <= value <= MAX_SERVICE_TIME:
        raise argparse.ArgumentTypeError(
            f"service time must be 0 to {MAX_SERVICE_TIME:g} s, got {text!r}"
        )
    return value


def _message_bytes(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"max message bytes must be >= 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (exit status 2 for a bad flag or impossible limits)."""
    parser = program_parser(
        "riskserver",
        "Pre-trade risk server (REP): judges Orders against a risk book.",
    )
    parser.add_argument("--bind", default="tcp://*:5555", help="endpoint to bind (%(default)s)")
    limits = parser.add_argument_group("risk limits (default: the demo's)")
    limits.add_argument(
        "--capital",
        type=float,
        default=DEMO_LIMITS.capital,
        metavar="X",
        help="capital available for buys at the start (%(default)s)",
    )
    limits.add_argument(
        "--max-position",
        type=_position,
        action="append",
        metavar="SYMBOL=N",
        help="absolute position limit of SYMBOL, repeatable (default: "
        + ", ".join(f"{s}={n}" for s, n in DEMO_LIMITS.max_position.items())
        + ")",
    )
    limits.add_argument(
        "--default-max-position",
        type=int,
        default=DEMO_LIMITS.default_max_position,
        metavar="N",
        help="position limit of any other symbol (%(default)s)",
    )
    limits.add_argument(
        "--max-order-notional",
        type=float,
        default=DEMO_LIMITS.max_order_notional,
        metavar="X",
        help="largest quantity x price of one order (%(default)g)",
    )
    limits.add_argument(
        "--max-capital",
        type=float,
        default=DEMO_LIMITS.max_capital,
        metavar="X",
        help="largest capital the book may hold (%(default)g)",
    )
    limits.add_argument(
        "--max-symbols",
        type=int,
        default=DEMO_LIMITS.max_symbols,
        metavar="N",
        help="most symbols with an open position (%(default)s)",
    )
    parser.add_argument(
        "--max-message-bytes",
        type=_message_bytes,
        default=risk_server_options().maxmsgsize,
        metavar="N",
        help="largest request, in bytes; also the socket's maxmsgsize (%(default)s)",
    )
    parser.add_argument(
        "--metrics-port",
        type=_port,
        metavar="N",
        help="serve Prometheus metrics on http://127.0.0.1:N/metrics (0: a free port)",
    )
    parser.add_argument(
        "--service-time",
        type=_service_time,
        default=0.0,
        metavar="S",
        help="seconds of simulated work per request, for tests and demos (%(default)s)",
    )
    add_server_security(parser)
    add_shutdown_option(parser)
    args = parser.parse_args(argv)
    positions = (
        dict(DEMO_LIMITS.max_position) if args.max_position is None else dict(args.max_position)
    )
    try:
        args.limits = RiskLimits(
            capital=args.capital,
            max_position=positions,
            default_max_position=args.default_max_position,
            max_order_notional=args.max_order_notional,
            max_capital=args.max_capital,
            max_symbols=args.max_symbols,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _start_metrics(
    args: argparse.Namespace, net: ZmqNetwork, stats: RiskServerStats
) -> MetricsServer | None:
    if args.metrics_port is None:
        return None
    registry = MetricsRegistry()
    registry.watch_network(net)
    registry.watch(stats, name=METRICS_NAME)
    try:
        server = start_http_server(args.metrics_port, registry=registry)
    except ImportError:
        print("error: --metrics-port needs prometheus-client (the metrics extra)", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        print(f"error: --metrics-port {args.metrics_port}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"METRICS {server.url}", flush=True)
    return server


async def serve(args: argparse.Namespace) -> int:
    """Bind, announce READY, and judge orders until stopped by a signal."""
    book = RiskBook(args.limits)
    stats = RiskServerStats()
    stop = GracefulStop()
    loop: Awaitable[object]
    with contextlib.ExitStack() as resources:
        net = resources.enter_context(ZmqNetwork(name="riskserver"))
        options = risk_server_options(
            shutdown_options(args), max_message_bytes=args.max_message_bytes
        )
        rep = resources.enter_context(
            net.worker(bind=args.bind, options=server_security(args, net, options))
        )
        metrics = _start_metrics(args, net, stats)
        if metrics is not None:
            resources.callback(metrics.close)
        if args.service_time:
            handler = risk_handler(
                book,
                service_time=args.service_time,
                stats=stats,
                max_message_bytes=args.max_message_bytes,
            )

            async def announced(request: Message) -> list[bytes]:
                print("I: request in service", flush=True)
                return await handler(request)

            loop = serve_lazy_pirate(rep, announced, max_message_bytes=None, stop=stop)
        else:
            loop = serve_risk(
                rep, book, stop=stop, stats=stats, max_message_bytes=args.max_message_bytes
            )
        status = await serve_until_signalled(
            loop,
            lambda: stop.shutdown(args.shutdown_timeout),
            ready=f"READY {rep.last_endpoint}",
        )
        print(
            f"I: {stats.requests} requests, {stats.approved} approved, {stats.rejected} rejected",
            flush=True,
        )
        return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, serve, argv)


if __name__ == "__main__":
    sys.exit(main())
