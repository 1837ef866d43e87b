"""Reports of a scenario run: a table for people, JSON for machines."""

from __future__ import annotations

import json
from typing import Any

from transportkit.scenario._metrics import latency_summary
from transportkit.scenario._runner import RunResult

__all__ = ["report_dict", "report_json", "report_text"]


def _fault_text(fault: object) -> str:
    name = type(fault).__name__
    fields = ", ".join(f"{v}" for v in vars(fault).values()) if hasattr(fault, "__dict__") else ""
    if not fields:
        fields = ", ".join(str(getattr(fault, f)) for f in getattr(fault, "__slots__", ()))
    return f"{name}({fields})"


def report_dict(result: RunResult) -> dict[str, Any]:
    """The run as plain data (what ``--json`` prints).

    A zmq run with ``[[link]]`` latencies also has ``links``: what the fault proxy did
    for each (the sim models links itself and has no such key).

    Each rate-driven stream (a publisher, a Clone server, a request client) has a
    ``load``: the ``rate`` asked, ``offered`` (what its schedule asked for while it
    ran), ``sent``, ``seconds`` it ran, ``offered_rate`` and ``achieved_rate`` per
    second, ``shortfall`` and ``shortfall_fraction``, ``closed_loop`` and
    ``max_behind`` (the most it owed at once). The top-level ``load`` says whether the
    run is ``representative``: ``short_of_load`` lists the open-loop streams whose
    shortfall is over ``tolerance`` (the machine could not keep up; ``transportkit
    run`` then exits with status 3).

    Everything but ``wall_seconds`` is a function of the scenario and the seed on the
    sim backend, so two runs compare equal key by key.
    """
    scenario = result.scenario
    return {
        "scenario": scenario.name,
        "source": scenario.source,
        "backend": result.backend,
        "seed": result.seed if result.backend == "sim" else None,
        "duration": scenario.duration,
        "elapsed": round(result.elapsed, 9),
        "wall_seconds": round(result.wall_seconds, 3),
        "passed": result.passed,
        "load": {
            "tolerance": scenario.load_tolerance,
            "representative": result.representative,
            "short_of_load": result.short_of_load,
        },
        "streams": {name: s.as_dict() for name, s in sorted(result.metrics.streams.items())},
        "invariants": [
            {"kind": v.kind, "description": v.description, "passed": v.passed, "detail": v.detail}
            for v in result.verdicts
        ],
        "faults": [
            {"at": at, "fault": _fault_text(fault), "outcome": outcome}
            for at, fault, outcome in result.faults
        ],
        "trace_hash": result.trace_hash,
        **(
            {"links": [{"a": a, "b": b, "outcome": text} for a, b, text in result.links]}
            if result.links
            else {}
        ),
    }


def report_json(result: RunResult) -> str:
    """:func:`report_dict` as indented JSON."""
    return json.dumps(report_dict(result), indent=2, sort_keys=False)


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.1f}ms"
    return f"{value:.1f}us"


