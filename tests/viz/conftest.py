"""A small scenario with every kind of fault span, run once for the plot and trace tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from transportkit.scenario import RunResult, load, run_scenario

# A feed, a risk service and a request client for 3 s; the faults: a crash with its
# restart and a latency spike (bands), a dropped connection and a partition repaired
# (one a line, the other a band), and a crash that is never undone (a band to the end).
SCENARIO = """
[scenario]
name = "viz-small"
seed = 11
duration = 3.0
drain = 0.5

[[component]]
name = "feed"
kind = "market_data_publisher"
node = "exchange"
bind = "tcp://*:5556"
symbols = ["AAPL", "MSFT"]
rate = 400

[[component]]
name = "desk-md"
kind = "market_data_subscriber"
node = "desk"
source = "feed"
connect = "tcp://exchange:5556"
options = { reconnect_ivl = 5 }

[[component]]
name = "risk"
kind = "risk_server"
node = "risk-host"
bind = "tcp://*:5555"

[[component]]
name = "desk-risk"
kind = "risk_client"
node = "desk"
connect = "tcp://risk-host:5555"
rate = 50
timeout_ms = 100
attempts = 2

[[component]]
name = "spare"
kind = "market_data_subscriber"
node = "spare"
source = "feed"
connect = "tcp://exchange:5556"

[[fault]]
at = 0.5
kind = "crash"
node = "risk-host"

[[fault]]
at = 1.0
kind = "restart"
node = "risk-host"

[[fault]]
at = 1.2
kind = "set_latency"
a = "exchange"
b = "desk"
latency = { model = "constant", delay_us = 5000 }

[[fault]]
at = 1.6
kind = "set_latency"
a = "exchange"
b = "desk"

[[fault]]
at = 1.8
kind = "drop_connection"
a = "exchange"
b = "desk"

[[fault]]
at = 2.0
kind = "partition"
a = "exchange"
b = "spare"

[[fault]]
at = 2.4
kind = "repair"
a = "exchange"
b = "spare"

[[fault]]
at = 2.6
kind = "crash"
node = "spare"

[[invariant]]
kind = "every_request_answered"
stream = "desk-risk"
"""


@pytest.fixture(scope="session")
def scenario_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("viz") / "viz_small.toml"
    path.write_text(SCENARIO, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def small_run(scenario_file: Path) -> RunResult:
    return run_scenario(load(scenario_file))


@pytest.fixture
def spans_with_duration() -> int:
    """The faults of SCENARIO with a duration: crash-restart, the latency spike,
    partition-repair, and the crash never undone (to the end)."""
    return 4
