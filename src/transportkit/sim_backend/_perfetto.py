"""A simulation trace as Chrome trace-event JSON, which Perfetto (ui.perfetto.dev) opens.

Used by the scenario runner's ``--trace`` and by the pytest plugin's failure folders;
it needs nothing beyond the standard library and :mod:`transportkit.sim_backend`.

What the document holds (see :func:`chrome_trace`):

- a process per node and a thread per socket (or link, for link events), each named
  by ``process_name``/``thread_name`` metadata; a process ``faults`` with a thread per
  thing a fault hit, the fault a slice from its start to its end (an instant when it
  has no duration), a thread ``fault events`` with what the simulator applied, and a
  thread ``run`` with the end of the run and what the export left out;
- each send and each delivery is a zero-length slice with the message id in its args,
  and a flow arrow from the send to each of its deliveries (Perfetto's v2 flow
  fields: ``bind_id``, ``flow_out`` on the send, ``flow_in`` on each delivery);
- every event name in kebab case (``connect-retried``, ``handshake-succeeded``): the
  simulator records its monitor events as ``connect_retried``; the export renames
  them, the trace and its hash are unchanged (:func:`event_name`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from transportkit.sim_backend._trace import TraceEvent, event_name

__all__ = [
    "ALWAYS_KEPT",
    "FAULTS_PROCESS",
    "TraceSpan",
    "chrome_trace",
    "event_name",
    "sample_rank",
    "write_trace_json",
]

FAULTS_PROCESS = "faults"
"""The name of the process that holds the fault tracks."""

_MESSAGE_KINDS = ("send", "deliver")
_FAULT_KINDS = ("fault",)
ALWAYS_KEPT = frozenset(
    {
        "fault",
        "run-end",
        "drop",
        "truncated",
        "connect-failed",
        "connect-retried",
        "handshake-failed",
        "heartbeat-timeout",
        "task-failed",
        "invariant",
        "unsubscribe-unknown",
        "auth-stop",
    }
)
"""Event names (after :func:`event_name`) a size limit or sampling never leaves out:
faults and errors. Names starting ``handshake-failed`` count too (the monitor's
``handshake-failed-no-detail`` and its kind)."""

_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / phi: spreads consecutive ids over [0, 2**64)
_MASK = (1 << 64) - 1
_FIRST_TID = 100_000  # thread ids apart from process ids: Perfetto ties tid == pid


class TraceSpan(NamedTuple):
    """A fault from ``start`` to ``end`` (None: an instant), on the faults track
    ``track`` (what it hit), called ``name``, with ``args`` shown in Perfetto.
    """

    start: float
    end: float | None
    track: str
    name: str
    args: Mapping[str, Any]


def _always_kept(name: str) -> bool:
    return name in ALWAYS_KEPT or name.startswith("handshake-failed")


def sample_rank(message_id: int) -> float:
    """Where message ``message_id`` falls in [0, 1): sampling at rate ``r`` keeps the
    messages whose rank is below ``r``, the same ones for the same trace.
    """
    return ((message_id * _GOLDEN) & _MASK) / 2.0**64


def _message_id(detail: str) -> int | None:
    if detail.startswith("m") and detail[1:].isdigit():
        return int(detail[1:])
    return None


def _spans_from_events(events: Sequence[TraceEvent], end: float) -> list[TraceSpan]:
    """Fault spans paired from the trace alone: crash to restart (a node), partition
    to repair and hold to release (a link direction); other faults are instants.
    """
    closers = {"restart": "crash", "repair": "partition", "release": "hold"}
    opened: dict[tuple[str, str], float] = {}
    spans: list[TraceSpan] = []
    for event in events:
        if event.kind != "fault":
            continue
        what = event.detail.split(" ", 1)[0]
        if what in ("crash", "partition", "hold"):
            opened.setdefault((event.subject, what), event.time)
        elif what in closers and (event.subject, closers[what]) in opened:
            start = opened.pop((event.subject, closers[what]))
            name = f"{closers[what]} {event.subject}"
            spans.append(TraceSpan(start, event.time, event.subject, name, {}))
        else:
            spans.append(
                TraceSpan(event.time, None, event.subject, f"{event.detail} {event.subject}", {})
            )
    for (subject, what), start in opened.items():
        spans.append(TraceSpan(start, end, subject, f"{what} {subject}", {"until": "end of run"}))
    spans.sort(key=lambda s: (s.start, s.track, s.name))
    return spans


def _select(
    events: Sequence[TraceEvent], limit: int | None, sample: float
) -> tuple[list[bool], dict[str, Any]]:
    """Which events to write (a flag per event) and an account of what was left out.

    Faults and errors are always kept; then other connection events, in time order;
    then whole messages (a send with all its deliveries), those of the lowest
    :func:`sample_rank` first, among those ``sample`` keeps.
    """
    names = [event_name(e.kind) for e in events]
    keep = [False] * len(events)
    always = other = 0
    per_message: Counter[int] = Counter()
    for i, (event, name) in enumerate(zip(events, names, strict=True)):
        if _always_kept(name):
            keep[i] = True
            always += 1
        elif event.kind in _MESSAGE_KINDS and _message_id(event.detail) is not None:
            per_message[_message_id(event.detail) or 0] += 1
        else:
            other += 1
    budget = None if limit is None else max(0, limit - always)
    other_budget = other if budget is None else min(other, budget)
    chosen: set[int] = set()
    message_budget = None if budget is None else budget - other_budget
    ranked = sorted(per_message, key=lambda mid: (sample_rank(mid), mid))
    used = 0
    for mid in ranked:
        if sample < 1.0 and sample_rank(mid) >= sample:
            break
        cost = per_message[mid]
        if message_budget is not None and used + cost > message_budget:
            break
        chosen.add(mid)
        used += cost
    taken_other = 0
    for i, event in enumerate(events):
        if keep[i]:
            continue
        message = _message_id(event.detail) if event.kind in _MESSAGE_KINDS else None
        if message is not None:
            keep[i] = message in chosen
        elif taken_other < other_budget:
            keep[i] = True
            taken_other += 1
    left_out: Counter[str] = Counter(
        name for name, kept in zip(names, keep, strict=True) if not kept
    )
    account = {
        "events_in_trace": len(events),
        "events_written": sum(keep),
        "trace_limit": limit,
        "trace_sample": sample,
        "messages_in_trace": len(per_message),
        "messages_written": len(chosen),
        "left_out": dict(sorted(left_out.items())),
        "always_kept": always,
        "always_kept_over_limit": limit is not None and always > limit,
    }
    return keep, account


def chrome_trace(
    events: Iterable[TraceEvent],
    *,
    other_data: Mapping[str, Any] | None = None,
    spans: Sequence[TraceSpan] | None = None,
    limit: int | None = None,
    sample: float = 1.0,
    counters: Mapping[str, Sequence[tuple[float, Mapping[str, float]]]] | None = None,
) -> dict[str, Any]:
    """The trace events as a Chrome trace-event document (a JSON-able dict).

    See the module docstring for the tracks. Times are virtual microseconds.

    Args:
        events: The events, in order (for example ``sim.trace.events``).
        other_data: Put in the document's ``otherData`` (the trace hash, a name...).
        spans: The faults as spans for the ``faults`` tracks; by default they are
            paired from the trace's own fault events (crash to restart, partition to
            repair, hold to release; the others are instants).
        limit: Write at most this many of ``events``, or all with None (the fault
            slices, the counters, the ``trace-sampled`` note and the metadata come
            on top: a few per fault, at most ``len(counters)`` times their points).
            Faults and errors (:data:`ALWAYS_KEPT`) are always written, even past
            the limit; then the other connection events, in time order;
            then whole messages (a send and all its deliveries, so every flow has its
            two ends), chosen by :func:`sample_rank`.
        sample: Write only this fraction of the messages (0 to 1; 1: all), chosen by
            :func:`sample_rank`, before the limit applies.
        counters: Counter tracks of a process ``streams``: per track name, its values
            over time, ``(seconds, {series: value})`` (not counted in ``limit``).

    Raises:
        ValueError: ``limit`` is negative or ``sample`` is not in [0, 1].

    What was left out, and why, is in ``otherData["export"]`` and, when anything
    was, in an instant ``trace-sampled`` on the ``run`` thread at time 0.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be at least 0, got {limit}")
    if not 0.0 <= sample <= 1.0:
        raise ValueError(f"sample must be between 0 and 1, got {sample}")
    events = list(events)
    keep, account = _select(events, limit, sample)
    end = events[-1].time if events else 0.0
    pids: dict[str, int] = {}
    tids: dict[tuple[str, str], tuple[int, int]] = {}
    meta: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []

    def process(name: str) -> int:
        pid = pids.get(name)
        if pid is None:
            pid = pids[name] = len(pids) + 1
            meta.append({"ph": "M", "name": "process_name", "pid": pid, "args": {"name": name}})
            meta.append(
                {"ph": "M", "name": "process_sort_index", "pid": pid, "args": {"sort_index": pid}}
            )
        return pid

    def thread(proc: str, name: str) -> tuple[int, int]:
        ids = tids.get((proc, name))
        if ids is None:
            pid = process(proc)
            ids = tids[(proc, name)] = (pid, _FIRST_TID + len(tids))
            meta.append(
                {
                    "ph": "M",
                    "name": "thread_name",
                    "pid": pid,
                    "tid": ids[1],
                    "args": {"name": name},
                }
            )
        return ids

    def us(seconds: float) -> float:
        return round(seconds * 1e6, 3)

    process(FAULTS_PROCESS)
    run_track = thread(FAULTS_PROCESS, "run")
    fault_spans = _spans_from_events(events, end) if spans is None else list(spans)
    lanes: dict[str, list[float]] = {}
    for span in fault_spans:
        stop = span.start if span.end is None else span.end
        ends = lanes.setdefault(span.track, [])
        lane = next((i for i, busy in enumerate(ends) if busy <= span.start), len(ends))
        if lane == len(ends):
            ends.append(stop)
        else:
            ends[lane] = stop
        label = span.track or "other"
        pid, tid = thread(FAULTS_PROCESS, label if lane == 0 else f"{label} ({lane + 1})")
        record: dict[str, Any] = {"name": span.name, "ts": us(span.start), "pid": pid, "tid": tid}
        if span.end is None:
            record["ph"] = "i"
        else:
            record["ph"] = "X"
            record["dur"] = round(us(span.end) - us(span.start), 3)
        if span.args:
            record["args"] = dict(span.args)
        out.append(record)

    # A flow needs both ends written: a send with a written delivery, and back.
    sent: set[int] = set()
    delivered: set[int] = set()
    for event, kept in zip(events, keep, strict=True):
        if kept and event.kind in _MESSAGE_KINDS:
            mid = _message_id(event.detail)
            if mid is not None:
                (sent if event.kind == "send" else delivered).add(mid)
    linked = sent & delivered

    for event, kept in zip(events, keep, strict=True):
        if not kept:
            continue
        ts = us(event.time)
        name = event_name(event.kind)
        if event.kind in _FAULT_KINDS:
            pid, tid = thread(FAULTS_PROCESS, "fault events")
            what = event.detail.split(" ", 1)[0]
            out.append(
                {"ph": "i", "name": f"{what} {event.subject}", "ts": ts, "pid": pid, "tid": tid,
                 "args": {"subject": event.subject, "detail": event.detail}}
            )  # fmt: skip
            continue
        if event.kind == "run-end":
            out.append(
                {"ph": "i", "name": name, "ts": ts, "pid": run_track[0], "tid": run_track[1]}
            )
            continue
        subject = event.subject or "sim"
        node = subject.split("/", 1)[0] if "/" in subject else subject.split("->", 1)[0]
        pid, tid = thread(node, subject)
        mid = _message_id(event.detail) if event.kind in _MESSAGE_KINDS else None
        if mid is not None:
            record = {"ph": "X", "name": name, "ts": ts, "dur": 0, "pid": pid, "tid": tid,
                      "args": {"msg": mid}}  # fmt: skip
            if mid in linked:
                record["bind_id"] = mid
                record["flow_out" if event.kind == "send" else "flow_in"] = True
            out.append(record)
            continue
        record = {"ph": "i", "name": name, "ts": ts, "pid": pid, "tid": tid}
        if event.detail:
            record["args"] = {"detail": event.detail}
        out.append(record)

    for track, points in sorted((counters or {}).items()):
        pid, tid = thread("streams", track)
        for at, values in points:
            out.append(
                {"ph": "C", "name": track, "ts": us(at), "pid": pid, "tid": tid,
                 "args": dict(values)}
            )  # fmt: skip

    if account["left_out"]:
        out.append(
            {"ph": "i", "name": "trace-sampled", "ts": 0.0, "pid": run_track[0],
             "tid": run_track[1], "args": dict(account)}
        )  # fmt: skip
    data = dict(other_data or {})
    data["export"] = account
    return {"traceEvents": meta + out, "displayTimeUnit": "ns", "otherData": data}


def write_trace_json(doc: Mapping[str, Any], path: str | Path) -> int:
    """Write a document made by :func:`chrome_trace` to ``path`` (compact UTF-8 JSON);
    return the bytes written.

    Raises:
        OSError: ``path`` could not be written.
    """
    text = json.dumps(doc, separators=(",", ":"))
    data = text.encode("utf-8")
    Path(path).write_bytes(data)
    return len(data)
