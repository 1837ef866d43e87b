"""The plot of a run (``transportkit run --plot FILE``): one PNG for a post-mortem.

Three panels, one colour per stream throughout:

1. deliveries per second of every stream over run time;
2. what went wrong over run time, per stream: typed failures, rejections, sequence
   gaps, and (on the sim, from its trace) messages dropped by sockets;
3. the latency distribution of every stream, HDR style: latency (log) against the
   percentile on a ``1 / (1 - p)`` axis, so the tail from P90 to the maximum is as
   wide as the body.

The faults are shaded bands (a fault with a duration) or lines (an instant one) on the
two time panels, numbered, with their times and descriptions in a table beside the
panels. The title names the scenario, the seed, the backend and the verdict.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transportkit._extras import requires_extra
from transportkit.scenario._metrics import Timeline
from transportkit.scenario._runner import RunResult
from transportkit.scenario._spans import FaultSpan, fault_spans

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["PLOT_BINS", "make_figure", "write_plot"]

PLOT_BINS = 200
"""About how many time bins the time panels have (the timeline's bins are merged)."""

MAX_FAULTS_LISTED = 12
"""The fault table beside the panels lists this many faults at most (the report has
them all); the bands and their numbers are all drawn."""

MAX_LABEL = 60
"""Longer fault descriptions are cut, with an ellipsis, in the table."""

MIN_PER_BIN = 8
"""A stream's deliveries panel bins hold this many deliveries on average, at least..."""

MIN_BINS = 25
"""...unless that leaves fewer than this many bins over the run."""

_FAILURES = ("failed", "rejected", "gap", "dropped")
_FAILURE_STYLE = {
    "failed": ("X", "typed failures"),
    "rejected": ("v", "rejected"),
    "gap": ("o", "sequence gaps"),
    "dropped": ("s", "dropped by sockets"),
}
_NO_STREAM = "{node} (no stream)"
"""How drops of a socket no stream tracks are shown (a Lazy Pirate client's discarded
request sockets, a Clone server's publisher...): by the node of the socket."""
_FAULT_COLOURS = {
    "crashed": "tab:red",
    "partitioned": "tab:purple",
    "held": "tab:brown",
    "latency": "tab:orange",
}
_PERCENTILE_TICKS = (0.0, 90.0, 99.0, 99.9, 99.99, 99.999, 99.9999, 99.99999)


def _fault_colour(span: FaultSpan) -> str:
    for word, colour in _FAULT_COLOURS.items():
        if word in span.label:
            return colour
    return "tab:gray"


def _drops(result: RunResult, timeline: Timeline) -> Timeline:
    """``timeline`` plus the sim trace's drops per stream (``dropped``), if recorded."""
    sim = result.simulation
    if sim is None or not sim.trace.record:
        return timeline
    merged = Timeline(bin_seconds=timeline.bin_seconds)
    merged.merge(timeline)
    streams = result.metrics.socket_streams
    for event in sim.trace.events:
        if event.kind != "drop":
            continue
        parts = event.detail.split()
        count = int(parts[1][1:]) if len(parts) > 1 and parts[1][1:].isdigit() else 1
        stream = streams.get(event.subject)
        if stream is None:
            stream = _NO_STREAM.format(node=event.subject.split("/", 1)[0].split("->", 1)[0])
        merged.add(event.time, stream, "dropped", count)
    return merged


def _rebinned(bins: Counter[int], width: float, factor: int, n: int) -> list[float]:
    out = [0.0] * n
    for index, count in bins.items():
        slot = index // factor
        if slot < n:
            out[slot] += count
    return out


def _percentile_curve(hist: Any) -> tuple[list[float], list[float]]:
    """(x = 1 / (1 - p), latency in us) along an HDR histogram, to its maximum."""
    total = hist.get_total_count()
    top = max(float(total), 10.0)
    steps = 160
    xs: list[float] = []
    ys: list[float] = []
    for i in range(steps + 1):
        x = top ** (i / steps)
        percentile = 100.0 * (1.0 - 1.0 / x)
        xs.append(x)
        ys.append(max(hist.get_value_at_percentile(percentile) / 1000, 1e-3))
    xs.append(top)
    ys.append(max(hist.get_max_value() / 1000, 1e-3))
    return xs, ys


def _number(value: float) -> str:
    """Three significant digits, never in exponent form (``1000``, not ``1e+03``)."""
    text = f"{value:.3g}"
    return f"{value:.0f}" if "e" in text else text


def _latency_text(us: float) -> str:
    if us >= 1e6:
        return f"{_number(us / 1e6)} s"
    if us >= 1000:
        return f"{_number(us / 1000)} ms"
    return f"{_number(us)} µs"


def _seconds(value: float) -> str:
    """A time in seconds to the millisecond, without trailing zeros (``22.613``, ``5``)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 3] + "..."


def _verdict(result: RunResult) -> str:
    failed = sum(1 for v in result.verdicts if not v.passed)
    total = len(result.verdicts)
    if failed:
        return f"FAILED: {failed} of {total} invariants"
    if not result.representative:
        return "NOT REPRESENTATIVE (load not offered)"
    return f"PASSED: {total} invariants"


def _stagger(spans: list[FaultSpan], end: float, levels: int = 4) -> list[int]:
    """A height level per span, so that number tags close in time do not overlap."""
    placed: list[tuple[float, int]] = []
    out: list[int] = []
    for span in spans:
        taken = {level for at, level in placed if abs(at - span.start) < 0.04 * end}
        level = next((lv for lv in range(levels) if lv not in taken), len(out) % levels)
        placed.append((span.start, level))
        out.append(level)
    return out


def make_figure(result: RunResult) -> Figure:
    """Build the run's figure (see the module docstring) without writing it.

    Raises:
        MissingExtraError: matplotlib is missing (an :class:`ImportError` whose message
            says ``pip install 'transportkit[plot]'``).
    """
    with requires_extra("plot", "--plot"):
        import matplotlib  # noqa: PLC0415 - optional dependency, loaded on demand

        matplotlib.use("Agg")
        from matplotlib.figure import Figure  # noqa: PLC0415
        from matplotlib.lines import Line2D  # noqa: PLC0415
        from matplotlib.patches import Patch  # noqa: PLC0415
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: PLC0415

    end = max(result.elapsed, 1e-9)
    streams = sorted(result.metrics.streams)
    palette = [f"C{i}" for i in range(10)]
    timeline = _drops(result, result.metrics.timeline)
    others = sorted({stream for stream, _ in timeline.series} - set(streams))
    colour = {name: palette[i % len(palette)] for i, name in enumerate(streams + others)}
    width = timeline.bin_seconds
    factor = max(1, math.ceil(end / PLOT_BINS / width))
    plot_width = width * factor
    n = max(1, math.ceil(end / plot_width) + 1)
    times = [i * plot_width for i in range(n)]
    spans = fault_spans(result.faults, end)

    fig = Figure(figsize=(13, 11), dpi=100, layout="constrained")
    grid = fig.add_gridspec(3, 2, width_ratios=(3.0, 1.25), height_ratios=(1, 1, 1.25))
    deliveries = fig.add_subplot(grid[0, 0])
    failures = fig.add_subplot(grid[1, 0], sharex=deliveries)
    latency = fig.add_subplot(grid[2, 0])
    side = [fig.add_subplot(grid[row, 1]) for row in range(3)]
    for ax in side:
        ax.set_axis_off()

    # 1. Deliveries per second.
    for name in streams:
        bins = timeline.series.get((name, "delivered"))
        if not bins:
            continue
        # A slow stream gets wider bins (some MIN_PER_BIN deliveries each, on average),
        # so that its rate reads as a rate, not as a comb of zeros and ones.
        total = sum(bins.values())
        wide = max(factor, math.ceil(MIN_PER_BIN * end / max(total, 1) / width))
        wide = min(wide, max(factor, math.ceil(end / MIN_BINS / width)))
        slots = max(1, math.ceil(end / (wide * width)) + 1)
        counts = _rebinned(bins, width, wide, slots)
        deliveries.step(
            [i * wide * width for i in range(slots)], [c / (wide * width) for c in counts],
            where="post", color=colour[name], linewidth=1.2, label=f"{name} ({total:,})",
        )  # fmt: skip
    deliveries.set_yscale("symlog", linthresh=1.0)
    deliveries.set_ylim(bottom=0)
    deliveries.set_ylabel("deliveries per second")
    deliveries.set_title("deliveries over time (all receivers of each stream)", loc="left")

    # 2. Failures, rejections, gaps, drops.
    shown_failures = []
    highest = 2.0
    for name in streams + others:
        for what in _FAILURES:
            bins = timeline.series.get((name, what))
            if not bins:
                continue
            marker, words = _FAILURE_STYLE[what]
            counts = _rebinned(bins, width, factor, n)
            hit = [(t + plot_width / 2, c) for t, c in zip(times, counts, strict=True) if c]
            highest = max([highest] + [c for _, c in hit])
            failures.plot(
                [t for t, _ in hit], [c for _, c in hit], linestyle="none", marker=marker,
                markersize=6, color=colour.get(name, "black"),
                markerfacecolor="none" if what in ("gap", "dropped") else colour.get(name, "black"),
                label=f"{name}: {words} ({sum(bins.values()):,})",
            )  # fmt: skip
            shown_failures.append((name, what))
    failures.set_yscale("symlog", linthresh=1.0)
    failures.set_ylim(bottom=0, top=highest * 1.6)
    failures.set_ylabel(f"events per {plot_width * 1e3:.0f} ms")
    failures.set_xlabel("run time (s)")
    failures.set_title("failures, rejections, gaps and drops over time", loc="left")
    if not shown_failures:
        failures.text(
            0.5, 0.5, "no failures, rejections, gaps or drops recorded",
            transform=failures.transAxes, ha="center", va="center", color="gray",
        )  # fmt: skip
    deliveries.set_xlim(0, end)
    deliveries.tick_params(labelbottom=True)
    deliveries.set_xlabel("run time (s)")
    load_end = result.scenario.duration
    for ax in (deliveries, failures):
        if load_end < end:
            ax.axvline(load_end, color="black", linestyle=(0, (1, 3)), linewidth=0.8)
    if load_end < end:
        deliveries.text(
            load_end, 0.02, " load ends", transform=deliveries.get_xaxis_transform(),
            fontsize=7, ha="left", va="bottom", color="black",
        )  # fmt: skip

    # Faults: bands and lines, numbered; the table is beside the panels.
    levels = _stagger(spans, end)
    for number, (span, level) in enumerate(zip(spans, levels, strict=True), start=1):
        shade = _fault_colour(span)
        for ax in (deliveries, failures):
            if span.end is None:
                ax.axvline(span.start, color=shade, linewidth=1.2, linestyle="--", gid="fault")
            else:
                ax.axvspan(
                    span.start, span.end, color=shade, alpha=0.14, linewidth=0,
                    hatch="//" if span.open_ended else None, gid="fault",
                )  # fmt: skip
        deliveries.text(
            span.start, 0.97 - 0.1 * level, f" {number} ",
            transform=deliveries.get_xaxis_transform(),
            fontsize=8, fontweight="bold", ha="left", va="top", color="white",
            bbox={"boxstyle": "round,pad=0.15", "facecolor": shade, "edgecolor": "none"},
        )  # fmt: skip

    stream_handles = [Line2D([], [], color=colour[name], linewidth=2) for name in streams]
    side[0].legend(
        stream_handles, [f"{name} ({result.metrics.streams[name].pattern})" for name in streams],
        title="streams", loc="upper left", fontsize=8, title_fontsize=9, frameon=False,
    )  # fmt: skip
    # One legend beside the failures panel: what each mark is, then the fault table.
    handles, labels = failures.get_legend_handles_labels()
    entries: list[tuple[Any, str]] = []
    if handles:
        entries.append((Patch(visible=False), "failures"))
        entries.extend(zip(handles, labels, strict=True))
    if spans:
        entries.append((Patch(visible=False), "faults"))
        for number, span in enumerate(spans[:MAX_FAULTS_LISTED], start=1):
            if span.end is None:
                when = f"{_seconds(span.start)} s"
            else:
                when = f"{_seconds(span.start)}-{_seconds(span.end)} s"
                when += " (to the end)" if span.open_ended else ""
            note = "" if span.outcome.startswith("applied") else f" [{span.outcome}]"
            swatch = Patch(
                facecolor=_fault_colour(span), alpha=0.5 if span.end is not None else 1.0
            )
            entries.append((swatch, f"{number}. {when}: {_clip(span.label + note)}"))
        if len(spans) > MAX_FAULTS_LISTED:
            more = len(spans) - MAX_FAULTS_LISTED
            entries.append((Patch(visible=False), f"... and {more} more (see the report)"))
    if entries:
        table = side[1].legend(
            [h for h, _ in entries], [t for _, t in entries], loc="upper left",
            fontsize=8 if len(entries) <= 12 else 7, frameon=False,
        )  # fmt: skip
        for text in table.get_texts():
            if text.get_text() in ("failures", "faults"):
                text.set_fontweight("bold")

    # 3. Latency percentile distribution, HDR style.
    most = 10.0
    lines = 0
    for name in streams:
        hist = result.metrics.streams[name].latency
        total = hist.get_total_count()
        if total == 0:
            continue
        xs, ys = _percentile_curve(hist)
        most = max(most, xs[-1])
        latency.plot(
            xs, ys, color=colour[name], linewidth=1.5,
            label=f"{name}: P99 {_latency_text(hist.get_value_at_percentile(99.0) / 1000)}, "
            f"max {_latency_text(hist.get_max_value() / 1000)} ({total:,})",
        )  # fmt: skip
        lines += 1
    latency.set_xscale("log")
    latency.set_yscale("log")
    ticks = [p for p in _PERCENTILE_TICKS if 1.0 / (1.0 - p / 100.0) <= most * 1.0001]
    latency.xaxis.set_major_locator(FixedLocator([1.0 / (1.0 - p / 100.0) for p in ticks]))
    latency.xaxis.set_minor_locator(NullLocator())
    latency.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{100 * (1 - 1 / x):.10g}"))
    latency.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: _latency_text(y)))
    latency.set_xlim(1.0, most)
    latency.grid(True, which="major", alpha=0.3)
    latency.set_xlabel("percentile (%)")
    latency.set_ylabel("latency")
    latency.set_title("latency by percentile (HDR histograms, all receivers)", loc="left")
    if lines:
        side[2].legend(
            *latency.get_legend_handles_labels(), title="latency", loc="upper left",
            fontsize=8, title_fontsize=9, frameon=False,
        )  # fmt: skip
    else:
        latency.text(
            0.5, 0.5, "no latency recorded", transform=latency.transAxes,
            ha="center", va="center", color="gray",
        )  # fmt: skip
        latency.set_xticks([])
        latency.set_yticks([])
        latency.xaxis.set_minor_locator(NullLocator())
        latency.yaxis.set_minor_locator(NullLocator())
    fig.suptitle(
        f"{result.scenario.name}: seed {result.seed}, {result.backend} backend, "
        f"{_seconds(end)} s of run time: {_verdict(result)}",
        fontsize=13,
    )
    return fig


def write_plot(result: RunResult, path: str | Path) -> None:
    """Write the run's figure (see :func:`make_figure`) as a PNG to ``path``.

    Raises:
        MissingExtraError: matplotlib is missing (an :class:`ImportError` whose message
            says ``pip install 'transportkit[plot]'``).
        OSError: ``path`` could not be written.
    """
    fig = make_figure(result)
    fig.savefig(path, format="png")
