"""A run's faults as intervals: what was broken, from when to when (for plots, traces).

A scenario's faults are instants (a crash, later a restart); a person reads them as
spans: "exchange down from 5 s to 8 s". :func:`fault_spans` pairs each fault that
starts something with the one that ends it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from transportkit.sim_backend import (
    Crash,
    DropConnection,
    Hold,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
)
from transportkit.sim_backend._faults import describe_latency

__all__ = ["FaultSpan", "fault_spans"]


@dataclass(frozen=True)
class FaultSpan:
    """One fault as a person reads it.

    Attributes:
        start: When it began (seconds of run time).
        end: When it ended; None for an instant fault (a dropped connection, a restart
            with no crash before it).
        target: What it hit: a node (``exchange``) or a link (``exchange<->desk-2``,
            ``a->b`` one way).
        label: What happened, in words (``exchange crashed``).
        open_ended: It never ended: ``end`` is the end of the run.
        outcome: What applying it did (``applied``, or the zmq runner's account).
    """

    start: float
    end: float | None
    target: str
    label: str
    open_ended: bool = False
    outcome: str = "applied"

    @property
    def duration(self) -> float | None:
        """``end - start``, or None for an instant fault."""
        return None if self.end is None else self.end - self.start


def _link(a: str, b: str, both_ways: bool) -> str:
    return f"{a}<->{b}" if both_ways else f"{a}->{b}"


def _key(kind: str, a: str, b: str, both_ways: bool) -> tuple[str, str, str]:
    first, second = (min(a, b), max(a, b)) if both_ways else (a, b)
    return (kind, first, second + ("<->" if both_ways else "->"))


def fault_spans(faults: Iterable[tuple[float, object, str]], end: float) -> list[FaultSpan]:
    """Pair a run's faults into spans, in order of start.

    A crash ends at the node's restart, a partition at its repair, a hold at its
    release, a latency spike at its end (``SetLatency`` without a model) or at the
    next spike of the same link; what never ends is ``open_ended``, to ``end``. A
    dropped connection, and an end with nothing to end, are instants. A fault of an
    unknown kind is an instant labelled with its ``describe()``.

    Args:
        faults: ``(time, fault, outcome)``, as :attr:`RunResult.faults` holds them.
        end: The end of the run (seconds), where open spans stop.
    """
    spans: list[FaultSpan] = []
    open_: dict[tuple[str, str, str], tuple[float, str, str, str]] = {}

    def begin(key: tuple[str, str, str], at: float, target: str, label: str, outcome: str) -> None:
        if key in open_:
            finish(key, at)
        open_[key] = (at, target, label, outcome)

    def finish(key: tuple[str, str, str], at: float) -> bool:
        started = open_.pop(key, None)
        if started is None:
            return False
        start, target, label, outcome = started
        spans.append(FaultSpan(start, at, target, label, outcome=outcome))
        return True

    def instant(at: float, target: str, label: str, outcome: str) -> None:
        spans.append(FaultSpan(at, None, target, label, outcome=outcome))

    for at, fault, outcome in faults:
        match fault:
            case Crash(node):
                begin(("crash", node, ""), at, node, f"{node} crashed", outcome)
            case Restart(node):
                if not finish(("crash", node, ""), at):
                    instant(at, node, f"{node} restarted", outcome)
            case Partition(a, b, both_ways):
                link = _link(a, b, both_ways)
                begin(_key("cut", a, b, both_ways), at, link, f"{link} partitioned", outcome)
            case Repair(a, b, both_ways):
                if not finish(_key("cut", a, b, both_ways), at):
                    instant(
                        at, _link(a, b, both_ways), f"{_link(a, b, both_ways)} repaired", outcome
                    )
            case Hold(a, b, both_ways):
                link = _link(a, b, both_ways)
                begin(_key("hold", a, b, both_ways), at, link, f"{link} held", outcome)
            case Release(a, b, both_ways):
                if not finish(_key("hold", a, b, both_ways), at):
                    instant(
                        at, _link(a, b, both_ways), f"{_link(a, b, both_ways)} released", outcome
                    )
            case SetLatency(a, b, None, both_ways):
                if not finish(_key("latency", a, b, both_ways), at):
                    link = _link(a, b, both_ways)
                    instant(at, link, f"{link} latency spike ended", outcome)
            case SetLatency(a, b, model, both_ways) if model is not None:
                link = _link(a, b, both_ways)
                label = f"{link} latency {describe_latency(model)}"
                begin(_key("latency", a, b, both_ways), at, link, label, outcome)
            case DropConnection(a, b, discard):
                label = f"{a}<->{b} connections dropped" + (", queues discarded" if discard else "")
                instant(at, f"{a}<->{b}", label, outcome)
            case _:
                instant(at, "", getattr(fault, "describe", fault.__repr__)(), outcome)
    for start, target, label, outcome in open_.values():
        spans.append(FaultSpan(start, end, target, label, open_ended=True, outcome=outcome))
    spans.sort(key=lambda s: (s.start, s.end is None, s.target, s.label))
    return spans
