"""``transportkit run --log-connections`` (``run_scenario(log_connections=True)``):
every node's connection log on both backends, shown on stderr; off by default."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from transportkit import OptionError
from transportkit.scenario import load, run_scenario
from transportkit.scenario._cli import main
from transportkit.testing import free_tcp_endpoint

SCENARIO = """
[scenario]
name = "connection-log"
duration = 0.3
drain = 0.1
seed = 3

[[component]]
name = "risk"
kind = "risk_server"
node = "risk-host"
bind = "tcp://*:{port}"

[[component]]
name = "orders"
kind = "risk_client"
node = "desk"
connect = "tcp://risk-host:{port}"
rate = 10
timeout_ms = 2000
attempts = 1

[[invariant]]
kind = "every_request_answered"
stream = "orders"
"""


def _scenario(tmp_path: Path, backend: str) -> str:
    port = int(free_tcp_endpoint().rsplit(":", 1)[1]) if backend == "zmq" else 5555
    path = tmp_path / "connlog.toml"
    path.write_text(SCENARIO.format(port=port), encoding="utf-8")
    return str(path)


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    package = logging.getLogger("transportkit")
    handlers, level = list(package.handlers), package.level
    status = main([*argv, "--no-progress"])
    captured = capsys.readouterr()
    assert package.handlers == handlers  # the run's handler was removed
    assert package.level == level
    return status, captured.out, captured.err.splitlines()


def _connection_lines(err: list[str], backend: str) -> list[str]:
    return [line for line in err if f"transportkit.{backend}_backend.connections:" in line]


@pytest.mark.parametrize("backend", ["sim", "zmq"])
def test_log_connections_shows_each_nodes_connects_and_accepts(
    tmp_path: Path, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _scenario(tmp_path, backend)
    status, _out, err = _run([path, "--backend", backend, "--log-connections"], capsys)
    assert status == 0
    lines = _connection_lines(err, backend)
    connected = [line for line in lines if " INFO " in line and "CONNECTED REQ desk/" in line]
    accepted = [line for line in lines if " INFO " in line and "ACCEPTED REP risk-host/" in line]
    assert connected, err
    assert accepted, err
    if backend == "sim":  # virtual time, the same every run
        assert re.match(r"t=0\.\d{6} INFO ", connected[0]), connected[0]


@pytest.mark.parametrize("backend", ["sim", "zmq"])
def test_without_the_flag_nothing_is_logged_even_at_debug(
    tmp_path: Path, backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _scenario(tmp_path, backend)
    status, _out, err = _run([path, "--backend", backend, "--log-level", "DEBUG"], capsys)
    assert status == 0
    assert _connection_lines(err, backend) == []


def test_log_level_still_applies_and_the_sim_report_is_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _scenario(tmp_path, "sim")
    _status, plain, _err = _run([path], capsys)
    status, logged, err = _run([path, "--log-connections", "--log-level", "WARNING"], capsys)
    assert status == 0
    wall = re.compile(r"in [0-9.]+ s wall")
    assert wall.sub("", logged) == wall.sub(
        "", plain
    )  # same report, same trace hash: logging is no part of the run
    lines = _connection_lines(err, "sim")
    assert lines  # the end of the run disconnects the client: a WARNING
    assert not [line for line in lines if " INFO " in line]


def test_run_scenario_checks_log_connections(tmp_path: Path) -> None:
    scenario = load(_scenario(tmp_path, "sim"))
    with pytest.raises(OptionError, match="log_connections must be a bool"):
        run_scenario(scenario, log_connections=1)  # type: ignore[arg-type]
