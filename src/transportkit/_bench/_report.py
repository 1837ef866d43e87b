"""The targets checked against a report, and the report as Markdown tables.

The first four figures (latency, throughput, zerocopy, sim) are formatted here; every
later figure lives in its own module ``transportkit._bench._fig_NAME`` (see
:data:`FIGURE_MODULES`), which defines ``TARGETS``, ``run(config)``,
``format_lines(figure)`` and ``checks(figure)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Final

from transportkit._bench._common import check_target

__all__ = ["FIGURE_MODULES", "TARGETS", "figure_module", "format_report", "targets"]

FIGURE_MODULES: Final = ("peers", "limit", "multipart", "scenario", "mmap")
"""The figures that live in a module of their own, in report order."""


def figure_module(name: str) -> ModuleType:
    """The module of figure ``name`` (one of :data:`FIGURE_MODULES`)."""
    return importlib.import_module(f"transportkit._bench._fig_{name}")


_OWN_TARGETS: Final = {
    "blocking_p50": ("<=", 1.05),
    "blocking_p99": ("<=", 1.15),
    "async_p50": ("<=", 1.10),
    "throughput": (">=", 0.95),
    "zerocopy_vs_copy": (">=", 2.0),
    "sim_vs_bare": (">=", 0.3),
    "sim_peak_mb": ("<=", 50.0),
    "sim_cost_growth": ("<=", 1.2),
    "sim_trace_cost": ("<=", 0.10),
}

TARGETS: Final[dict[str, tuple[str, float]]] = {
    **_OWN_TARGETS,
    **{k: v for name in FIGURE_MODULES for k, v in figure_module(name).TARGETS.items()},
}
"""Every target by name: (comparison, limit)."""


def _check(name: str, figure: str, value: float) -> dict[str, Any]:
    return check_target(TARGETS, name, figure, value)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target that the report's figures can be checked against."""
    checks: list[dict[str, Any]] = []
    for transport, fig in report.get("latency", {}).get("transports", {}).items():
        checks.append(_check("blocking_p50", f"{transport} tk/raw", fig["ratios"]["tk"]["p50_us"]))
        checks.append(_check("blocking_p99", f"{transport} tk/raw", fig["ratios"]["tk"]["p99_us"]))
        checks.append(
            _check(
                "async_p50", f"{transport} tk_async/raw_async", fig["ratios"]["tk_async"]["p50_us"]
            )
        )
    for name, fig in report.get("throughput", {}).get("figures", {}).items():
        checks.append(_check("throughput", f"{name} tk/raw", fig["ratios"]["tk_vs_raw"]))
    for transport, fig in report.get("zerocopy", {}).get("figures", {}).items():
        checks.append(
            _check(
                "zerocopy_vs_copy",
                f"{transport} tk zero-copy/tk copy",
                fig["ratios"]["tk_zerocopy_vs_tk_copy"],
            )
        )
    sim = report.get("sim")
    if sim:
        for name in ("pubsub", "reqrep"):
            checks.append(
                _check("sim_vs_bare", f"{name} sim/bare", sim["ratios"][f"{name}_vs_bare"])
            )
        checks.append(
            _check(
                "sim_peak_mb",
                f"{sim['peak_memory_mb']['messages']} messages",
                sim["peak_memory_mb"]["peak_mb"],
            )
        )
        checks.append(_check("sim_cost_growth", "cost/msg largest/smallest", sim["cost_growth"]))
        if "trace_cost" in sim:
            checks.append(
                _check("sim_trace_cost", "pubsub traced/untraced - 1", sim["trace_cost"]["cost"])
            )
    for name in FIGURE_MODULES:
        if name in report:
            checks += figure_module(name).checks(report[name])
    return checks


def _machine(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    return [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}; Python {m['python']}, "
        f"pyzmq {m['pyzmq']}, libzmq {m['libzmq']}, simpy {m['simpy']}; "
        f"blocking-socket accelerator: {m.get('accelerator', 'unknown')}.",
        f"Rounds: {report['config']['rounds']} interleaved (medians of rounds); "
        f"elapsed {report.get('elapsed_s', 0):.0f} s.",
        "",
    ]


def _latency(fig: dict[str, Any]) -> list[str]:
    lines = [
        f"### Round trip, REQ/REP, {fig['message_bytes']} B "
        f"({fig['samples_per_round']} samples per round), microseconds",
        "",
        "| transport | variant | P50 | P99 | P99.9 | ratio P50 | ratio P99 | ratio P99.9 | vs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    refs = {"tk": "raw", "tk_async": "raw_async", "tk_spin": "raw_spin"}
    for transport, data in fig["transports"].items():
        for variant, a in data["absolute"].items():
            r = data["ratios"].get(variant)
            cells = (
                f"{r['p50_us']:.2f} | {r['p99_us']:.2f} | {r['p999_us']:.2f} | {refs[variant]}"
                if r
                else " |  |  | "
            )
            lines.append(
                f"| {transport} | {variant} | {a['p50_us']:.1f} | {a['p99_us']:.1f} | "
                f"{a['p999_us']:.1f} | {cells} |"
            )
        s = data["ratios"]["tk_spin_vs_tk"]
        lines.append(
            f"| {transport} | tk_spin / tk | | | | {s['p50_us']:.2f} | {s['p99_us']:.2f} | "
            f"{s['p999_us']:.2f} | tk |"
        )
    return [*lines, ""]


def _rates(title: str, figures: dict[str, Any]) -> list[str]:
    lines = [f"### {title}", "", "| figure | variant | msgs/s | ratios |", "|---|---|---:|---|"]
    for name, fig in figures.items():
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in fig["ratios"].items())
        for i, (variant, value) in enumerate(fig["msgs_per_s"].items()):
            lines.append(f"| {name} | {variant} | {value:,.0f} | {ratios if i == 0 else ''} |")
    return [*lines, ""]


