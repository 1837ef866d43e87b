"""Exports of a run: Chrome trace-event JSON (Perfetto) and a PNG plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transportkit._extras import requires_extra
from transportkit.scenario._runner import RunResult
from transportkit.sim_backend._perfetto import chrome_trace, write_trace_json

__all__ = ["write_chrome_trace", "write_plot"]

MAX_TRACE_EVENTS = 500_000


def write_chrome_trace(result: RunResult, path: str | Path) -> int:
    """Write the run's trace as Chrome trace-event JSON; return the events written.

    Nodes are processes and sockets are threads; sends, deliveries and drops are
    instant events on their socket, faults are global instant events, and each stream's
    deliveries are also a counter track. Perfetto (ui.perfetto.dev) opens the file.

    Raises:
        ValueError: The run has no recorded trace (zmq backend, or record_trace off).
    """
    sim = result.simulation
    if sim is None or not sim.trace.record:
        raise ValueError(
            "no trace to export: run on the sim backend with record_trace enabled "
            "(the scenario's [scenario] record_trace, or the default)"
        )
    events = sim.trace.events[:MAX_TRACE_EVENTS]
    doc = chrome_trace(
        events,
        other_data={"scenario": result.scenario.name, "trace_hash": result.trace_hash},
    )
    trace_events: list[dict[str, Any]] = doc["traceEvents"]
    counts: dict[str, int] = {}
    for when, stream in result.metrics.timeline.deliveries:
        counts[stream] = counts.get(stream, 0) + 1
        trace_events.append(
            {"ph": "C", "name": f"delivered {stream}", "ts": when * 1e6, "pid": 0,
             "args": {"messages": counts[stream]}}
        )  # fmt: skip
    write_trace_json(doc, path)
    return len(events)


def write_plot(result: RunResult, path: str | Path) -> None:
    """Write a PNG: deliveries per stream over time with the faults marked, and the
    latency distribution of each stream.

    Raises:
        MissingExtraError: matplotlib is missing (an :class:`ImportError` whose message
            says ``pip install 'transportkit[plot]'``).
    """
    with requires_extra("plot", "--plot"):
        import matplotlib  # noqa: PLC0415 - optional dependency, loaded on demand

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8))
    end = max(result.elapsed, 1e-9)
    bins = 100
    by_stream: dict[str, list[float]] = {}
    for when, stream in result.metrics.timeline.deliveries:
        by_stream.setdefault(stream, []).append(when)
    for stream, times in sorted(by_stream.items()):
        top.hist(times, bins=bins, range=(0, end), histtype="step", label=stream)
    for at, fault, _outcome in result.faults:
        top.axvline(at, color="red", linestyle="--", linewidth=0.8)
        top.annotate(
            type(fault).__name__, (at, 1), xycoords=("data", "axes fraction"),
            rotation=90, va="top", fontsize=7, color="red",
        )  # fmt: skip
    top.set_xlabel("time (s)")
    top.set_ylabel(f"deliveries per {end / bins * 1000:.1f} ms")
    top.set_title(f"{result.scenario.name}: deliveries and faults ({result.backend})")
    if by_stream:
        top.legend(fontsize=8)
    for name, flow in sorted(result.metrics.streams.items()):
        hist = flow.latency
        if hist.get_total_count() == 0:
            continue
        values, weights = [], []
        for item in hist.get_recorded_iterator():
            values.append(item.value_iterated_to / 1000)
            weights.append(item.count_added_in_this_iter_step)
        bottom.hist(values, bins=60, weights=weights, histtype="step", label=name, log=True)
    bottom.set_xlabel("latency (us)")
    bottom.set_ylabel("messages")
    bottom.set_title("latency distribution")
    if result.metrics.streams:
        bottom.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
