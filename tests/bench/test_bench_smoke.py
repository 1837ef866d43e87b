"""The benchmark runs end to end with tiny counts and reports every figure's shape.

No timing is asserted: the machine is shared and noisy; the latest figures are in
the documentation's Performance page (docs/performance.md).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

pytest.importorskip("hdrh")

from transportkit._bench import BenchConfig, run
from transportkit._bench._report import format_report
from transportkit.cli import main

TINY = BenchConfig.quick(
    rounds=1,
    latency_samples=50,
    warmup=5,
    throughput_messages=300,
    zerocopy_messages=4,
    sim_messages=100,
    sim_scaling=(50, 100),
    sim_memory_messages=100,
    timeout_s=5.0,
)


def _finite_numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _finite_numbers(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in _finite_numbers(v)]
    return []


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return run(TINY)


def test_report_has_machine_and_every_figure(report: dict[str, Any]) -> None:
    assert {"machine", "latency", "throughput", "zerocopy", "sim", "targets"} <= set(report)
    assert {"cpu", "cores", "python", "pyzmq", "libzmq", "accelerator"} <= set(report["machine"])


def test_latency_has_percentiles_and_ratios_for_every_transport(report: dict[str, Any]) -> None:
    transports = report["latency"]["transports"]
    assert set(transports) == {"inproc", "ipc", "tcp"}
    for fig in transports.values():
        assert set(fig["absolute"]) == {"raw", "tk", "raw_async", "tk_async", "raw_spin", "tk_spin"}
        assert set(fig["ratios"]) == {"tk", "tk_async", "tk_spin", "tk_spin_vs_tk"}
        for row in (*fig["absolute"].values(), *fig["ratios"].values()):
            assert set(row) == {"p50_us", "p99_us", "p999_us"}


def test_rates_have_ratios(report: dict[str, Any]) -> None:
    assert set(report["throughput"]["figures"]) == {"push_pull", "pub_sub_1", "pub_sub_3"}
    for fig in report["throughput"]["figures"].values():
        assert set(fig["msgs_per_s"]) == {"raw", "tk"} and "tk_vs_raw" in fig["ratios"]
    for fig in report["zerocopy"]["figures"].values():
        assert "tk_zerocopy_vs_tk_copy" in fig["ratios"]
        assert "tk_zerocopy_vs_raw_zerocopy" in fig["ratios"]


def test_sim_figures_and_profile(report: dict[str, Any]) -> None:
    sim = report["sim"]
    assert set(sim["ratios"]) == {"pubsub_vs_bare", "reqrep_vs_bare"}
    assert list(sim["cost_us_per_message"]) == ["50", "100"]
    memory = sim["peak_memory_mb"]
    assert memory["record_trace"] is True  # the scenario runner's default
    assert memory["peak_mb"] > 0 and memory["untraced_peak_mb"] > 0
    assert "tk_pubsub_traced" in sim["deliveries_per_s"]
    assert math.isfinite(sim["trace_cost"]["cost"]) and "hash" in sim["trace_cost"]["what"]
    assert any(c["target"] == "sim_trace_cost" for c in report["targets"])
    assert sim["profile_top"] and "function" in sim["profile_top"][0]
    parts = sim["breakdown_us"]
    assert set(parts) == {
        "bare_simpy_delivery",
        "coroutine_wake",
        "sim_network",
        "sim_receive",
        "sim_total",
    }
    assert parts["sim_total"] == pytest.approx(1e6 / sim["deliveries_per_s"]["tk_pubsub"])
    text = format_report(report)
    assert "Where a PUB/SUB delivery's time goes" in text
    assert "Trace recording costs" in text and "record_trace=False" in text


def test_every_number_is_finite_and_positive_where_measured(report: dict[str, Any]) -> None:
    numbers = _finite_numbers({k: v for k, v in report.items() if k != "config"})
    assert numbers and all(math.isfinite(n) for n in numbers)
    for check in report["targets"]:
        # The trace's cost is a difference (traced/untraced - 1): noise can make it < 0.
        positive = check["value"] > 0 or check["target"] == "sim_trace_cost"
        assert math.isfinite(check["value"]) and positive


def test_cli_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--quick", "--json", "--only", "zerocopy", "--rounds", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["zerocopy"]["figures"]) == {"inproc", "ipc"}
    assert "latency" not in printed


def test_the_sim_instruction_workloads_run_and_deliver_every_message() -> None:
    from transportkit._bench._sim_instructions import WORKLOADS, run_workload  # noqa: PLC0415

    assert run_workload("pubsub", 200) == 200
    assert run_workload("pubsub_traced", 200) == 200
    assert run_workload("reqrep", 50) == 100
    assert run_workload("bare_pubsub", 200) == 200
    assert run_workload("bare_reqrep", 50) == 100
    assert set(WORKLOADS) == {"pubsub", "pubsub_traced", "reqrep", "bare_pubsub", "bare_reqrep"}
    with pytest.raises(ValueError, match="unknown workload"):
        run_workload("nothing", 1)
