"""Faults as plain data, and schedules of them.

A fault is a frozen dataclass naming what breaks; a :data:`FaultSchedule` is a list of
``(virtual time, fault)`` pairs. Being data, schedules can be written in files, compared,
and generated and shrunk by Hypothesis (``transportkit.testing.strategies``).

One vocabulary names the faults everywhere: each class's :attr:`kind` is its name in
snake case (:data:`FAULT_KINDS`), and that is the ``kind`` of a scenario file's
``[[fault]]``, the first word of the fault's events in the sim's trace, and, for the
faults that start an outage, the name of the outage in the Hypothesis strategies'
``kinds`` and the scenario runner's ``--faults``. Each fault's :meth:`describe` says what
it does in words (``"latency on exchange->desk-1 set to 20 ms, both ways"``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Final, TypeAlias

from transportkit.sim_backend._latency import (
    Constant,
    Empirical,
    LatencyModel,
    LogNormal,
    Normal,
    Uniform,
)

if TYPE_CHECKING:
    from transportkit.sim_backend._world import Simulation

logger = logging.getLogger(__name__)

__all__ = [
    "FAULT_KINDS",
    "Crash",
    "DropConnection",
    "Fault",
    "FaultSchedule",
    "Hold",
    "Partition",
    "Release",
    "Repair",
    "Restart",
    "SetLatency",
    "apply_fault",
    "describe_latency",
    "schedule_faults",
    "seconds_text",
    "sorted_schedule",
]


FAULT_KINDS: Final = (
    "crash", "restart", "partition", "repair", "hold", "release", "drop_connection", "set_latency",
)  # fmt: skip
"""Every fault's :attr:`kind`: its class's name in snake case, in the order of the
classes (:class:`Crash` ... :class:`SetLatency`)."""


def seconds_text(value: float) -> str:
    """A duration in seconds as a person writes it: ``3 s``, ``20 ms``, ``150 us``
    (rounded to the nanosecond first, so that 0.1 + 0.2 prints as ``0.3 s``).
    """
    value = round(value, 9)
    if value == 0 or abs(value) >= 1:
        return f"{value:g} s"
    if abs(value) >= 1e-3:
        return f"{round(value * 1e3, 9):g} ms"
    return f"{round(value * 1e6, 9):g} us"


def describe_latency(model: LatencyModel) -> str:
    """A latency model in words: ``20 ms``, ``uniform 1 ms to 3 ms``, ..."""
    match model:
        case Constant(delay):
            return seconds_text(delay)
        case Uniform(low, high):
            return f"uniform {seconds_text(low)} to {seconds_text(high)}"
        case Normal(mean, stddev, minimum):
            floor = f", at least {seconds_text(minimum)}" if minimum else ""
            return f"normal, mean {seconds_text(mean)}, stddev {seconds_text(stddev)}{floor}"
        case LogNormal(mu, sigma, minimum):
            floor = f" above {seconds_text(minimum)}" if minimum else ""
            return f"lognormal, median {seconds_text(math.exp(mu))}{floor}, sigma {sigma:g}"
        case Empirical(samples):
            return f"empirical, {len(samples):,} samples"
    return repr(model)


def _link(a: str, b: str, both_ways: bool) -> str:
    return f"{a}->{b}, {'both ways' if both_ways else 'one way'}"


@dataclass(frozen=True, slots=True)
class Crash:
    """Kill a node: its tasks are cancelled, its sockets and queues vanish."""

    kind: ClassVar[str] = "crash"
    """The fault's name in the vocabulary (:data:`FAULT_KINDS`)."""

    node: str

    def describe(self) -> str:
        """What the fault does, in words (``"crash of exchange"``)."""
        return f"crash of {self.node}"


@dataclass(frozen=True, slots=True)
class Restart:
    """Bring a crashed node back (its ``main`` runs again)."""

    kind: ClassVar[str] = "restart"
    """The fault's name in the vocabulary (:data:`FAULT_KINDS`)."""

    node: str

    def describe(self) -> str:
        """What the fault does, in words (``"restart of exchange"``)."""
        return f"restart of {self.node}"


@dataclass(frozen=True, slots=True)
class Partition:
    """Cut the link between two nodes: both directions by default, or with
    ``both_ways=False`` only ``a`` to ``b``.
    """

    kind: ClassVar[str] = "partition"
    """The fault's name in the vocabulary (:data:`FAULT_KINDS`)."""

    a: str
    b: str
    both_ways: bool = True

    def describe(self) -> str:
        """What the fault does, in words (``"partition of a->b, both ways"``)."""
        return f"partition of {_link(self.a, self.b, self.both_ways)}"


@dataclass(frozen=True, slots=True)
class Repair:
    """Heal a partition between two nodes (both directions by default, or with
    ``both_ways=False`` only ``a`` to ``b``).
    """

    kind: ClassVar[str] = "repair"
    """The fault's name in the vocabulary (:data:`FAULT_KINDS`)."""

    a: str
    b: str
    both_ways: bool = True

    def describe(self) -> str:
        """What the fault does, in words (``"repair of a->b, both ways"``)."""
        return f"repair of {_link(self.a, self.b, self.both_ways)}"


