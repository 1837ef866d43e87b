"""Seed sweeps: run one scenario once per seed, in parallel, and report the failures.

:func:`sweep` runs a scenario file on the sim backend for each of many seeds through
any :class:`concurrent.futures.Executor` (a process pool by default, a thread pool, a
Dask cluster's executor) and returns a :class:`SweepResult`: every seed's outcome in
seed order, whatever order they finished in, each failure with the command that
replays it. ``transportkit sweep`` is its command line.

Each seed runs in a child process of its own, started by the executor's worker (see
:mod:`transportkit.scenario._sweep_child`), so a seed that crashes its interpreter or
hangs is a failure with its reason, never a broken pool or a sweep that never ends:
past its wall budget (:func:`default_wall_budget`, from the scenario's estimated
cost) the child is killed.

Swarm testing (Groce et al., "Swarm Testing", ISSTA 2012): with ``swarm=True`` each
seed also picks, from its seed alone, which fault kinds of the scenario are enabled
(each kind of :data:`FAULT_KINDS` present in the file with probability 1/2): a
random subset of features per run finds bugs that all of them at once mask. The
replay command names the subset (``--faults crash,latency``).

``scheduler="random"`` or ``"pct"`` (``--scheduler``) runs each seed's tasks in an
order that scheduler draws from the seed, instead of FIFO; the replay command names
the scheduler too.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import random
import shlex
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import (
    FIRST_COMPLETED,
    BrokenExecutor,
    CancelledError,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass, replace
from typing import Any, Final

from transportkit.scenario._bounds import MAX_EVENTS, MAX_SEED
from transportkit.scenario._budget import check_budget, estimate_events
from transportkit.scenario._catalog import resolve_scenario
from transportkit.scenario._components import COMPONENTS
from transportkit.scenario._invariants import INVARIANTS
from transportkit.scenario._spec import (
    Scenario,
    ScenarioError,
    check_nesting,
    parse_scenario,
    read_scenario_text,
)
from transportkit.scenario._sweep_child import CHILD_COMMAND, run_seed
from transportkit.scenario._sweep_types import STATUSES, SeedResult, SeedTask
from transportkit.sim_backend import (
    Crash,
    DropConnection,
    Fault,
    Hold,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
)
from transportkit.sim_backend._sched import MODES

__all__ = [
    "DEFAULT_MAX_SHOWN",
    "FAULT_KINDS",
    "MAX_SWEEP_SEEDS",
    "MAX_WALL_BUDGET",
    "SCHEDULERS",
    "SeedResult",
    "SweepResult",
    "cpu_count",
    "default_wall_budget",
    "fault_kind",
    "parse_fault_kinds",
    "replay_command",
    "scenario_fault_kinds",
    "scenario_from_text",
    "swarm_fault_kinds",
    "sweep",
    "with_fault_kinds",
]

FAULT_KINDS: Final = ("crash", "partition", "hold", "drop_connection", "set_latency")
"""The fault kinds swarm testing and ``--faults`` turn on and off, named by the fault
that starts each outage (:data:`transportkit.sim_backend.FAULT_KINDS`). A kind takes
its healing with it: ``crash`` is the crashes and the restarts, ``partition`` the
partitions and repairs, ``hold`` the holds and releases, ``set_latency`` the latency
changes and the returns to normal."""

_RENAMED_KINDS: Final = {
    "latency": "set_latency",
    "spike": "set_latency",
    "drop": "drop_connection",
}

_KIND_OF: Final[dict[type, str]] = {
    Crash: "crash",
    Restart: "crash",
    Partition: "partition",
    Repair: "partition",
    Hold: "hold",
    Release: "hold",
    DropConnection: "drop_connection",
    SetLatency: "set_latency",
}

SCHEDULERS: Final = MODES
"""The schedulers a sweep runs its seeds in, by name (as ``transportkit run
--scheduler``): a seed's run happens in another process and its replay command names
it, so a ``Scheduler`` object is not accepted."""

MAX_SWEEP_SEEDS: Final = 1_000_000
"""Most seeds in one sweep (each keeps a result of a few hundred bytes in memory)."""

MAX_WALL_BUDGET: Final = 86_400.0
"""The largest per-seed wall budget (a day)."""

MIN_WALL_BUDGET: Final = 120.0
"""The smallest default per-seed wall budget: a child process's start (about 0.3 s
here) and a machine shared with other work fit in it many times over."""

WALL_BUDGET_MARGIN: Final = 20.0
"""The default wall budget is this many times the run's estimated cost."""

