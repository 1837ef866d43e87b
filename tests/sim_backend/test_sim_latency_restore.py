"""Ending a latency spike gives each link back the latency it had, per direction.

Issue 11, point 9: ``SetLatency(a, b, None)`` (and a scenario's ``latency`` fault
without a model) used to reset the link to the simulation's default latency, so a 5 ms
link came back at 50 us after a 20 ms spike.
"""

from __future__ import annotations

import asyncio

import pytest

from transportkit.scenario import load, run_scenario
from transportkit.sim_backend import Constant, SetLatency, Simulation, apply_fault, schedule_faults

from .conftest import VIRTUAL_LIMIT


def _one_way(sim: Simulation, src: str, dst: str, port: int) -> float:
    """The delay of one message from node ``src`` to node ``dst`` (over tcp), now."""
    sender, receiver = sim.node(src), sim.node(dst)

    async def measure() -> float:
        with (
            receiver.puller(bind=f"tcp://*:{port}") as pull,
            sender.pusher(connect=f"tcp://{dst}:{port}") as push,
        ):
            await asyncio.sleep(0.5)  # connected, whatever the latency
            start = sim.now
            await push.send([b"x"])
            await pull.recv(timeout=10)
            return sim.now - start

    return sim.run(measure(), timeout=VIRTUAL_LIMIT)


def test_a_spike_on_a_5_ms_link_ends_back_at_5_ms_not_at_the_default() -> None:
    sim = Simulation(latency=Constant(50e-6))
    sim.set_latency("desk", "risk", Constant(0.005))
    assert _one_way(sim, "desk", "risk", 7000) == pytest.approx(0.005)
    apply_fault(sim, SetLatency("desk", "risk", Constant(0.020)))
    assert _one_way(sim, "desk", "risk", 7001) == pytest.approx(0.020)
    apply_fault(sim, SetLatency("desk", "risk", None))
    assert _one_way(sim, "desk", "risk", 7002) == pytest.approx(0.005)  # was 50e-6
    assert _one_way(sim, "risk", "desk", 7003) == pytest.approx(0.005)


def test_each_direction_gets_its_own_latency_back() -> None:
    sim = Simulation(latency=Constant(50e-6))
    sim.set_latency("a", "b", Constant(0.005), both_ways=False)
    sim.set_latency("b", "a", Constant(0.002), both_ways=False)
    schedule_faults(
        sim,
        [
            (1.0, SetLatency("a", "b", Constant(0.020))),
            (2.0, SetLatency("a", "b", Constant(0.030))),  # a second spike, no restore between
            (3.0, SetLatency("a", "b", None)),
        ],
    )
    sim.run_until(2.5)
    assert (sim.link("a", "b").latency, sim.link("b", "a").latency) == (
        Constant(0.030),
        Constant(0.030),
    )
    sim.run_until(3.5)
    assert sim.link("a", "b").latency == Constant(0.005)
    assert sim.link("b", "a").latency == Constant(0.002)
    faults = [(e.time, e.subject, e.detail) for e in sim.trace.events if e.kind == "fault"]
    assert faults[-2:] == [
        (3.0, "a->b", "set_latency Constant(delay=0.005)"),
        (3.0, "b->a", "set_latency Constant(delay=0.002)"),
    ]


def test_a_one_way_spike_restores_only_its_direction() -> None:
    sim = Simulation(latency=Constant(50e-6))
    sim.set_latency("a", "b", Constant(0.005))
    apply_fault(sim, SetLatency("a", "b", Constant(0.020), both_ways=False))
    sim.set_latency("b", "a", Constant(0.001), both_ways=False)  # changed during the spike
    apply_fault(sim, SetLatency("a", "b", None))  # both ways: b -> a was not spiked
    assert sim.link("a", "b").latency == Constant(0.005)
    assert sim.link("b", "a").latency == Constant(0.001)


def test_ending_a_spike_with_none_on_an_unspiked_link_changes_nothing() -> None:
    sim = Simulation(latency=Constant(50e-6))
    sim.set_latency("a", "b", Constant(0.005))
    apply_fault(sim, SetLatency("a", "b", None))
    assert sim.link("a", "b").latency == Constant(0.005)


def test_set_latency_during_a_spike_is_the_link_s_new_own_latency() -> None:
    sim = Simulation(latency=Constant(50e-6))
    apply_fault(sim, SetLatency("a", "b", Constant(0.020)))
    sim.set_latency("a", "b", Constant(0.003))  # a permanent change ends the spike
    apply_fault(sim, SetLatency("a", "b", None))
    assert sim.link("a", "b").latency == Constant(0.003)


SCENARIO = """
[scenario]
name = "spike-on-a-slow-link"
duration = 3.0
drain = 0.5
seed = 1
latency = { model = "constant", delay_us = 50 }

[[link]]
a = "exchange"
b = "desk"
latency = { model = "constant", delay_us = 5000 }

[[component]]
name = "feed"
kind = "market_data_publisher"
node = "exchange"
bind = "tcp://*:5556"
rate = 100

[[component]]
name = "desk"
kind = "market_data_subscriber"
node = "desk"
source = "feed"
connect = "tcp://exchange:5556"

[[fault]]
at = 1.0
kind = "set_latency"
a = "exchange"
b = "desk"
latency = { model = "constant", delay_us = 20000 }

[[fault]]
at = 2.0
kind = "set_latency"
a = "exchange"
b = "desk"
"""


def test_a_scenario_latency_fault_without_a_model_restores_the_link_s_own(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "spike.toml"
    path.write_text(SCENARIO)
    scenario = load(path)
    assert scenario.faults[-1][1] == SetLatency("exchange", "desk", None)
    result = run_scenario(scenario)
    sim = result.simulation
    assert sim is not None
    assert sim.link("exchange", "desk").latency == Constant(0.005)
    assert sim.link("desk", "exchange").latency == Constant(0.005)
    ends = [e.detail for e in sim.trace.events if e.kind == "fault" and e.time == 2.0]
    assert ends == ["set_latency Constant(delay=0.005)"]
