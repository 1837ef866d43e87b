"""Schedulers: which ready asyncio callback of a simulation runs next, and their record.

A **step** is one pick from asyncio's ready queue by the simulation's event loop (the
run of one callback: a task resuming, a future's done callback). The loop keeps the
length of asyncio's iterations: an iteration takes as many steps as there were
callbacks ready when it started, then timers and SimPy events get their turn. At
each step where two or more callbacks are ready the scheduler picks one by its index
in the ready queue, oldest first: that is a **choice**. Index 0 is FIFO, asyncio's
own order; a scheduler may also pick a callback made ready during the current
iteration (a task resuming after ``asyncio.sleep(0)`` overtaking an older one). Steps
are numbered from 0 in the order they run, over the whole life of the simulation (in
the FIFO mode, which keeps the loop's fast path, they are not counted).

Only what asyncio's ready queue holds is reordered: SimPy events (deliveries,
connection changes, faults) keep their order (``shuffle_ties`` reorders those), so
ZeroMQ's guarantees hold in every mode: a pipe's messages arrive in the order they
were sent, and a multipart message arrives whole.

The record of a run, :class:`Schedule` (``sim.schedule``), keeps only the choices that
differ from FIFO, so a FIFO run records nothing and replaying a record with
:class:`ReplayScheduler` reproduces the run.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from transportkit._errors import OptionError

__all__ = [
    "FifoScheduler",
    "PCTScheduler",
    "RandomScheduler",
    "ReplayScheduler",
    "Schedule",
    "Scheduler",
    "make_scheduler",
]

MODES = ("fifo", "random", "pct")
"""The scheduler names :class:`~transportkit.sim_backend.Simulation` accepts."""


def _derived_rng(kind: str, seed: int) -> random.Random:
    # Seeding with a str hashes it with SHA-512: the same stream on every Python and
    # machine, and unrelated to ``random.Random(seed)``, the simulation's own RNG.
    return random.Random(f"transportkit.scheduler.{kind}:{seed}")


class Scheduler:
    """Decides the order of the ready callbacks of each loop iteration.

    Subclass it and override :meth:`choose` (and :meth:`bind` if the scheduler is
    random) to write your own. One scheduler object serves one simulation.

    Attributes:
        name: Short name, as recorded in :attr:`Schedule.mode`.
    """

    name = "custom"

    def bind(self, seed: int) -> None:
        """Called once by the simulation that uses this scheduler, with its seed.

        Random schedulers derive their RNG from ``seed`` here (never from the
        simulation's ``rng``, whose draws the scheduler must not shift).
        """

    def choose(self, step: int, ready: Sequence[asyncio.Handle], n: int) -> int:
        """The index in ``ready`` of the callback to run at ``step``.

        Args:
            step: The number of this step (0 for the simulation's first callback).
            ready: asyncio's ready queue, oldest first, at least two callbacks. Do not
                modify it.
            n: How many of its first entries were already ready when this iteration
                started (at least 1). Picking among them keeps asyncio's promise that
                a callback runs in the iteration after it became ready, so nothing
                starves (the PCT scheduler does); an index up to ``len(ready) - 1``
                lets a younger callback overtake.

        Returns:
            0 for FIFO, another index to run a younger callback first. An index out of
            range fails the run with :class:`~transportkit.SimulationError`.
        """
        return 0


class FifoScheduler(Scheduler):
    """asyncio's own order: the oldest ready callback first (the default)."""

    name = "fifo"


class RandomScheduler(Scheduler):
    """A random walk: each step runs a random callback of the whole ready queue.

    Any ready callback may run next, also one that became ready in this iteration (a
    task resuming after ``asyncio.sleep(0)`` may overtake an older one). The walk leans
    away from FIFO, which the default mode already covers: the oldest callback, the one
    FIFO would run, has weight ``fifo_weight`` and every other weight 1. With the
    default 0.5 and two ready callbacks the younger runs first two times in three; a
    program that silently assumes two ready tasks resume in the order they were created
    is caught on about two seeds in three (one in two with ``fifo_weight=1``, uniform).

    Args:
        fifo_weight: Weight of the oldest ready callback, relative to each other
            callback's 1; from 0.01 to 100. Default 0.5.

    Raises:
        OptionError: ``fifo_weight`` out of range.
    """

    name = "random"

    def __init__(self, *, fifo_weight: float = 0.5) -> None:
        if (
            isinstance(fifo_weight, bool)
            or not isinstance(fifo_weight, int | float)
            or not 0.01 <= fifo_weight <= 100
        ):
            raise OptionError(f"fifo_weight must be from 0.01 to 100, got {fifo_weight!r}")
        self.fifo_weight = float(fifo_weight)
        self._rng = _derived_rng(self.name, 0)

    def bind(self, seed: int) -> None:
        """Derive the RNG from ``seed`` (a stream separate from the simulation's)."""
        self._rng = _derived_rng(self.name, seed)

    def choose(self, step: int, ready: Sequence[asyncio.Handle], n: int) -> int:
        """A random index of the whole ready queue, the oldest weighted ``fifo_weight``."""
        size = len(ready)
        weight = self.fifo_weight
        x = self._rng.random() * (weight + size - 1) - weight
        return 0 if x < 0 else min(size - 1, 1 + int(x))


def _owner(handle: asyncio.Handle) -> asyncio.Task[Any] | None:
    """The task a ready callback belongs to (its step or its wake-up), if any."""
    owner = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
    return owner if isinstance(owner, asyncio.Task) else None


class PCTScheduler(Scheduler):
    """Probabilistic concurrency testing (Burckhardt et al., ASPLOS 2010).

    Each task gets a random priority when first seen, and at each step the candidate
    of the highest-priority task runs (ties, and callbacks that belong to no task,
    which get a fresh random priority each time, in FIFO order). At ``depth - 1``
    change points, steps drawn uniformly from ``[0, horizon)``, the task about to run
    drops below every other task. A bug that needs ``d`` ordering constraints is found
    with probability at least ``1 / (tasks * horizon ** (d - 1))`` per run for
    ``depth >= d``; small depths find most bugs.

    Args:
        depth: Priority-change points plus one; from 1 (no change point) to 64.
            Default 3.
        horizon: Steps over which the change points are drawn (about the length of
            the runs; change points past the end of a run never happen). From 1 to
            10**9. Default 10,000.

    Raises:
        OptionError: ``depth`` or ``horizon`` out of range.
    """

    name = "pct"

    def __init__(self, *, depth: int = 3, horizon: int = 10_000) -> None:
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 64:
            raise OptionError(f"PCT depth must be an int from 1 to 64, got {depth!r}")
        if isinstance(horizon, bool) or not isinstance(horizon, int) or not 1 <= horizon <= 10**9:
            raise OptionError(f"PCT horizon must be an int from 1 to 10**9, got {horizon!r}")
        self.depth = depth
        self.horizon = horizon
        self.bind(0)

    def bind(self, seed: int) -> None:
        """Derive the RNG from ``seed``, then draw the change points."""
        self._rng = rng = _derived_rng(self.name, seed)
        self._priorities: weakref.WeakKeyDictionary[asyncio.Task[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        changes = sorted(rng.sample(range(self.horizon), min(self.depth - 1, self.horizon)))
        self.change_points: tuple[int, ...] = tuple(changes)
        self._next_change = 0

    def _priority(self, owner: asyncio.Task[Any] | None) -> float:
        if owner is None:
            return self.depth + self._rng.random()
        priority = self._priorities.get(owner)
        if priority is None:
            # Initial priorities are above ``depth``; lowered ones are 1 .. depth - 1.
            priority = self._priorities[owner] = self.depth + self._rng.random()
        return priority

    def choose(self, step: int, ready: Sequence[asyncio.Handle], n: int) -> int:
        """The candidate of the highest-priority task, after any due change point."""
        owners = [_owner(ready[i]) for i in range(n)]
        priorities = [self._priority(owner) for owner in owners]
        best = max(range(n), key=priorities.__getitem__)
        changes = self.change_points
        while self._next_change < len(changes) and changes[self._next_change] <= step:
            self._next_change += 1
            owner = owners[best]
            if owner is not None:
                self._priorities[owner] = float(self._next_change)
            priorities[best] = float(self._next_change)
            best = max(range(n), key=priorities.__getitem__)
        return best


class ReplayScheduler(Scheduler):
    """Replays a list of choices: FIFO except at the given steps.

    A choice not given, or no longer valid (its index is not below the number of
    ready callbacks at that step, as happens once a shrinker removed earlier choices), falls
    back to FIFO; :attr:`Schedule.choices` of the run says which choices were taken.

    Args:
        choices: ``(step, index)`` pairs, or a mapping of step to index.

    Raises:
        ValueError: A step or index is negative, or a step is given twice.
    """

    name = "replay"

    def __init__(self, choices: Iterable[tuple[int, int]] | Mapping[int, int] = ()) -> None:
        pairs = list(choices.items() if isinstance(choices, Mapping) else choices)
        table: dict[int, int] = {}
        for raw_step, raw_index in pairs:
            step, index = int(raw_step), int(raw_index)
            if step < 0 or index < 0:
                raise ValueError(f"replay choice ({step}, {index}): steps and indices are >= 0")
            if step in table:
                raise ValueError(f"replay choices give step {step} twice")
            if index:
                table[step] = index
        self.choices: dict[int, int] = table

    def choose(self, step: int, ready: Sequence[asyncio.Handle], n: int) -> int:
        """The recorded index for ``step`` if it is still valid, else 0 (FIFO)."""
        index = self.choices.get(step, 0)
        return index if index < len(ready) else 0

    def __repr__(self) -> str:
        return f"ReplayScheduler({sorted(self.choices.items())!r})"


def make_scheduler(scheduler: str | Scheduler, seed: int) -> Scheduler:
    """The scheduler for ``Simulation(seed, scheduler=...)``, bound to ``seed``.

    Raises:
        OptionError: An unknown name or something that is not a :class:`Scheduler`.
    """
    if isinstance(scheduler, str):
        made: Scheduler
        if scheduler == "fifo":
            made = FifoScheduler()
        elif scheduler == "random":
            made = RandomScheduler()
        elif scheduler == "pct":
            made = PCTScheduler()
        else:
            raise OptionError(
                f"unknown scheduler {scheduler!r}: use one of {', '.join(MODES)} "
                "or a Scheduler object"
            )
        scheduler = made
    elif not isinstance(scheduler, Scheduler):
        raise OptionError(
            f"scheduler must be one of {', '.join(MODES)} or a Scheduler, "
            f"got {type(scheduler).__name__}"
        )
    scheduler.bind(seed)
    return scheduler


class Schedule:
    """The record of a run's scheduling choices that differ from FIFO.

    Each non-FIFO choice is kept as ``(step, index)`` (16 bytes); FIFO choices are
    not kept, so a FIFO run records nothing. Replaying the record with
    :meth:`replayer` (in a simulation with the same seed and program) makes the same
    choices, hence the same run.

    Attributes:
        mode: The scheduler's name (``"fifo"``, ``"random"``, ``"pct"``, ``"replay"``...).
        seed: The simulation's seed.
        steps: How many steps ran so far (not counted in the FIFO mode, whose fast
            path records nothing; a :class:`ReplayScheduler` with no choices counts).
    """

    __slots__ = ("_indices", "_steps", "mode", "seed", "steps")

    def __init__(self, mode: str, seed: int) -> None:
        self.mode = mode
        self.seed = seed
        self.steps = 0
        self._steps = array("q")
        self._indices = array("q")

    def add(self, step: int, index: int) -> None:
        """Record that ``step`` ran the candidate at ``index`` (> 0)."""
        self._steps.append(step)
        self._indices.append(index)

    @property
    def choices(self) -> list[tuple[int, int]]:
        """The non-FIFO choices as ``(step, index)`` pairs, in step order."""
        return list(zip(self._steps, self._indices, strict=True))

    def __len__(self) -> int:
        return len(self._steps)

    def replayer(self) -> ReplayScheduler:
        """A scheduler that makes exactly these choices again."""
        return ReplayScheduler(self.choices)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: ``mode``, ``seed``, ``steps`` and ``choices`` (pairs)."""
        return {
            "mode": self.mode,
            "seed": self.seed,
            "steps": self.steps,
            "choices": [[s, i] for s, i in self.choices],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Schedule:
        """The record :meth:`to_json` wrote.

        Raises:
            ValueError: The data is not such a record.
        """
        try:
            record = cls(str(data["mode"]), int(data["seed"]))
            record.steps = int(data.get("steps", 0))
            for step, index in data["choices"]:
                record.add(int(step), int(index))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a schedule record: {exc}") from exc
        return record

    def describe(self) -> str:
        """In words: ``"FIFO"``, or ``"FIFO except step 3 (index 1)"``, ...

        Long records are summarised after their first ten choices.
        """
        return describe_choices(self.choices)

    def __repr__(self) -> str:
        return f"<Schedule {self.mode} seed={self.seed} steps={self.steps}: {self.describe()}>"


def describe_choices(choices: Sequence[tuple[int, int]], limit: int = 10) -> str:
    """``"FIFO"``, ``"FIFO except step 3 (index 1)"``, ``"FIFO except steps 3 (index 1)
    and 17 (index 2)"``; after ``limit`` choices, ``"and N more"``.
    """
    if not choices:
        return "FIFO"
    parts = [f"{step} (index {index})" for step, index in choices[:limit]]
    if len(choices) > limit:
        parts.append(f"{len(choices) - limit} more")
    word = "step" if len(choices) == 1 else "steps"
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"FIFO except {word} {listed}"
