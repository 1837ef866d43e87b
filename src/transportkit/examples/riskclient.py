"""Risk client: sends orders to ``riskserver`` through ReliableRiskClient.

Run ``python -m transportkit.examples.riskclient --connect tcp://localhost:5555
--count 5 --symbol AAPL --quantity 100 --price 190``. Each order goes through
:class:`~transportkit.trading.ReliableRiskClient` (Lazy Pirate: ``--timeout`` seconds
per attempt, ``--attempts`` sends), and the program prints one line per verdict::

    VERDICT rc-1 approved
    VERDICT rc-2 rejected: Position limit exceeded

then a summary (``SUMMARY orders=.. verdicts=.. approved=.. rejected=.. retries=..``).
It exits 0 when every order got a verdict, 1 otherwise: when the server stays silent
through every retry (a CURVE server that refuses this client's key looks the same)
the remaining orders are abandoned, as the Guide's Lazy Pirate client does, and a
reply that is not a verdict for the order sent is reported and counted as missing.
``--curve-server-key FILE`` (the server's public certificate) talks CURVE, with this
client's ``--curve-secret FILE`` or a key pair made for the run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from transportkit import ProtocolError, ServiceUnavailableError
from transportkit.examples._main import add_attempts_option, program_parser, run_main
from transportkit.examples._security import add_client_security, client_security
from transportkit.patterns.lazy_pirate import REQUEST_ATTEMPTS, REQUEST_TIMEOUT
from transportkit.trading import SIDE_BUY, SIDE_SELL, Order, ReliableRiskClient
from transportkit.zmq_backend import ZmqNetwork

__all__ = ["MAX_COUNT", "main", "parse_args", "run"]

MAX_COUNT = 1_000_000
"""The most orders one run sends."""


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {low} to {high}, got {value}")
        return value

    return convert


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # written so that NaN fails
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (exit status 2 for a bad flag)."""
    parser = program_parser(
        "riskclient",
        "Send orders to a risk server and print each verdict.",
    )
    parser.add_argument(
        "--connect", default="tcp://localhost:5555", help="server endpoint (%(default)s)"
    )
    parser.add_argument(
        "--count",
        type=_bounded_int(1, MAX_COUNT),
        default=1,
        metavar="N",
        help="orders to send (%(default)s)",
    )
    parser.add_argument("--symbol", default="AAPL", help="the orders' symbol (%(default)s)")
    parser.add_argument("--side", choices=["buy", "sell"], default="buy", help="(%(default)s)")
    parser.add_argument(
        "--quantity",
        type=int,
        default=100,
        metavar="N",
        help="shares per order (%(default)s; the server rejects 0 or less)",
    )
    parser.add_argument(
        "--price", type=float, default=190.0, metavar="X", help="price per share (%(default)s)"
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=REQUEST_TIMEOUT,
        metavar="S",
        help="seconds to wait for each reply (%(default)s)",
    )
    add_attempts_option(parser, default=REQUEST_ATTEMPTS, type=_bounded_int(1, 100))
    add_client_security(parser)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Send the orders; 0 if every one got a verdict, 1 otherwise."""
    side = SIDE_BUY if args.side == "buy" else SIDE_SELL
    verdicts = approved = 0
    with ZmqNetwork(name="riskclient") as net:
        client = ReliableRiskClient(
            net,
            args.connect,
            timeout=args.timeout,
            attempts=args.attempts,
            options=client_security(args),
        )
        try:
            for n in range(1, args.count + 1):
                order = Order(
                    id=f"rc-{n}",
                    symbol=args.symbol,
                    side=side,
                    quantity=args.quantity,
                    price=args.price,
                )
                try:
                    result = await client.validate(order)
                except ServiceUnavailableError as exc:
                    print(f"E: no verdict for {order.id}, abandoning: {exc}", flush=True)
                    break
                except ProtocolError as exc:
                    print(f"E: no verdict for {order.id}: {exc}", flush=True)
                    continue
                verdicts += 1
                if result.approved:
                    approved += 1
                    print(f"VERDICT {order.id} approved", flush=True)
                else:
                    print(f"VERDICT {order.id} rejected: {result.reason}", flush=True)
            retries = client.client.stats.retries
        finally:
            client.close()
    print(
        f"SUMMARY orders={args.count} verdicts={verdicts} approved={approved} "
        f"rejected={verdicts - approved} retries={retries}",
        flush=True,
    )
    return 0 if verdicts == args.count else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, run, argv)


if __name__ == "__main__":
    sys.exit(main())