def report_text(result: RunResult) -> str:
    """A readable report: per stream and receiver, then invariants and faults."""
    scenario = result.scenario
    time_kind = "virtual" if result.backend == "sim" else "real"
    seed = f", seed {result.seed}" if result.backend == "sim" else ""
    lines = [
        f"scenario {scenario.name} ({result.backend}{seed}): {result.elapsed:.3f} s "
        f"{time_kind} in {result.wall_seconds:.2f} s wall",
    ]
    if scenario.description:
        lines.append(f"  {scenario.description}")
    header = (
        f"  {'stream / receiver':<30} {'sent':>9} {'delivered':>10} {'dropped':>8} "
        f"{'gaps':>6} {'fail':>5} {'p50':>9} {'p99':>9} {'p99.9':>9} {'max':>9}"
    )
    lines += ["", header, "  " + "-" * (len(header) - 2)]
    for name, stream in sorted(result.metrics.streams.items()):
        lat = latency_summary(stream.latency)
        dropped = "n/a" if stream.dropped is None else str(stream.dropped)
        lines.append(
            f"  {name + ' (' + stream.pattern + ')':<30} {stream.sent:>9} {stream.delivered:>10} "
            f"{dropped:>8} {stream.gaps:>6} {stream.failures:>5} {_us(lat['p50_us']):>9} "
            f"{_us(lat['p99_us']):>9} {_us(lat['p99_9_us']):>9} {_us(lat['max_us']):>9}"
        )
        for rname, receipt in sorted(stream.receivers.items()):
            rl = latency_summary(receipt.latency)
            expected = "" if receipt.expected is None else f"/{receipt.expected}"
            lines.append(
                f"    -> {rname:<25} {'':>9} {str(receipt.delivered) + expected:>10} {'':>8} "
                f"{receipt.gaps:>6} {'':>5} {_us(rl['p50_us']):>9} {_us(rl['p99_us']):>9} "
                f"{_us(rl['p99_9_us']):>9} {_us(rl['max_us']):>9}"
            )
        if stream.counters:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(stream.counters.items()))
            lines.append(f"       {counts}")
    lines += _load_lines(result)
    lines += ["", "  invariants"]
    for verdict in result.verdicts:
        mark = "PASS" if verdict.passed else "FAIL"
        lines.append(f"    {mark}  {verdict.description}: {verdict.detail}")
    if result.faults:
        lines += ["", "  faults"]
        for at, fault, outcome in result.faults:
            lines.append(f"    {at:>8.3f} s  {_fault_text(fault)}  ({outcome})")
    if result.links:
        lines += ["", "  links"]
        for a, b, text in result.links:
            lines.append(f"    {a} - {b}  ({text})")
    if result.trace_hash is not None:
        lines += ["", f"  trace hash {result.trace_hash}"]
    lines.append("")
    lines.append("  PASSED" if result.passed else "  FAILED: an invariant did not hold")
    if not result.representative:
        lines.append(
            "  NOT REPRESENTATIVE: the machine could not offer the load of "
            + ", ".join(result.short_of_load)
            + " (see load above): the invariants did not test what the file describes"
        )
    return "\n".join(lines)


def _load_lines(result: RunResult) -> list[str]:
    """Offered against achieved load per rate-driven stream, and a warning line for
    each open-loop one the machine could not keep up with.
    """
    rows = [
        (name, stream.load, stream.load.summary(stream.sent))
        for name, stream in sorted(result.metrics.streams.items())
        if stream.load is not None
    ]
    if not rows:
        return []
    header = (
        f"  {'load (offered vs achieved)':<30} {'rate/s':>9} {'offered':>9} {'sent':>9} "
        f"{'achieved/s':>10} {'shortfall':>16} {'behind':>9}"
    )
    lines = ["", header, "  " + "-" * (len(header) - 2)]
    tolerance = result.scenario.load_tolerance
    warnings = []
    for name, load, row in rows:
        loop = "closed loop" if load.closed_loop else "open loop"
        achieved = "-" if row["achieved_rate"] is None else f"{row['achieved_rate']:.1f}"
        shortfall = f"{row['shortfall']} ({100 * row['shortfall_fraction']:.1f}%)"
        behind = f"{1000 * load.max_behind / load.rate:.1f}ms" if load.rate else "-"
        lines.append(
            f"  {name + ' (' + loop + ')':<30} {load.rate:>9g} {row['offered']:>9} "
            f"{row['sent']:>9} {achieved:>10} {shortfall:>16} {behind:>9}"
        )
        if not load.closed_loop and row["shortfall_fraction"] > tolerance:
            warnings.append(
                f"  WARNING: the machine could not keep up with {name}: it sent "
                f"{row['sent']} of the {row['offered']} it offered "
                f"({100 * row['shortfall_fraction']:.1f}% short, tolerance "
                f"{100 * tolerance:g}%); this run is not representative"
            )
    return lines + warnings
