"""The ``scenario`` figure of ``transportkit bench``: what a user feels when running a
shipped scenario (``transportkit run trading_day``) or sweeping seeds of it.

For each of :attr:`BenchConfig.scenario_names`, in interleaved rounds together with
the sim figure's PUB/SUB run (:func:`transportkit._bench._sim.sim_pubsub`): virtual
seconds per wall second, deliveries, and wall time per delivery; the ratio of the
flagship's wall time per delivery to the sim PUB/SUB's, taken within each round; and a
cProfile of one flagship run grouped by layer.

A *delivery* is one message arriving at a receiving socket: one ``deliver`` event of
the simulation's trace (``Simulation.trace.counts["deliver"]``), whatever the socket
type (SUB, REP, ROUTER, DEALER, ...), heartbeats and requests included. That is what
the sim PUB/SUB figure counts too: there every message reaches the one SUB, which
reads it. The scenario report's streams count less: only what the components count as
delivered (market-data updates, replies); both are in the figure.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Final

from transportkit import _wallclock as wallclock
from transportkit._bench._common import BenchConfig, check_target, interleaved, median, paired_ratio

__all__ = ["LAYERS", "TARGETS", "checks", "format_lines", "layer_of", "run"]

FLAGSHIP: Final = "trading_day"
"""The scenario the target and the profile are about (the first name if it is not run)."""

TARGETS: Final[dict[str, tuple[str, float]]] = {
    "scenario_per_delivery_vs_sim": ("<=", 3.0),
}

LAYERS: Final = (
    "sim network/loop",
    "trading components",
    "protobuf encode/decode",
    "metrics and HDR recording",
    "timers",
    "trace/report",
    "other",
)
"""The profile's layers, in report order (see :func:`layer_of`)."""

_TOP: Final = 15

# (what a path contains, its layer), first match wins: by file, as cProfile names them.
_BY_PATH: Final = (
    ("sim_backend/_trace.py", "trace/report"),
    ("sim_backend/_perfetto.py", "trace/report"),
    ("scenario/_report.py", "trace/report"),
    ("scenario/_invariants.py", "trace/report"),
    ("scenario/_metrics.py", "metrics and HDR recording"),
    ("transportkit/metrics.py", "metrics and HDR recording"),
    ("hdrh/", "metrics and HDR recording"),
    ("google/protobuf/", "protobuf encode/decode"),
    ("trading/_pb/", "protobuf encode/decode"),
    ("trading/_codec.py", "protobuf encode/decode"),
    ("sim_backend/", "sim network/loop"),
    ("simpy/", "sim network/loop"),
    ("scenario/", "trading components"),
    ("trading/", "trading components"),
    ("patterns/", "trading components"),
    ("/heapq.py", "timers"),
)
# asyncio's own files: the timers' part of them (by function), the rest is the loop.
_TIMER_FUNCTIONS: Final = frozenset(
    {"sleep", "call_at", "call_later", "cancel", "__lt__", "__le__", "__eq__", "when"}
)
_TIMER_BUILTINS: Final = ("heappush", "heappop", "heapify")
_PROTOBUF_BUILTINS: Final = ("SerializeToString", "ParseFromString", "google._upb", "Message")


def layer_of(path: str, function: str) -> str | None:
    """The layer of a profiled function (its file ``path`` and name, as cProfile has
    them), or None for a built-in (``path == "~"``) that is not protobuf's or a heap's,
    and for :mod:`random` (the components' generators and the sim's latency models
    both draw from it): its time is then the layer of whoever called it.
    """
    if path == "~" or path.endswith("/random.py"):  # the components' or the latency's
        if any(name in function for name in _PROTOBUF_BUILTINS):
            return "protobuf encode/decode"
        if any(name in function for name in _TIMER_BUILTINS):
            return "timers"
        if "_contextvars.Context" in function or "set_result" in function:
            return "sim network/loop"
        return None
    where = path.replace("\\", "/")
    for part, layer in _BY_PATH:
        if part in where:
            return layer
    if "/asyncio/" in where:
        return "timers" if function in _TIMER_FUNCTIONS else "sim network/loop"
    return "other"