_SECONDS_PER_EVENT: Final = 10e-6
"""Wall time of one estimated event on the sim (see ``_budget``)."""

_LABELS: Final = {
    "failed": "by an invariant",
    "error": "by an error",
    "crashed": "crashed",
    "timeout": "timed out",
}

DEFAULT_MAX_SHOWN: Final = 20
"""Most failing seeds a report shows in full (the rest are counted)."""


def fault_kind(fault: Fault) -> str:
    """The kind of :data:`FAULT_KINDS` that ``fault`` belongs to."""
    return _KIND_OF[type(fault)]


def scenario_fault_kinds(scenario: Scenario) -> tuple[str, ...]:
    """The fault kinds ``scenario`` has, in the order of :data:`FAULT_KINDS`."""
    present = {fault_kind(fault) for _, fault in scenario.faults}
    return tuple(kind for kind in FAULT_KINDS if kind in present)


def swarm_fault_kinds(scenario: Scenario, seed: int) -> tuple[str, ...]:
    """The fault kinds seed ``seed`` enables in swarm testing: each kind the scenario
    has, kept with probability 1/2 by a generator seeded with ``seed`` alone (the
    same on every machine and Python version), separate from the simulation's.
    """
    rng = random.Random(f"transportkit-swarm/{seed}")
    return tuple(kind for kind in scenario_fault_kinds(scenario) if rng.random() < 0.5)


def parse_fault_kinds(text: str) -> tuple[str, ...]:
    """Parse ``--faults``: comma-separated kinds of :data:`FAULT_KINDS`, or ``none``.

    Raises:
        ValueError: An unknown or repeated kind; the message lists the known ones (or,
            for an old name such as ``latency``, gives the new one).
    """
    if text.strip() == "none":
        return ()
    kinds = tuple(part.strip() for part in text.split(","))
    for kind in kinds:
        if kind in _RENAMED_KINDS:
            raise ValueError(
                f"fault kind {kind!r} is now {_RENAMED_KINDS[kind]!r} (each kind is the name "
                "of the fault class that starts the outage, in snake case)"
            )
        if kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {kind[:40]!r}: expected 'none' or a comma-separated "
                f"list of {', '.join(FAULT_KINDS)}"
            )
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"a fault kind is repeated in {text[:100]!r}")
    return tuple(kind for kind in FAULT_KINDS if kind in kinds)


def with_fault_kinds(scenario: Scenario, kinds: Iterable[str]) -> Scenario:
    """``scenario`` with only the faults of ``kinds`` (see :data:`FAULT_KINDS`).

    Raises:
        ScenarioError: A kind is unknown, or the scenario has no fault of that kind.
    """
    keep = set(kinds)
    present = scenario_fault_kinds(scenario)
    for kind in sorted(keep):
        if kind not in present:
            has = ", ".join(present) or "none"
            raise ScenarioError(
                f"{scenario.source}: --faults {kind[:40]!r}: the scenario has no fault of "
                f"that kind (its kinds: {has})"
            )
    faults = tuple((at, f) for at, f in scenario.faults if fault_kind(f) in keep)
    return replace(scenario, faults=faults)


def scenario_from_text(text: str, source: str, max_events: int = MAX_EVENTS) -> Scenario:
    """Validate a scenario file's ``text`` as :func:`~transportkit.scenario.load` does
    a file (``source`` names it in messages).

    Raises:
        ScenarioError: As :func:`~transportkit.scenario.load`.
    """
    if not text.strip():
        raise ScenarioError(f"{source}: the file is empty")
    check_nesting(text, source)
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise ScenarioError(f"{source}: not valid TOML: {str(exc)[:300]}") from None
    parsers = {kind: comp.parse for kind, comp in COMPONENTS.items()}
    checks = {kind: parse for kind, (parse, _) in INVARIANTS.items()}
    scenario = parse_scenario(data, source, parsers, checks)
    check_budget(scenario, max_events=max_events)
    return scenario


