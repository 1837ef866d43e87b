"""Clone server (the Guide's ``clonesrv``): a market-data last-value cache over 12/CHP.

Run ``python -m transportkit.patterns.examples.clonesrv`` next to ``clonecli``. It keeps
``MARKET.<symbol>`` -> serialized ``MarketData``, publishes every change with the next
sequence number, serves snapshots and sends HUGZ every ``--heartbeat`` seconds. The
updates are a deterministic function of ``--seed`` (see :func:`market_updates`), so a
test can tell which state a client should end up with. It prints
``READY <snapshot endpoint> <publisher endpoint>`` once bound.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Iterator, Sequence

from transportkit import SocketOptions
from transportkit.patterns.clone import CloneServer
from transportkit.trading import MarketData
from transportkit.zmq_backend import ZmqNetwork

DEFAULT_SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN")


def market_updates(seed: int, symbols: Sequence[str]) -> Iterator[tuple[bytes, bytes]]:
    """The endless, deterministic stream of ``(key, body)`` updates for ``seed``."""
    rng = random.Random(seed)
    for sequence in range(1, sys.maxsize):
        symbol = rng.choice(list(symbols))
        mid = round(rng.uniform(50.0, 500.0), 2)
        data = MarketData(
            symbol=symbol,
            bid=mid - 0.01,
            ask=mid + 0.01,
            last=mid,
            bid_size=rng.randrange(1, 1000),
            ask_size=rng.randrange(1, 1000),
            sequence=sequence,
        )
        yield f"MARKET.{symbol}".encode(), data.SerializeToString()


def expected_state(seed: int, count: int, symbols: Sequence[str]) -> dict[bytes, bytes]:
    """The map a server with ``seed`` holds after ``count`` updates."""
    state: dict[bytes, bytes] = {}
    for _, (key, body) in zip(range(count), market_updates(seed, symbols), strict=False):
        state[key] = body
    return state


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m transportkit.patterns.examples.clonesrv",
        description="Clone (12/CHP) server publishing a market-data last-value cache.",
    )
    parser.add_argument("--snapshot", default="tcp://*:5556", help="ROUTER endpoint (%(default)s)")
    parser.add_argument("--publisher", default="tcp://*:5557", help="PUB endpoint (%(default)s)")
    parser.add_argument(
        "--heartbeat", type=float, default=1.0, help="seconds between HUGZ (%(default)s)"
    )
    parser.add_argument(
        "--interval", type=float, default=0.1, help="seconds between updates (%(default)s)"
    )
    parser.add_argument("--count", type=int, help="stop updating after N updates (default: never)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the updates (%(default)s)")
    parser.add_argument(
        "--symbols",
        default=",".join(DEFAULT_SYMBOLS),
        help="comma-separated symbols (%(default)s)",
    )
    parser.add_argument(
        "--sndhwm", type=int, default=1000, help="PUB high-water mark, >= 1 (%(default)s)"
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    """Bind, announce READY, publish updates, then keep serving until killed."""
    symbols = [s for s in args.symbols.split(",") if s]
    with ZmqNetwork(name="clonesrv") as net:
        server = CloneServer(
            net,
            publisher=args.publisher,
            snapshot=args.snapshot,
            heartbeat=args.heartbeat,
            publisher_options=SocketOptions(sndhwm=args.sndhwm),
        )
        async with server:
            print(f"READY {server.snapshot_endpoint} {server.publisher_endpoint}", flush=True)
            for n, (key, body) in enumerate(market_updates(args.seed, symbols), start=1):
                await server.set(key, body)
                if args.count is not None and n >= args.count:
                    print(f"PUBLISHED {n} sequence={server.sequence}", flush=True)
                    break
                await asyncio.sleep(args.interval)
            await asyncio.Event().wait()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    try:
        return asyncio.run(serve(parse_args(argv)))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
