"""The scenario files: golden reports, invariants, and the command line."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

import transportkit
from transportkit.cli import main
from transportkit.scenario import load, report_dict, run_scenario

SHIPPED = Path(transportkit.__file__).parent / "scenarios"  # the scenario files in the package

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = SHIPPED
GOLDEN = Path(__file__).resolve().parent / "golden"
FAST = sorted(p for p in SCENARIOS.glob("*.toml") if "million" not in p.name)
REGENERATE = os.environ.get("TRANSPORTKIT_REGENERATE_GOLDEN") == "1"


def stable(report: dict[str, Any]) -> dict[str, Any]:
    """The report without what legitimately differs between runs and machines."""
    return {k: v for k, v in report.items() if k not in ("wall_seconds", "source")}


@pytest.mark.parametrize("path", FAST, ids=[p.stem for p in FAST])
def test_scenario_report_matches_its_golden_file(path: Path) -> None:
    """Like SimPy's examples: an unintended change in behaviour shows up as a diff.
    Regenerate deliberately with TRANSPORTKIT_REGENERATE_GOLDEN=1."""
    report = stable(report_dict(run_scenario(load(path))))
    golden = GOLDEN / f"{path.stem}.json"
    if REGENERATE or not golden.exists():
        assert REGENERATE, f"no golden report {golden}; run with TRANSPORTKIT_REGENERATE_GOLDEN=1"
        golden.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    expected = json.loads(golden.read_text(encoding="utf-8"))
    assert report == expected
    assert report["passed"], [i for i in report["invariants"] if not i["passed"]]


def test_a_different_seed_gives_a_different_run() -> None:
    scenario = load(SCENARIOS / "risk_latency_spike.toml")
    first = run_scenario(scenario, seed=1)
    second = run_scenario(scenario, seed=2)
    assert first.trace_hash != second.trace_hash
    assert run_scenario(scenario, seed=1).trace_hash == first.trace_hash


def test_cli_json_report_has_the_trace_hash_and_exit_status_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["run", str(SCENARIOS / "clone_feed_partition.toml"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 0
    assert report["passed"] is True
    assert len(report["trace_hash"]) == 32
    assert report["streams"]["feed"]["counters"]["desk-2 resyncs"] >= 1


def test_cli_exit_status_is_one_when_an_invariant_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (SCENARIOS / "risk_latency_spike.toml").read_text(encoding="utf-8")
    text = text.replace("at_least = 1\n", "at_least = 1000000\n", 1)
    broken = tmp_path / "impossible.toml"
    broken.write_text(text, encoding="utf-8")
    assert main(["run", str(broken), "--no-progress"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_cli_writes_a_perfetto_trace_and_a_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace, plot = tmp_path / "run.json", tmp_path / "run.png"
    path = SCENARIOS / "risk_server_crash.toml"
    assert main(["run", str(path), "--trace", str(trace), "--plot", str(plot)]) == 0
    doc = json.loads(trace.read_text(encoding="utf-8"))
    names = {e["name"] for e in doc["traceEvents"]}
    assert {"send", "deliver"} <= names
    assert "risk-host crashed" in names  # the fault, a slice on the faults track
    png = plot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 500 and height > 400


def test_a_scenario_runs_on_real_sockets(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(
        """
[scenario]
name = "tiny-real"
duration = 0.6
drain = 0.3

[[component]]
name = "feed"
kind = "market_data_publisher"
node = "exchange"
bind = "tcp://127.0.0.1:*"
rate = 500

[[component]]
name = "risk"
kind = "risk_server"
node = "exchange"
bind = "ipc://risk"

[[component]]
name = "orders"
kind = "risk_client"
node = "trader"
connect = "ipc://risk"
rate = 50
timeout_ms = 500

[[fault]]
at = 0.2
kind = "partition"
a = "exchange"
b = "trader"

[[invariant]]
kind = "every_request_answered"
stream = "orders"

[[invariant]]
kind = "bound"
stream = "orders"
metric = "delivered"
at_least = 10
""",
        encoding="utf-8",
    )
    result = run_scenario(load(path), backend="zmq")
    report = report_dict(result)
    assert report["passed"], report["invariants"]
    assert report["trace_hash"] is None
    assert report["streams"]["feed"]["dropped"] is None
    assert "not applicable" in report["faults"][0]["outcome"]


@pytest.mark.slow
def test_a_million_message_run_keeps_memory_flat() -> None:
    import resource  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    # The peak of this process's own memory: VmHWM, not ru_maxrss, which Linux carries
    # over from the parent through fork and exec (a pytest process grown to 620 MB by the
    # slow fuzz tests made a 57 MB run report 805 MB).
    code = (
        "import resource, json, pathlib;"
        "from transportkit.scenario import load, run_scenario, report_dict;"
        f"r = run_scenario(load({str(SCENARIOS / 'market_data_million.toml')!r}));"
        "d = report_dict(r);"
        "status = pathlib.Path('/proc/self/status');"
        "hwm = [int(l.split()[1]) for l in status.read_text().splitlines()"
        " if l.startswith('VmHWM:')] if status.exists() else [];"
        "peak = hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "print(json.dumps({'passed': d['passed'], 'sent': d['streams']['feed']['sent'],"
        "'maxrss_kb': peak}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=900
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["passed"] and result["sent"] >= 1_000_000
    assert result["maxrss_kb"] < 300 * 1024, result
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
