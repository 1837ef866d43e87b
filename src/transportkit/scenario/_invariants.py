"""Invariants a scenario asserts about its run, evaluated on the metrics at the end.

Each kind parses its parameters from the file (so a bad invariant fails before the run)
and returns, after the run, whether it held and the measured value behind the verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from transportkit.scenario._bounds import MAX_LATENCY_BOUND_US
from transportkit.scenario._context import RunContext
from transportkit.scenario._metrics import Receipt, Stream
from transportkit.scenario._spec import REQUIRED, InvariantSpec, ScenarioError, Table

__all__ = ["INVARIANTS", "Verdict", "evaluate"]

_METRICS = ("sent", "delivered", "dropped", "gaps", "failures", "delivered_fraction")


@dataclass(frozen=True)
class Verdict:
    """The outcome of one invariant."""

    kind: str
    description: str
    passed: bool
    detail: str


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


def _check_bound(ctx: RunContext, p: Mapping[str, Any]) -> tuple[bool, str]:
    stream = _stream(ctx, p["stream"])
    value = _metric(ctx, stream, p["receiver"], p["metric"])
    where = f"{p['stream']}" + (f"/{p['receiver']}" if p["receiver"] else "")
    if value is None:
        return False, f"{where} {p['metric']} is unknown on this backend"
    ok = (p["at_least"] is None or value >= p["at_least"]) and (
        p["at_most"] is None or value <= p["at_most"]
    )
    bounds = " and ".join(
        f"{op} {bound:g}"
        for op, bound in ((">=", p["at_least"]), ("<=", p["at_most"]))
        if bound is not None
    )
    return ok, f"{where} {p['metric']} = {value:g} (want {bounds})"


def _check_latency(ctx: RunContext, p: Mapping[str, Any]) -> tuple[bool, str]:
    stream = _stream(ctx, p["stream"])
    hist = stream.receiver(p["receiver"]).latency if p["receiver"] else stream.latency
    if hist.get_total_count() == 0:
        return False, f"{p['stream']} recorded no latency"
    value = hist.get_value_at_percentile(p["percentile"]) / 1000
    ok = value <= p["max_us"]
    where = p["stream"] + (f"/{p['receiver']}" if p["receiver"] else "")
    return ok, f"{where} P{p['percentile']:g} = {value:.1f} us (want <= {p['max_us']:g})"


def _check_answered(ctx: RunContext, p: Mapping[str, Any]) -> tuple[bool, str]:
    stream = _stream(ctx, p["stream"])
    ended = stream.delivered + stream.failures
    pending = stream.sent - ended
    ok = 0 <= pending <= 1 and stream.delivered <= stream.sent
    return ok, (
        f"{p['stream']}: {stream.sent} requests, {stream.delivered} replies, "
        f"{stream.failures} typed failures, {pending} in progress at the end"
    )


def _check_no_errors(ctx: RunContext, p: Mapping[str, Any]) -> tuple[bool, str]:
    if not ctx.errors:
        return True, "no component died of an unexpected error"
    name, error = ctx.errors[0]
    return False, f"{len(ctx.errors)} component error(s), first: {name}: {error}"


def _check_custom(ctx: RunContext, p: Mapping[str, Any]) -> tuple[bool, str]:
    return CUSTOM_CHECKS[p["check"]](ctx)


CUSTOM_CHECKS: dict[str, Callable[[RunContext], tuple[bool, str]]] = {}
"""Named checks components register (e.g. a Clone client's state equals the server's)."""

INVARIANTS: dict[
    str,
    tuple[
        Callable[[Table], Mapping[str, Any]],
        Callable[[RunContext, Mapping[str, Any]], tuple[bool, str]],
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
            passed, detail = check(ctx, spec.params)
        except ScenarioError as exc:
            passed, detail = False, str(exc)
        verdicts.append(Verdict(spec.kind, spec.description or spec.kind, passed, detail))
    return verdicts
