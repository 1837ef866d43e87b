"""Hold/release, seeded tie-breaking, and the determinism self-check."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings

from transportkit.sim_backend import Constant, Hold, Release, Simulation, schedule_faults
from transportkit.testing import check_determinism
from transportkit.testing.strategies import seeds


def fan_in(sim: Simulation, senders: int = 4, count: int = 20) -> asyncio.Future[list[bytes]]:
    """Several PUSH nodes send at the same instants to one PULL; return arrival order."""
    sink = sim.node("sink")

    async def main() -> list[bytes]:
        with sink.puller(bind="tcp://*:9000") as pull:
            pushes = [sim.node(f"p{i}").pusher(connect="tcp://sink:9000") for i in range(senders)]
            await asyncio.sleep(0.01)
            for n in range(count):
                for i, push in enumerate(pushes):
                    await push.send([b"%d:%d" % (i, n)])
            got = [(await pull.recv(timeout=1.0))[0] for _ in range(senders * count)]
            for push in pushes:
                push.close()
            return got

    return main()  # type: ignore[return-value]


def per_sender_order_holds(got: list[bytes]) -> bool:
    last: dict[bytes, int] = {}
    for item in got:
        sender, n = item.split(b":")
        if int(n) <= last.get(sender, -1):
            return False
        last[sender] = int(n)
    return True


def test_without_shuffling_simultaneous_arrivals_keep_schedule_order() -> None:
    sim = Simulation(seed=1, latency=Constant(1e-3))
    got = sim.run(fan_in(sim))
    assert got[:4] == [b"0:0", b"1:0", b"2:0", b"3:0"]


def test_shuffled_ties_explore_other_interleavings_but_keep_each_pipe_fifo() -> None:
    orders = set()
    for seed in range(8):
        sim = Simulation(seed=seed, latency=Constant(1e-3), shuffle_ties=True)
        got = sim.run(fan_in(sim))
        assert sorted(got) == sorted(b"%d:%d" % (i, n) for i in range(4) for n in range(20))
        assert per_sender_order_holds(got)
        orders.add(tuple(got))
    assert len(orders) > 1


@settings(max_examples=20, deadline=None)
@given(seed=seeds())
def test_shuffled_runs_are_still_a_function_of_the_seed(seed: int) -> None:
    check_determinism(fan_in, seed=seed, latency=Constant(1e-3), shuffle_ties=True)


def test_check_determinism_catches_a_run_that_leaks_outside_state() -> None:
    leaked = iter(range(100))

    def build(sim: Simulation) -> asyncio.Future[int]:
        async def main() -> int:
            await asyncio.sleep(next(leaked) * 0.1)
            return 1

        return main()  # type: ignore[return-value]

    with pytest.raises(AssertionError, match="diverged"):
        check_determinism(build)


def test_hold_stalls_traffic_without_breaking_connections() -> None:
    sim = Simulation(seed=2, latency=Constant(1e-3))
    a, b = sim.node("a"), sim.node("b")
    schedule_faults(sim, [(0.1, Hold("a", "b")), (5.0, Release("a", "b"))])

    async def main() -> list[tuple[float, bytes]]:
        with b.puller(bind="tcp://*:1") as pull, a.pusher(connect="tcp://b:1") as push:
            await asyncio.sleep(0.05)
            for i in range(3):
                await push.send([b"%d" % i])
                await asyncio.sleep(1.0)
            got = []
            for _ in range(3):
                msg = await pull.recv(timeout=10)
                got.append((round(sim.now, 3), msg[0]))
            return got

    got = sim.run(main())
    assert [m for _, m in got] == [b"0", b"1", b"2"]
    assert got[1][0] == 5.0 and got[2][0] == 5.0
    kinds = [e.kind for e in sim.trace.events]
    assert "disconnect" not in kinds
