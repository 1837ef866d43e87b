"""Clone client (the Guide's ``clonecli``): keeps a local copy of a Clone server's map.

Run ``python -m transportkit.examples.clonecli`` next to ``clonesrv``. It
subscribes, takes a snapshot, applies updates in sequence order and resynchronises on
any gap, restart or server silence, printing what it does; on exit (``--duration``
elapsed) it prints ``DONE`` with its counters and one ``KEY <key> <value>`` line per
key (the last price, for ``MARKET.`` keys).

``--backup SNAPSHOT,UPDATES`` adds a second server to fail over to (the Guide's
model 6 client, next to ``clonesrv --pair``); ``--collector`` (repeatable) names the
servers' collectors, and ``--set KEY=VALUE`` (repeatable, with ``--ttl``) publishes
updates to them once synced; ``--collector-kind push`` sends them on a PUSH, for a
PULL collector (the Guide's model 5 ``clonesrv5``, or ``clonesrv --collector-kind
pull``). The Guide's ``clonesrv5`` answers no snapshot request for the whole map: give
it a ``--subtree`` (without one the client prints a ``TIMEOUT`` line every
``--timeout`` seconds and stays unsynced).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
from collections.abc import Sequence

from transportkit import SocketKind, Timeout
from transportkit.examples._main import program_parser
from transportkit.patterns.clone import CloneClient, CloneEvent
from transportkit.trading import MarketData
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = program_parser(
        "clonecli",
        "Clone (12/CHP) client mirroring a market-data last-value cache.",
    )
    parser.add_argument(
        "--snapshot", default="tcp://127.0.0.1:5556", help="server ROUTER (%(default)s)"
    )
    parser.add_argument(
        "--updates", default="tcp://127.0.0.1:5557", help="server PUB (%(default)s)"
    )
    parser.add_argument(
        "--backup",
        action="append",
        default=[],
        metavar="SNAPSHOT,UPDATES",
        help="another server to fail over to (repeatable)",
    )
    parser.add_argument(
        "--collector", action="append", default=[], help="a server's collector (repeatable)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="publish an update"
    )
    parser.add_argument(
        "--collector-kind",
        choices=("pub", "push"),
        default="pub",
        help="socket for --set: pub (12/CHP) or push (the Guide's model 5) (%(default)s)",
    )
    parser.add_argument("--ttl", type=float, help="seconds the --set values live")
    parser.add_argument(
        "--heartbeat", type=float, default=1.0, help="the servers' HUGZ interval (%(default)s)"
    )
    parser.add_argument("--subtree", default="", help="key prefix to follow (default: all)")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds of server silence (%(default)s)"
    )
    parser.add_argument("--duration", type=float, help="seconds to run (default: for ever)")
    parser.add_argument("--verbose", action="store_true", help="print every applied update")
    return parser.parse_args(argv)


async def follow(args: argparse.Namespace) -> int:
    """Follow the server for ``--duration`` seconds, then print the state."""

    def report(event: CloneEvent) -> None:
        if event.kind in ("apply", "discard") and not args.verbose:
            return
        extra = f" expected={event.expected}" if event.kind == "gap" else ""
        print(f"{event.kind.upper()} sequence={event.sequence}{extra}", flush=True)

    with ZmqNetwork(name="clonecli") as net:
        backups = [tuple(b.split(",", 1)) for b in args.backup]
        if any(len(b) != 2 for b in backups):
            print("--backup takes SNAPSHOT,UPDATES", file=sys.stderr)
            return 2
        client = CloneClient(
            net,
            snapshot=args.snapshot,
            updates=args.updates,
            backups=[(b[0], b[1]) for b in backups],
            collector=args.collector or None,
            collector_kind=SocketKind.PUSH if args.collector_kind == "push" else SocketKind.PUB,
            subtree=args.subtree.encode(),
            timeout=args.timeout,
            heartbeat=args.heartbeat,
            on_event=report,
        )

        async def publish() -> None:
            await client.wait_for(lambda c: c.synced, math.inf)
            await asyncio.sleep(0.2)  # the collector PUB connects meanwhile
            for item in args.set:
                key, _, value = item.partition("=")
                try:
                    uid = await client.set(key.encode(), value.encode(), ttl=args.ttl)
                except Timeout as exc:  # a PUSH whose collector cannot take it
                    print(f"SET-FAILED {key} {exc}", flush=True)
                    continue
                print(f"SET {key} uuid={uid.hex()}", flush=True)

        async with client:
            setter = asyncio.ensure_future(publish()) if args.set else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.Event().wait(), args.duration)
            if setter is not None:
                setter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await setter
        print(f"DONE sequence={client.sequence} {client.stats}", flush=True)
        for key, body in sorted(client.state.items()):
            print(f"KEY {key.decode(errors='replace')} {_show(key, body)}")
    return 0


def _show(key: bytes, body: bytes) -> str:
    """A ``MARKET.`` value's last price; anything else as text."""
    if key.startswith(b"MARKET."):
        with contextlib.suppress(Exception):
            return str(MarketData.FromString(body).last)
    return body.decode(errors="replace")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    try:
        return asyncio.run(follow(parse_args(argv)))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
