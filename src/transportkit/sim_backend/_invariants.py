"""Invariants checked during a simulation run: ``always`` and ``eventually``.

They are checked after every **step** of the run: each asyncio callback the event loop
runs (see :mod:`transportkit.sim_backend._sched`) and each SimPy event it processes (a
delivery, a connection change, a fault). Nothing is checked, and the event loop keeps
its fast path, while none is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from transportkit._errors import InvariantViolation, OptionError
from transportkit.sim_backend._trace import event_name

if TYPE_CHECKING:
    from transportkit.sim_backend._trace import Trace

__all__ = ["LAST_EVENTS", "Invariants"]

LAST_EVENTS = 50
"""How many trace events an :class:`~transportkit.InvariantViolation` carries."""


@dataclass(eq=False, slots=True)
class _Eventually:
    name: str
    predicate: Callable[[], object]
    since: float
    deadline: float


class Invariants:
    """The invariants of one simulation, and their checks (used by ``Simulation``)."""

    __slots__ = ("_always", "_eventually", "_now", "_seed", "_trace", "violated")

    def __init__(self, now: Callable[[], float], seed: int, trace: Trace) -> None:
        self._now = now
        self._seed = seed
        self._trace = trace
        self._always: list[tuple[str, Callable[[], object]]] = []
        self._eventually: list[_Eventually] = []
        self.violated = False

    @property
    def active(self) -> bool:
        """Whether anything needs checking after each step."""
        return bool(self._always or self._eventually) and not self.violated

    def add_always(self, predicate: Callable[[], object], name: str) -> None:
        """Register ``predicate`` as true after every step from now on."""
        if not callable(predicate):
            raise OptionError(f"always: the predicate must be callable, got {predicate!r}")
        self._always.append((name, predicate))

    def add_eventually(self, predicate: Callable[[], object], within: float, name: str) -> float:
        """Register ``predicate`` as true after some step within ``within`` seconds;
        return the virtual deadline.
        """
        if not callable(predicate):
            raise OptionError(f"eventually: the predicate must be callable, got {predicate!r}")
        if isinstance(within, bool) or not isinstance(within, int | float) or not within >= 0:
            raise OptionError(f"eventually: within must be seconds >= 0, got {within!r}")
        if within == float("inf"):
            raise OptionError("eventually: within must be finite (a bound, in virtual seconds)")
        now = self._now()
        self._eventually.append(_Eventually(name, predicate, now, now + float(within)))
        return now + float(within)

    def check(self) -> None:
        """Check every invariant now; raise :class:`InvariantViolation` at the first
        one that fails (and stop checking: the run is over).
        """
        if self.violated:
            return
        for name, predicate in self._always:
            if not self._holds(predicate, "always", name):
                self._fail("always", name, f"always-invariant {name!r} does not hold")
        if self._eventually:
            now = self._now()
            kept = []
            for pending in self._eventually:
                if self._holds(pending.predicate, "eventually", pending.name):
                    continue
                if now >= pending.deadline:
                    self._fail(
                        "eventually",
                        pending.name,
                        f"eventually-invariant {pending.name!r} did not hold within "
                        f"{pending.deadline - pending.since:g} s (since t={pending.since:.6f})",
                    )
                kept.append(pending)
            self._eventually = kept

    def _holds(self, predicate: Callable[[], object], kind: str, name: str) -> bool:
        try:
            return bool(predicate())
        except Exception as exc:
            self._fail(kind, name, f"{kind}-invariant {name!r} raised {exc!r}", cause=exc)

    def _fail(
        self, kind: str, name: str, what: str, cause: BaseException | None = None
    ) -> NoReturn:
        self.violated = True
        now = self._now()
        trace = self._trace
        trace.add(now, "invariant", name, f"{kind} violated")
        events = tuple(trace.events[-LAST_EVENTS:]) if trace.record else ()
        message = f"{what} at t={now:.6f}s (seed {self._seed})"
        if events:
            shown = "\n".join(
                f"  {e.time:.9f} {event_name(e.kind):<12} {e.subject} {e.detail}" for e in events
            )
            message += f"; last trace events:\n{shown}"
        raise InvariantViolation(
            message, name=name, kind=kind, time=now, seed=self._seed, events=events
        ) from cause
