"""Exports of a run: Chrome trace-event JSON (Perfetto) and a PNG plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from transportkit.scenario._plot import write_plot
from transportkit.scenario._runner import RunResult
from transportkit.scenario._spans import fault_spans
from transportkit.sim_backend._perfetto import TraceSpan, chrome_trace, write_trace_json

__all__ = ["COUNTER_BINS", "DEFAULT_TRACE_LIMIT", "write_chrome_trace", "write_plot"]

DEFAULT_TRACE_LIMIT = 150_000
"""The most trace events ``--trace`` writes by default: about 19 MB of JSON (some 125
bytes an event), which Perfetto's web UI loads in seconds. The whole flagship
(112,431 events, 14 MB) fits; a longer run is sampled by message. Faults and errors
are always written."""

COUNTER_BINS = 1000
"""About how many points each stream's counter track has over the run."""


def _counters(result: RunResult) -> dict[str, list[tuple[float, dict[str, float]]]]:
    """Per stream, its timeline as rates (events per second) in about
    :data:`COUNTER_BINS` steps over the run.
    """
    timeline = result.metrics.timeline
    width = timeline.bin_seconds
    factor = max(1, math.ceil(max(result.elapsed, 1e-9) / COUNTER_BINS / width))
    step = width * factor
    steps = max(1, math.ceil(result.elapsed / step) + 1)
    tracks: dict[str, list[tuple[float, dict[str, float]]]] = {}
    streams = sorted({stream for stream, _ in timeline.series})
    for stream in streams:
        whats = sorted(what for s, what in timeline.series if s == stream)
        rows = [[0.0] * len(whats) for _ in range(steps)]
        for column, what in enumerate(whats):
            for index, count in timeline.series[(stream, what)].items():
                slot = min(index // factor, steps - 1)
                rows[slot][column] += count / step
        points: list[tuple[float, dict[str, float]]] = []
        previous: list[float] | None = None
        for slot, row in enumerate(rows):
            if row != previous:  # a counter holds its value until the next point
                points.append(
                    (
                        slot * step,
                        {f"{w}/s": round(v, 3) for w, v in zip(whats, row, strict=True)},
                    )
                )
                previous = row
        tracks[stream] = points
    return tracks


def write_chrome_trace(
    result: RunResult,
    path: str | Path,
    *,
    limit: int | None = DEFAULT_TRACE_LIMIT,
    sample: float = 1.0,
) -> dict[str, Any]:
    """Write the run's trace as Chrome trace-event JSON, which Perfetto opens.

    Nodes are processes and sockets are threads; each send and delivery is a slice
    with a flow arrow from the send to each of its deliveries; the faults are slices
    (an instant when they have no duration) on the ``faults`` process, one thread per
    thing they hit; each stream's deliveries, failures, rejections and gaps per
    second are counter tracks of a process ``streams``. See
    :func:`transportkit.sim_backend._perfetto.chrome_trace`.

    Args:
        result: A sim run with its trace recorded.
        path: The file to write.
        limit: Write at most this many trace events (faults and errors always, then
            connection events, then whole messages, sampled); None: no limit.
        sample: Write only this fraction of the messages (0 to 1), before the limit.

    Returns:
        What was written and left out (``otherData["export"]`` of the file), with the
        file's ``bytes``.

    Raises:
        ValueError: The run has no recorded trace (zmq backend, or record_trace off),
            or ``limit``/``sample`` is out of range.
        OSError: ``path`` could not be written.
    """
    sim = result.simulation
    if sim is None or not sim.trace.record:
        raise ValueError(
            "no trace to export: run on the sim backend with record_trace enabled "
            "(the scenario's [scenario] record_trace, or the default)"
        )
    spans = [
        TraceSpan(
            s.start,
            s.end,
            s.target,
            s.label,
            {"outcome": s.outcome, **({"until": "end of run"} if s.open_ended else {})},
        )
        for s in fault_spans(result.faults, result.elapsed)
    ]
    doc = chrome_trace(
        sim.trace.events,
        other_data={
            "scenario": result.scenario.name,
            "seed": result.seed,
            "backend": result.backend,
            "trace_hash": result.trace_hash,
        },
        spans=spans,
        limit=limit,
        sample=sample,
        counters=_counters(result),
    )
    size = write_trace_json(doc, path)
    account: dict[str, Any] = dict(doc["otherData"]["export"])
    account["bytes"] = size
    return account
