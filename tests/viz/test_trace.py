"""The Perfetto trace: the trace-event format, flows, named tracks, one naming style, and
the size bound (``--trace-limit``, ``--trace-sample``)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import transportkit
from transportkit.cli import main
from transportkit.scenario import RunResult
from transportkit.scenario._export import write_chrome_trace
from transportkit.sim_backend._perfetto import ALWAYS_KEPT, event_name

SHIPPED = Path(transportkit.__file__).parent / "scenarios"
KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def validate(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Check ``doc`` against the trace-event format as this export uses it; return the
    events that are not metadata."""
    events = doc["traceEvents"]
    assert isinstance(events, list) and events
    named_pids: set[int] = set()
    named_tids: set[tuple[int, int]] = set()
    for e in events:
        assert isinstance(e["ph"], str) and len(e["ph"]) == 1, e
        assert type(e["pid"]) is int, e
        if e["ph"] == "M":
            assert isinstance(e["args"], dict), e
            if e["name"] in ("process_name", "thread_name"):
                assert isinstance(e["args"]["name"], str) and e["args"]["name"], e
            if e["name"] == "process_name":
                named_pids.add(e["pid"])
            elif e["name"] == "thread_name":
                assert type(e["tid"]) is int
                named_tids.add((e["pid"], e["tid"]))
    body = [e for e in events if e["ph"] != "M"]
    for e in body:
        assert e["ph"] in "XiC", e
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0, e
        assert type(e["tid"]) is int, e
        assert isinstance(e["name"], str) and e["name"], e
        assert e["pid"] in named_pids, e
        assert (e["pid"], e["tid"]) in named_tids, e
        if e["ph"] == "X":
            assert isinstance(e["dur"], (int, float)) and e["dur"] >= 0, e
    outs = [e for e in body if e.get("flow_out")]
    starts = {e["bind_id"]: e for e in outs}
    assert len(starts) == len(outs)  # one start per flow: Perfetto drops a duplicate id
    ends = [e for e in body if e.get("flow_in")]
    ended = {e["bind_id"] for e in ends}
    assert set(starts) == ended  # every flow start has an end, and every end a start
    for e in ends:
        start = starts[e["bind_id"]]
        assert start["ts"] <= e["ts"]
        assert start["args"]["msg"] == e["args"]["msg"] == e["bind_id"]
        assert start["name"] == "send" and e["name"] == "deliver"
    return body


