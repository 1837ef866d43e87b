"""Clone server (the Guide's ``clonesrv5``/``clonesrv6``): a market-data last-value cache
over 12/CHP.

Run ``python -m transportkit.examples.clonesrv`` next to ``clonecli``. It keeps
``MARKET.<symbol>`` -> serialized ``MarketData``, publishes every change with the next
sequence number, serves snapshots and sends HUGZ every ``--heartbeat`` seconds; its
collector (``--collector``, CHP's port P + 2) takes the updates clients publish, with
their ``ttl``; ``--collector-kind pull`` makes it a PULL, as the Guide's model 5
(``clonesrv5``) has it, for clients that send on a PUSH (the Guide's ``clonecli5``,
``clonecli --collector-kind push``); the default ``sub`` is 12/CHP's. The updates are
a deterministic function of ``--seed`` (see :func:`market_updates`), so a test can
tell which state a client should end up with;
``--count 0`` publishes none. It prints ``READY <snapshot endpoint> <publisher
endpoint>`` once bound. SIGTERM or SIGINT stops it gracefully
(:meth:`~transportkit.patterns.CloneServer.shutdown`): it publishes no more, reads no
new snapshot request or collector update, lets the snapshots in progress finish within
``--shutdown-timeout``, closes its sockets (``--linger``) and exits 0.

``--pair primary`` or ``--pair backup`` runs one server of the Binary Star pair (model
6) on the Guide's ports: the primary on 5556-5558 with its Binary Star state on 5003,
the backup on 5566-5568 and 5004, each following the other on ``localhost``. Only the
active one publishes the generated updates.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Iterator, Sequence

from transportkit import SocketKind, SocketOptions
from transportkit.examples._main import (
    add_shutdown_option,
    program_parser,
    run_main,
    serve_until_signalled,
    shutdown_options,
)
from transportkit.patterns.clone import ClonePairServer, CloneServer
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
    parser = program_parser(
        "clonesrv",
        "Clone (12/CHP) server publishing a market-data last-value cache.",
    )
    parser.add_argument("--snapshot", help="ROUTER endpoint (tcp://*:5556; backup: 5566)")
    parser.add_argument("--publisher", help="PUB endpoint (tcp://*:5557; backup: 5567)")
    parser.add_argument(
        "--collector", help="collector endpoint, or 'none' (tcp://*:5558; backup: 5568)"
    )
    parser.add_argument(
        "--collector-kind",
        choices=("sub", "pull"),
        default="sub",
        help="collector socket: sub (12/CHP) or pull (the Guide's model 5) (%(default)s)",
    )
    parser.add_argument(
        "--pair", choices=("primary", "backup"), help="run one server of a Binary Star pair"
    )
    parser.add_argument(
        "--extensions",
        action="store_true",
        help="HUGZ carry the sequence, KTHXBAI a count (transportkit's opt-in extensions)",
    )
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
    parser.add_argument(
        "--snapshot-sndhwm",
        type=int,
        default=1000,
        metavar="N",
        help="snapshot ROUTER high-water mark, >= 1: a snapshot waits on a slow client "
        "past it (%(default)s)",
    )
    add_shutdown_option(parser)
    return parser.parse_args(argv)


def _port(args: argparse.Namespace, given: str | None, offset: int) -> str:
    base = 5566 if args.pair == "backup" else 5556
    return given or f"tcp://*:{base + offset}"


async def serve(args: argparse.Namespace) -> int:
    """Bind, announce READY, publish updates, then keep serving until stopped by a signal."""
    symbols = [s for s in args.symbols.split(",") if s]
    snapshot = _port(args, args.snapshot, 0)
    publisher = _port(args, args.publisher, 1)
    collector = None if args.collector == "none" else _port(args, args.collector, 2)
    collector_kind = SocketKind.PULL if args.collector_kind == "pull" else SocketKind.SUB
    with ZmqNetwork(name="clonesrv") as net:
        pair: ClonePairServer | None = None
        if args.pair is None:
            server = CloneServer(
                net,
                publisher=publisher,
                snapshot=snapshot,
                collector=collector,
                collector_kind=collector_kind,
                heartbeat=args.heartbeat,
                extensions=args.extensions,
                publisher_options=shutdown_options(args, SocketOptions(sndhwm=args.sndhwm)),
                snapshot_options=shutdown_options(args, SocketOptions(sndhwm=args.snapshot_sndhwm)),
            )
        else:
            primary = args.pair == "primary"
            peer = 5566 if primary else 5556
            pair = ClonePairServer(
                net,
                primary=primary,
                publisher=publisher,
                snapshot=snapshot,
                collector=collector or _port(args, None, 2),
                collector_kind=collector_kind,
                state_pub="tcp://*:5003" if primary else "tcp://*:5004",
                state_sub="tcp://localhost:5004" if primary else "tcp://localhost:5003",
                peer_snapshot=f"tcp://localhost:{peer}",
                peer_publisher=f"tcp://localhost:{peer + 1}",
                heartbeat=args.heartbeat,
                extensions=args.extensions,
                publisher_options=shutdown_options(args, SocketOptions(sndhwm=args.sndhwm)),
            )
            server = pair.server
        stopping = asyncio.Event()

        async def publish() -> None:
            n = 0
            updates = market_updates(args.seed, symbols)
            while (args.count is None or n < args.count) and not stopping.is_set():
                await asyncio.sleep(args.interval)
                if stopping.is_set():
                    return
                if pair is not None and not pair.active:
                    continue  # a passive server follows its peer
                key, body = next(updates)
                await server.set(key, body)
                n += 1
            print(f"PUBLISHED {n} sequence={server.sequence}", flush=True)
            await stopping.wait()

        async def stop() -> bool:
            stopping.set()
            return await (pair or server).shutdown(args.shutdown_timeout)

        async with pair or server:
            return await serve_until_signalled(
                publish(),
                stop,
                ready=f"READY {server.snapshot_endpoint} {server.publisher_endpoint}",
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    return run_main(parse_args, serve, argv)


if __name__ == "__main__":
    sys.exit(main())
