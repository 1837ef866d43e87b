"""Scenarios by name: ``transportkit run trading_day``, ``transportkit sweep NAME``, a
path still works, an unknown name is a usage error listing the names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from transportkit.cli import ExitCode, main
from transportkit.scenario import ScenarioError, load, resolve_scenario, shipped_scenarios
from transportkit.scenario._catalog import is_scenario_name


def test_run_takes_a_shipped_name(shipped_tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "tiny", "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scenario"] == "tiny"
    assert report["source"] == str(shipped_tiny / "tiny.toml")


def test_the_real_shipped_names_resolve_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing here: the package's files are found
    names = [s.name for s in shipped_scenarios()]
    assert "trading_day" in names and "risk_server_crash" in names
    for name in names:
        assert load(name).source == str(resolve_scenario(name))


def test_a_path_still_works(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tiny), "--no-progress"]) == 0
    assert "scenario tiny (sim, seed 3)" in capsys.readouterr().out


def test_a_relative_path_still_works(
    tiny: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tiny.parent)
    assert main(["run", "tiny.toml", "--no-progress"]) == 0
    assert main(["run", f".{os.sep}tiny.toml", "--no-progress"]) == 0


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_an_unknown_name_lists_the_shipped_ones_and_the_closest(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "trading-day", "--no-progress"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert "no shipped scenario is called 'trading-day'; did you mean trading_day?" in err
    assert "risk_server_crash" in err and "market_data_fanout" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_resolve_scenario_raises_for_an_unknown_name() -> None:
    with pytest.raises(ScenarioError, match=r"shipped: .*trading_day"):
        resolve_scenario("no_such_scenario")


@pytest.mark.parametrize(
    ("text", "bare"),
    [("trading_day", True), ("trading_day.toml", False), ("./trading_day", False),
     ("dir/x", False), ("", False)],
)  # fmt: skip
def test_what_counts_as_a_bare_name(text: str, bare: bool) -> None:
    assert is_scenario_name(text) is bare


def test_sweep_by_name_replays_by_name(
    shipped_tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The replay command repeats the form the user gave, not the package's path."""
    out = tmp_path / "sweep.json"
    argv = ["sweep", "failing", "--seeds", "1", "--jobs", "1", "--no-progress"]
    assert main([*argv, "--json", str(out)]) == ExitCode.FAILED
    text = capsys.readouterr().out
    assert "transportkit run failing --seed 0" in text
    assert str(shipped_tiny) not in text
    assert json.loads(out.read_text(encoding="utf-8"))["failures"][0]["replay"] == (
        "transportkit run failing --seed 0"
    )
