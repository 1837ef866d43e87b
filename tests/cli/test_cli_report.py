"""The report: faults written as a person would, a fan-out stream that does not read as
more delivered than sent, and JSON with a schema version and numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from transportkit.cli import main
from transportkit.scenario import (
    SCHEMA_VERSION,
    fault_text,
    load,
    report_dict,
    report_text,
    run_scenario,
)
from transportkit.sim_backend import (
    Constant,
    Crash,
    DropConnection,
    Empirical,
    Hold,
    LogNormal,
    Normal,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
    Uniform,
)

GOLDEN = Path(__file__).resolve().parents[1] / "scenarios" / "golden"


@pytest.fixture
def tiny_report(tiny: Path) -> tuple[dict[str, Any], str]:
    result = run_scenario(load(tiny))
    return report_dict(result), report_text(result)


@pytest.mark.parametrize(
    ("fault", "lasted", "text"),
    [
        (Crash("risk-host"), 5.0, "crash risk-host for 5 s"),
        (Crash("ow-2"), None, "crash ow-2 (not restarted)"),
        (Restart("risk-host"), 5.0, "restart risk-host (down for 5 s)"),
        (Partition("a", "b"), 6.0, "partition between a and b for 6 s"),
        (Partition("a", "b", False), None, "partition from a to b until the end (one way)"),
        (Repair("a", "b"), 6.0, "repair the partition between a and b (cut for 6 s)"),
        (Hold("a", "b"), 0.25, "hold the traffic between a and b for 250 ms"),
        (Release("a", "b", False), 0.25,
         "release the traffic held from a to b (one way; held for 250 ms)"),
        (DropConnection("a", "b"), None, "drop the connections between a and b"),
        (DropConnection("a", "b", True), None,
         "drop the connections between a and b, discarding the connecting side's queue"),
        (SetLatency("exchange", "desk-1", Constant(0.02)), 2.0,
         "latency between exchange and desk-1 set to 20 ms for 2 s"),
        (SetLatency("x", "y", Constant(150e-6), False), None,
         "latency from x to y set to 150 us until the end (one way)"),
        (SetLatency("x", "y", None), 2.0, "latency between x and y back to what it was "
         "(spiked for 2 s)"),
        (SetLatency("x", "y", Uniform(0.001, 0.003)), None,
         "latency between x and y set to uniform 1 ms to 3 ms until the end"),
        (SetLatency("x", "y", Normal(0.001, 0.0002)), 1.0,
         "latency between x and y set to normal, mean 1 ms, stddev 200 us for 1 s"),
        (SetLatency("x", "y", LogNormal.from_median(50e-6, 0.4, 15e-6)), 1.0,
         "latency between x and y set to lognormal, median 50 us above 15 us, sigma 0.4 "
         "for 1 s"),
        (SetLatency("x", "y", Empirical([0.001, 0.002])), 1.0,
         "latency between x and y set to empirical, 2 samples for 1 s"),
    ],
)  # fmt: skip
def test_each_fault_reads_as_a_sentence(fault: Any, lasted: float | None, text: str) -> None:
    """They printed as reprs: SetLatency(exchange, desk-2, Constant(delay=0.02), True)."""
    assert fault_text(fault, lasted=lasted) == text


def test_the_text_report_pairs_each_fault_with_its_end(
    tiny_report: tuple[dict[str, Any], str],
) -> None:
    _, text = tiny_report
    faults = text.split("\n  faults\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert faults == [
        "    at    0.500 s: crash desk-1 for 300 ms",
        "    at    0.800 s: restart desk-1 (down for 300 ms)",
        "    at    1.000 s: partition between exchange and desk-2 for 250 ms",
        "    at    1.250 s: repair the partition between exchange and desk-2 (cut for 250 ms)",
        "    at    1.300 s: hold the traffic from exchange to desk-2 for 100 ms (one way)",
        "    at    1.400 s: release the traffic held from exchange to desk-2 (one way; held for "
        "100 ms)",
        "    at    1.500 s: drop the connections between desk-1 and exchange",
        "    at    1.600 s: latency between exchange and desk-1 set to 20 ms for 200 ms",
        "    at    1.800 s: latency between exchange and desk-1 back to what it was (spiked "
        "for 200 ms)",
    ]
    assert not re.search(r"[A-Z][a-z]+[A-Z]\w*\(", text)  # no SetLatency(... anywhere


def test_a_fan_out_stream_adds_up_its_receivers_instead_of_summing_in_a_column(
    tiny_report: tuple[dict[str, Any], str],
) -> None:
    """``feed sent 34000, delivered 47594`` read like an error."""
    report, text = tiny_report
    feed = report["streams"]["feed"]
    receivers = feed["receivers"]
    delivered = sum(r["delivered"] for r in receivers.values())
    expected = sum(r["expected"] for r in receivers.values())
    assert delivered > feed["sent"]  # the case that read wrong
    row = next(line for line in text.splitlines() if line.startswith("  feed (PUB/SUB)"))
    assert f"{delivered:,}" not in row and f"{delivered}" not in row
    summary = (
        f"       {feed['sent']:,} sent to 2 receivers: {delivered:,} deliveries of the "
        f"{expected:,} expected ({100 * delivered / expected:.2f}%)"
    )
    assert summary in text.splitlines()
    for name, receipt in receivers.items():
        assert re.search(rf"-> {name} +{receipt['delivered']:,}/{receipt['expected']:,} ", text)


def test_the_json_has_a_schema_version_and_numbers(
    tiny_report: tuple[dict[str, Any], str],
) -> None:
    report, _ = tiny_report
    assert report["schema_version"] == SCHEMA_VERSION == 1
    assert next(iter(report)) == "schema_version"
    keys = {"name", "kind", "description", "passed", "value", "limit", "comparison", "unit",
            "detail"}  # fmt: skip
    for verdict in report["invariants"]:
        assert set(verdict) == keys
        assert isinstance(verdict["value"], (int, float)) and not isinstance(verdict["value"], bool)
        assert isinstance(verdict["limit"], float)
        assert verdict["comparison"] in (">=", "<=")
    sent, latency, errors = report["invariants"]
    assert (sent["name"], sent["value"], sent["limit"], sent["comparison"], sent["unit"]) == (
        "feed sent", 400, 100.0, ">=", "messages",
    )  # fmt: skip
    assert (latency["name"], latency["limit"], latency["unit"]) == (
        "feed/desk-2-md p99 latency", 1e6, "us",
    )  # fmt: skip
    assert (errors["name"], errors["value"], errors["limit"]) == ("component errors", 0, 0.0)


def test_the_json_faults_are_data_with_a_text(tiny_report: tuple[dict[str, Any], str]) -> None:
    report, _ = tiny_report
    faults = report["faults"]
    assert [f["kind"] for f in faults] == [
        "crash", "restart", "partition", "repair", "hold", "release", "drop_connection",
        "set_latency", "set_latency",
    ]  # fmt: skip
    crash, restart, partition = faults[:3]
    assert crash == {
        "at_s": 0.5, "kind": "crash", "target": "desk-1", "node": "desk-1", "until_s": 0.8,
        "text": "crash desk-1 for 300 ms", "outcome": "applied",
    }  # fmt: skip
    assert "until_s" not in restart
    assert (partition["target"], partition["a"], partition["b"], partition["both_ways"]) == (
        "exchange<->desk-2", "exchange", "desk-2", True,
    )  # fmt: skip
    assert faults[4]["target"] == "exchange->desk-2" and faults[4]["both_ways"] is False
    assert faults[6]["discard_queues"] is False
    spike, end = faults[7:]
    assert spike["latency"] == {"model": "constant", "delay_s": 0.02}
    assert spike["until_s"] == 1.8
    assert end["latency"] is None
    for fault in faults:
        assert isinstance(fault["at_s"], float) and fault["text"] and "(" not in fault["kind"]


def test_a_two_sided_bound_has_a_low_and_high_limit(
    tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tiny.read_text(encoding="utf-8").replace(
        "at_least = 100\n", "at_least = 100\nat_most = 1000\n"
    )
    tiny.write_text(text, encoding="utf-8")
    assert main(["run", str(tiny), "--json", "--no-progress"]) == 0
    bound = json.loads(capsys.readouterr().out)["invariants"][0]
    assert (bound["comparison"], bound["limit"], bound["value"]) == (
        "between",
        [100.0, 1000.0],
        400,
    )


def test_a_custom_check_holds_or_not_without_a_number() -> None:
    golden = json.loads((GOLDEN / "trading_day.json").read_text(encoding="utf-8"))
    check = next(v for v in golden["invariants"] if v["kind"] == "check")
    assert (check["name"], check["value"], check["limit"], check["comparison"]) == (
        "orders_processed", None, None, "holds",
    )  # fmt: skip


def test_every_golden_report_has_the_schema(tmp_path: Path) -> None:
    for path in sorted(GOLDEN.glob("*.json")):
        report = json.loads(path.read_text(encoding="utf-8"))
        assert report["schema_version"] == 1, path.name
        for verdict in report["invariants"]:
            assert verdict["comparison"] in (">=", "<=", "between", "holds"), path.name
            if verdict["comparison"] != "holds":
                assert isinstance(verdict["value"], (int, float)), (path.name, verdict)
        for fault in report["faults"]:
            assert {"at_s", "kind", "target", "text", "outcome"} <= set(fault), path.name


def test_a_zmq_outcome_follows_the_sentence(tiny: Path) -> None:
    """On zmq each fault says what the runner did (on the sim, always "applied")."""
    result = run_scenario(load(tiny))
    result.faults = [(at, fault, f"applied: step {i}") for i, (at, fault, _) in
                     enumerate(result.faults)]  # fmt: skip
    lines = report_text(result).splitlines()
    assert "    at    0.500 s: crash desk-1 for 300 ms; applied: step 0" in lines
    assert report_dict(result)["faults"][0]["outcome"] == "applied: step 0"


def test_large_limits_print_in_full_not_in_exponent_form(
    failing: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bound of a billion read ``(want >= 1e+09)`` in the report's verdict line."""
    assert main(["run", str(failing), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "(want >= 1000000000)" in out and "e+09" not in out