def _layer(key: tuple[str, int, str], entries: dict[Any, Any], depth: int = 0) -> dict[str, float]:
    """Shares of layers a function's own time goes to: its own layer, or for a
    built-in its callers' (by the time spent in it from each), up to three levels up.
    """
    layer = layer_of(key[0], key[2])
    if layer is not None:
        return {layer: 1.0}
    callers = entries[key][4]
    total = sum(row[2] for row in callers.values())
    if depth > 2 or not total:
        return {"other": 1.0}
    shares: dict[str, float] = {}
    for caller, row in callers.items():
        for name, share in _layer(caller, entries, depth + 1).items():
            shares[name] = shares.get(name, 0.0) + share * row[2] / total
    return shares


def profile(run: Callable[[], Any], top: int = _TOP) -> dict[str, Any]:
    """Profile ``run()`` with cProfile: every function's own time summed by layer (built-ins go to
    their callers' layers), and the ``top`` functions by own time.
    """
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        run()
    finally:
        profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in entries.values())
    seconds = dict.fromkeys(LAYERS, 0.0)
    for key, row in entries.items():
        for name, share in _layer(key, entries).items():
            seconds[name] += row[2] * share
    rows = []
    for (path, line, func), (_cc, calls, tottime, cumtime, _callers) in sorted(
        entries.items(), key=lambda item: (-item[1][2], item[0])
    )[:top]:
        where = path.split("/transportkit/")[-1].split("/site-packages/")[-1]
        layers = _layer((path, line, func), entries)
        rows.append(
            {
                "function": f"{where}:{line}({func})",
                "layer": max(layers, key=lambda name: layers[name]),
                "calls": calls,
                "tottime_s": tottime,
                "cumtime_s": cumtime,
                "share": tottime / total if total else 0.0,
            }
        )
    return {
        "total_s": total,
        "layers": {
            name: {"seconds": value, "share": value / total if total else 0.0}
            for name, value in seconds.items()
        },
        "top": rows,
    }


def _scenario(name: str, duration_s: float) -> Any:
    from transportkit.scenario._runner import load, shortened  # noqa: PLC0415

    scenario = load(name)
    if 0 < duration_s < scenario.duration:
        scenario = shortened(scenario, duration_s)
    return scenario


def run_once(scenario: Any) -> dict[str, Any]:
    """Run ``scenario`` on the sim once; its wall time, virtual time and deliveries.

    ``deliveries`` are messages that arrived at a receiving socket (the trace's
    ``deliver`` events); ``stream_deliveries`` what the report's streams count
    delivered (summed over streams).
    """
    from transportkit.scenario._runner import run_scenario  # noqa: PLC0415

    start, cpu = wallclock.perf_counter(), time.process_time()
    result = run_scenario(scenario)
    wall, cpu = wallclock.perf_counter() - start, time.process_time() - cpu
    sim = result.simulation
    assert sim is not None  # a sim run keeps its simulation
    deliveries = int(sim.trace.counts["deliver"])
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "virtual_s": float(result.elapsed),
        "deliveries": deliveries,
        "stream_deliveries": sum(s.delivered for s in result.metrics.streams.values()),
        "passed": result.passed,
        "trace_hash": result.trace_hash,
    }


def _sim_run(count: int) -> Callable[[], dict[str, Any]]:
    def one() -> dict[str, Any]:
        from transportkit._bench._sim import sim_pubsub  # noqa: PLC0415

        start, cpu = wallclock.perf_counter(), time.process_time()
        delivered = sim_pubsub(count)
        return {
            "wall_s": wallclock.perf_counter() - start,
            "cpu_s": time.process_time() - cpu,
            "deliveries": delivered,
        }

    return one


def _per_delivery_us(row: dict[str, Any], clock: str = "wall_s") -> float:
    return row[clock] / row["deliveries"] * 1e6 if row["deliveries"] else float("nan")


