"""The bench's scenario figure: it runs the flagship shortened, counts what the run
delivered, profiles it by layer and reports a table. No timing is asserted.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

pytest.importorskip("hdrh")

from transportkit._bench import BenchConfig
from transportkit._bench import _fig_scenario as fig_scenario
from transportkit.scenario import load, report_dict, run_scenario
from transportkit.scenario._runner import shortened
from transportkit.scenario._spec import ScenarioError

QUICK = BenchConfig.quick(rounds=1, sim_messages=200)


@pytest.fixture(scope="module")
def figure() -> dict[str, Any]:
    return fig_scenario.run(QUICK)


def test_quick_runs_the_flagship_shortened(figure: dict[str, Any]) -> None:
    assert QUICK.scenario_names == ("trading_day",)
    fig = figure["scenarios"]["trading_day"]
    assert fig["duration_s"] == QUICK.scenario_duration_s < load("trading_day").duration
    assert fig["virtual_s"] == pytest.approx(QUICK.scenario_duration_s + 2.0)  # the drain
    assert figure["flagship"] == "trading_day"


def test_deliveries_are_what_the_run_and_its_report_count(figure: dict[str, Any]) -> None:
    fig = figure["scenarios"]["trading_day"]
    assert fig["deliveries"] > 0
    result = run_scenario(shortened(load("trading_day"), QUICK.scenario_duration_s))
    assert result.simulation is not None
    # A delivery is a message arriving at a receiving socket: a 'deliver' trace event.
    assert fig["deliveries"] == result.simulation.trace.counts["deliver"]
    report = report_dict(result)
    assert fig["stream_deliveries"] == sum(s["delivered"] for s in report["streams"].values())
    assert fig["trace_hash"] == report["trace_hash"]
    # Requests, heartbeats and the queue's hops reach sockets too: more than the streams.
    assert fig["deliveries"] > fig["stream_deliveries"] > 0


def test_rates_and_ratio_are_measured(figure: dict[str, Any]) -> None:
    fig = figure["scenarios"]["trading_day"]
    sim = figure["sim_pubsub"]
    assert sim["messages"] == QUICK.sim_messages
    for value in (fig["us_per_delivery"], sim["us_per_delivery"], fig["virtual_s_per_wall_s"]):
        assert math.isfinite(value) and value > 0
    assert fig["vs_sim_pubsub"] == pytest.approx(fig["us_per_delivery"] / sim["us_per_delivery"])
    assert fig["cpu_us_per_delivery"] > 0 and sim["cpu_us_per_delivery"] > 0
    assert fig["cpu_vs_sim_pubsub"] == pytest.approx(
        fig["cpu_us_per_delivery"] / sim["cpu_us_per_delivery"]
    )
    (check,) = fig_scenario.checks(figure)
    assert check["target"] == "scenario_per_delivery_vs_sim"
    assert check["value"] == fig["vs_sim_pubsub"] and check["limit"] == "<= 3.0"


def test_profile_layers_sum_to_one(figure: dict[str, Any]) -> None:
    prof = figure["profile"]
    assert list(prof["layers"]) == list(fig_scenario.LAYERS)
    assert sum(row["share"] for row in prof["layers"].values()) == pytest.approx(1.0, abs=1e-6)
    # The flagship's time is spent in the simulator and in the components, measurably.
    assert prof["layers"]["sim network/loop"]["share"] > 0.05
    assert prof["layers"]["trading components"]["share"] > 0.05
    assert prof["top"] and all(row["layer"] in fig_scenario.LAYERS for row in prof["top"])


def test_text_has_its_tables(figure: dict[str, Any]) -> None:
    text = "\n".join(fig_scenario.format_lines(figure))
    assert "| scenario | virtual s | deliveries |" in text
    assert "| trading_day | 3.00 |" in text
    assert "a delivery is a message arriving at a receiving socket" in text
    assert "| layer | s | share |" in text
    assert "| metrics and HDR recording |" in text


def test_layers_of_known_functions() -> None:
    layer = fig_scenario.layer_of
    assert layer("/x/transportkit/sim_backend/_wire.py", "_arrive") == "sim network/loop"
    assert layer("/x/transportkit/sim_backend/_trace.py", "flush") == "trace/report"
    assert layer("/x/transportkit/scenario/_components.py", "publish_one") == "trading components"
    assert layer("/x/site-packages/hdrh/histogram.py", "record_value") == (
        "metrics and HDR recording"
    )
    assert layer("~", "<method 'SerializeToString' of 'Message' objects>") == (
        "protobuf encode/decode"
    )
    assert layer("/usr/lib/python3.11/asyncio/tasks.py", "sleep") == "timers"
    assert layer("~", "<built-in method builtins.len>") is None  # its caller's


def test_shortened_keeps_the_faults_before_the_new_end_and_refuses_bad_durations() -> None:
    scenario = load("trading_day")
    short = shortened(scenario, 6.0)
    assert short.duration == 6.0 and short.drain == scenario.drain
    assert [at for at, _ in short.faults] == [5.0]
    assert short.components == scenario.components
    for bad in (0.0, -1.0, scenario.duration + 1):
        with pytest.raises(ScenarioError, match="shortened run"):
            shortened(scenario, bad)
