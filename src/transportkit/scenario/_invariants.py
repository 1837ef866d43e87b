"""Invariants a scenario asserts about its run, evaluated on the metrics at the end.

Each kind parses its parameters from the file (so a bad invariant fails before the run)
and returns, after the run, whether it held and the measured value behind the verdict:
the number, the limit it was compared with, how, and its unit (what ``--json`` reports),
besides a sentence for people.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from transportkit.scenario._bounds import MAX_LATENCY_BOUND_US
from transportkit.scenario._context import RunContext
from transportkit.scenario._metrics import Receipt, Stream
from transportkit.scenario._spec import REQUIRED, InvariantSpec, ScenarioError, Table

__all__ = ["COMPARISONS", "INVARIANTS", "Verdict", "evaluate"]

_METRICS = ("sent", "delivered", "dropped", "gaps", "failures", "delivered_fraction")


COMPARISONS = (">=", "<=", "between", "holds")
"""How a :class:`Verdict`'s value meets its limit: at least, at most, within
``[low, high]`` (both bounds given), or "holds" for a check with no number (a custom
check: its value and limit are None)."""

Limit: TypeAlias = float | tuple[float, float] | None


@dataclass(frozen=True)
class Verdict:
    """The outcome of one invariant.

    Attributes:
        kind: The invariant's kind (``bound``, ``latency``, ``every_request_answered``,
            ``no_component_errors``, ``check``).
        description: The file's description, or the kind.
        passed: Whether it held.
        detail: What was measured, as a sentence.
        name: A short name of what was measured (``feed/desk-1-md delivered_fraction``).
        value: The measured number; None when there is none (a custom check, or a
            metric this backend cannot measure).
        limit: What ``value`` was compared with: a number, ``(low, high)`` for
            ``between``, or None for ``holds``.
        comparison: One of :data:`COMPARISONS`.
        unit: The unit of ``value`` and ``limit`` (``us``, ``messages``,
            ``fraction``...), or None.
    """

    kind: str
    description: str
    passed: bool
    detail: str
    name: str = ""
    value: float | None = None
    limit: Limit = None
    comparison: str = "holds"
    unit: str | None = None


@dataclass(frozen=True)
class _Outcome:
    passed: bool
    detail: str
    name: str
    value: float | None = None
    limit: Limit = None
    comparison: str = "holds"
    unit: str | None = None


_UNITS = {
    "sent": "messages",
    "delivered": "messages",
    "dropped": "messages",
    "gaps": "gaps",
    "failures": "failures",
    "delivered_fraction": "fraction",
}


def _parse_bound(t: Table) -> Mapping[str, Any]:
    params = {
        "stream": t.name("stream", REQUIRED),
        "receiver": t.name("receiver", None),
        "metric": t.name("metric", REQUIRED),
        "at_least": t.number("at_least", None),
        "at_most": t.number("at_most", None),
    }
    if params["at_least"] is None and params["at_most"] is None:
        raise t.error("at_least", "give at_least, at_most or both")
    return params


def _parse_latency(t: Table) -> Mapping[str, Any]:
    return {
        "stream": t.name("stream", REQUIRED),
        "receiver": t.name("receiver", None),
        "percentile": t.number("percentile", 99.0, positive=True, maximum=100.0),
        "max_us": t.number("max_us", REQUIRED, positive=True, maximum=MAX_LATENCY_BOUND_US),
    }


def _parse_answered(t: Table) -> Mapping[str, Any]:
    return {"stream": t.name("stream", REQUIRED)}


def _parse_no_errors(t: Table) -> Mapping[str, Any]:
    return {}


def _parse_custom(t: Table) -> Mapping[str, Any]:
    return {"check": t.text("check", REQUIRED, choices=tuple(sorted(CUSTOM_CHECKS)))}


def _stream(ctx: RunContext, name: str) -> Stream:
    stream = ctx.metrics.streams.get(name)
    if stream is None:
        raise ScenarioError(
            f"invariant names stream {name!r}, which no component produced "
            f"(streams: {', '.join(sorted(ctx.metrics.streams)) or 'none'})"
        )
    return stream


def _metric(ctx: RunContext, stream: Stream, receiver: str | None, metric: str) -> float | None:
    if metric == "sent":
        return stream.sent
    if metric == "failures":
        return stream.failures
    if metric == "dropped":
        return stream.dropped
    if metric in stream.counters and receiver is None:
        return stream.counters[metric]
    receipts: list[Receipt] = (
        [stream.receiver(receiver)] if receiver is not None else list(stream.receivers.values())
    )
    if metric == "delivered":
        return sum(r.delivered for r in receipts)
    if metric == "gaps":
        return sum(r.gaps for r in receipts)
    if metric == "delivered_fraction":
        fractions = []
        for r in receipts:
            expect = ctx.expected.get((stream.name, r.name))
            wanted = expect() if expect is not None else stream.sent
            fractions.append(1.0 if wanted == 0 else r.delivered / wanted)
        return min(fractions) if fractions else 0.0
    return stream.counters.get(metric, 0)


def _where(p: Mapping[str, Any]) -> str:
    return f"{p['stream']}" + (f"/{p['receiver']}" if p["receiver"] else "")


def _check_bound(ctx: RunContext, p: Mapping[str, Any]) -> _Outcome:
    low, high = p["at_least"], p["at_most"]
    limit: Limit
    if low is not None and high is not None:
        comparison, limit = "between", (float(low), float(high))
    elif low is not None:
        comparison, limit = ">=", float(low)
    else:
        comparison, limit = "<=", float(high)
    where = _where(p)
    name = f"{where} {p['metric']}"
    unit = _UNITS.get(p["metric"], "count")
    stream = _stream(ctx, p["stream"])
    value = _metric(ctx, stream, p["receiver"], p["metric"])
    if value is None:
        detail = f"{where} {p['metric']} is unknown on this backend"
        return _Outcome(False, detail, name, None, limit, comparison, unit)
    ok = (low is None or value >= low) and (high is None or value <= high)
    bounds = " and ".join(
        f"{op} {_figure(bound)}" for op, bound in ((">=", low), ("<=", high)) if bound is not None
    )
    detail = f"{where} {p['metric']} = {_figure(value)} (want {bounds})"
    return _Outcome(ok, detail, name, value, limit, comparison, unit)


def _figure(value: float) -> str:
    """A number as a report writes it: whole numbers in full (``1000000``, where ``:g``
    wrote ``1e+06``), others in ``:g`` form (``0.999882``).
    """
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:g}"


def _check_latency(ctx: RunContext, p: Mapping[str, Any]) -> _Outcome:
    where = _where(p)
    name, limit = f"{where} p{p['percentile']:g} latency", float(p["max_us"])
    stream = _stream(ctx, p["stream"])
    hist = stream.receiver(p["receiver"]).latency if p["receiver"] else stream.latency
    if hist.get_total_count() == 0:
        return _Outcome(False, f"{p['stream']} recorded no latency", name, None, limit, "<=", "us")
    value = hist.get_value_at_percentile(p["percentile"]) / 1000
    ok = value <= p["max_us"]
    detail = f"{where} P{p['percentile']:g} = {value:.1f} us (want <= {_figure(p['max_us'])})"
    return _Outcome(ok, detail, name, value, limit, "<=", "us")


def _check_answered(ctx: RunContext, p: Mapping[str, Any]) -> _Outcome:
    stream = _stream(ctx, p["stream"])
    ended = stream.delivered + stream.failures
    pending = stream.sent - ended
    ok = 0 <= pending <= 1 and stream.delivered <= stream.sent
    detail = (
        f"{p['stream']}: {stream.sent} requests, {stream.delivered} replies, "
        f"{stream.failures} typed failures, {pending} in progress at the end"
    )
    # The number: requests neither answered nor failed at the end (one may be in flight).
    return _Outcome(ok, detail, f"{p['stream']} unanswered", pending, 1.0, "<=", "requests")


def _check_no_errors(ctx: RunContext, p: Mapping[str, Any]) -> _Outcome:
    count = len(ctx.errors)
    if not ctx.errors:
        detail = "no component died of an unexpected error"
    else:
        name, error = ctx.errors[0]
        detail = f"{count} component error(s), first: {name}: {error}"
    return _Outcome(count == 0, detail, "component errors", count, 0.0, "<=", "errors")


def _check_custom(ctx: RunContext, p: Mapping[str, Any]) -> _Outcome:
    passed, detail = CUSTOM_CHECKS[p["check"]](ctx)
    return _Outcome(passed, detail, p["check"])


CUSTOM_CHECKS: dict[str, Callable[[RunContext], tuple[bool, str]]] = {}
"""Named checks components register (e.g. a Clone client's state equals the server's)."""

INVARIANTS: dict[
    str,
    tuple[
        Callable[[Table], Mapping[str, Any]],
        Callable[[RunContext, Mapping[str, Any]], _Outcome],
    ],
] = {
    "bound": (_parse_bound, _check_bound),
    "latency": (_parse_latency, _check_latency),
    "every_request_answered": (_parse_answered, _check_answered),
    "no_component_errors": (_parse_no_errors, _check_no_errors),
    "check": (_parse_custom, _check_custom),
}


def evaluate(ctx: RunContext, specs: tuple[InvariantSpec, ...]) -> list[Verdict]:
    """Evaluate every invariant (plus "no component errors", always)."""
    verdicts = []
    implicit = InvariantSpec("no_component_errors", "components ran without errors", {})
    for spec in (*specs, implicit):
        check = INVARIANTS[spec.kind][1]
        try:
            outcome = check(ctx, spec.params)
        except ScenarioError as exc:  # the invariant names what the run did not produce
            outcome = _Outcome(False, str(exc), spec.kind)
        verdicts.append(
            Verdict(
                spec.kind,
                spec.description or spec.kind,
                outcome.passed,
                outcome.detail,
                outcome.name,
                outcome.value,
                outcome.limit,
                outcome.comparison,
                outcome.unit,
            )
        )
    return verdicts
