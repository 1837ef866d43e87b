"""The peers figure runs every workload on transportkit (both modes) and on every peer
importable here, with tiny counts, and counts what was sent.

No timing is asserted (the machine is shared). The peers need Python >= 3.12: on 3.11
they are reported absent with the reason; on 3.12 and later they really run.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from typing import Any

import pytest

from transportkit._bench import _fig_peers, _peers_worker
from transportkit._bench._common import BenchConfig
from transportkit._bench._report import TARGETS

ECHO, FANOUT, TIMERS = 30, 40, 250
TINY = BenchConfig.quick(
    rounds=1,
    peers_echo_round_trips=ECHO,
    peers_fanout_messages=FANOUT,
    peers_timer_wakeups=TIMERS,
)
SENT = {"echo": 2 * ECHO, "fanout": 3 * FANOUT, "timers": TIMERS}
"""What each workload delivers or wakes, counted here, not by the code under test."""


def _importable(name: str) -> bool:
    return sys.version_info >= (3, 12) and importlib.util.find_spec(name) is not None


PEERS_HERE = [name for name in ("seedloop", "simloop", "simloom") if _importable(name)]


@pytest.fixture(scope="module")
def figure() -> dict[str, Any]:
    return _fig_peers.run(TINY)


def test_every_workload_ran_on_tk_both_modes_and_every_importable_peer(
    figure: dict[str, Any],
) -> None:
    assert set(figure["workloads"]) == {"echo", "fanout", "timers"}
    assert figure["python"] == sys.version.split()[0]
    for workload, fig in figure["workloads"].items():
        assert set(fig["median_wall_s"]) == {"tk_fifo", "tk_explore", *PEERS_HERE}
        assert fig["expected_events"] == SENT[workload]
        for variant, events in fig["events"].items():
            assert events == SENT[workload], (workload, variant)
            assert fig["median_wall_s"][variant] > 0
            assert fig["virtual_s"][variant] > 0


def test_virtual_time_matches_the_workload(figure: dict[str, Any]) -> None:
    echo = figure["workloads"]["echo"]["virtual_s"]
    for variant, seconds in echo.items():
        # every round trip is two one-way latencies of 200 us, back to back
        assert seconds >= ECHO * 2 * 200e-6 - 1e-9, variant
        assert seconds < ECHO * 2 * 200e-6 + 0.01, variant
    plan = _peers_worker.timer_plan(TIMERS)
    longest = max(sum(lengths) for lengths in plan)
    for variant, seconds in figure["workloads"]["timers"]["virtual_s"].items():
        assert seconds == pytest.approx(longest), variant


def test_peers_present_or_absent_with_the_reason(figure: dict[str, Any]) -> None:
    for name, info in figure["peers"].items():
        if name in PEERS_HERE:
            assert info["available"] and info["version"]
        else:
            assert not info["available"]
            if sys.version_info < (3, 12):
                assert info["reason"].startswith("not installed (needs Python >= 3.12)")
    text = "\n".join(_fig_peers.format_lines(figure))
    if sys.version_info < (3, 12):
        assert "- seedloop: not installed (needs Python >= 3.12)" in text
        assert "No peer could run" in text


def test_ratios_and_target_rows_only_for_peers_that_ran(figure: dict[str, Any]) -> None:
    ran = set(PEERS_HERE)
    for fig in figure["workloads"].values():
        expected = {name for name, (_, peer) in _fig_peers.RATIOS.items() if peer in ran}
        assert set(fig["ratios"]) == expected
        assert all(math.isfinite(v) and v > 0 for v in fig["ratios"].values())
    rows = _fig_peers.checks(figure)
    names = {row["target"] for row in rows}
    assert names == {
        target
        for target, peer in (
            ("peers_vs_seedloop", "seedloop"),
            ("peers_explore_vs_simloop", "simloop"),
        )
        if peer in ran
    }
    assert len(rows) == 3 * len(names)
    for row in rows:
        assert row["target"] in TARGETS and math.isfinite(row["value"])


def test_text_has_the_table(figure: dict[str, Any]) -> None:
    lines = _fig_peers.format_lines(figure)
    assert lines[0].startswith("### Deterministic-simulation peers")
    assert "| workload | variant | mode | median wall s | events/s | events | virtual s |" in lines
    rows = [line for line in lines if "| tk_fifo |" in line or "| tk_explore |" in line]
    assert len(rows) == 3 * 2  # two transportkit modes per workload
    if PEERS_HERE:
        assert any(line.startswith("| workload | tk_") for line in lines)


def test_worker_prints_one_json_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "transportkit._bench._peers_worker", "tk", "timers", "20"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (line,) = done.stdout.strip().splitlines()
    result = json.loads(line)
    assert result["lib"] == "tk" and result["mode"] == "fifo"
    assert result["events"] == result["expected"] == 20
    assert result["wall_s"] > 0 and result["virtual_s"] > 0


def test_a_missing_message_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def short(n: int, mode: str) -> tuple[int, float]:
        events, virtual_s = _peers_worker._tk_timers(n, mode)
        return events - 1, virtual_s

    monkeypatch.setitem(_peers_worker._RUNNERS, ("tk", "timers"), short)
    with pytest.raises(RuntimeError, match="counted 9 of 10"):
        _peers_worker.measure("tk", "timers", 10)


def test_a_failing_worker_fails_the_figure() -> None:
    with pytest.raises(RuntimeError, match="has no mode"):
        _fig_peers._measure(TINY, "tk", "timers", 10, "sideways")
    with pytest.raises(ValueError, match="has no mode"):
        _peers_worker.measure("seedloop", "echo", 10, "explore")
    with pytest.raises(ValueError, match="unknown workload"):
        _peers_worker.measure("tk", "gossip", 10)


def test_timer_plan_is_seeded_varied_and_complete() -> None:
    plan = _peers_worker.timer_plan(1_001)
    assert len(plan) == 100
    assert sum(len(lengths) for lengths in plan) == 1_001
    lengths = [x for task in plan for x in task]
    assert len(set(lengths)) == len(lengths)
    assert all(10e-6 <= x <= 2e-3 for x in lengths)
    assert plan == _peers_worker.timer_plan(1_001)


def test_absence_reasons() -> None:
    assert _fig_peers.absence_reason("3.11.7", "ModuleNotFoundError: x") == (
        "not installed (needs Python >= 3.12); the worker runs Python 3.11.7"
    )
    assert "pip install 'transportkit[bench]'" in _fig_peers.absence_reason(
        "3.12.1", "ModuleNotFoundError: No module named 'seedloop'"
    )
    assert _fig_peers.absence_reason("3.13.0", "ImportError: bad") == (
        "cannot be imported (ImportError: bad)"
    )


def test_an_absent_interpreter_is_a_clear_error() -> None:
    config = BenchConfig.quick(peers_python="/nonexistent/python3")
    with pytest.raises(RuntimeError, match="peers' interpreter"):
        _fig_peers.peer_status(config)