@pytest.fixture(scope="module")
def whole(small_run: RunResult, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("trace") / "run.json"
    account = write_chrome_trace(small_run, path, limit=None)
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    assert account["bytes"] == path.stat().st_size
    return doc


def test_the_trace_is_valid_and_every_send_links_to_its_deliveries(
    whole: dict[str, Any], small_run: RunResult
) -> None:
    body = validate(whole)
    sim = small_run.simulation
    assert sim is not None
    delivered = Counter(e.detail for e in sim.trace.events if e.kind == "deliver")
    flows_in = Counter(f"m{e['bind_id']}" for e in body if e.get("flow_in"))
    assert flows_in == delivered  # every delivery is at the end of a flow from its send
    fanned = [mid for mid, n in flows_in.items() if n > 1]
    assert fanned  # a feed update reaches both subscribers: one send, two arrows


def test_every_event_name_is_kebab_case(whole: dict[str, Any], small_run: RunResult) -> None:
    assert small_run.simulation is not None
    kinds = {e.kind for e in small_run.simulation.trace.events}
    assert "connect_retried" in kinds  # what the sim records; the export renames it
    names = {e["name"] for e in whole["traceEvents"] if e["ph"] in "iX" and e["pid"] != 1}
    assert "connect-retried" in names and "connect-failed" in names
    assert all(KEBAB.match(name) for name in names), sorted(n for n in names if not KEBAB.match(n))
    assert event_name("handshake_succeeded") == "handshake-succeeded"


def test_faults_are_slices_on_the_named_faults_process(whole: dict[str, Any]) -> None:
    meta = [e for e in whole["traceEvents"] if e["ph"] == "M"]
    processes = {e["pid"]: e["args"]["name"] for e in meta if e["name"] == "process_name"}
    assert processes[1] == "faults"
    assert {"exchange", "desk", "risk-host", "spare", "streams"} <= set(processes.values())
    faults = {e["name"]: e for e in whole["traceEvents"] if e["pid"] == 1 and e["ph"] != "M"}
    crash = faults["risk-host crashed"]
    assert crash["ph"] == "X" and crash["ts"] == 500_000 and crash["dur"] == 500_000
    assert faults["exchange<->desk latency 5 ms"]["dur"] == 400_000
    assert faults["exchange<->desk connections dropped"]["ph"] == "i"
    assert faults["spare crashed"]["args"]["until"] == "end of run"
    assert "crash risk-host" in faults  # what the simulator applied, on "fault events"


def test_a_limit_keeps_faults_and_errors_whole_messages_and_says_what_it_left_out(
    small_run: RunResult, tmp_path: Path
) -> None:
    path = tmp_path / "limited.json"
    account = write_chrome_trace(small_run, path, limit=2000)
    doc = json.loads(path.read_text(encoding="utf-8"))
    body = validate(doc)
    assert small_run.simulation is not None
    events = small_run.simulation.trace.events
    assert account["events_in_trace"] == len(events) > 2000
    assert account["events_written"] <= 2000
    assert sum(account["left_out"].values()) == len(events) - account["events_written"]
    assert doc["otherData"]["export"]["left_out"] == account["left_out"]
    assert any(e["name"] == "trace-sampled" for e in body)
    always = Counter(event_name(e.kind) for e in events if event_name(e.kind) in ALWAYS_KEPT)
    for name in always:
        assert name not in account["left_out"], name
    sends = Counter(e["name"] for e in body)["send"]
    assert 0 < sends < account["messages_in_trace"]
    again = tmp_path / "again.json"
    write_chrome_trace(small_run, again, limit=2000)
    assert again.read_bytes() == path.read_bytes()  # the same sample every time


def test_sampling_keeps_about_that_fraction_of_the_messages(
    small_run: RunResult, tmp_path: Path
) -> None:
    account = write_chrome_trace(small_run, tmp_path / "half.json", limit=None, sample=0.5)
    validate(json.loads((tmp_path / "half.json").read_text(encoding="utf-8")))
    fraction = account["messages_written"] / account["messages_in_trace"]
    assert 0.4 < fraction < 0.6


def test_the_cli_bounds_the_trace_and_refuses_a_limit_without_a_trace(
    scenario_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cli.json"
    args = ["run", str(scenario_file), "--no-progress", "--trace", str(path)]
    assert main([*args, "--trace-limit", "1500", "--trace-sample", "0.9"]) == 0
    doc = json.loads(path.read_text(encoding="utf-8"))
    validate(doc)
    export = doc["otherData"]["export"]
    assert export["trace_limit"] == 1500 and export["trace_sample"] == 0.9
    assert "left out" in capsys.readouterr().err
    assert main(["run", str(scenario_file), "--trace-limit", "10"]) == 2
    assert "--trace only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main([*args, "--trace-sample", "0"])
    assert refused.value.code == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    sorted(
        p.stem
        for p in SHIPPED.glob("*.toml")
        if "million" not in p.stem and "trading_day" not in p.stem
    ),
)
def test_every_shipped_scenario_exports_a_valid_trace(name: str, tmp_path: Path) -> None:
    from transportkit.scenario import load, run_scenario  # noqa: PLC0415

    scenario = SHIPPED / f"{name}.toml"
    result = run_scenario(load(scenario))
    write_chrome_trace(result, tmp_path / "run.json")
    validate(json.loads((tmp_path / "run.json").read_text(encoding="utf-8")))


@pytest.mark.slow
def test_the_flagship_trace_is_whole_and_bounded_by_default(tmp_path: Path) -> None:
    from transportkit.scenario import load, run_scenario  # noqa: PLC0415

    scenario = SHIPPED / "trading_day.toml"
    result = run_scenario(load(scenario))
    account = write_chrome_trace(result, tmp_path / "flagship.json")
    assert account["left_out"] == {}
    assert account["bytes"] < 16_000_000
    validate(json.loads((tmp_path / "flagship.json").read_text(encoding="utf-8")))


def test_trace_text_uses_the_same_names_as_the_export(small_run: RunResult) -> None:
    assert small_run.simulation is not None
    text = small_run.simulation.trace.format()
    assert " connect-retried " in text and "connect_retried" not in text
    assert " handshake-succeeded " in text
