"""zmq-specific thresholds (``[invariant.zmq]``) and ``load_tolerance``: validated
before anything runs, applied on the zmq backend only, shown in the report."""

from __future__ import annotations

from pathlib import Path

import pytest

from transportkit.scenario import ScenarioError, load, report_dict, run_scenario
from transportkit.testing import free_tcp_endpoint

HEAD = """
[scenario]
name = "thresholds"
duration = 0.4
drain = 0.2
{head}

[[component]]
name = "feed"
kind = "market_data_publisher"
node = "exchange"
bind = "tcp://*:{port}"
rate = 500

[[component]]
name = "desk"
kind = "market_data_subscriber"
node = "desk"
source = "feed"
connect = "tcp://exchange:{port}"
"""

BOUND = """
[[invariant]]
kind = "bound"
description = "the feed sends a billion updates (not on real sockets)"
stream = "feed"
metric = "sent"
at_least = 1e9
{zmq}
"""


def _write(tmp_path: Path, invariant: str, head: str = "") -> Path:
    port = int(free_tcp_endpoint().rsplit(":", 1)[1])
    path = tmp_path / "t.toml"
    path.write_text(HEAD.format(head=head, port=port) + invariant, encoding="utf-8")
    return path


def _error(tmp_path: Path, invariant: str, head: str = "") -> str:
    with pytest.raises(ScenarioError) as info:
        load(_write(tmp_path, invariant, head))
    return str(info.value)


def test_a_zmq_table_sets_the_thresholds_on_zmq_only(tmp_path: Path) -> None:
    zmq = 'zmq = { at_least = 10, reason = "a 0.4 s run on real sockets" }'
    scenario = load(_write(tmp_path, BOUND.format(zmq=zmq)))
    (spec,) = scenario.invariants
    assert spec.params["at_least"] == 1e9
    assert spec.params_on("sim")["at_least"] == 1e9
    assert spec.params_on("zmq")["at_least"] == 10
    assert spec.params_on("zmq")["stream"] == "feed"  # the rest is the invariant's
    assert spec.zmq_reason == "a 0.4 s run on real sockets"


def test_the_zmq_threshold_decides_the_verdict_on_zmq_and_the_report_says_why(
    tmp_path: Path,
) -> None:
    """Without the table the bound fails on both backends; with it, the zmq run
    passes and the verdict names the reason, while the sim still holds the file's
    own threshold."""
    zmq = 'zmq = { at_least = 10, reason = "a 0.4 s run on real sockets" }'
    path = _write(tmp_path, BOUND.format(zmq=zmq))
    real = report_dict(run_scenario(load(path), backend="zmq"))
    bound = real["invariants"][0]
    assert bound["passed"] is True, real["invariants"]
    assert bound["detail"].endswith("[zmq threshold: a 0.4 s run on real sockets]")
    assert "(want >= 10)" in bound["detail"]
    sim = report_dict(run_scenario(load(path)))
    assert sim["invariants"][0]["passed"] is False
    assert "zmq threshold" not in sim["invariants"][0]["detail"]


def test_a_latency_invariant_may_relax_max_us_on_zmq(tmp_path: Path) -> None:
    invariant = """
[[invariant]]
kind = "latency"
stream = "feed"
receiver = "desk"
max_us = 1000
[invariant.zmq]
max_us = 8000
reason = "measured"
"""
    (spec,) = load(_write(tmp_path, invariant)).invariants
    assert spec.params_on("sim")["max_us"] == 1000
    assert spec.params_on("zmq")["max_us"] == 8000


@pytest.mark.parametrize(
    ("zmq", "problem"),
    [
        ("zmq = { at_least = 10 }", "key 'reason': is required"),
        ('zmq = { reason = "why" }', "sets no threshold"),
        ('zmq = { at_least = -1, reason = "why" }', "key 'at_least': must be a number >= 0"),
        ('zmq = { stream = "other", reason = "why" }', "key 'stream': is not a known setting"),
        ('zmq = { at_least = 1, reason = "" }', "key 'reason': must be a non-empty string"),
        ('zmq = "loose"', "key 'zmq': must be a table"),
    ],
)
def test_a_bad_zmq_table_is_refused_before_the_run(tmp_path: Path, zmq: str, problem: str) -> None:
    message = _error(tmp_path, BOUND.format(zmq=zmq))
    assert problem in message, message
    assert "t.toml" in message


def test_an_invariant_without_thresholds_takes_no_zmq_table(tmp_path: Path) -> None:
    invariant = """
[[invariant]]
kind = "every_request_answered"
stream = "feed"
zmq = { at_least = 1, reason = "why" }
"""
    message = _error(tmp_path, invariant)
    assert "has no threshold to set on zmq" in message, message


def test_load_tolerance_is_read_and_bounded(tmp_path: Path) -> None:
    bound = BOUND.format(zmq="")
    assert load(_write(tmp_path, bound)).load_tolerance == 0.02
    assert load(_write(tmp_path, bound, "load_tolerance = 0.1")).load_tolerance == 0.1
    message = _error(tmp_path, bound, "load_tolerance = 1.5")
    assert "key 'load_tolerance': must be a number >= 0 and <= 1" in message, message
