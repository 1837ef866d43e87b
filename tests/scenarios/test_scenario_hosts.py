"""Scenario endpoints name nodes, a typo in one fails the run, and the zmq backend maps
node names to loopback (issue 10, deliverable 2).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import transportkit
from transportkit._endpoint import parse_endpoint
from transportkit.scenario import load, run_scenario
from transportkit.scenario._runner import _real_endpoint

SHIPPED = Path(transportkit.__file__).parent / "scenarios"  # the scenario files in the package

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted((SHIPPED).glob("*.toml"))
LOCAL = {"*", "0.0.0.0", "::", "127.0.0.1", "localhost", "::1"}


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_tcp_endpoint_of_a_scenario_names_a_node_or_is_local(path: Path) -> None:
    scenario = load(path)
    seen = 0
    for spec in scenario.components:
        for key, value in vars(spec.params).items():
            if isinstance(value, str) and value.startswith("tcp://"):
                host = parse_endpoint(value).host
                assert host in scenario.nodes or host in LOCAL, (spec.name, key, value)
                if host in LOCAL:
                    # Only a bind may use a local address; a connect names its host.
                    assert key in {"bind", "frontend", "backend", "publisher", "snapshot"}, (
                        spec.name,
                        key,
                        value,
                    )
                seen += 1
    assert seen > 0


def test_a_typo_in_a_scenarios_connect_fails_its_invariants(tmp_path: Path) -> None:
    text = (SHIPPED / "market_data_fanout.toml").read_text(encoding="utf-8")
    good = 'node = "trader-1"\nsource = "feed"\nconnect = "tcp://exchange:5556"'
    assert good in text
    typo = tmp_path / "typo.toml"
    typo.write_text(text.replace(good, good.replace("exchange:", "exchnage:")), "utf-8")
    result = run_scenario(load(typo))
    failed = [v.description for v in result.verdicts if not v.passed]
    assert "fast subscribers get (almost) every update they subscribed to" in failed
    assert result.simulation is not None
    connect_failures = [
        e.detail for e in result.simulation.trace.events if e.kind == "connect-failed"
    ]
    assert "tcp://exchnage:5556 unknown host 'exchnage'" in connect_failures


def test_the_zmq_backend_maps_node_names_to_loopback_and_leaves_other_hosts() -> None:
    nodes = ("exchange", "risk-host")
    assert _real_endpoint("tcp://exchange:5556", nodes, "/d") == "tcp://127.0.0.1:5556"
    assert _real_endpoint("tcp://risk-host:5555", nodes, "/d") == "tcp://127.0.0.1:5555"
    assert _real_endpoint("tcp://*:5556", nodes, "/d") == "tcp://*:5556"
    # Not a node: given to libzmq as written, where it is retried and never connects,
    # as in the simulation.
    assert _real_endpoint("tcp://exchnage:5556", nodes, "/d") == "tcp://exchnage:5556"