def run(config: BenchConfig) -> dict[str, Any]:
    """Every scenario of ``config.scenario_names`` against the sim PUB/SUB, in rounds."""
    names = list(config.scenario_names)
    scenarios = {name: _scenario(name, config.scenario_duration_s) for name in names}
    variants: dict[str, Callable[[], dict[str, Any]]] = {
        "sim_pubsub": _sim_run(config.sim_messages)
    }
    for name, scenario in scenarios.items():
        variants[name] = partial(run_once, scenario)
    rounds = interleaved(variants, config.rounds)
    sim_us = [_per_delivery_us(row) for row in rounds["sim_pubsub"]]
    sim_cpu_us = [_per_delivery_us(row, "cpu_s") for row in rounds["sim_pubsub"]]
    figures: dict[str, Any] = {}
    for name in names:
        rows = rounds[name]
        first = rows[0]
        if any(row["deliveries"] != first["deliveries"] for row in rows):
            raise RuntimeError(f"{name}: the deliveries differ between runs of one seed")
        us = [_per_delivery_us(row) for row in rows]
        cpu_us = [_per_delivery_us(row, "cpu_s") for row in rows]
        figures[name] = {
            "duration_s": scenarios[name].duration,
            "virtual_s": first["virtual_s"],
            "deliveries": first["deliveries"],
            "stream_deliveries": first["stream_deliveries"],
            "passed": first["passed"],
            "trace_hash": first["trace_hash"],
            "wall_s": median([row["wall_s"] for row in rows]),
            "virtual_s_per_wall_s": median([row["virtual_s"] / row["wall_s"] for row in rows]),
            "us_per_delivery": median(us),
            "us_per_delivery_rounds": us,
            "vs_sim_pubsub": paired_ratio(us, sim_us),
            "cpu_us_per_delivery": median(cpu_us),
            "cpu_vs_sim_pubsub": paired_ratio(cpu_us, sim_cpu_us),
        }
    flagship = FLAGSHIP if FLAGSHIP in scenarios else names[0]
    return {
        "what": (
            "a delivery is a message arriving at a receiving socket (a 'deliver' event "
            "of the sim's trace: SUB, REP, ROUTER, DEALER alike, requests and heartbeats "
            "included), as in the sim PUB/SUB figure, where every message reaches the "
            "one SUB and is read; 'stream deliveries' is what the scenario report's "
            "streams count delivered (updates and replies only)"
        ),
        "rounds": config.rounds,
        "sim_pubsub": {
            "messages": config.sim_messages,
            "us_per_delivery": median(sim_us),
            "us_per_delivery_rounds": sim_us,
            "cpu_us_per_delivery": median(sim_cpu_us),
        },
        "scenarios": figures,
        "flagship": flagship,
        "profile": profile(lambda: run_once(scenarios[flagship])),
    }


def format_lines(figure: dict[str, Any]) -> list[str]:
    """The figure as Markdown lines: the scenarios' table, then the flagship's profile."""
    sim = figure["sim_pubsub"]
    lines = [
        f"### Scenarios on the sim ({figure['rounds']} interleaved rounds with the sim "
        f"PUB/SUB of {sim['messages']} messages: {sim['us_per_delivery']:.2f} us per delivery)",
        "",
        f"Deliveries: {figure['what']}. The target is on wall time; the CPU columns "
        "(process time, the same rounds) are the same ratio less what other tenants "
        "of a shared machine took.",
        "",
        "| scenario | virtual s | deliveries | stream deliveries | wall s | "
        "virtual s / wall s | us per delivery | vs sim PUB/SUB | CPU us per delivery | "
        "CPU vs sim |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, fig in figure["scenarios"].items():
        lines.append(
            f"| {name} | {fig['virtual_s']:.2f} | {fig['deliveries']:,} | "
            f"{fig['stream_deliveries']:,} | {fig['wall_s']:.2f} | "
            f"{fig['virtual_s_per_wall_s']:.2f} | {fig['us_per_delivery']:.1f} | "
            f"{fig['vs_sim_pubsub']:.2f} | {fig['cpu_us_per_delivery']:.1f} | "
            f"{fig['cpu_vs_sim_pubsub']:.2f} |"
        )
    prof = figure["profile"]
    lines += [
        "",
        f"Profile of {figure['flagship']} (cProfile, own time by layer; a built-in counts "
        f"for its callers' layers; {prof['total_s']:.2f} s profiled):",
        "",
        "| layer | s | share |",
        "|---|---:|---:|",
    ]
    for name, row in prof["layers"].items():
        lines.append(f"| {name} | {row['seconds']:.3f} | {row['share']:.1%} |")
    lines += ["", "| function | layer | calls | tottime s | share |", "|---|---|---:|---:|---:|"]
    for row in prof["top"]:
        lines.append(
            f"| `{row['function']}` | {row['layer']} | {row['calls']} | "
            f"{row['tottime_s']:.3f} | {row['share']:.1%} |"
        )
    return [*lines, ""]


def checks(figure: dict[str, Any]) -> list[dict[str, Any]]:
    """The flagship's wall time per delivery against the sim PUB/SUB's (same rounds)."""
    name = figure["flagship"]
    return [
        check_target(
            TARGETS,
            "scenario_per_delivery_vs_sim",
            f"{name} us per delivery / sim PUB/SUB's",
            figure["scenarios"][name]["vs_sim_pubsub"],
        )
    ]
