"""One fault vocabulary: each fault class's name in snake case, in the classes, the
scenario files, the strategies, the sweep's --faults and the sim's trace; old names are
refused with the new one; every fault describes itself in words."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from hypothesis import given, settings

from transportkit.scenario._runner import load
from transportkit.scenario._spec import ScenarioError
from transportkit.scenario._sweep import FAULT_KINDS as SWEEP_KINDS
from transportkit.scenario._sweep import fault_kind, parse_fault_kinds
from transportkit.sim_backend import (
    FAULT_KINDS,
    Constant,
    Crash,
    DropConnection,
    Fault,
    Hold,
    LogNormal,
    Normal,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
    Simulation,
    Uniform,
    apply_fault,
)
from transportkit.testing.strategies import OUTAGE_KINDS, fault_schedules

CLASSES = (Crash, Restart, Partition, Repair, Hold, Release, DropConnection, SetLatency)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_every_kind_is_its_class_name_in_snake_case() -> None:
    assert tuple(_snake(cls.__name__) for cls in CLASSES) == FAULT_KINDS
    assert [cls.kind for cls in CLASSES] == list(FAULT_KINDS)
    # the outage kinds (strategies, sweep) are the kinds of the faults that start them
    assert OUTAGE_KINDS == SWEEP_KINDS
    assert set(OUTAGE_KINDS) <= set(FAULT_KINDS)
    assert fault_kind(SetLatency("a", "b", None)) == "set_latency"
    assert fault_kind(DropConnection("a", "b")) == "drop_connection"


HEAD = """
[scenario]
name = "vocabulary"
duration = 2.0

[[component]]
name = "feed"
kind = "market_data_publisher"
node = "exchange"
bind = "tcp://*:5556"
rate = 10

