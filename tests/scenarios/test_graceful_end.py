"""At the end of the drain the runner stops its server components gracefully
(``shutdown(timeout)``) while the clients still run: a request in flight then is
answered, not cut, on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from transportkit.scenario import load, run_scenario
from transportkit.testing import free_tcp_endpoint

# Orders at 0 s and 0.8 s (rate 1.25/s, closed loop), each served in 0.5 s: the
# second is in flight from 0.8 s to 1.3 s, past the end of the drain at 1.1 s, and
# within the runner's SERVER_SHUTDOWN_TIMEOUT (0.5 s) of it.
SCENARIO = """
[scenario]
name = "in-flight-at-the-end"
duration = 1.0
drain = 0.1
seed = 5

[[component]]
name = "risk"
kind = "risk_server"
node = "risk-host"
bind = "tcp://*:{port}"
service_us = 500000

[[component]]
name = "orders"
kind = "risk_client"
node = "desk"
connect = "tcp://risk-host:{port}"
rate = 1.25
timeout_ms = 3000
attempts = 1

[[invariant]]
kind = "every_request_answered"
stream = "orders"
"""


@pytest.mark.parametrize("backend", ["sim", "zmq"])
def test_a_request_in_flight_at_the_end_of_the_run_is_answered(
    tmp_path: Path, backend: str
) -> None:
    port = int(free_tcp_endpoint().rsplit(":", 1)[1]) if backend == "zmq" else 5555
    path = tmp_path / "end.toml"
    path.write_text(SCENARIO.format(port=port), encoding="utf-8")
    result = run_scenario(load(path), backend=backend)
    stream = result.metrics.streams["orders"]
    assert stream.sent == 2
    assert stream.failures == 0
    assert stream.receivers["replies"].delivered == 2  # the second was answered at ~1.3 s
    assert result.passed, result.verdicts
    assert result.elapsed >= 1.3 - 0.05  # the run waited for it (not past the bound)
    assert result.elapsed < 1.1 + 2.0  # bounded: the stop's 0.5 s, the settle, slack


def test_a_request_in_flight_to_a_server_run_as_a_process_is_answered(tmp_path: Path) -> None:
    port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    path = tmp_path / "end.toml"
    text = SCENARIO.format(port=port) + '\n[[node]]\nname = "risk-host"\nprocess = true\n'
    path.write_text(text, encoding="utf-8")
    result = run_scenario(load(path), backend="zmq")
    stream = result.metrics.streams["orders"]
    assert (stream.sent, stream.failures, stream.receivers["replies"].delivered) == (2, 0, 2)
    assert result.passed, result.verdicts
