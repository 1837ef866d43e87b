"""Reports of a scenario run: a table for people, JSON for machines.

The JSON (:func:`report_dict`) has a ``schema_version``: :data:`SCHEMA_VERSION`, raised
whenever a key changes meaning or goes away (adding a key does not raise it).
Faults are written as a person would (:func:`fault_text`, keyed by the fault's class)
and as data (:func:`fault_dict`); each invariant carries its number, its limit, the
comparison and the unit besides its sentence.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from transportkit.scenario._metrics import Stream, latency_summary
from transportkit.scenario._runner import RunResult
from transportkit.sim_backend import (
    Constant,
    Crash,
    DropConnection,
    Empirical,
    Fault,
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
from transportkit.sim_backend._faults import describe_latency, seconds_text
from transportkit.sim_backend._latency import LatencyModel

__all__ = [
    "SCHEMA_VERSION",
    "fault_dict",
    "fault_text",
    "report_dict",
    "report_json",
    "report_text",
]

SCHEMA_VERSION = 1
"""The version of :func:`report_dict`'s form (its ``schema_version`` key)."""

Schedule = Sequence[tuple[float, Fault, str]]


def _number(value: float) -> float:
    """``value`` rounded to the nanosecond, so that 0.1 + 0.2 prints as 0.3."""
    return round(value, 9)


def latency_dict(model: LatencyModel) -> dict[str, Any]:
    """A latency model as data: ``model`` (its TOML name) and its parameters in seconds."""
    match model:
        case Constant(delay):
            return {"model": "constant", "delay_s": _number(delay)}
        case Uniform(low, high):
            return {"model": "uniform", "low_s": _number(low), "high_s": _number(high)}
        case Normal(mean, stddev, minimum):
            return {"model": "normal", "mean_s": _number(mean), "stddev_s": _number(stddev),
                    "minimum_s": _number(minimum)}  # fmt: skip
        case LogNormal(mu, sigma, minimum):
            return {"model": "lognormal", "median_s": _number(math.exp(mu)), "sigma": sigma,
                    "minimum_s": _number(minimum)}  # fmt: skip
        case Empirical(samples):
            return {"model": "empirical", "samples": len(samples)}
    return {"model": type(model).__name__.lower()}


def _link(fault: Any) -> str:
    if getattr(fault, "both_ways", True):
        return f"between {fault.a} and {fault.b}"
    return f"from {fault.a} to {fault.b}"


def _notes(fault: Any, *notes: str) -> str:
    """`` (one way; cut for 3 s)``: the notes that apply, in parentheses, or nothing."""
    said = (["one way"] if not getattr(fault, "both_ways", True) else []) + [n for n in notes if n]
    return f" ({'; '.join(said)})" if said else ""


def _target(fault: Fault) -> str:
    if isinstance(fault, (Crash, Restart)):
        return fault.node
    both = getattr(fault, "both_ways", True)
    return f"{fault.a}{'<->' if both else '->'}{fault.b}"


def _same_link(a: Any, b: Any) -> bool:
    if (a.a, a.b) == (b.a, b.b):
        return True
    return bool(getattr(a, "both_ways", True)) and (a.a, a.b) == (b.b, b.a)


def _ends(start: Fault, later: Fault) -> bool:
    """Whether ``later`` ends what ``start`` began (a restart ends a crash...)."""
    match start, later:
        case Crash(node), Restart(other):
            return node == other
        case Partition(), Repair():
            return _same_link(start, later)
        case Hold(), Release():
            return _same_link(start, later)
        case SetLatency(), SetLatency():
            return later.latency is None and _same_link(start, later)
    return False


def _starts(fault: Fault) -> bool:
    return isinstance(fault, (Crash, Partition, Hold)) or (
        isinstance(fault, SetLatency) and fault.latency is not None
    )


def _pairs(schedule: Schedule) -> dict[int, int]:
    """Index of each fault that begins something to the index of the one ending it
    (and back), in schedule order.
    """
    pairs: dict[int, int] = {}
    for i, (at, fault, _) in enumerate(schedule):
        if not _starts(fault):
            continue
        for j in range(i + 1, len(schedule)):
            later_at, later, _ = schedule[j]
            if later_at >= at and j not in pairs and _ends(fault, later):
                pairs[i], pairs[j] = j, i
                break
    return pairs


