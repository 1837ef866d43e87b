"""maxmsgsize in the sim: what is counted and traced (the behaviour itself is compared
with libzmq's in tests/conformance/test_maxmsgsize.py)."""

from __future__ import annotations

import asyncio

from transportkit import SocketOptions
from transportkit.sim_backend import Constant, Simulation

L = 0.001


def test_an_oversized_frame_is_counted_traced_and_drops_what_follows_it() -> None:
    sim = Simulation(seed=1, latency=Constant(L))
    rx, tx = sim.node("rx"), sim.node("tx")

    async def main() -> tuple[int | None, int | None, list[list[bytes]]]:
        pull = rx.puller(bind="tcp://*:7200", options=SocketOptions(maxmsgsize=10))
        push = tx.pusher(connect="tcp://rx:7200", options=SocketOptions(reconnect_ivl=20))
        await asyncio.sleep(10 * L)
        await push.send([b"ok"])
        await push.send([b"x" * 11])  # over the limit
        await push.send([b"behind"])  # in flight behind it: lost with the connection
        await asyncio.sleep(10 * L)
        await push.send([b"later"])  # queued, then sent once the sender has reconnected
        got = [await pull.recv(timeout=1), await pull.recv(timeout=1)]
        return pull.stats.dropped, push.stats.dropped, got

    rx_dropped, tx_dropped, got = sim.run(main())
    assert got == [[b"ok"], [b"later"]]
    assert rx_dropped == 1  # the oversized message, counted where it was refused
    assert tx_dropped == 1  # what was in flight behind it, as for any dropped connection
    drops = [e for e in sim.trace.events if e.kind == "drop"]
    assert [(e.subject, e.detail) for e in drops] == [
        ("rx/pull0", "maxmsgsize x1 m2 frame of 11 bytes > 10"),
        ("tx/push0", "disconnect x1 in flight"),
    ]
    kinds = [e.kind for e in sim.trace.events]
    assert kinds.index("disconnect") > kinds.index("drop")
    assert kinds.count("connect") == 2  # the sender connected again


def test_the_limit_is_per_frame_and_the_same_run_replays() -> None:
    def run() -> tuple[list[list[bytes]], str]:
        sim = Simulation(seed=3)
        node = sim.node("n")

        async def main() -> list[list[bytes]]:
            pull = node.puller(bind="tcp://*:7201", options=SocketOptions(maxmsgsize=4))
            push = node.pusher(connect="tcp://n:7201")
            await push.send([b"abcd", b"efgh", b"ijkl"])  # 12 bytes, every frame fits
            return [await pull.recv(timeout=1)]

        return sim.run(main()), sim.trace.hash

    first, second = run(), run()
    assert first[0] == [[b"abcd", b"efgh", b"ijkl"]]
    assert first == second