def default_wall_budget(scenario: Scenario) -> float:
    """The default per-seed wall budget: :data:`WALL_BUDGET_MARGIN` times the run's
    estimated cost (``_budget.estimate_events``, an upper bound, at about 10 us an
    event), and at least :data:`MIN_WALL_BUDGET` seconds. The flagship
    (``trading_day``, about 5 s a run alone, up to 23 s with two seeds at once on two
    cores shared with other work) gets 120 s.
    """
    events = sum(share.amount for share in estimate_events(scenario))
    budget = max(MIN_WALL_BUDGET, WALL_BUDGET_MARGIN * events * _SECONDS_PER_EVENT)
    return min(budget, MAX_WALL_BUDGET)


def replay_command(
    source: str,
    seed: int,
    fault_kinds: tuple[str, ...] | None = None,
    max_events: int = MAX_EVENTS,
    scheduler: str = "fifo",
) -> str:
    """The ``transportkit run`` command that replays one seed of a sweep (the same
    trace hash): the scenario, the seed, the fault kinds of a swarm seed,
    ``--max-events`` if the sweep raised it, and ``--scheduler`` unless it is FIFO
    (``transportkit run``'s default).
    """
    words = ["transportkit", "run", source, "--seed", str(seed)]
    if fault_kinds is not None:
        words += ["--faults", ",".join(fault_kinds) or "none"]
    if max_events != MAX_EVENTS:
        words += ["--max-events", str(max_events)]
    if scheduler != "fifo":
        words += ["--scheduler", scheduler]
    return shlex.join(words)


def _scheduler_name(scheduler: object) -> str:
    """``scheduler`` if it names one of :data:`SCHEDULERS`.

    Raises:
        ValueError: Anything else (the message lists the names).
    """
    if not isinstance(scheduler, str) or scheduler not in SCHEDULERS:
        shown = repr(scheduler[:40] if isinstance(scheduler, str) else scheduler)[:80]
        raise ValueError(
            f"unknown scheduler {shown}: use one of {', '.join(SCHEDULERS)} (a sweep "
            "takes the scheduler by name)"
        )
    return scheduler


