"""The data a sweep hands to its executor and gets back: one task and one result a seed.

Both are small frozen dataclasses of plain values, so they pickle for a process pool
and for Dask alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

__all__ = ["STATUSES", "SeedResult", "SeedTask", "Status"]

Status: TypeAlias = Literal["passed", "failed", "error", "crashed", "timeout"]
"""How a seed ended: see :class:`SeedResult`."""

STATUSES: Final[tuple[Status, ...]] = ("passed", "failed", "error", "crashed", "timeout")


@dataclass(frozen=True, slots=True)
class SeedTask:
    """One seed to run (what :func:`~transportkit.scenario._sweep_child.run_seed` takes).

    Attributes:
        seed: The simulation seed.
        text: The scenario file's text (shipped, so a worker needs no copy of the file).
        source: The scenario's file name, as given to the sweep.
        max_events: The bound on the run's estimated events (``--max-events``).
        fault_kinds: The fault kinds kept (swarm testing), or None for all of them.
        wall_budget: Seconds of wall time the child process may take, start included.
        replay: The command that replays this seed.
        python: The interpreter that runs the child; None: the worker's own.
        command: The arguments after the interpreter that start the child.
        fork: Fork the child from a helper interpreter that has imported
            transportkit already (about 0.3 s less a seed), rather than start a new
            interpreter for it.
        scheduler: The sim's scheduler by name (``"fifo"``, ``"random"``, ``"pct"``:
            ``transportkit run --scheduler``).
    """

    seed: int
    text: str
    source: str
    max_events: int
    fault_kinds: tuple[str, ...] | None
    wall_budget: float
    replay: str
    python: str | None
    command: tuple[str, ...]
    fork: bool = True
    scheduler: str = "fifo"

    def to_json(self) -> dict[str, Any]:
        """What the child process reads on its standard input."""
        return {
            "seed": self.seed,
            "text": self.text,
            "source": self.source,
            "max_events": self.max_events,
            "fault_kinds": None if self.fault_kinds is None else list(self.fault_kinds),
            "scheduler": self.scheduler,
        }


@dataclass(frozen=True, slots=True)
class SeedResult:
    """How one seed of a sweep ended.

    Attributes:
        seed: The seed.
        status: ``"passed"`` (every invariant held), ``"failed"`` (an invariant did
            not), ``"error"`` (the run raised an exception), ``"crashed"`` (its process
            died, was killed by a signal, or answered nothing readable) or
            ``"timeout"`` (it ran past the per-seed wall budget and was killed).
        wall_seconds: Wall time of the seed's process, interpreter start included.
        detail: One line on why it did not pass (empty when it passed).
        failed_invariants: ``(description, detail)`` of each invariant that failed;
            for an ``error`` that is an :class:`~transportkit.InvariantViolation`
            raised during the run (``Simulation.always``/``eventually``), the
            invariant's name and the message's first line (its trace events are in
            ``traceback``), so that the sweep counts it under that name.
        trace_hash: The run's trace hash (None if the run did not end).
        run_seconds: Wall time of the run alone, as ``transportkit run`` reports it
            (None if the run did not end).
        fault_kinds: The fault kinds the seed had enabled (swarm testing), or None if
            every fault of the scenario was.
        replay: The command that replays the seed (``transportkit run ...``).
        traceback: The end of the traceback of an ``error``.
    """

    seed: int
    status: Status
    wall_seconds: float
    detail: str = ""
    failed_invariants: tuple[tuple[str, str], ...] = ()
    trace_hash: str | None = None
    run_seconds: float | None = None
    fault_kinds: tuple[str, ...] | None = None
    replay: str = ""
    traceback: str = ""

    @property
    def passed(self) -> bool:
        """Whether the seed passed."""
        return self.status == "passed"

    @classmethod
    def from_answer(cls, task: SeedTask, data: dict[str, Any], wall: float) -> SeedResult:
        """The result of a child's answer (see ``_sweep_child.run_task``)."""
        if "error" in data:
            invariant = data.get("invariant")
            error = str(data["error"])
            return cls(
                task.seed, "error", wall, error,
                ((str(invariant), error),) if invariant else (),
                fault_kinds=task.fault_kinds, replay=task.replay,
                traceback=str(data.get("traceback", "")),
            )  # fmt: skip
        failed = tuple((str(d), str(why)) for d, why in data["failed_invariants"])
        passed = bool(data["passed"])
        detail = "" if passed else "; ".join(f"{d}: {why}" for d, why in failed[:1])
        if len(failed) > 1:
            detail += f" (and {len(failed) - 1} more invariant(s))"
        return cls(
            task.seed, "passed" if passed else "failed", wall, detail, failed,
            data["trace_hash"], float(data["run_seconds"]), task.fault_kinds, task.replay,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data (one entry of a sweep's JSON)."""
        return {
            "seed": self.seed,
            "status": self.status,
            "wall_seconds": round(self.wall_seconds, 3),
            "run_seconds": None if self.run_seconds is None else round(self.run_seconds, 3),
            "trace_hash": self.trace_hash,
            "fault_kinds": None if self.fault_kinds is None else list(self.fault_kinds),
            "detail": self.detail,
            "failed_invariants": [list(pair) for pair in self.failed_invariants],
            "replay": self.replay,
            "traceback": self.traceback,
        }
