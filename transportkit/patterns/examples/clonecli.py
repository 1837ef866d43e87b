"""Clone client (the Guide's ``clonecli``): keeps a local copy of a Clone server's map.

Run ``python -m transportkit.patterns.examples.clonecli`` next to ``clonesrv``. It
subscribes, takes a snapshot, applies updates in sequence order and resynchronises on
any gap or server silence, printing what it does; on exit (``--duration`` elapsed) it
prints ``DONE`` with its counters and one ``KEY <key> <last price>`` line per key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

from transportkit.patterns.clone import CloneClient, CloneEvent
from transportkit.trading import MarketData
from transportkit.zmq_backend import ZmqNetwork


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m transportkit.patterns.examples.clonecli",
        description="Clone (12/CHP) client mirroring a market-data last-value cache.",
    )
    parser.add_argument(
        "--snapshot", default="tcp://127.0.0.1:5556", help="server ROUTER (%(default)s)"
    )
    parser.add_argument(
        "--updates", default="tcp://127.0.0.1:5557", help="server PUB (%(default)s)"
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
        client = CloneClient(
            net,
            snapshot=args.snapshot,
            updates=args.updates,
            subtree=args.subtree.encode(),
            timeout=args.timeout,
            on_event=report,
        )
        async with client:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.Event().wait(), args.duration)
        print(f"DONE sequence={client.sequence} {client.stats}", flush=True)
        for key, body in sorted(client.state.items()):
            print(f"KEY {key.decode(errors='replace')} {MarketData.FromString(body).last}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    try:
        return asyncio.run(follow(parse_args(argv)))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
