"""Invariants during a run: Simulation.always and Simulation.eventually."""

from __future__ import annotations

import asyncio

import pytest

from transportkit import InvariantViolation, OptionError, SimulationError, SocketOptions
from transportkit.sim_backend import Constant, Simulation


def test_always_fails_the_run_at_the_step_where_it_broke() -> None:
    sim = Simulation(4)
    state = {"position": 0, "after": False}
    sim.always(lambda: state["position"] >= 0, name="position never negative")

    async def main() -> None:
        await asyncio.sleep(1.0)
        state["position"] = 5
        await asyncio.sleep(1.5)
        state["position"] = -1  # the bug, at t=2.5
        await asyncio.sleep(0)
        state["after"] = True  # never reached: the run stopped at the violation

    with pytest.raises(InvariantViolation) as caught:
        sim.run(main())
    error = caught.value
    assert isinstance(error, SimulationError)
    assert error.name == "position never negative" and error.kind == "always"
    assert error.time == pytest.approx(2.5) and error.seed == 4
    assert "'position never negative'" in str(error) and "t=2.500000s" in str(error)
    assert "seed 4" in str(error)
    assert error.events and error.events[-1].kind == "invariant"
    assert not state["after"]


def test_always_is_checked_after_simpy_events_too() -> None:
    # Nobody receives, so no asyncio callback runs when the messages arrive: only the
    # SimPy delivery events can notice the fourth message queued at the subscriber.
    sim = Simulation(1, latency=Constant(0.001))
    exchange, desk = sim.node("exchange"), sim.node("desk")
    options = SocketOptions(sndhwm=0, rcvhwm=0)

    async def main() -> None:
        pub = exchange.publisher(bind="tcp://*:5556", options=options)
        sub = desk.subscriber(connect="tcp://exchange:5556", options=options)
        await asyncio.sleep(0.1)
        sim.always(lambda: len(sim.trace.pending) >= 0, name="registered mid-run")
        sim.always(lambda: sim.trace.counts["deliver"] < 4, name="at most 3 delivered")
        for i in range(6):
            await pub.send([b"%d" % i])
            await asyncio.sleep(0.01)  # message i arrives at 0.101 + 0.01 * i
        await asyncio.sleep(1)
        pub.close()
        sub.close()

    with pytest.raises(InvariantViolation, match="at most 3 delivered") as caught:
        sim.run(main())
    assert caught.value.time == pytest.approx(0.131)


def test_a_predicate_that_raises_is_a_violation_with_its_cause() -> None:
    sim = Simulation(2)
    book: dict[str, int] = {"AAPL": 1}
    sim.always(lambda: book["AAPL"] > 0, name="book has AAPL")

    async def main() -> None:
        await asyncio.sleep(0.5)
        del book["AAPL"]
        await asyncio.sleep(0.5)

    with pytest.raises(InvariantViolation, match="raised KeyError") as caught:
        sim.run(main())
    assert isinstance(caught.value.__cause__, KeyError)


def test_eventually_holds_or_fails_exactly_at_its_deadline() -> None:
    sim = Simulation(3)
    state = {"filled": False}

    async def fill_at(t: float) -> None:
        await asyncio.sleep(t)
        state["filled"] = True

    async def main(fill: float | None) -> None:
        sim.eventually(lambda: state["filled"], within=2.0, name="order filled")
        filler = asyncio.create_task(fill_at(fill)) if fill is not None else None
        await asyncio.sleep(10.0)  # nothing else happens until then
        if filler is not None:
            await filler

    sim.run(main(1.5))  # filled within 2 s: holds
    state["filled"] = False
    start = sim.now
    with pytest.raises(InvariantViolation, match="'order filled' did not hold within 2 s") as c:
        sim.run(main(None))
    assert c.value.kind == "eventually"
    assert c.value.time == pytest.approx(start + 2.0)


def test_without_invariants_the_run_is_unchanged() -> None:
    def program(sim: Simulation) -> str:
        async def main() -> None:
            for _ in range(3):
                await asyncio.sleep(0.1)

        sim.run(main())
        return sim.trace.hash

    checked = Simulation(9)
    checked.always(lambda: True, name="trivially true")
    assert program(Simulation(9)) == program(checked)


@pytest.mark.parametrize("mode", ["fifo", "random", "pct"])
def test_invariants_work_in_every_scheduler_mode(mode: str) -> None:
    order: list[str] = []

    async def worker(name: str) -> None:
        await asyncio.sleep(0)
        order.append(name)

    async def main() -> None:
        await asyncio.gather(worker("a"), worker("b"))

    outcomes = []
    for seed in range(20):
        sim = Simulation(seed, scheduler=mode)
        order.clear()
        sim.always(lambda: order[:1] != ["b"], name="a resumes first")
        try:
            sim.run(main())
            outcomes.append("ok")
        except InvariantViolation:
            outcomes.append("violated")
    assert ("violated" in outcomes) == (mode != "fifo")


def test_bad_invariants_are_refused() -> None:
    sim = Simulation(1)
    with pytest.raises(OptionError):
        sim.always(42)  # type: ignore[arg-type]
    with pytest.raises(OptionError):
        sim.eventually(lambda: True, within=-1)
    with pytest.raises(OptionError):
        sim.eventually(lambda: True, within=float("inf"))
