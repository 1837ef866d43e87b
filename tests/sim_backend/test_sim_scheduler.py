"""Seeded interleavings: the fifo, random and pct schedulers, their record and replay."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit import OptionError, SimulationError, SocketOptions
from transportkit.sim_backend import (
    Node,
    PCTScheduler,
    RandomScheduler,
    ReplayScheduler,
    Schedule,
    Scheduler,
    Simulation,
    Uniform,
)

MODES = ("fifo", "random", "pct")


async def _two_tasks() -> list[str]:
    """The issue's program: two tasks await ``asyncio.sleep(0)`` once, then record
    their name; the order silently depends on the scheduler."""
    order: list[str] = []

    async def worker(name: str) -> None:
        await asyncio.sleep(0)
        order.append(name)

    await asyncio.gather(worker("a"), worker("b"))
    return order


def _exposed(seed: int, **kwargs: object) -> bool:
    sim = Simulation(seed, **kwargs)  # type: ignore[arg-type]
    return sim.run(_two_tasks()) != ["a", "b"]


def test_random_mode_exposes_the_two_task_order_dependence_on_half_the_seeds() -> None:
    exposed = sum(_exposed(seed, scheduler="random") for seed in range(100))
    assert exposed >= 50, exposed


def test_pct_mode_exposes_the_two_task_order_dependence_too() -> None:
    exposed = sum(_exposed(seed, scheduler="pct") for seed in range(100))
    assert exposed >= 40, exposed


@pytest.mark.parametrize("shuffle_ties", [False, True])
def test_fifo_never_exposes_it(shuffle_ties: bool) -> None:
    assert not any(_exposed(seed, shuffle_ties=shuffle_ties) for seed in range(100))
    assert not any(
        _exposed(seed, scheduler="fifo", shuffle_ties=shuffle_ties) for seed in range(100)
    )


def _pubsub_program(sim: Simulation) -> list[bytes]:
    """Three publishing tasks and two subscribers: plenty of ready callbacks at once."""
    options = SocketOptions(sndhwm=0, rcvhwm=0)
    exchange, desk = sim.node("exchange"), sim.node("desk")

    async def main() -> list[bytes]:
        pub = exchange.publisher(bind="tcp://*:5556", options=options)
        subs = [desk.subscriber(connect="tcp://exchange:5556", options=options) for _ in range(2)]
        await asyncio.sleep(0.01)

        async def publish(name: bytes) -> None:
            for i in range(20):
                await pub.send([name, b"%d" % i])
                await asyncio.sleep(0)

        async def receive(sub: object) -> list[bytes]:
            got = []
            for _ in range(60):
                frames = await sub.recv()  # type: ignore[attr-defined]
                got.append(b":".join(frames))
            return got

        readers = [asyncio.create_task(receive(sub)) for sub in subs]
        await asyncio.gather(*(publish(n) for n in (b"x", b"y", b"z")))
        results = await asyncio.gather(*readers)
        for sock in (pub, *subs):
            sock.close()
        return [m for got in results for m in got]

    return sim.run(main(), timeout=60)


def test_fifo_keeps_todays_run_and_hash() -> None:
    plain, fifo, replay = Simulation(3), Simulation(3, scheduler="fifo"), Simulation(3)
    replay = Simulation(3, scheduler=ReplayScheduler([]))
    runs = [_pubsub_program(sim) for sim in (plain, fifo, replay)]
    assert runs[0] == runs[1] == runs[2]
    assert plain.trace.hash == fifo.trace.hash == replay.trace.hash
    assert plain.schedule.describe() == fifo.schedule.describe() == "FIFO"
    assert len(plain.schedule) == 0 and replay.schedule.steps > 0
    assert "schedule" not in plain.trace.counts


@pytest.mark.parametrize("mode", ["random", "pct"])
def test_a_recorded_schedule_replays_the_same_run(mode: str) -> None:
    sim = Simulation(5, scheduler=mode, latency=Uniform(10e-6, 90e-6))
    first = _pubsub_program(sim)
    assert len(sim.schedule) > 0
    assert sim.trace.counts["schedule"] == len(sim.schedule)  # part of the trace hash
    assert sim.trace.hash != _fifo_hash(5)
    # Through JSON, as a failure report would store it.
    record = Schedule.from_json(json.loads(json.dumps(sim.schedule.to_json())))
    assert record.choices == sim.schedule.choices and record.mode == mode
    again = Simulation(5, scheduler=record.replayer(), latency=Uniform(10e-6, 90e-6))
    assert _pubsub_program(again) == first
    assert again.trace.hash == sim.trace.hash
    assert again.schedule.choices == sim.schedule.choices


def _fifo_hash(seed: int) -> str:
    sim = Simulation(seed, latency=Uniform(10e-6, 90e-6))
    _pubsub_program(sim)
    return sim.trace.hash


@pytest.mark.parametrize("shuffle_ties", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_same_seed_same_run_in_every_mode(mode: str, shuffle_ties: bool) -> None:
    a = Simulation(11, scheduler=mode, shuffle_ties=shuffle_ties)
    b = Simulation(11, scheduler=mode, shuffle_ties=shuffle_ties)
    assert _pubsub_program(a) == _pubsub_program(b)
    assert a.trace.hash == b.trace.hash
    assert a.schedule.to_json() == b.schedule.to_json()


@pytest.mark.parametrize("mode", ["random", "pct"])
def test_the_scheduler_rng_is_not_the_simulation_rng(mode: str) -> None:
    sim = Simulation(8, scheduler=mode)
    sim.run(_two_tasks())
    sim.run(_two_tasks())
    assert len(sim.schedule) > 0
    assert sim.rng.getstate() == random.Random(8).getstate()


def test_describe_names_the_steps_that_differ_from_fifo() -> None:
    record = Schedule("random", 1)
    assert record.describe() == "FIFO"
    record.add(3, 1)
    assert record.describe() == "FIFO except step 3 (index 1)"
    record.add(17, 2)
    assert record.describe() == "FIFO except steps 3 (index 1) and 17 (index 2)"
    for step in range(20, 40):
        record.add(step, 1)
    assert record.describe().endswith("and 12 more")
    assert record.to_json()["choices"][:2] == [[3, 1], [17, 2]]


def test_replay_falls_back_to_fifo_where_a_choice_no_longer_fits() -> None:
    sim = Simulation(1, scheduler=ReplayScheduler({1: 1, 2: 5, 10_000: 1}))
    assert sim.run(_two_tasks()) == ["b", "a"]  # step 1 ran b's first step first
    assert sim.schedule.choices == [(1, 1)]  # index 5 never fit, step 10,000 never came


def test_bad_schedulers_are_refused_clearly() -> None:
    with pytest.raises(OptionError, match="unknown scheduler 'lifo'"):
        Simulation(1, scheduler="lifo")
    with pytest.raises(OptionError, match="Scheduler"):
        Simulation(1, scheduler=object())  # type: ignore[arg-type]
    with pytest.raises(OptionError):
        PCTScheduler(depth=0)
    with pytest.raises(OptionError):
        RandomScheduler(fifo_weight=0)
    with pytest.raises(ValueError, match="twice"):
        ReplayScheduler([(1, 1), (1, 2)])

    class OutOfRange(Scheduler):
        def choose(self, step: int, ready: Sequence[asyncio.Handle], n: int) -> int:
            return len(ready)

    with pytest.raises(SimulationError, match="chose 2 at step"):
        Simulation(1, scheduler=OutOfRange()).run(_two_tasks())


def test_pct_change_points_are_seeded_and_bounded() -> None:
    a, b = PCTScheduler(depth=4, horizon=50), PCTScheduler(depth=4, horizon=50)
    a.bind(3)
    b.bind(3)
    assert a.change_points == b.change_points
    assert len(a.change_points) == 3 and all(0 <= p < 50 for p in a.change_points)
    assert PCTScheduler(depth=1).change_points == ()


# -- ZeroMQ's guarantees hold in every mode ----------------------------------------------


def _guarantees(seed: int, mode: str, kind: str) -> None:
    """Several sender tasks, each with its own socket, send numbered three-frame
    messages as fast as they can; the receiver checks that every message is whole and
    that each sender's messages arrive in order (per-pipe FIFO)."""
    sim = Simulation(seed, scheduler=mode, latency=Uniform(1e-6, 200e-6))
    options = SocketOptions(sndhwm=0, rcvhwm=0)
    senders, count = 3, 15

    async def sender(node: Node, index: int) -> None:
        sock: Any
        if kind == "pushpull":
            sock = node.pusher(connect="tcp://hub:7000", options=options)
        else:
            sock = node.publisher(bind=f"tcp://*:{7100 + index}", options=options)
            await asyncio.sleep(0.01)  # past the slow joiner
        for i in range(count):
            await sock.send([b"s%d" % index, b"%d" % i, b"end-%d-%d" % (index, i)])
            if i % 3 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(1)
        sock.close()

    async def main() -> None:
        hub = sim.node("hub")
        sock: Any
        if kind == "pushpull":
            sock = hub.puller(bind="tcp://*:7000", options=options)
        else:
            sock = hub.subscriber(options=options)
            sock.subscribe(b"")
            for index in range(senders):
                sock.connect(f"tcp://sender{index}:{7100 + index}")
        for index in range(senders):
            sim.node(f"sender{index}").spawn(sender(sim.node(f"sender{index}"), index))
        last = [-1] * senders
        for _ in range(senders * count):
            name, number, tail = await sock.recv()
            index, i = int(name[1:]), int(number)
            assert tail == b"end-%d-%d" % (index, i), "a multipart message was torn"
            assert i == last[index] + 1, f"sender {index}: {i} after {last[index]}"
            last[index] = i
        sock.close()

    sim.run(main(), timeout=60)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    mode=st.sampled_from(MODES),
    kind=st.sampled_from(["pushpull", "pubsub"]),
)
def test_per_pipe_fifo_and_multipart_atomicity_hold_in_every_mode(
    seed: int, mode: str, kind: str
) -> None:
    _guarantees(seed, mode, kind)