@dataclass(frozen=True, slots=True)
class Hold:
    """Stall the link between two nodes: traffic waits, connections stay up (both
    directions by default, or with ``both_ways=False`` only ``a`` to ``b``).
    """

    kind: ClassVar[str] = "hold"
    """The fault's name in the vocabulary (:data:`FAULT_KINDS`)."""

    a: str
    b: str
    both_ways: bool = True

    def describe(self) -> str:
        """What the fault does, in words (``"hold on a->b (traffic waits), both ways"``)."""
        return f"hold on {self.a}->{self.b} (traffic waits), " + (
            "both ways" if self.both_ways else "one way"
        )


@dataclass(frozen=True, slots=True)
class Release:
    """End a :class:`Hold`: what waited is delivered in order (both directions by
    default, or with ``both_ways=False`` only ``a`` to ``b``).
    """

    kind: ClassVar[str] = "release"
    """The fault's name in the vocabulary (:data:`FAULT_KINDS`)."""

    a: str
    b: str
    both_ways: bool = True

    def describe(self) -> str:
        """What the fault does, in words (``"release of a->b, both ways"``)."""
        return f"release of {_link(self.a, self.b, self.both_ways)}"


@dataclass(frozen=True, slots=True)
class DropConnection:
    """Break the live connections between two nodes (they reconnect).

    The connecting side keeps its queue, as libzmq does, unless ``discard_queues``
    (or its ``reconnect_ivl`` is 0 or -1: then it does not reconnect, and loses it).
    """

    kind: ClassVar[str] = "drop_connection"
    """The fault's name in the vocabulary (:data:`FAULT_KINDS`)."""

    a: str
    b: str
    discard_queues: bool = False

    def describe(self) -> str:
        """What the fault does, in words (``"connections between a and b dropped
        (they reconnect)"``).
        """
        after = "queues discarded" if self.discard_queues else "they reconnect"
        return f"connections between {self.a} and {self.b} dropped ({after})"


@dataclass(frozen=True, slots=True)
class SetLatency:
    """A latency spike on the link(s) between two nodes, or its end.

    With a model, the link(s) take it for a while (:meth:`Simulation.spike_latency`);
    ``latency=None`` ends the spike (:meth:`Simulation.end_latency_spike`): each
    direction gets back the latency it had before its first spike (its own, such as a
    scenario's ``[[link]]`` latency, or else the simulation's default), not the
    simulation's default.
    """

    kind: ClassVar[str] = "set_latency"
    """The fault's name in the vocabulary (:data:`FAULT_KINDS`)."""

    a: str
    b: str
    latency: LatencyModel | None
    both_ways: bool = True

    def describe(self) -> str:
        """What the fault does, in words (``"latency on a->b set to 20 ms, both
        ways"``, or ``"latency on a->b back to what it was, both ways"``).
        """
        to = (
            "back to what it was"
            if self.latency is None
            else f"set to {describe_latency(self.latency)}"
        )
        return f"latency on {self.a}->{self.b} {to}, " + (
            "both ways" if self.both_ways else "one way"
        )


Fault: TypeAlias = (
    Crash | Restart | Partition | Repair | Hold | Release | DropConnection | SetLatency
)
FaultSchedule: TypeAlias = list[tuple[float, Fault]]


def apply_fault(sim: Simulation, fault: Fault) -> None:
    """Apply ``fault`` to ``sim`` now."""
    logger.info("fault: %r", fault, extra={"reason": type(fault).__name__})
    match fault:
        case Crash(node):
            sim.crash(node)
        case Restart(node):
            sim.restart(node)
        case Partition(a, b, both_ways):
            sim.partition(a, b, both_ways=both_ways)
        case Repair(a, b, both_ways):
            sim.repair(a, b, both_ways=both_ways)
        case Hold(a, b, both_ways):
            sim.hold(a, b, both_ways=both_ways)
        case Release(a, b, both_ways):
            sim.release(a, b, both_ways=both_ways)
        case DropConnection(a, b, discard_queues):
            sim.drop_connection(a, b, discard_queues=discard_queues)
        case SetLatency(a, b, latency, both_ways):
            if latency is None:
                sim.end_latency_spike(a, b, both_ways=both_ways)
            else:
                sim.spike_latency(a, b, latency, both_ways=both_ways)


def sorted_schedule(schedule: Iterable[tuple[float, Fault]]) -> FaultSchedule:
    """The schedule in time order (stable for equal times), times checked."""
    items = list(schedule)
    for when, fault in items:
        if not when >= 0:
            raise ValueError(f"fault {fault!r} scheduled at {when!r}: times must be >= 0")
    return sorted(items, key=lambda item: item[0])


def schedule_faults(sim: Simulation, schedule: Iterable[tuple[float, Fault]]) -> None:
    """Arrange for each fault to be applied at its virtual time (absolute, in seconds).

    Call before or during :meth:`Simulation.run`; faults in the past raise ValueError.
    """
    for when, fault in sorted_schedule(schedule):
        delay = when - sim.now
        if delay < 0:
            raise ValueError(f"fault {fault!r} at t={when} is in the past (now {sim.now})")

        def fire(_event: object, fault: Fault = fault) -> None:
            apply_fault(sim, fault)

        sim.env.timeout(delay).callbacks.append(fire)
