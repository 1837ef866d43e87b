"""Shrinking a failing run to the smallest deviation from FIFO and the fewest faults.

The approach is delta debugging (Zeller's ``ddmin``) over one list of **units**: each
non-FIFO scheduling choice of the recorded run is a unit, and each fault of the fault
schedule is one, except that a fault and the fault that heals it (a partition and its
repair, a crash and its restart, a hold and its release, a latency change and its
restoration) form a single unit, so that shrinking never leaves a partition that lasts
for ever where the failure needed two seconds. Each candidate is re-run with a
:class:`~transportkit.sim_backend.ReplayScheduler` (a choice whose index no longer fits,
because an earlier choice went, falls back to FIFO) and the remaining faults. After
``ddmin`` reaches a set from which no single unit can be removed, each remaining choice
is tried with smaller indices and each remaining healed fault with shorter durations
(halved while the test still fails), and ``ddmin`` runs again, until nothing changes.

Why not let Hypothesis drive the choices: shrinking here starts from any failing run
(a seed of a sweep, a failure the pytest plugin saved, a scenario), needs only the
recorded tape and the fault schedule, makes no draws of its own and is deterministic,
with a bounded number of re-runs; Hypothesis would have to have generated the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from transportkit.sim_backend._faults import (
    Crash,
    DropConnection,
    Fault,
    FaultSchedule,
    Hold,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
    sorted_schedule,
)
from transportkit.sim_backend._sched import ReplayScheduler, Schedule, describe_choices

__all__ = ["Shrunk", "shrink"]

DEFAULT_MAX_RUNS = 1000
"""How many times :func:`shrink` re-runs the test at most, by default."""

_DURATION_TRIES = 8
_MIN_DURATION = 1e-6
"""Faults are not shortened below a microsecond (a crash "lasting 0 s" reads as noise)."""


@dataclass(frozen=True)
class _Choice:
    step: int
    index: int


@dataclass(frozen=True)
class _Faults:
    """One fault, or a fault and the one that heals it."""

    start: tuple[float, Fault]
    end: tuple[float, Fault] | None = None


_Unit = _Choice | _Faults


@dataclass(frozen=True)
class Shrunk:
    """The result of :func:`shrink`.

    Attributes:
        choices: The non-FIFO choices left, ``(step, index)`` in step order.
        faults: The fault schedule left (None if :func:`shrink` was given none).
        runs: How many times the test was re-run.
        complete: False if ``max_runs`` or ``stop`` ended shrinking early (the result
            still fails, but may not be minimal).
        stopped: Why shrinking ended early, as a phrase (``"at max_runs"``, or what
            ``stop`` returned); empty when complete.
    """

    choices: tuple[tuple[int, int], ...]
    faults: FaultSchedule | None
    runs: int
    complete: bool
    stopped: str = ""

    @property
    def scheduler(self) -> ReplayScheduler:
        """A fresh scheduler that replays :attr:`choices` (one per simulation)."""
        return ReplayScheduler(self.choices)

    def describe(self) -> str:
        """In words: ``"FIFO except step 3 (index 1), and a 2 s partition between
        risk and desk at t=4.0"``.
        """
        text = describe_choices(self.choices)
        faults = describe_faults(self.faults or [])
        if faults:
            text += ", and " + faults
        if not self.complete:
            text += f" (shrinking stopped {self.stopped or 'early'})"
        return text


def _t(x: float) -> str:
    text = f"{x:.6g}"
    return text if any(c in text for c in ".en") else text + ".0"


def _pair(a: str, b: str, both_ways: bool) -> str:
    return f"between {a} and {b}" if both_ways else f"from {a} to {b}"


def _describe_unit(unit: _Faults) -> str:
    when, fault = unit.start
    if unit.end is not None:
        lasting = f"a {unit.end[0] - when:g} s"
        match fault:
            case Crash(node):
                return f"{lasting} crash of {node} at t={_t(when)}"
            case Partition(a, b, both_ways):
                return f"{lasting} partition {_pair(a, b, both_ways)} at t={_t(when)}"
            case Hold(a, b, both_ways):
                return f"{lasting} hold {_pair(a, b, both_ways)} at t={_t(when)}"
            case SetLatency(a, b, latency, both_ways):
                return f"{lasting} latency of {latency} {_pair(a, b, both_ways)} at t={_t(when)}"
    match fault:
        case Crash(node):
            return f"a crash of {node} at t={_t(when)} (no restart)"
        case Restart(node):
            return f"a restart of {node} at t={_t(when)}"
        case Partition(a, b, both_ways):
            return f"a partition {_pair(a, b, both_ways)} at t={_t(when)} (no repair)"
        case Repair(a, b, both_ways):
            return f"a repair {_pair(a, b, both_ways)} at t={_t(when)}"
        case Hold(a, b, both_ways):
            return f"a hold {_pair(a, b, both_ways)} at t={_t(when)} (no release)"
        case Release(a, b, both_ways):
            return f"a release {_pair(a, b, both_ways)} at t={_t(when)}"
        case DropConnection(a, b, _):
            return f"a dropped connection between {a} and {b} at t={_t(when)}"
        case SetLatency(a, b, latency, both_ways):
            model = "the links' own latency" if latency is None else f"latency {latency}"
            return f"{model} {_pair(a, b, both_ways)} from t={_t(when)}"
    return f"{fault!r} at t={_t(when)}"  # pragma: no cover (every fault kind is above)


def describe_faults(faults: FaultSchedule) -> str:
    """A fault schedule in words, healed faults as one (``"a 2 s partition between a
    and b at t=4.0"``); empty for no faults.
    """
    parts = [_describe_unit(u) for u in _fault_units(faults)]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _heals(start: Fault, end: Fault) -> bool:
    match start, end:
        case Crash(n), Restart(m):
            return bool(n == m)
        case Partition(a, b, w), Repair(c, d, x):
            return bool((a, b, w) == (c, d, x))
        case Hold(a, b, w), Release(c, d, x):
            return bool((a, b, w) == (c, d, x))
        case SetLatency(a, b, lat, w), SetLatency(c, d, None, x):
            return bool(lat is not None and (a, b, w) == (c, d, x))
    return False


def _fault_units(faults: FaultSchedule) -> list[_Faults]:
    items = sorted_schedule(faults)
    used = [False] * len(items)
    units = []
    for i, item in enumerate(items):
        if used[i]:
            continue
        used[i] = True
        end = None
        for j in range(i + 1, len(items)):
            if not used[j] and _heals(item[1], items[j][1]):
                used[j] = True
                end = items[j]
                break
        units.append(_Faults(item, end))
    return units


def _build(units: Iterable[_Unit]) -> tuple[list[tuple[int, int]], FaultSchedule]:
    choices: list[tuple[int, int]] = []
    faults: FaultSchedule = []
    for unit in units:
        if isinstance(unit, _Choice):
            choices.append((unit.step, unit.index))
        else:
            faults.append(unit.start)
            if unit.end is not None:
                faults.append(unit.end)
    return sorted(choices), sorted_schedule(faults)


class _Budget(Exception):
    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def shrink(
    fails: Callable[[ReplayScheduler, FaultSchedule | None], bool],
    schedule: Schedule | Sequence[tuple[int, int]],
    faults: FaultSchedule | None = None,
    *,
    max_runs: int = DEFAULT_MAX_RUNS,
    stop: Callable[[], str | None] | None = None,
) -> Shrunk:
    """Shrink a failing run toward FIFO and the fewest, shortest faults.

    Args:
        fails: Runs the test once, in a new simulation with the failing run's seed,
            the given scheduler (``Simulation(seed, scheduler=scheduler)``) and the
            given faults (``schedule_faults(sim, faults)``), and returns True if it
            failed (in the same way, ideally: compare the error, not just "raised").
        schedule: The failing run's record (``sim.schedule``) or its choices.
        faults: The failing run's fault schedule, if any.
        max_runs: Re-runs allowed (from 1 to 100,000; default 1,000).
        stop: Called before each re-run after the first (the first checks that the
            recorded run fails); a non-empty phrase (``"after its 5 s budget"``) ends
            shrinking there with what was reached, and becomes :attr:`Shrunk.stopped`.
            A wall-clock budget goes here: :func:`shrink` itself reads no clock.

    Returns:
        The smallest failing combination found, 1-minimal when :attr:`Shrunk.complete`:
        removing any one choice or fault (pair) from it makes the test pass.

    Raises:
        ValueError: ``max_runs`` out of range, or the recorded run does not fail when
            replayed (the test is not a function of its seed, schedule and faults).
    """
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or not 1 <= max_runs <= 100_000:
        raise ValueError(f"max_runs must be an int from 1 to 100,000, got {max_runs!r}")
    choices = schedule.choices if isinstance(schedule, Schedule) else list(schedule)
    had_faults = faults is not None
    cache: dict[tuple[tuple[tuple[int, int], ...], tuple[tuple[float, Fault], ...]], bool] = {}
    runs = 0

    # Every step below moves at once to a candidate that fails, so the last failing
    # candidate is where shrinking got to: what a budget that ends it midway returns.
    reached: list[_Unit] = []

    def test(units: Sequence[_Unit]) -> bool:
        nonlocal runs, reached
        tape, chosen = _build(units)
        key = (tuple(tape), tuple(chosen))
        if key in cache:
            if cache[key]:
                reached = list(units)
            return cache[key]
        if runs >= max_runs:
            raise _Budget("at max_runs")
        if runs and stop is not None:
            why = stop()
            if why:
                raise _Budget(why)
        runs += 1
        result = bool(fails(ReplayScheduler(tape), chosen if had_faults else None))
        cache[key] = result
        if result:
            reached = list(units)
        return result

    units: list[_Unit] = [_Choice(s, i) for s, i in choices if i]
    units += _fault_units(faults or [])
    if not test(units):
        raise ValueError(
            "the recorded run does not fail when replayed with its schedule and faults: "
            "is the test a pure function of its seed, schedule and faults?"
        )
    stopped = ""
    try:
        # Smaller indices can make another choice unnecessary (and shorter faults
        # another fault): repeat until nothing changes.
        while True:
            before = units
            units = _ddmin(units, test)
            units = _smaller_indices(units, test)
            units = _shorter_faults(units, test)
            if units == before:
                break
    except _Budget as budget:
        stopped = budget.why
        units = reached
    tape, chosen = _build(units)
    return Shrunk(tuple(tape), chosen if had_faults else None, runs, not stopped, stopped)


def _ddmin(units: list[_Unit], test: Callable[[Sequence[_Unit]], bool]) -> list[_Unit]:
    if test([]):
        return []
    n = 2
    while len(units) >= 2:
        size = len(units)
        bounds = [size * k // n for k in range(n + 1)]
        chunks = [units[bounds[k] : bounds[k + 1]] for k in range(n)]
        for chunk in chunks:
            if chunk and test(chunk):
                units, n = chunk, 2
                break
        else:
            for k in range(n):
                rest = units[: bounds[k]] + units[bounds[k + 1] :]
                if rest and len(rest) < size and test(rest):
                    units, n = rest, max(n - 1, 2)
                    break
            else:
                if n >= size:
                    break
                n = min(size, 2 * n)
    return units


def _smaller_indices(units: list[_Unit], test: Callable[[Sequence[_Unit]], bool]) -> list[_Unit]:
    for k, unit in enumerate(units):
        if isinstance(unit, _Choice) and unit.index > 1:
            for index in range(1, unit.index):
                trial = [*units[:k], _Choice(unit.step, index), *units[k + 1 :]]
                if test(trial):
                    units = trial
                    break
    return units


def _shorter_faults(units: list[_Unit], test: Callable[[Sequence[_Unit]], bool]) -> list[_Unit]:
    for k, unit in enumerate(units):
        if not isinstance(unit, _Faults) or unit.end is None:
            continue
        start = unit.start[0]
        for _ in range(_DURATION_TRIES):
            current = units[k]
            assert isinstance(current, _Faults) and current.end is not None
            duration = current.end[0] - start
            shorter = _round_duration(duration / 2)
            if shorter < _MIN_DURATION or shorter >= duration:
                break
            trial_unit = replace(current, end=(start + shorter, current.end[1]))
            trial = [*units[:k], trial_unit, *units[k + 1 :]]
            if not test(trial):
                break
            units = trial
    return units


def _round_duration(d: float) -> float:
    """Halved durations, rounded to 3 significant digits so the report reads well."""
    return float(f"{d:.3g}")