def fault_text(fault: Fault, *, lasted: float | None = None, ended: bool = False) -> str:
    """A fault as a person writes it: ``crash risk-host for 5 s``.

    Args:
        fault: The fault.
        lasted: For a fault that begins something (a crash, a partition, a hold, a
            latency spike), how long it lasted, if a later fault ended it; for the
            fault ending it, how long what it ended had lasted.
        ended: For a fault that begins something: whether a later one ended it (False
            says "until the end" when ``lasted`` is None).
    """
    span = "" if lasted is None else seconds_text(lasted)
    lasting = f" for {span}" if span else (" until the end" if not ended else "")
    match fault:
        case Crash(node):
            return f"crash {node}" + (f" for {span}" if span else " (not restarted)")
        case Restart(node):
            return f"restart {node}" + (f" (down for {span})" if span else "")
        case Partition():
            return f"partition {_link(fault)}{lasting}{_notes(fault)}"
        case Repair():
            cut = f"cut for {span}" if span else ""
            return f"repair the partition {_link(fault)}{_notes(fault, cut)}"
        case Hold():
            return f"hold the traffic {_link(fault)}{lasting}{_notes(fault)}"
        case Release():
            held = f"held for {span}" if span else ""
            return f"release the traffic held {_link(fault)}{_notes(fault, held)}"
        case DropConnection(_, _, discard):
            queues = ", discarding the connecting side's queue" if discard else ""
            return f"drop the connections between {fault.a} and {fault.b}{queues}"
        case SetLatency(_, _, None):
            spiked = f"spiked for {span}" if span else ""
            return f"latency {_link(fault)} back to what it was{_notes(fault, spiked)}"
        case SetLatency(_, _, model):
            assert model is not None
            text = describe_latency(model)
            return f"latency {_link(fault)} set to {text}{lasting}{_notes(fault)}"
    return fault.describe()  # a fault class this module does not pair


def _described(schedule: Schedule) -> list[tuple[str, float | None]]:
    """Each fault's text and, for one that begins something, when it ended (or None)."""
    pairs = _pairs(schedule)
    out: list[tuple[str, float | None]] = []
    for i, (at, fault, _) in enumerate(schedule):
        j = pairs.get(i)
        other_at = None if j is None else schedule[j][0]
        lasted = None if other_at is None else abs(at - other_at)
        text = fault_text(fault, lasted=lasted, ended=j is not None)
        out.append((text, other_at if _starts(fault) else None))
    return out


def fault_dict(
    at: float, fault: Fault, outcome: str, *, text: str | None = None, until: float | None = None
) -> dict[str, Any]:
    """A fault of a run as data (one entry of the JSON report's ``faults``).

    Keys: ``at_s``, ``kind`` (the scenario file's name for it: ``crash``,
    ``latency``...), ``target`` (a node, or ``a<->b`` / ``a->b`` for a link), ``text``
    (as :func:`fault_text` writes it), ``outcome``; ``node`` for a crash or a restart;
    ``a``, ``b`` and ``both_ways`` for a link fault (``discard_queues`` for
    ``drop_connection``, ``latency`` for ``latency``: its model as data, or None when
    it ends a spike); ``until_s`` for a fault that begins something (a crash, a
    partition, a hold, a spike): when a later fault ended it, or None.
    """
    entry: dict[str, Any] = {
        "at_s": _number(at),
        "kind": fault.kind,
        "target": _target(fault),
    }
    if isinstance(fault, (Crash, Restart)):
        entry["node"] = fault.node
    else:
        entry |= {"a": fault.a, "b": fault.b, "both_ways": getattr(fault, "both_ways", True)}
    if isinstance(fault, DropConnection):
        entry["discard_queues"] = fault.discard_queues
    if isinstance(fault, SetLatency):
        entry["latency"] = None if fault.latency is None else latency_dict(fault.latency)
    if _starts(fault):
        entry["until_s"] = None if until is None else _number(until)
    entry["text"] = fault_text(fault) if text is None else text
    entry["outcome"] = outcome
    return entry


def _invariant_dict(verdict: Any) -> dict[str, Any]:
    limit = verdict.limit
    return {
        "name": verdict.name,
        "kind": verdict.kind,
        "description": verdict.description,
        "passed": verdict.passed,
        "value": verdict.value,
        "limit": list(limit) if isinstance(limit, tuple) else limit,
        "comparison": verdict.comparison,
        "unit": verdict.unit,
        "detail": verdict.detail,
    }