def _sim(sim: dict[str, Any]) -> list[str]:
    rates = sim["deliveries_per_s"]
    lines = [
        f"### Sim backend (latency {sim['latency_model']}, {sim['messages_per_run']} messages)",
        "",
        "| traffic | sim deliveries/s | bare SimPy deliveries/s | ratio |",
        "|---|---:|---:|---:|",
    ]
    for name in ("pubsub", "reqrep"):
        lines.append(
            f"| {name} | {rates['tk_' + name]:,.0f} | {rates['bare_' + name]:,.0f} | "
            f"{sim['ratios'][name + '_vs_bare']:.3f} |"
        )
    floor = sim.get("floor")
    if floor:
        lines.append(
            f"| pubsub floor: bare SimPy + one awaited future per delivery | "
            f"{rates['floor_pubsub']:,.0f} | {rates['bare_pubsub']:,.0f} | "
            f"{floor['pubsub_vs_bare']:.3f} |"
        )
        lines += [
            "",
            f"The sim's PUB/SUB reaches {floor['tk_pubsub_vs_floor']:.2f}x of that floor.",
        ]
    parts = sim.get("breakdown_us")
    if parts:
        lines += [
            "",
            "Where a PUB/SUB delivery's time goes (us per message, from the rates above):",
            "",
            "| layer | us |",
            "|---|---:|",
            f"| bare SimPy: one timeout and callback | {parts['bare_simpy_delivery']:.2f} |",
            "| sim network: send, route, wire, arrival, trace (subscriber not reading) | "
            f"{parts['sim_network']:.2f} |",
            f"| one coroutine wake-up (floor minus bare SimPy) | {parts['coroutine_wake']:.2f} |",
            f"| the receive itself (the rest) | {parts['sim_receive']:.2f} |",
            f"| sim total | {parts['sim_total']:.2f} |",
        ]
        if parts["sim_receive"] < 0:
            lines += [
                "",
                "The rest is negative: a subscriber that reads takes most of its messages "
                "inline, with no wake-up (a receive that would only wait for the next "
                "arrival takes it at once), so it costs less than the wake-up the floor "
                "pays; a subscriber that never reads queues every message instead.",
            ]
    trace = sim.get("trace_cost")
    if trace:
        lines += [
            "",
            f"Trace recording costs {trace['cost']:+.1%} ({trace['what']}).",
        ]
    costs = ", ".join(f"{n}: {c:.1f} us" for n, c in sim["cost_us_per_message"].items())
    mem = sim["peak_memory_mb"]
    lines += [
        "",
        f"Cost per message (PUB/SUB): {costs} (growth {sim['cost_growth']:.2f}x).",
        f"Peak traced memory, {mem['messages']} messages: "
        + (
            f"record_trace=True (the scenario runner's default) {mem['peak_mb']:.1f} MB, "
            f"record_trace=False {mem['untraced_peak_mb']:.1f} MB."
            if "untraced_peak_mb" in mem
            else f"record_trace={mem['record_trace']} {mem['peak_mb']:.1f} MB."
        ),
        "",
        "| sim profile: function | calls | tottime s | share |",
        "|---|---:|---:|---:|",
    ]
    for row in sim["profile_top"]:
        lines.append(
            f"| `{row['function']}` | {row['calls']} | {row['tottime_s']:.3f} | "
            f"{row['share']:.1%} |"
        )
    return [*lines, ""]


def format_report(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, one table per figure, then the targets."""
    lines = ["## transportkit bench", "", *_machine(report)]
    if "latency" in report:
        lines += _latency(report["latency"])
    if "throughput" in report:
        tp = report["throughput"]
        lines += _rates(
            f"Throughput, {tp['message_bytes']} B messages over {tp['transport']} "
            f"({tp['messages_per_run']} per run)",
            tp["figures"],
        )
    if "zerocopy" in report:
        zc = report["zerocopy"]
        lines += _rates(
            f"Zero-copy, {zc['message_bytes']} B PUSH/PULL ({zc['messages_per_run']} per run)",
            zc["figures"],
        )
    if "sim" in report:
        lines += _sim(report["sim"])
    for name in FIGURE_MODULES:
        if name in report:
            lines += figure_module(name).format_lines(report[name])
    lines += [
        "### Targets",
        "",
        "| target | figure | value | limit | met |",
        "|---|---|---:|---|---|",
    ]
    for check in report["targets"]:
        lines.append(
            f"| {check['target']} | {check['figure']} | {check['value']:.3f} | "
            f"{check['limit']} | {'yes' if check['met'] else 'NO'} |"
        )
    return "\n".join(lines)
