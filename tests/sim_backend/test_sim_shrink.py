"""Shrinking a failing run: the smallest deviation from FIFO and the fewest faults."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

import pytest

from transportkit import SocketOptions, Timeout
from transportkit.sim_backend import (
    Constant,
    Crash,
    FaultSchedule,
    Hold,
    Node,
    Partition,
    Release,
    Repair,
    ReplayScheduler,
    Restart,
    Scheduler,
    SetLatency,
    Simulation,
    schedule_faults,
    shrink,
)
from transportkit.sim_backend._shrink import describe_faults

# The bug needs both: the quote task resuming before the cache warmer (an order FIFO
# never produces), and the exchange unreachable when the quote falls back to asking it.
BUG = (4.0, Partition("desk", "exchange"))
BUG_END = (6.0, Repair("desk", "exchange"))
NOISE: FaultSchedule = [
    (0.5, SetLatency("desk", "backoffice", Constant(0.02))),
    (1.0, Crash("backoffice")),
    (1.5, Partition("exchange", "backoffice")),
    (2.0, Restart("backoffice")),
    (2.5, Repair("exchange", "backoffice")),
    (3.0, SetLatency("desk", "backoffice", None)),
    (3.5, Hold("desk", "backoffice")),
    (4.5, Release("desk", "backoffice")),
    (7.0, Crash("backoffice")),
]
FAULTS = sorted([*NOISE, BUG, BUG_END], key=lambda item: item[0])


async def _exchange(node: Node) -> None:
    with node.worker(bind="tcp://*:5555") as rep:
        while True:
            (symbol,) = await rep.recv()
            await rep.send([symbol, b"187.20"])


def _desk(sim: Simulation) -> Coroutine[Any, Any, bytes | None]:
    desk = sim.node("desk")

    async def main() -> bytes | None:
        cache: dict[bytes, bytes] = {}
        await asyncio.sleep(4.0)

        async def warm() -> None:
            await asyncio.sleep(0)
            cache[b"AAPL"] = b"187.20"

        async def quote() -> bytes | None:
            await asyncio.sleep(0)
            if b"AAPL" in cache:
                return cache[b"AAPL"]
            options = SocketOptions(rcvtimeo=1000, sndtimeo=1000, linger=0)
            with desk.requester(connect="tcp://exchange:5555", options=options) as req:
                try:
                    return (await req.request([b"AAPL"]))[1]
                except Timeout:
                    return None

        async def ticker(n: int) -> None:  # noise: more ready callbacks to reorder
            for _ in range(n):
                await asyncio.sleep(0)

        tickers = [asyncio.create_task(ticker(n)) for n in (3, 5)]
        warming = asyncio.create_task(warm(), name="warm")
        price = await asyncio.create_task(quote(), name="quote")
        await warming
        await asyncio.gather(*tickers)
        return price

    return main()


def _fails(scheduler: Scheduler | str, faults: FaultSchedule | None, seed: int = 0) -> bool:
    sim = Simulation(seed, scheduler=scheduler)
    sim.node("exchange", main=_exchange)
    sim.node("backoffice")
    schedule_faults(sim, faults or [])
    price = sim.run(_desk(sim), timeout=60)
    return price is None


class _Probe(ReplayScheduler):
    """Replays choices and notes, at each, which tasks it put in which order."""

    def __init__(self, choices: Sequence[tuple[int, int]]) -> None:
        super().__init__(choices)
        self.seen: dict[int, tuple[str, str]] = {}

    def choose(self, step: int, ready: Sequence[asyncio.Handle], n: int) -> int:
        index = super().choose(step, ready, n)
        if index:
            owners = [getattr(h._callback, "__self__", None) for h in ready]  # type: ignore[attr-defined]
            names = [o.get_name() if isinstance(o, asyncio.Task) else "" for o in owners]
            self.seen[step] = (names[0], names[index])
        return index


def test_fifo_hides_the_bug_and_so_does_the_network_alone() -> None:
    assert not _fails("fifo", FAULTS)
    assert not _fails("fifo", None)


def test_a_bug_found_in_random_mode_shrinks_to_one_reordering_and_one_partition() -> None:
    seed = next(s for s in range(50) if _fails("random", FAULTS, s))
    sim = Simulation(seed, scheduler="random")
    sim.node("exchange", main=_exchange)
    sim.node("backoffice")
    schedule_faults(sim, FAULTS)
    assert sim.run(_desk(sim), timeout=60) is None
    record = sim.schedule
    assert len(record) > 3  # many choices off FIFO; most are irrelevant

    def fails(scheduler: ReplayScheduler, faults: FaultSchedule | None) -> bool:
        return _fails(scheduler, faults, seed)

    shrunk = shrink(fails, record, FAULTS)
    assert shrunk.complete
    # The 2 s partition is halved while the run still fails: 1 s still outlasts the
    # quote's 1 s timeout, 0.5 s does not.
    assert shrunk.faults == [BUG, (5.0, Repair("desk", "exchange"))]
    assert len(shrunk.choices) == 1
    ((step, index),) = shrunk.choices
    assert index == 1
    assert shrunk.describe() == (
        f"FIFO except step {step} (index 1), and a 1 s partition between desk and exchange at t=4.0"
    )
    # Exactly that reordering: the quote task resumes before the warmer.
    probe = _Probe(shrunk.choices)
    assert _fails(probe, shrunk.faults, seed)
    assert probe.seen == {step: ("warm", "quote")}
    # And it is minimal: without the choice, or without the partition, it passes.
    assert not _fails(ReplayScheduler([]), shrunk.faults, seed)
    assert not _fails(shrunk.scheduler, [], seed)


def test_shrink_refuses_a_run_that_does_not_fail_on_replay() -> None:
    with pytest.raises(ValueError, match="does not fail when replayed"):
        shrink(lambda scheduler, faults: False, [(1, 1)], [])
    with pytest.raises(ValueError, match="max_runs"):
        shrink(lambda scheduler, faults: True, [], max_runs=0)


def test_shrink_stops_at_max_runs_and_says_so() -> None:
    calls = []

    def fails(scheduler: ReplayScheduler, faults: FaultSchedule | None) -> bool:
        calls.append(1)
        return len(scheduler.choices) >= 3  # needs 3 of the 10 choices

    shrunk = shrink(fails, [(s, 1) for s in range(10)], max_runs=4)
    assert not shrunk.complete and shrunk.runs == 4 == len(calls)
    assert shrunk.describe().endswith("(shrinking stopped at max_runs)")
    full = shrink(fails, [(s, 1) for s in range(10)])
    assert full.complete and len(full.choices) == 3


def test_faults_are_described_with_their_healing() -> None:
    assert describe_faults([]) == ""
    assert describe_faults([BUG, BUG_END]) == ("a 2 s partition between desk and exchange at t=4.0")
    assert describe_faults([(1.0, Crash("risk")), (2.5, Restart("risk")), (3.0, Crash("x"))]) == (
        "a 1.5 s crash of risk at t=1.0 and a crash of x at t=3.0 (no restart)"
    )


def test_a_stop_phrase_ends_shrinking_with_what_it_reached() -> None:
    calls: list[int] = []

    def fails(scheduler: ReplayScheduler, faults: FaultSchedule | None) -> bool:
        calls.append(1)
        return len(scheduler.choices) >= 3  # needs 3 of the 10 choices

    def stop() -> str | None:
        return "after its 1 s budget" if len(calls) >= 6 else None

    shrunk = shrink(fails, [(s, 1) for s in range(10)], stop=stop)
    assert shrunk.runs == 6 == len(calls) and not shrunk.complete
    assert shrunk.stopped == "after its 1 s budget"
    assert shrunk.describe().endswith("(shrinking stopped after its 1 s budget)")
    # Not the 10 choices it started from: the last failing candidate it reached.
    assert 3 <= len(shrunk.choices) < 10
    assert fails(shrunk.scheduler, None)


def test_faults_are_not_shortened_below_a_microsecond() -> None:
    def fails(scheduler: ReplayScheduler, faults: FaultSchedule | None) -> bool:
        return any(isinstance(f, Crash) for _, f in faults or [])  # any crash, however short

    shrunk = shrink(fails, [], [(1.0, Crash("a")), (2.0, Restart("a"))])
    assert shrunk.complete and shrunk.faults is not None
    (start, _), (end, _) = shrunk.faults
    assert 1e-6 <= end - start < 2e-6
