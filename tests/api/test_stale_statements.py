"""Statements the library makes about itself that were false, pinned to the code."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest
import zmq

import transportkit
from transportkit import UnsupportedError
from transportkit.scenario._runner import load
from transportkit.sim_backend import Hold, Partition, Release, Repair, Simulation
from transportkit.zmq_backend import _options

SHIPPED = Path(transportkit.__file__).parent / "scenarios"
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.toml")), ids=lambda p: p.stem)
def test_a_scenario_description_counts_its_subscribers_right(path: Path) -> None:
    scenario = load(path)
    said = re.search(r"\b(one|two|three|four|five) subscribers?\b", scenario.description)
    if said is None:
        return  # it states no count
    subscribers = [c for c in scenario.components if "subscriber" in c.kind]
    assert NUMBERS[said.group(1)] == len(subscribers), (scenario.description, subscribers)


def test_market_data_million_states_its_count() -> None:
    # It said "two subscribers" and had one; the check above needs a count to compare.
    assert "one subscriber" in load(SHIPPED / "market_data_million.toml").description


@pytest.mark.parametrize("cls", [Partition, Repair, Hold, Release])
def test_a_link_fault_docstring_states_its_both_ways_default(cls: type) -> None:
    (field,) = [f for f in dataclasses.fields(cls) if f.name == "both_ways"]
    assert field.default is True
    doc = " ".join((inspect.getdoc(cls) or "").split())
    assert "both directions by default" in doc
    assert "with ``both_ways=False`` only ``a`` to ``b``" in doc


def test_the_zmq_pgm_error_does_not_send_users_to_a_sim_that_refuses_pgm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(zmq, "has", lambda capability: capability != "pgm")
    with pytest.raises(UnsupportedError) as zmq_says:
        _options.check_endpoint("epgm://eth0;239.192.1.1:5555", "bind")
    message = str(zmq_says.value)
    assert "which models multicast" not in message
    assert "the sim backend does not model multicast" in message

    # ...which is what the sim says, and does, with the same endpoint.
    sim = Simulation(seed=0)
    node = sim.node("a")

    async def main() -> None:
        node.publisher(bind="epgm://eth0;239.192.1.1:5555")

    with pytest.raises(UnsupportedError, match="does not model epgm multicast"):
        sim.run(main())
