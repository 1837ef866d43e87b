"""Faults as plain data, and schedules of them.

A fault is a frozen dataclass naming what breaks; a :data:`FaultSchedule` is a list of
``(virtual time, fault)`` pairs. Being data, schedules can be written in files, compared,
and generated and shrunk by Hypothesis (``transportkit.testing.strategies``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from transportkit.sim_backend._latency import LatencyModel

if TYPE_CHECKING:
    from transportkit.sim_backend._world import Simulation

logger = logging.getLogger(__name__)

__all__ = [
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
    "schedule_faults",
    "sorted_schedule",
]


@dataclass(frozen=True, slots=True)
class Crash:
    """Kill a node: its tasks are cancelled, its sockets and queues vanish."""

    node: str


@dataclass(frozen=True, slots=True)
class Restart:
    """Bring a crashed node back (its ``main`` runs again)."""

    node: str


@dataclass(frozen=True, slots=True)
class Partition:
    """Cut the link between two nodes (one way: only ``a`` to ``b``)."""

    a: str
    b: str
    both_ways: bool = True


@dataclass(frozen=True, slots=True)
class Repair:
    """Heal a partition between two nodes."""

    a: str
    b: str
    both_ways: bool = True


@dataclass(frozen=True, slots=True)
class Hold:
    """Stall the link between two nodes: traffic waits, connections stay up."""

    a: str
    b: str
    both_ways: bool = True


@dataclass(frozen=True, slots=True)
class Release:
    """End a :class:`Hold`: what waited is delivered in order."""

    a: str
    b: str
    both_ways: bool = True


@dataclass(frozen=True, slots=True)
class DropConnection:
    """Break the live connections between two nodes (they reconnect).

    The connecting side keeps its queue, as libzmq does, unless ``discard_queues``
    (or its ``reconnect_ivl`` is 0 or -1: then it does not reconnect, and loses it).
    """

    a: str
    b: str
    discard_queues: bool = False


@dataclass(frozen=True, slots=True)
class SetLatency:
    """A latency spike on the link(s) between two nodes, or its end.

    With a model, the link(s) take it for a while (:meth:`Simulation.spike_latency`);
    ``latency=None`` ends the spike (:meth:`Simulation.end_latency_spike`): each
    direction gets back the latency it had before its first spike (its own, such as a
    scenario's ``[[link]]`` latency, or else the simulation's default), not the
    simulation's default.
    """

    a: str
    b: str
    latency: LatencyModel | None
    both_ways: bool = True


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