def report_dict(result: RunResult) -> dict[str, Any]:
    """The run as plain data (what ``--json`` prints); see ``docs/reports.md``.

    ``schema_version`` is :data:`SCHEMA_VERSION`. Each invariant is ``name``,
    ``kind``, ``description``, ``passed``, ``value`` (a number, or None), ``limit``
    (a number, ``[low, high]`` for ``between``, or None), ``comparison`` (``>=``,
    ``<=``, ``between``, ``holds``), ``unit`` and ``detail`` (a sentence). Each fault
    is :func:`fault_dict`.

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
    described = _described(result.faults)
    return {
        "schema_version": SCHEMA_VERSION,
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
        "invariants": [_invariant_dict(v) for v in result.verdicts],
        "faults": [
            fault_dict(at, fault, outcome, text=text, until=until)
            for (at, fault, outcome), (text, until) in zip(result.faults, described, strict=True)
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


def _fanout_line(stream: Stream) -> str | None:
    """For a stream with several receivers, what its delivered count adds up: sent to
    how many receivers, the deliveries of them all, and of how many expected.
    """
    receipts = list(stream.receivers.values())
    if len(receipts) < 2:
        return None
    delivered = sum(r.delivered for r in receipts)
    line = f"{stream.sent:,} sent to {len(receipts)} receivers: {delivered:,} deliveries"
    expected = [r.expected for r in receipts]
    if all(e is not None for e in expected):
        total = sum(e for e in expected if e is not None)
        share = f" ({100 * delivered / total:.2f}%)" if total else ""
        line += f" of the {total:,} expected{share}"
    return line


def report_text(result: RunResult) -> str:
    """A readable report: per stream and receiver, the load, the invariants (each
    PASS or FAIL with what was measured), the faults as sentences, the trace hash.

    A stream's ``delivered`` is a receiver's count (``33,996/34,000``: of what it was
    expected to get); a stream with several receivers gets a line adding them up
    instead of a sum in the column (a feed sending 34,000 to two receivers has up to
    68,000 deliveries, which read as more delivered than sent).
    """
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
        f"  {'stream / receiver':<30} {'sent':>9} {'delivered':>15} {'dropped':>8} "
        f"{'gaps':>6} {'fail':>5} {'p50':>9} {'p99':>9} {'p99.9':>9} {'max':>9}"
    )
    lines += ["", header, "  " + "-" * (len(header) - 2)]
    for name, stream in sorted(result.metrics.streams.items()):
        lat = latency_summary(stream.latency)
        dropped = "n/a" if stream.dropped is None else f"{stream.dropped:,}"
        fanout = _fanout_line(stream)
        delivered = "" if fanout is not None else f"{stream.delivered:,}"
        lines.append(
            f"  {name + ' (' + stream.pattern + ')':<30} {stream.sent:>9,} {delivered:>15} "
            f"{dropped:>8} {stream.gaps:>6,} {stream.failures:>5,} {_us(lat['p50_us']):>9} "
            f"{_us(lat['p99_us']):>9} {_us(lat['p99_9_us']):>9} {_us(lat['max_us']):>9}"
        )
        for rname, receipt in sorted(stream.receivers.items()):
            rl = latency_summary(receipt.latency)
            expected = "" if receipt.expected is None else f"/{receipt.expected:,}"
            lines.append(
                f"    -> {rname:<25} {'':>9} {f'{receipt.delivered:,}' + expected:>15} "
                f"{'':>8} {receipt.gaps:>6,} {'':>5} {_us(rl['p50_us']):>9} "
                f"{_us(rl['p99_us']):>9} {_us(rl['p99_9_us']):>9} {_us(rl['max_us']):>9}"
            )
        if fanout is not None:
            lines.append(f"       {fanout}")
        if stream.counters:
            counts = ", ".join(f"{k} {v:,}" for k, v in sorted(stream.counters.items()))
            lines.append(f"       {counts}")
    lines += _load_lines(result)
    lines += ["", "  invariants"]
    for verdict in result.verdicts:
        mark = "PASS" if verdict.passed else "FAIL"
        lines.append(f"    {mark}  {verdict.description}")
        lines.append(f"          {verdict.detail}")
    if result.faults:
        lines += ["", "  faults"]
        for (at, _fault, outcome), (text, _until) in zip(
            result.faults, _described(result.faults), strict=True
        ):
            said = "" if outcome == "applied" else f"; {outcome}"
            lines.append(f"    at {at:>8.3f} s: {text}{said}")
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
        shortfall = f"{row['shortfall']:,} ({100 * row['shortfall_fraction']:.1f}%)"
        behind = f"{1000 * load.max_behind / load.rate:.1f}ms" if load.rate else "-"
        lines.append(
            f"  {name + ' (' + loop + ')':<30} {load.rate:>9g} {row['offered']:>9,} "
            f"{row['sent']:>9,} {achieved:>10} {shortfall:>16} {behind:>9}"
        )
        if not load.closed_loop and row["shortfall_fraction"] > tolerance:
            warnings.append(
                f"  WARNING: the machine could not keep up with {name}: it sent "
                f"{row['sent']} of the {row['offered']} it offered "
                f"({100 * row['shortfall_fraction']:.1f}% short, tolerance "
                f"{100 * tolerance:g}%); this run is not representative"
            )
    return lines + warnings
