"""Scenarios on the exploring schedulers: `transportkit run --scheduler`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from transportkit.cli import main
from transportkit.scenario import load, run_scenario

SCENARIO = (
    Path(__file__).resolve().parents[2]
    / "src"
    / "transportkit"
    / "scenarios"
    / "risk_server_crash.toml"
)


def test_fifo_is_the_default_and_the_other_modes_explore_other_runs() -> None:
    scenario = load(SCENARIO)
    default = run_scenario(scenario, record_trace=False)
    explored = run_scenario(scenario, record_trace=False, scheduler="random")
    assert explored.trace_hash != default.trace_hash
    assert explored.simulation is not None and len(explored.simulation.schedule) > 0
    assert explored.passed  # the scenario's invariants hold in another interleaving too


def test_cli_scheduler_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(SCENARIO), "--scheduler", "pct", "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"]
    assert main(["run", str(SCENARIO), "--backend", "zmq", "--scheduler", "random"]) == 2
    assert "--scheduler applies to the sim backend only" in capsys.readouterr().err