def cpu_count() -> int:
    """The CPUs this process may use (the default number of jobs)."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13
    if counter is not None:
        return int(counter() or 1)
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class SweepResult:
    """What a sweep found.

    Attributes:
        scenario: The scenario's name.
        source: The scenario file, as given.
        seeds: How many seeds were asked for.
        results: The result of each seed that ran, in seed order.
        not_run: Seeds not run: after the first failure with ``fail_fast``, or after
            the executor broke.
        wall_seconds: Wall time of the whole sweep.
        jobs: Seeds run at once (as asked; a cluster may run more or fewer).
        executor: What ran the seeds (``"processes"``, ``"threads"``, ``"dask ..."``).
        wall_budget: The per-seed wall budget, in seconds.
        swarm: Whether each seed picked its own fault kinds.
        fault_kinds: The scenario's fault kinds.
        executor_error: Why the executor stopped taking seeds, if it did.
        scheduler: The scheduler every seed ran in (see :data:`SCHEDULERS`).
    """

    scenario: str
    source: str
    seeds: int
    results: tuple[SeedResult, ...]
    not_run: int
    wall_seconds: float
    jobs: int
    executor: str
    wall_budget: float
    swarm: bool
    fault_kinds: tuple[str, ...]
    executor_error: str | None = None
    scheduler: str = "fifo"

    @property
    def passed(self) -> bool:
        """Whether every seed ran and passed."""
        return (
            self.not_run == 0
            and self.executor_error is None
            and all(r.passed for r in self.results)
        )

    @property
    def failures(self) -> tuple[SeedResult, ...]:
        """The seeds that did not pass, in seed order."""
        return tuple(r for r in self.results if not r.passed)

    def counts(self) -> dict[str, int]:
        """How many seeds ended in each status (every status, in :data:`STATUSES`
        order).
        """
        counter = Counter(r.status for r in self.results)
        return {status: counter[status] for status in STATUSES}

    def invariant_failures(self) -> dict[str, int]:
        """How many seeds each invariant failed on, most first (then by name)."""
        counter: Counter[str] = Counter()
        for result in self.results:
            counter.update({description for description, _ in result.failed_invariants})
        return dict(sorted(counter.items(), key=lambda item: (-item[1], item[0])))

    def failures_by_fault_kinds(self) -> dict[str, int]:
        """With swarm testing: how many failing seeds had each subset of fault kinds."""
        counter = Counter(
            "+".join(r.fault_kinds) or "none" for r in self.failures if r.fault_kinds is not None
        )
        return dict(sorted(counter.items(), key=lambda item: (-item[1], item[0])))

    @property
    def slowest(self) -> SeedResult | None:
        """The seed that took the most wall time (the lowest seed of a tie)."""
        return max(self.results, key=lambda r: (r.wall_seconds, -r.seed), default=None)

    def to_dict(self) -> dict[str, Any]:
        """The sweep as plain data (what ``--json`` writes): the summary, then every
        failure in full and every seed's status, trace hash and times.
        """
        slowest = self.slowest
        return {
            "scenario": self.scenario,
            "source": self.source,
            "seeds": self.seeds,
            "ran": len(self.results),
            "not_run": self.not_run,
            "passed": self.passed,
            "counts": self.counts(),
            "invariant_failures": self.invariant_failures(),
            "failures_by_fault_kinds": self.failures_by_fault_kinds(),
            "slowest": None
            if slowest is None
            else {"seed": slowest.seed, "wall_seconds": round(slowest.wall_seconds, 3)},
            "wall_seconds": round(self.wall_seconds, 3),
            "jobs": self.jobs,
            "executor": self.executor,
            "wall_budget": self.wall_budget,
            "swarm": self.swarm,
            "scheduler": self.scheduler,
            "fault_kinds": list(self.fault_kinds),
            "executor_error": self.executor_error,
            "failures": [r.to_dict() for r in self.failures],
            "results": [
                {
                    "seed": r.seed,
                    "status": r.status,
                    "trace_hash": r.trace_hash,
                    "wall_seconds": round(r.wall_seconds, 3),
                    "fault_kinds": None if r.fault_kinds is None else list(r.fault_kinds),
                }
                for r in self.results
            ],
        }

    def report_text(self, max_shown: int = DEFAULT_MAX_SHOWN) -> str:
        """A readable report: the first ``max_shown`` failing seeds in full (why, the
        fault kinds of a swarm seed, the replay command), then the summary.
        """
        mode = f", scheduler {self.scheduler}" if self.scheduler != "fifo" else ""
        mode += ", swarm testing" if self.swarm else ""
        lines = [
            f"sweep of {self.scenario} ({self.source}): {self.seeds:,} seed(s), "
            f"{self.jobs} job(s) ({self.executor}), wall budget {self.wall_budget:g} s a "
            f"seed{mode}",
        ]
        if self.swarm:
            lines.append(
                f"  fault kinds: {', '.join(self.fault_kinds)} (each seed keeps each "
                "with probability 1/2)"
            )
        failures = self.failures
        for result in failures[:max_shown]:
            lines.append(f"FAIL seed {result.seed} ({result.status}): {result.detail}")
            if result.fault_kinds is not None:
                lines.append(f"     faults: {', '.join(result.fault_kinds) or 'none'}")
            lines.append(f"     replay: {result.replay}")
        if len(failures) > max_shown:
            lines.append(
                f"... and {len(failures) - max_shown:,} more failing seed(s) "
                "(every one in the --json file)"
            )
        counts = self.counts()
        failed = len(failures)
        kinds = ", ".join(
            f"{counts[status]:,} {_LABELS[status]}" for status in STATUSES[1:] if counts[status]
        )
        lines += [
            "",
            f"summary: {counts['passed']:,} passed, {failed:,} failed"
            + (f" ({kinds})" if kinds else "")
            + f" of {len(self.results):,} seed(s) run",
        ]
        if self.not_run:
            why = self.executor_error or "--fail-fast stopped at the first failure"
            lines.append(f"  not run: {self.not_run:,} seed(s) ({why})")
        invariants = self.invariant_failures()
        if invariants:
            lines.append("  invariant failures (seeds):")
            lines += [f"    {count:>6,}  {name}" for name, count in invariants.items()]
        by_kinds = self.failures_by_fault_kinds()
        if by_kinds:
            lines.append("  failures by enabled fault kinds (seeds):")
            lines += [f"    {count:>6,}  {name}" for name, count in by_kinds.items()]
        slowest = self.slowest
        if slowest is not None:
            lines.append(f"  slowest: seed {slowest.seed}, {slowest.wall_seconds:.2f} s wall")
        per_seed = self.wall_seconds / len(self.results) if self.results else 0.0
        lines.append(f"  total wall time: {self.wall_seconds:.1f} s ({per_seed:.2f} s a seed run)")
        lines.append("  PASSED" if self.passed else "  FAILED")
        return "\n".join(lines)


def _seed_list(seeds: Iterable[int]) -> list[int]:
    values: list[int] = []
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"a seed must be an int, got {type(seed).__name__}")
        if not 0 <= seed <= MAX_SEED:
            raise ValueError(f"a seed must be from 0 to {MAX_SEED}, got {seed}")
        values.append(seed)
        if len(values) > MAX_SWEEP_SEEDS:
            raise ValueError(f"a sweep runs at most {MAX_SWEEP_SEEDS:,} seeds")
    if not values:
        raise ValueError("a sweep needs at least one seed")
    if len(set(values)) != len(values):
        raise ValueError("a seed is repeated")
    return sorted(values)


def _describe(executor: Executor) -> str:
    if isinstance(executor, ProcessPoolExecutor):
        return "processes"
    if isinstance(executor, ThreadPoolExecutor):
        return "threads"
    return type(executor).__name__


def _stop_workers(pool: Executor) -> None:
    """Kill the workers of this sweep's own process pool (each one's helper then kills
    the seed it runs: its standard input closes). A worker catches the KeyboardInterrupt
    of a seed it waits for and goes on with the seed the pool had already queued for
    it, which cancelling cannot take back: without this, Ctrl-C waited for a whole
    seed more (8 s of the flagship).
    """
    processes: dict[Any, Any] = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        with contextlib.suppress(Exception):
            process.kill()


def sweep(
    scenario: str | os.PathLike[str],
    seeds: Iterable[int],
    *,
    executor: Executor | None = None,
    jobs: int | None = None,
    swarm: bool = False,
    fail_fast: bool = False,
    wall_budget: float | None = None,
    max_events: int = MAX_EVENTS,
    max_in_flight: int | None = None,
    python: str | None = None,
    fork: bool = True,
    on_result: Callable[[SeedResult], None] | None = None,
    scheduler: str = "fifo",
) -> SweepResult:
    """Run scenario file ``scenario`` once for each of ``seeds`` on the sim backend.

    Each seed runs as its replay command (``transportkit run SCENARIO --seed S``, with
    ``--faults`` and ``--scheduler`` when they apply) would, with the same trace hash,
    in a child process of its own started by a worker of ``executor``; the workers
    only wait, so a process pool, a thread pool and a Dask cluster's
    ``client.get_executor()`` all work (simulations never share a thread or a
    process). At most ``max_in_flight`` seeds are submitted at a time.

    Args:
        scenario: The scenario: a shipped one's name (``"trading_day"``, see
            :func:`~transportkit.scenario.resolve_scenario`) or a file's path. Its
            text is read once, validated here, and shipped with every seed, so
            workers need no copy of it; replay commands repeat it as given.
        seeds: The seeds, each from 0 to ``MAX_SEED``, without repeats, at most
            :data:`MAX_SWEEP_SEEDS`; results come back in seed order.
        executor: What runs the seeds; None (the default) makes a
            ``ProcessPoolExecutor`` of ``jobs`` workers for this sweep (started with
            ``spawn``, never forked from a process that may have threads: a script
            calling :func:`sweep` needs the usual ``if __name__ == "__main__":``
            guard) and shuts it down at the end. A given executor is left running.
        jobs: Seeds run at once with the default executor (default: the CPUs this
            process may use, :func:`cpu_count`); with a given executor, what
            ``max_in_flight`` defaults from (default: its ``_max_workers`` if it has
            one, else :func:`cpu_count`).
        swarm: Each seed enables only the fault kinds :func:`swarm_fault_kinds` picks
            from it (swarm testing).
        fail_fast: Stop submitting seeds after the first failure; seeds already
            running finish, the rest count as not run.
        wall_budget: Wall seconds a seed's process may take, start included, before
            it is killed and counted a ``timeout`` (default:
            :func:`default_wall_budget`; at most :data:`MAX_WALL_BUDGET`).
        max_events: The bound on the run's estimated cost (``--max-events``).
        max_in_flight: Most seeds submitted and not finished (default: twice
            ``jobs``).
        python: The interpreter that runs each seed (default: the worker's own,
            ``sys.executable``).
        fork: Fork each seed's process from a helper interpreter that each worker
            thread starts once and that has imported transportkit (where ``os.fork``
            exists); False starts a new interpreter for every seed, about 0.3 s more
            a seed. Either way a seed's process is new and runs nothing else.
        on_result: Called in this thread with each result as it arrives (completion
            order, for progress).
        scheduler: The sim's scheduler for every seed, by name: ``"fifo"`` (the
            default, as ``transportkit run``), ``"random"`` or ``"pct"`` to explore
            other interleavings of each seed (see ``Simulation(scheduler=...)``). A
            seed's replay command passes it (``--scheduler random``) unless it is
            FIFO.

    Returns:
        The sweep's :class:`SweepResult`.

    Raises:
        ScenarioError: The file is not a valid scenario (or asks for more than the
            bounds allow), a bare name is not a shipped scenario, or ``swarm`` is
            asked of a scenario without faults.
        ValueError: A seed, ``jobs``, ``wall_budget`` or ``max_in_flight`` is out of
            range, or ``scheduler`` is not one of :data:`SCHEDULERS`.
        TypeError: A seed is not an int.
    """
    began = time.perf_counter()
    source = os.fspath(scenario)
    seed_list = _seed_list(seeds)
    mode = _scheduler_name(scheduler)
    text = read_scenario_text(os.fspath(resolve_scenario(source)))
    spec = scenario_from_text(text, source, max_events)
    kinds = scenario_fault_kinds(spec)
    if swarm and not kinds:
        raise ScenarioError(f"{source}: swarm testing picks among faults: the scenario has none")
    budget = default_wall_budget(spec) if wall_budget is None else float(wall_budget)
    if not (0 < budget <= MAX_WALL_BUDGET) or math.isnan(budget):
        raise ValueError(f"wall_budget must be > 0 and <= {MAX_WALL_BUDGET:g} s, got {budget}")
    if jobs is not None and not 1 <= jobs <= 4096:
        raise ValueError(f"jobs must be from 1 to 4096, got {jobs}")
    width = jobs or getattr(executor, "_max_workers", None) or cpu_count()
    window = 2 * width if max_in_flight is None else max_in_flight
    if not 1 <= window <= MAX_SWEEP_SEEDS:
        raise ValueError(f"max_in_flight must be from 1 to {MAX_SWEEP_SEEDS:,}, got {window}")

    def task(seed: int) -> SeedTask:
        chosen = swarm_fault_kinds(spec, seed) if swarm else None
        return SeedTask(
            seed, text, source, max_events, chosen, budget,
            replay_command(source, seed, chosen, max_events, mode), python, CHILD_COMMAND,
            fork, mode,
        )  # fmt: skip

    own = executor is None
    pool: Executor = (
        ProcessPoolExecutor(max_workers=width, mp_context=multiprocessing.get_context("spawn"))
        if executor is None
        else executor
    )
    results: list[SeedResult] = []
    pending: dict[Future[SeedResult], int] = {}
    broken: str | None = None
    stop = False
    next_index = 0
    try:
        while True:
            while not stop and broken is None and next_index < len(seed_list):
                if len(pending) >= window:
                    break
                seed = seed_list[next_index]
                try:
                    pending[pool.submit(run_seed, task(seed))] = seed
                except (BrokenExecutor, RuntimeError) as exc:
                    broken = f"the executor refused a seed: {type(exc).__name__}: {exc}"
                    break
                next_index += 1
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=pending.__getitem__):
                seed = pending.pop(future)
                try:
                    result = future.result()
                except CancelledError:  # by fail_fast: counted as not run
                    continue
                except Exception as exc:  # the executor, not the seed, failed
                    if isinstance(exc, BrokenExecutor):
                        broken = f"the executor broke: {type(exc).__name__}: {exc}"
                    result = SeedResult(
                        seed, "crashed", 0.0,
                        f"its executor failed to run it: {type(exc).__name__}: {exc}"[:500],
                        replay=task(seed).replay,
                    )  # fmt: skip
                results.append(result)
                if on_result is not None:
                    on_result(result)
                if fail_fast and not result.passed and not stop:
                    stop = True
                    for other in pending:
                        other.cancel()
    except BaseException:  # Ctrl-C: no seed may go on running
        for future in pending:
            future.cancel()
        if own:
            _stop_workers(pool)
        raise
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)
    results.sort(key=lambda r: r.seed)
    return SweepResult(
        spec.name, source, len(seed_list), tuple(results), len(seed_list) - len(results),
        time.perf_counter() - began, width, "processes" if own else _describe(pool), budget,
        swarm, kinds, broken, mode,
    )  # fmt: skip