[[component]]
name = "desk"
kind = "market_data_subscriber"
node = "desk"
connect = "tcp://exchange:5556"
source = "feed"
"""

FAULT_TABLES = {
    "crash": 'node = "exchange"',
    "restart": 'node = "exchange"',
    "partition": 'a = "exchange"\nb = "desk"',
    "repair": 'a = "exchange"\nb = "desk"\nboth_ways = false',
    "hold": 'a = "exchange"\nb = "desk"',
    "release": 'a = "exchange"\nb = "desk"',
    "drop_connection": 'a = "exchange"\nb = "desk"',
    "set_latency": 'a = "exchange"\nb = "desk"\nlatency = { model = "constant", delay_us = 20000 }',
}


def _fault_file(tmp_path: Path, kind: str, body: str) -> Path:
    path = tmp_path / f"{kind}.toml"
    path.write_text(HEAD + f'\n[[fault]]\nat = 1.0\nkind = "{kind}"\n{body}\n')
    return path


def test_a_scenario_file_takes_every_kind_and_makes_that_class(tmp_path: Path) -> None:
    assert set(FAULT_TABLES) == set(FAULT_KINDS)
    for kind, body in FAULT_TABLES.items():
        ((at, fault),) = load(_fault_file(tmp_path, kind, body)).faults
        assert (at, fault.kind) == (1.0, kind)
    ((_, spike),) = load(_fault_file(tmp_path, "set_latency", FAULT_TABLES["set_latency"])).faults
    assert spike == SetLatency("exchange", "desk", Constant(0.02))


@pytest.mark.parametrize(
    ("old", "new"),
    [("latency", "set_latency"), ("spike", "set_latency"), ("drop", "drop_connection")],
)
def test_an_old_kind_in_a_scenario_file_names_the_new_one(
    tmp_path: Path, old: str, new: str
) -> None:
    path = _fault_file(tmp_path, old, FAULT_TABLES[new])
    with pytest.raises(ScenarioError) as caught:
        load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: [[fault]] #1 key 'kind': '{old}' is now '{new}'")
    assert message.endswith(f'write kind = "{new}"')


def test_an_unknown_kind_in_a_scenario_file_lists_the_kinds(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"must be one of 'crash', 'restart'.*'set_latency'"):
        load(_fault_file(tmp_path, "meltdown", 'node = "exchange"'))


def test_a_dropped_connection_refuses_both_ways(tmp_path: Path) -> None:
    """It was read and ignored (a dropped connection has no direction): a setting a file
    can write must do something, or be refused."""
    body = FAULT_TABLES["drop_connection"] + "\nboth_ways = false"
    with pytest.raises(ScenarioError, match=r"key 'both_ways': does not apply"):
        load(_fault_file(tmp_path, "drop_connection", body))


@pytest.mark.parametrize(("old", "new"), [("drop", "drop_connection"), ("spike", "set_latency")])
def test_an_old_strategy_kind_names_the_new_one(old: str, new: str) -> None:
    with pytest.raises(ValueError, match=f"fault kind '{old}' is now '{new}'"):
        fault_schedules(["a", "b"], kinds=("crash", old))


def test_an_unknown_strategy_kind_is_an_error_not_silently_ignored() -> None:
    # It used to be dropped without a word: kinds=("crash", "partiton") drew crashes only.
    with pytest.raises(ValueError, match="unknown fault kind 'partiton'"):
        fault_schedules(["a", "b"], kinds=("crash", "partiton"))


@settings(max_examples=30, deadline=None)
@given(fault_schedules(["a", "b"], kinds=("drop_connection", "set_latency"), max_faults=3))
def test_the_strategies_new_kinds_draw_their_faults(schedule: list[tuple[float, Fault]]) -> None:
    assert {fault.kind for _, fault in schedule} <= {"drop_connection", "set_latency"}


def test_the_faults_filter_takes_the_new_names_and_names_them_for_old_ones() -> None:
    assert parse_fault_kinds("set_latency,crash") == ("crash", "set_latency")
    with pytest.raises(ValueError, match="'latency' is now 'set_latency'"):
        parse_fault_kinds("crash,latency")


def test_the_trace_names_each_fault_by_its_kind() -> None:
    sim = Simulation(seed=0)
    sim.node("a")
    sim.node("b")
    faults: list[Fault] = [
        Partition("a", "b"),
        Repair("a", "b"),
        Hold("a", "b"),
        Release("a", "b"),
        SetLatency("a", "b", Constant(0.02)),
        SetLatency("a", "b", None),
        Crash("a"),
        Restart("a"),
    ]
    for fault in faults:
        apply_fault(sim, fault)
    words = [e.detail.split()[0] for e in sim.trace.events if e.kind == "fault"]
    assert set(words) <= set(FAULT_KINDS)
    assert "set_latency" in words

    def runs(kinds: list[str]) -> list[str]:
        return [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]

    assert runs(words) == runs([f.kind for f in faults])


def test_a_dropped_connection_is_traced_as_drop_connection() -> None:
    sim = Simulation(seed=0)
    a, b = sim.node("a"), sim.node("b")

    async def main() -> None:
        with a.pusher(bind="tcp://*:5555"), b.puller(connect="tcp://a:5555"):
            await asyncio.sleep(0.1)
            apply_fault(sim, DropConnection("a", "b", discard_queues=True))
            await asyncio.sleep(0.1)

    sim.run(main())
    details = [e.detail for e in sim.trace.events if e.kind == "fault"]
    assert details == ["drop_connection discard_queues"]


@pytest.mark.parametrize(
    ("fault", "text"),
    [
        (Crash("exchange"), "crash of exchange"),
        (Restart("exchange"), "restart of exchange"),
        (Partition("exchange", "desk-1"), "partition of exchange->desk-1, both ways"),
        (Repair("exchange", "desk-1", False), "repair of exchange->desk-1, one way"),
        (Hold("a", "b"), "hold on a->b (traffic waits), both ways"),
        (Release("a", "b", False), "release of a->b, one way"),
        (DropConnection("a", "b"), "connections between a and b dropped (they reconnect)"),
        (DropConnection("a", "b", True), "connections between a and b dropped (queues discarded)"),
        (
            SetLatency("exchange", "desk-1", Constant(0.02)),
            "latency on exchange->desk-1 set to 20 ms, both ways",
        ),
        (SetLatency("a", "b", None, False), "latency on a->b back to what it was, one way"),
        (SetLatency("a", "b", Uniform(1e-3, 3e-3)), "latency on a->b set to uniform 1 ms to 3 ms, "
         "both ways"),
        (SetLatency("a", "b", Normal(1e-3, 2e-4)), "latency on a->b set to normal, mean 1 ms, "
         "stddev 200 us, both ways"),
        (SetLatency("a", "b", LogNormal.from_median(150e-6, 0.5)), "latency on a->b set to "
         "lognormal, median 150 us, sigma 0.5, both ways"),
    ],
)  # fmt: skip
def test_every_fault_describes_itself_as_a_person_would(fault: Fault, text: str) -> None:
    assert fault.describe() == text
