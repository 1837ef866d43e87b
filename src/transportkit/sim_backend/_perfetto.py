"""A simulation trace as Chrome trace-event JSON, which Perfetto (ui.perfetto.dev) opens.

Used by the scenario runner's ``--trace`` and by the pytest plugin's failure folders;
it needs nothing beyond the standard library and :mod:`transportkit.sim_backend`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from transportkit.sim_backend._trace import TraceEvent

__all__ = ["chrome_trace", "write_trace_json"]

_GLOBAL_KINDS = ("fault", "run-end")


def chrome_trace(
    events: Iterable[TraceEvent], *, other_data: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The trace events as a Chrome trace-event document (a JSON-able dict).

    Nodes are processes and sockets are threads (a subject ``node/socket`` or
    ``node->peer`` belongs to ``node``); sends, deliveries, drops and connection
    changes are instant events on their socket with the event's detail in ``args``;
    faults and the end of a run are global instant events. Times are virtual
    microseconds. Callers may append more events (counter tracks) to
    ``doc["traceEvents"]``.

    Args:
        events: The events, in order (for example ``sim.trace.events``).
        other_data: Put in the document's ``otherData`` (the trace hash, a name...).
    """
    pids: dict[str, int] = {}
    tids: dict[str, int] = {}
    out: list[dict[str, Any]] = []

    def ids(subject: str) -> tuple[int, int]:
        node = subject.split("/", 1)[0] if "/" in subject else subject.split("->", maxsplit=1)[0]
        if node not in pids:
            pids[node] = len(pids) + 1
            out.append(
                {"ph": "M", "name": "process_name", "pid": pids[node], "args": {"name": node}}
            )
        if subject not in tids:
            tids[subject] = len(tids) + 1
            out.append(
                {
                    "ph": "M", "name": "thread_name", "pid": pids[node], "tid": tids[subject],
                    "args": {"name": subject},
                }
            )  # fmt: skip
        return pids[node], tids[subject]

    for event in events:
        ts = event.time * 1e6
        if event.kind in _GLOBAL_KINDS:
            out.append(
                {
                    "ph": "i", "s": "g", "name": f"{event.kind} {event.subject} {event.detail}",
                    "ts": ts, "pid": 0, "tid": 0,
                }
            )  # fmt: skip
        else:
            pid, tid = ids(event.subject or "sim")
            out.append(
                {
                    "ph": "i", "s": "t", "name": event.kind, "ts": ts, "pid": pid, "tid": tid,
                    "args": {"detail": event.detail},
                }
            )  # fmt: skip
    return {"traceEvents": out, "displayTimeUnit": "ns", "otherData": dict(other_data or {})}


def write_trace_json(doc: Mapping[str, Any], path: str | Path) -> None:
    """Write a document made by :func:`chrome_trace` to ``path`` (UTF-8 JSON)."""
    Path(path).write_text(json.dumps(doc), encoding="utf-8")
