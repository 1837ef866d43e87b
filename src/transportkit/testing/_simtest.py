"""``@sim_test``: an ``async def`` test body run in a simulation once per seed.

The decorator turns the body into an ordinary (synchronous) pytest test function, so it
needs no asyncio plugin and no asyncio plugin takes it over; the transportkit pytest
plugin (registered when transportkit is installed) parametrizes it by backend and
provides the ``--tk-seed``/``--tk-seeds``/``--tk-replay``/``--tk-shrink`` options and
the failure report.

When a seed fails, the failure is shrunk (:func:`~transportkit.sim_backend.shrink`):
the body is run again with a :class:`~transportkit.sim_backend.ReplayScheduler` and
fewer faults, toward the smallest deviation from FIFO and the fewest, shortest faults
that still fail **the same way**. The same way means the same exception types along
the ``__cause__`` chain (so a task's error that ``sim.run`` wraps in a
``SimulationError`` must have the same original type), and for an assertion
(``AssertionError`` or ``pytest.fail``) the same file and line where it was raised.
Messages are not compared: they often hold times, ids or values that a shorter run
changes while the bug stays the same.

With ``backends=("sim", "zmq")`` the body also runs once on real sockets, with the
same seed's fault schedule applied through the fault proxy (:func:`sim_test` says
what a seed means there); a zmq failure is reported, not shrunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import math
import random
import re
import warnings
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from pathlib import Path
from typing import Any, Final, overload

from transportkit import _wallclock
from transportkit._errors import Timeout
from transportkit._extras import requires_extra
from transportkit._keywords import accepted_keywords, check_keywords
from transportkit._network import Network
from transportkit.sim_backend import (
    Crash,
    FaultSchedule,
    ReplayScheduler,
    Restart,
    Scheduler,
    Shrunk,
    Simulation,
    schedule_faults,
    shrink,
)
from transportkit.testing._harness import (
    BACKENDS,
    FaultNotAppliedWarning,
    SimHarness,
    ZmqHarness,
    run_in_own_loop,
)
from transportkit.testing._simtest_failures import (
    DEFAULT_FAILURES_DIR,
    DEFAULT_KEEP_FAILURES,
    SHRUNK_FILE,
    FailureRecord,
    ReplayRecord,
    folder_name,
    replay_command,
    replay_file_command,
    save_failure,
    shrunk_document,
)

__all__ = [
    "DEFAULT_SEEDS",
    "DEFAULT_SHRINK_RUNS",
    "DEFAULT_SHRINK_SECONDS",
    "DEFAULT_TIMEOUT",
    "DEFAULT_ZMQ_TIMEOUT",
    "MAX_SEEDS",
    "MAX_SHRINK_RUNS",
    "REPLAY_ATTRIBUTE",
    "REPORT_ATTRIBUTE",
    "failure_signature",
    "sim_test",
]

DEFAULT_SEEDS: Final = 100
"""Seeds per test unless ``seeds=`` or ``--tk-seeds`` say otherwise."""

MAX_SEEDS: Final = 1_000_000
"""The most seeds one test may run (``seeds=`` and ``--tk-seeds``)."""

DEFAULT_TIMEOUT: Final = 60.0
"""Virtual seconds one seed's run may last before it fails with ``Timeout``."""

DEFAULT_ZMQ_TIMEOUT: Final = 10.0
"""Real seconds the zmq backend's run may last before it fails with ``Timeout``."""

DEFAULT_SHRINK_RUNS: Final = 200
"""Re-runs of the body at most when shrinking a failing seed (``shrink=True``)."""

DEFAULT_SHRINK_SECONDS: Final = 5.0
"""Real seconds shrinking a failing seed may take at most (``shrink_seconds``): no new
re-run starts after that."""

MAX_SHRINK_RUNS: Final = 100_000
"""The largest ``shrink=`` run bound (and ``--tk-shrink``)."""

REPORT_ATTRIBUTE: Final = "_transportkit_sim_test_report"
"""The attribute of a failing seed's exception holding ``(seed, replay command, report
text, shrunk replay command or "")``, for the pytest plugin."""

REPLAY_ATTRIBUTE: Final = "_transportkit_replay"
"""The attribute of the pytest config holding the ``--tk-replay`` record, if any."""

INJECTED: Final = ("tk_sim", "tk_seed", "tk_harness", "tk_faults")
"""Parameters of a body that ``@sim_test`` fills in (every other one is a fixture)."""

NodeMain = Callable[[Network], Awaitable[Any]]
AsyncTest = Callable[..., Coroutine[Any, Any, Any]]
FaultSource = FaultSchedule | Callable[[int], FaultSchedule] | Any
SchedulerSource = str | Callable[[int], Any]

_EXPLORING = "random"

_MAIN_STOP_TIMEOUT = 2.0
"""Real seconds a crashed node's cancelled main gets to end on zmq."""


@overload
def sim_test(func: AsyncTest, /) -> Callable[..., None]: ...


@overload
def sim_test(
    *,
    seeds: int | Iterable[int] = DEFAULT_SEEDS,
    scheduler: SchedulerSource | None = None,
    faults: FaultSource | None = None,
    nodes: Mapping[str, NodeMain] | None = None,
    backends: Sequence[str] = ("sim",),
    timeout: float = DEFAULT_TIMEOUT,
    zmq_timeout: float = DEFAULT_ZMQ_TIMEOUT,
    shrink: bool | int = True,
    shrink_seconds: float = DEFAULT_SHRINK_SECONDS,
    **simulation_options: Any,
) -> Callable[[AsyncTest], Callable[..., None]]: ...


def sim_test(
    func: AsyncTest | None = None,
    /,
    *,
    seeds: int | Iterable[int] = DEFAULT_SEEDS,
    scheduler: SchedulerSource | None = None,
    faults: FaultSource | None = None,
    nodes: Mapping[str, NodeMain] | None = None,
    backends: Sequence[str] = ("sim",),
    timeout: float = DEFAULT_TIMEOUT,
    zmq_timeout: float = DEFAULT_ZMQ_TIMEOUT,
    shrink: bool | int = True,
    shrink_seconds: float = DEFAULT_SHRINK_SECONDS,
    **simulation_options: Any,
) -> Callable[..., None] | Callable[[AsyncTest], Callable[..., None]]:
    """Run an ``async def`` pytest test body in a fresh simulation once per seed.

    Use it bare (``@sim_test``) or with arguments (``@sim_test(seeds=200)``). The body's
    parameters named ``tk_sim`` (the run's :class:`~transportkit.sim_backend.Simulation`),
    ``tk_seed`` (its seed), ``tk_faults`` (the fault schedule it runs with) and
    ``tk_harness`` (a :class:`~transportkit.testing.Harness` on the run's backend:
    ``network(name)``, ``bind_endpoint()`` and ``endpoint()``, not ``run``, since the
    body already runs)
    are filled in per run; every other parameter is a pytest fixture,
    set up once per test item (not per seed: keep per-seed state in the body). The test
    runs once per backend, with ids ``[sim]`` and ``[zmq]``.

    Seeds: seed ``i`` of a test is ``i`` (``seeds=100`` runs seeds 0 to 99, the same on
    every machine and run), or the seeds given as a list. The seeds run in order and the
    first failing one fails the test; the report shows its replay command
    (``replay: pytest <test> --tk-seed=S``), the last trace events before the failure,
    and where its trace (Perfetto JSON), schedule and fault schedule were saved
    (``.transportkit/failures/<test id>-<seed>/``, the newest 50 kept). ``--tk-seed=S``
    runs exactly seed ``S``; ``--tk-seeds=N`` runs seeds 0 to N-1 in every test whose
    ``seeds`` is a count (explicit seed lists, regression seeds, run as they are).

    Shrinking: the failing seed is then shrunk (see the module docstring for "the same
    way"): the report says ``shrunk: FIFO except step 11 (index 1), and a 1 s partition
    between desk and exchange at t=4.0`` and ``replay shrunk: pytest <test>
    --tk-replay=<folder>/shrunk.json``, and the folder gets a ``shrunk.json``. It costs
    at most ``shrink`` re-runs and ``shrink_seconds`` real seconds (no re-run starts
    after that, and the report says shrinking stopped early); a body of a few
    milliseconds a run shrinks in well under a second. If replaying the seed with its
    recorded schedule and faults does not fail the same way, the report says so: the
    body depends on something besides its seed, schedule and faults (state kept in a
    fixture across seeds, the real clock read through a name imported before the run).
    ``--tk-replay=PATH`` runs a ``shrunk.json``, or a failure folder's original run,
    again.

    On zmq: the body runs once, on real sockets in real time, with ``tk_seed`` the
    first seed (``--tk-seed=S``: seed ``S``) and that seed's fault schedule, drawn the
    same way as on the sim (the same seed, the same faults); its times are real
    seconds from the start of the run. ``tk_harness`` is a
    :class:`~transportkit.testing.ZmqHarness` made with ``faults=True``: every tcp
    connect from one of its networks to a port another one bound goes through a
    :class:`~transportkit.testing.FaultProxy`, which realises the network faults
    (partition, repair, hold, release, latency, drop connection; what each means at
    the TCP level is in :mod:`transportkit.testing._faultproxy`), and crashes close
    the network of that name (see ``nodes``). So a body written once with
    ``tk_harness`` fails on both backends when the code under test mishandles a
    fault. What a seed cannot fix there: the interleaving (there is no scheduler;
    the OS and libzmq decide), so the same seed may fail one time and pass the next,
    and a zmq failure is not shrunk (shrinking replays a simulation's choices in
    virtual time: replay the same seed on the sim, whose line the report gives). The
    report of a zmq failure gives the seed, each fault of its schedule with what was
    done (``applied: ...``, ``not applied: ...``, or ``not reached`` when the body
    ended first) and ``replay: pytest <test>[zmq] --tk-seed=S``. Faults the proxy
    cannot realise are refused, never silently left out: a
    ``DropConnection(discard_queues=True)`` fails the zmq run with
    :class:`~transportkit.UnsupportedError` before the body starts; a fault between
    two networks that a connection the proxy does not sit in joins (ipc, or tcp
    connected before the port was bound) fails it with UnsupportedError at that
    connect or at that fault. A network fault between two networks that never
    connect (on the sim it changes nothing either) passes, with a
    :class:`~transportkit.testing.FaultNotAppliedWarning` saying it was not applied.
    ``--tk-replay`` skips zmq runs.

    Each seed's simulation is ``Simulation(seed, scheduler=..., **simulation_options)``:
    the exploring random-walk scheduler by default, so each seed tries another
    interleaving of the ready tasks. On a transportkit whose ``Simulation`` has no
    ``scheduler=`` keyword the default runs FIFO (a scheduler asked for explicitly is
    then refused), and the saved ``schedule.json`` says so.

    Args:
        func: The ``async def`` body (when used bare).
        seeds: How many seeds (1 to :data:`MAX_SEEDS`; seeds 0 to N-1), or which.
        scheduler: A scheduler name for ``Simulation(scheduler=...)`` (``"random"``,
            ``"pct"``, ``"fifo"``), or a function of the seed returning a fresh
            scheduler object for that run. Default ``"random"`` where supported.
        faults: The fault schedule each seed runs with
            (:func:`~transportkit.sim_backend.schedule_faults`): a ``FaultSchedule``
            (the same for every seed), a function ``seed -> FaultSchedule``, or a
            Hypothesis strategy of schedules (such as
            :func:`~transportkit.testing.strategies.fault_schedules`), drawn from
            deterministically with the seed (generation only, no shrinking: the same
            seed gives the same schedule with the same Hypothesis version; about 30 ms
            a seed). The zmq run applies the same schedule (see "On zmq" below).
        nodes: Node names and their ``async def main(network)``: on the sim each is a
            node with that main (restarted after each crash); on zmq each main runs
            as a task on ``tk_harness.network(name)`` (its own context), cancelled by
            a crash of that name and started again, on a new network, by its
            restart. A main that raises fails the zmq run.
        backends: Which backends to run on, of ``("sim", "zmq")``. The zmq run is
            once (see "On zmq" below); a body that takes ``tk_sim`` runs only on the
            sim.
        timeout: Virtual seconds one seed may run before it fails with
            :class:`~transportkit.Timeout` (positive, finite).
        zmq_timeout: Real seconds the zmq run may take (positive, finite).
        shrink: Shrink a failing seed: True (at most :data:`DEFAULT_SHRINK_RUNS`
            re-runs), False (not at all), or the most re-runs (1 to
            :data:`MAX_SHRINK_RUNS`). ``--tk-shrink=N`` overrides it for every test
            (``--tk-shrink=0``: off).
        shrink_seconds: Real seconds shrinking may take (positive, finite; default
            :data:`DEFAULT_SHRINK_SECONDS`); ``--tk-shrink-seconds`` overrides it. A
            result cut short by this bound depends on the machine's speed; one cut
            short by the run bound does not.
        **simulation_options: More keywords for ``Simulation`` (``latency``,
            ``shuffle_ties``, ``record_trace``).

    Returns:
        A synchronous test function for pytest (or a decorator making one).

    Raises:
        TypeError: The body is not an ``async def`` function, or takes ``tk_sim`` while
            ``backends`` includes zmq, or an argument has the wrong type.
        ValueError: ``seeds``, ``backends``, a timeout, ``shrink``, ``shrink_seconds``
            or ``scheduler`` is out of range (an explicit scheduler on a Simulation that
            takes none).
    """
    spec = _Spec.make(
        seeds=seeds,
        scheduler=scheduler,
        faults=faults,
        nodes=nodes,
        backends=backends,
        timeout=timeout,
        zmq_timeout=zmq_timeout,
        simulation_options=simulation_options,
        shrink=shrink,
        shrink_seconds=shrink_seconds,
    )

    def decorate(body: AsyncTest) -> Callable[..., None]:
        return _make_test(body, spec)

    return decorate if func is None else decorate(func)


class _Spec:
    """The checked arguments of one ``@sim_test``."""

    def __init__(
        self,
        *,
        seeds: int | tuple[int, ...],
        scheduler: SchedulerSource | None,
        faults: FaultSource | None,
        nodes: tuple[tuple[str, NodeMain], ...],
        backends: tuple[str, ...],
        timeout: float,
        zmq_timeout: float,
        simulation_options: dict[str, Any],
        shrink_runs: int = DEFAULT_SHRINK_RUNS,
        shrink_seconds: float = DEFAULT_SHRINK_SECONDS,
    ) -> None:
        self.seeds = seeds
        self.shrink_runs = shrink_runs
        self.shrink_seconds = shrink_seconds
        self.scheduler = scheduler
        self.faults = faults
        self.nodes = nodes
        self.backends = backends
        self.timeout = timeout
        self.zmq_timeout = zmq_timeout
        self.simulation_options = simulation_options

    @classmethod
    def make(
        cls,
        *,
        seeds: int | Iterable[int],
        scheduler: SchedulerSource | None,
        faults: FaultSource | None,
        nodes: Mapping[str, NodeMain] | None,
        backends: Sequence[str],
        timeout: float,
        zmq_timeout: float,
        simulation_options: dict[str, Any],
        shrink: bool | int = True,
        shrink_seconds: float = DEFAULT_SHRINK_SECONDS,
    ) -> _Spec:
        checked_seeds: int | tuple[int, ...]
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            checked_seeds = _seed_count(seeds, "seeds")
        elif isinstance(seeds, Iterable) and not isinstance(seeds, str | bytes):
            listed = tuple(seeds)
            if not listed or len(listed) > MAX_SEEDS:
                raise ValueError(f"seeds lists 1 to {MAX_SEEDS} seeds, got {len(listed)}")
            for s in listed:
                if isinstance(s, bool) or not isinstance(s, int):
                    raise TypeError(f"a seed must be an int, got {type(s).__name__} {s!r}")
            checked_seeds = listed
        else:
            raise TypeError(f"seeds must be a count or seeds, got {type(seeds).__name__}")
        names = tuple(backends) if not isinstance(backends, str) else (backends,)
        unknown = [b for b in names if b not in BACKENDS]
        if not names or unknown or len(set(names)) != len(names):
            raise ValueError(f"backends must be distinct names of {BACKENDS}, got {backends!r}")
        if scheduler is not None and not (isinstance(scheduler, str) or callable(scheduler)):
            raise TypeError(
                "scheduler must be a name or a function of the seed returning a scheduler, "
                f"got {type(scheduler).__name__}"
            )
        if "seed" in simulation_options:
            raise TypeError("the seed comes from seeds=, not from a Simulation option")
        # A typo of one of sim_test's own keywords lands here too: check now, against
        # both sets, rather than let Simulation() blame itself when the test runs.
        check_keywords(
            simulation_options,
            [n for n in accepted_keywords(Simulation) if n != "seed"]
            + list(accepted_keywords(sim_test)),
            where="sim_test()",
        )
        node_items: list[tuple[str, NodeMain]] = []
        for name, main in (nodes or {}).items():
            if not isinstance(name, str) or not callable(main):
                raise TypeError(f"nodes maps node names to async mains, got {name!r}: {main!r}")
            node_items.append((name, main))
        if faults is not None and not (
            isinstance(faults, list | tuple) or callable(faults) or _is_strategy(faults)
        ):
            raise TypeError(
                "faults must be a FaultSchedule, a function seed -> FaultSchedule or a "
                f"Hypothesis strategy, got {type(faults).__name__}"
            )
        if isinstance(shrink, bool):
            shrink_runs = DEFAULT_SHRINK_RUNS if shrink else 0
        elif isinstance(shrink, int):
            if not 1 <= shrink <= MAX_SHRINK_RUNS:
                raise ValueError(
                    f"shrink must be True, False or 1 to {MAX_SHRINK_RUNS} re-runs, got {shrink}"
                )
            shrink_runs = shrink
        else:
            raise TypeError(f"shrink must be a bool or a number of re-runs, got {shrink!r}")
        return cls(
            shrink_runs=shrink_runs,
            shrink_seconds=_positive(shrink_seconds, "shrink_seconds"),
            seeds=checked_seeds,
            scheduler=scheduler,
            faults=faults,
            nodes=tuple(node_items),
            backends=names,
            timeout=_positive(timeout, "timeout"),
            zmq_timeout=_positive(zmq_timeout, "zmq_timeout"),
            simulation_options=dict(simulation_options),
        )

    def seed_list(self, only: int | None, count: int | None) -> list[int]:
        """The seeds to run, given ``--tk-seed`` (``only``) and ``--tk-seeds`` (``count``)."""
        if only is not None:
            return [only]
        if isinstance(self.seeds, int):
            return list(range(self.seeds if count is None else count))
        return list(self.seeds)

    def faults_for(self, seed: int) -> FaultSchedule:
        """The fault schedule of ``seed``'s run."""
        source = self.faults
        if source is None:
            return []
        if _is_strategy(source):
            return _draw(source, seed)
        if isinstance(source, list | tuple):
            return list(source)
        schedule = source(seed)
        if not isinstance(schedule, list | tuple):
            raise TypeError(
                f"faults({seed}) must return a FaultSchedule, got {type(schedule).__name__}"
            )
        return list(schedule)

    def simulation(self, seed: int, scheduler: Scheduler | None = None) -> Simulation:
        """A fresh simulation for ``seed``, with ``scheduler`` if given (a replay)."""
        options = dict(self.simulation_options)
        if scheduler is not None:
            options["scheduler"] = scheduler
        else:
            chosen = _EXPLORING if self.scheduler is None else self.scheduler
            options["scheduler"] = chosen if isinstance(chosen, str) else chosen(seed)
        return Simulation(seed, **options)


def _seed_count(value: int, what: str) -> int:
    if not 1 <= value <= MAX_SEEDS:
        raise ValueError(f"{what} must be 1 to {MAX_SEEDS}, got {value}")
    return value


def _positive(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{what} must be positive and finite, got {value!r}")
    return float(value)


def _is_strategy(value: object) -> bool:
    try:
        from hypothesis.strategies import SearchStrategy  # noqa: PLC0415 - testing extra
    except ImportError:  # no Hypothesis: then no strategy either
        return False
    return isinstance(value, SearchStrategy)


@contextlib.contextmanager
def _without_local_constants() -> Iterator[None]:
    """Keep Hypothesis from mixing the constants of the loaded modules into a draw.

    Hypothesis sometimes generates a constant found in the source of the "local"
    modules loaded in the process (everything outside site-packages and the standard
    library). A test session loads many test modules; the replay of one seed, in a fresh
    process, loads a few: the same seed would draw another fault schedule. For the
    duration of the draw the local pool is empty (and the pool's cache, which holds
    per-type lists computed from it, is cleared before and after), so the draw depends
    only on the seed, the strategy and the Hypothesis version. This reaches into
    Hypothesis's internals; a test draws in two processes with different modules loaded
    and fails if a Hypothesis release changes them.
    """
    try:
        from hypothesis.internal.conjecture import providers  # noqa: PLC0415
    except ImportError:  # pragma: no cover - another Hypothesis layout
        yield
        return
    original = getattr(providers, "_get_local_constants", None)
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if original is None or cache is None:  # pragma: no cover - another Hypothesis layout
        yield
        return
    empty = getattr(providers, "Constants")()  # noqa: B009 - not re-exported
    cache.cache.clear()
    providers._get_local_constants = lambda: empty
    try:
        yield
    finally:
        providers._get_local_constants = original
        cache.cache.clear()


def _draw(strategy: Any, seed: int) -> FaultSchedule:
    """One value of ``strategy``, a function of ``seed`` (and the Hypothesis version).

    Hypothesis's ``find`` generates from ``random.Random(seed)``; its first examples
    are the simplest (an empty schedule), so the third is taken, or the last one there
    is when the strategy has fewer.
    """
    with requires_extra("testing", "sim_test(faults=<a Hypothesis strategy>)"):
        from hypothesis import HealthCheck, Phase, find, settings  # noqa: PLC0415
        from hypothesis.errors import NoSuchExample  # noqa: PLC0415

    calls = 0

    def third(_value: object) -> bool:
        nonlocal calls
        calls += 1
        return calls >= 3

    config = settings(
        database=None,
        phases=[Phase.generate],
        max_examples=10,
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    with _without_local_constants():
        try:
            value = find(strategy, third, settings=config, random=random.Random(seed))
        except NoSuchExample:
            value = find(strategy, lambda _v: True, settings=config, random=random.Random(seed))
    if not isinstance(value, list | tuple):
        raise TypeError(f"the faults strategy drew {type(value).__name__}, not a FaultSchedule")
    return list(value)


def _make_test(body: AsyncTest, spec: _Spec) -> Callable[..., None]:
    if not inspect.iscoroutinefunction(body):
        raise TypeError(f"@sim_test needs an async def test body, got {body!r}")
    signature = inspect.signature(body)
    wants = [name for name in INJECTED if name in signature.parameters]
    if "tk_sim" in wants and "zmq" in spec.backends:
        raise TypeError(
            f"{body.__qualname__} takes tk_sim, which exists only on the sim backend: "
            "use backends=('sim',), or tk_harness to run on both"
        )
    fixtures = [
        p
        for p in signature.parameters.values()
        if p.name not in INJECTED and p.default is inspect.Parameter.empty
    ]
    takes_request = any(p.name == "request" for p in fixtures)
    extra = [inspect.Parameter("tk_backend", inspect.Parameter.KEYWORD_ONLY)]
    if not takes_request:
        extra.append(inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY))
    positional = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in fixtures]
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in positional]
    # Keep a leading self/cls positional (a test method); everything else by keyword.
    leading = positional[:1] if positional and positional[0].name in ("self", "cls") else []
    params = leading + keyword[len(leading) :] + extra

    @functools.wraps(body)
    def test(*args: Any, **kwargs: Any) -> None:
        backend = kwargs.pop("tk_backend")
        request = kwargs["request"] if takes_request else kwargs.pop("request")
        call = _Call(body, spec, wants, args, kwargs)
        if backend == "sim":
            _run_sim(call, request)
        else:
            _run_zmq(call, request)

    test.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    test._transportkit_sim_test = spec  # type: ignore[attr-defined]
    return test


def _option(request: Any, name: str) -> Any:
    return request.config.getoption(name, None)


class _Call:
    """A body, its spec, and what pytest gave it (fixtures, and ``self`` for a method)."""

    def __init__(
        self,
        body: AsyncTest,
        spec: _Spec,
        wants: list[str],
        args: tuple[Any, ...],
        fixtures: dict[str, Any],
    ) -> None:
        self.body = body
        self.spec = spec
        self.wants = wants
        self.args = args
        self.fixtures = fixtures

    def coroutine(self, given: dict[str, Any]) -> Coroutine[Any, Any, Any]:
        """The body called with its fixtures and the injected values it asks for."""
        injected = {name: given[name] for name in self.wants}
        return self.body(*self.args, **self.fixtures, **injected)


def _run_sim(call: _Call, request: Any) -> None:
    spec = call.spec
    replay: ReplayRecord | None = getattr(request.config, REPLAY_ATTRIBUTE, None)
    if replay is not None:
        _run_replay(call, request, replay)
        return
    seeds = spec.seed_list(_option(request, "tk_seed"), _option(request, "tk_seeds"))
    for passed, seed in enumerate(seeds):
        run = _SeedRun(call, seed)
        try:
            run.execute()
        except BaseException as exc:
            if not _is_test_failure(exc):
                raise
            outcome = _shrink_failure(run, exc, request) if run.sim is not None else None
            _report(request, run, exc, passed, outcome)
            raise


def _run_replay(call: _Call, request: Any, replay: ReplayRecord) -> None:
    """Run the body once, with the seed, choices and faults of ``--tk-replay``."""
    import pytest  # noqa: PLC0415 - only ever called under pytest

    if replay.test is not None and replay.test != request.node.nodeid:
        pytest.skip(f"--tk-replay={replay.source} replays {replay.test}")
    run = _SeedRun(
        call, replay.seed, scheduler=ReplayScheduler(replay.choices), faults=replay.faults
    )
    try:
        run.execute()
    except BaseException as exc:
        if not _is_test_failure(exc):
            raise
        _report(request, run, exc, 0, None, replay=replay)
        raise


class _SeedRun:
    """One seed's simulation of a body.

    ``scheduler`` and ``faults``, when given, replace the spec's (a replay, or one run
    while shrinking).
    """

    def __init__(
        self,
        call: _Call,
        seed: int,
        *,
        scheduler: Scheduler | None = None,
        faults: FaultSchedule | None = None,
    ) -> None:
        self.call = call
        self.spec = call.spec
        self.seed = seed
        self.scheduler = scheduler
        self.given_faults = faults
        self.faults: FaultSchedule = []
        self.sim: Simulation | None = None
        self.failed_at: int | None = None

    def execute(self) -> None:
        """Run the body in this seed's simulation, with its nodes and faults."""
        fixed = self.given_faults
        self.faults = self.spec.faults_for(self.seed) if fixed is None else list(fixed)
        sim = self.sim = self.spec.simulation(self.seed, self.scheduler)
        harness = SimHarness(sim=sim)
        try:
            for name, main in self.spec.nodes:
                sim.node(name, main=main)
            schedule_faults(sim, self.faults)
            given = {
                "tk_sim": sim,
                "tk_seed": self.seed,
                "tk_harness": harness,
                "tk_faults": list(self.faults),
            }
            body = self.call.coroutine(given)
            sim.run(self._watched(body), timeout=self.spec.timeout)
        except BaseException:
            _close_quietly(harness, sim)
            raise
        _close(harness, sim)  # a failure while the world ends fails the seed too

    async def _watched(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run the body, noting how much trace there was when it raised."""
        try:
            await coro
        except BaseException:
            assert self.sim is not None
            self.failed_at = len(self.sim.trace)
            raise


Signature = tuple[tuple[str, str, tuple[Any, ...]], ...]


def failure_signature(exc: BaseException) -> Signature:
    """What "fails the same way" compares, for shrinking: per exception of the
    ``__cause__`` chain (at most 8), its type's qualified name, the ``file:line`` where
    it was raised if it is an assertion (``AssertionError``, ``pytest.fail``), and for
    an exception group the signatures of its members (as a sorted set).
    """
    parts: list[tuple[str, str, tuple[Any, ...]]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 8:
        seen.add(id(current))
        kind = type(current)
        where = _raised_at(current) if _is_assertion(current) else ""
        members: tuple[Any, ...] = ()
        if isinstance(current, BaseExceptionGroup):
            members = tuple(sorted({failure_signature(e) for e in current.exceptions}, key=repr))
        parts.append((f"{kind.__module__}.{kind.__qualname__}", where, members))
        current = current.__cause__
    return tuple(parts)


def _is_assertion(exc: BaseException) -> bool:
    if isinstance(exc, AssertionError):
        return True
    import pytest  # noqa: PLC0415 - only ever called under pytest

    return isinstance(exc, pytest.fail.Exception)


def _raised_at(exc: BaseException) -> str:
    """``file:line`` of the innermost frame of ``exc``'s traceback."""
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


class _ShrinkOutcome:
    """What shrinking a failing seed gave: the result (or why there is none)."""

    def __init__(self) -> None:
        self.shrunk: Shrunk | None = None
        self.summary = ""
        self.exception = ""
        self.trace_hash = ""
        self.original = (0, 0)
        self.seconds = 0.0


def _shrink_budget(request: Any, spec: _Spec) -> tuple[int, float]:
    runs = _option(request, "tk_shrink")
    seconds = _option(request, "tk_shrink_seconds")
    return (
        spec.shrink_runs if runs is None else int(runs),
        spec.shrink_seconds if seconds is None else float(seconds),
    )


def _shrink_failure(run: _SeedRun, exc: BaseException, request: Any) -> _ShrinkOutcome | None:
    """Shrink the failing ``run`` within its bounds; None if shrinking is off.

    Never raises for a problem of its own (an interrupt goes through): the outcome then
    says what went wrong, and the test fails with its own error as before.
    """
    max_runs, budget = _shrink_budget(request, run.spec)
    sim = run.sim
    if max_runs <= 0 or sim is None:
        return None
    outcome = _ShrinkOutcome()
    schedule = getattr(sim, "schedule", None)
    choices = list(getattr(schedule, "choices", ()))
    outcome.original = (len(choices), len(run.faults))
    target = failure_signature(exc)
    found: dict[tuple[Any, ...], tuple[str, str]] = {}

    def fails(scheduler: ReplayScheduler, faults: FaultSchedule | None) -> bool:
        attempt = _SeedRun(run.call, run.seed, scheduler=scheduler, faults=faults or [])
        try:
            attempt.execute()
        except BaseException as error:
            if not _is_test_failure(error):
                if isinstance(error, KeyboardInterrupt | SystemExit) or _is_exit(error):
                    raise
                return False  # a skip or an xfail: not the failure we shrink
            if failure_signature(error) != target:
                return False
            assert attempt.sim is not None
            key = (tuple(sorted(scheduler.choices.items())), tuple(faults or []))
            found[key] = (f"{type(error).__name__}: {error}", attempt.sim.trace.hash)
            return True
        return False

    started = _wallclock.monotonic()

    def stop() -> str | None:
        if _wallclock.monotonic() - started >= budget:
            return f"after its {budget:g} s budget"
        return None

    try:
        shrunk = shrink(fails, choices, list(run.faults), max_runs=max_runs, stop=stop)
    except ValueError as error:
        if "does not fail when replayed" not in str(error):
            outcome.summary = f"failed: {type(error).__name__}: {error}"
            return outcome
        outcome.summary = (
            f"not possible: seed {run.seed} replayed with its recorded schedule and faults "
            "did not fail the same way (same exception type and, for an assertion, line): "
            "the body depends on more than its seed, schedule and faults (state kept "
            "across seeds, the real clock or randomness read through a name imported "
            "before the run?)"
        )
        return outcome
    except Exception as error:  # never hide the test's own failure behind this one
        outcome.summary = f"failed: {type(error).__name__}: {error}"
        return outcome
    outcome.seconds = _wallclock.monotonic() - started
    outcome.shrunk = shrunk
    key = (shrunk.choices, tuple(shrunk.faults or []))
    outcome.exception, outcome.trace_hash = found.get(key, ("", ""))
    if not shrunk.complete:
        how = f"stopped {shrunk.stopped}: it may not be minimal"
    elif shrunk.choices or shrunk.faults:
        how = "1-minimal: without any one of its choices or faults it passes"
    else:
        how = "it fails in FIFO order with no faults"
    had_choices, had_faults = outcome.original
    outcome.summary = (
        f"{_count(shrunk.runs, 're-run')}, from {_count(had_choices, 'choice')} and "
        f"{_count(had_faults, 'fault')}; {how}"
    )
    return outcome


def _count(n: int, noun: str) -> str:
    """``1 fault``, ``2 faults``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _is_exit(exc: BaseException) -> bool:
    import pytest  # noqa: PLC0415 - only ever called under pytest

    return isinstance(exc, pytest.exit.Exception)


def _close(harness: SimHarness, sim: Simulation) -> None:
    """End the run's world (``sim.close()`` where there is one), then close its sockets."""
    try:
        close = getattr(sim, "close", None)
        if callable(close):
            close()
    finally:
        harness.close()


def _close_quietly(harness: SimHarness, sim: Simulation) -> None:
    """:func:`_close` after a failure: an error here never hides the test's own."""
    with contextlib.suppress(Exception):
        _close(harness, sim)


def _is_test_failure(exc: BaseException) -> bool:
    """An error or a pytest failure (not a skip, xfail, exit or interrupt)."""
    if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
        return False
    if isinstance(exc, Exception):
        return True
    import pytest  # noqa: PLC0415 - only ever called under pytest

    return isinstance(exc, pytest.fail.Exception) and not isinstance(exc, pytest.xfail.Exception)


def _test_arg(request: Any) -> str:
    """The item's node id as given from the directory pytest was invoked in."""
    nodeid: str = request.node.nodeid
    config = request.config
    file_part, sep, rest = nodeid.partition("::")
    try:
        import os  # noqa: PLC0415

        path = os.path.relpath(config.rootpath / file_part, config.invocation_params.dir)
    except (AttributeError, ValueError):
        return nodeid
    return f"{Path(path).as_posix()}{sep}{rest}"


def _report(
    request: Any,
    run: _SeedRun,
    exc: BaseException,
    passed: int,
    outcome: _ShrinkOutcome | None,
    *,
    replay: ReplayRecord | None = None,
) -> None:
    """Save the failure folder, note the replay lines on ``exc`` and keep the report.

    A ``--tk-replay`` run (``replay``) saves nothing: its folder may be the one it
    replays.
    """
    sim = run.sim
    test_arg = _test_arg(request)
    config = request.config
    command = ""
    if replay is not None:
        command = replay_file_command(test_arg, _option(request, "tk_replay") or "")
    if sim is None:  # failed before the simulation existed (faults(seed) raised)
        exc.add_note(f"replay: {command or replay_command(test_arg, run.seed)}")
        return
    events = sim.trace.events
    failed_at = run.failed_at
    if failed_at is None:
        when = getattr(exc, "time", None)
        if isinstance(when, float | int):
            failed_at = sum(1 for e in events if e.time <= when)
    schedule = getattr(sim, "schedule", None)
    describe = getattr(schedule, "describe", None)
    directory = Path(config.rootpath) / (_ini(config, "tk_failures_dir") or DEFAULT_FAILURES_DIR)
    shrunk = outcome.shrunk if outcome is not None else None
    shrunk_path = directory / folder_name(request.node.nodeid, run.seed) / SHRUNK_FILE
    replay_shrunk = (
        replay_file_command(test_arg, _relative_file(shrunk_path, config))
        if shrunk is not None
        else ""
    )
    record = FailureRecord(
        nodeid=request.node.nodeid,
        test_arg=test_arg,
        seed=run.seed,
        passed=passed,
        scheduler=_scheduler_name(sim),
        schedule=describe() if callable(describe) else "FIFO (no scheduler record)",
        exception=f"{type(exc).__name__}: {exc}",
        trace_hash=sim.trace.hash,
        events=events,
        failed_at=failed_at,
        shrunk=shrunk.describe() if shrunk is not None else "",
        shrinking=outcome.summary if outcome is not None else "",
        replay_shrunk=replay_shrunk,
        command=command,
        replayed_from=str(replay.source) if replay is not None else "",
    )
    if replay is not None:
        exc.add_note(f"replay: {record.replay}")
        with contextlib.suppress(AttributeError):
            setattr(exc, REPORT_ATTRIBUTE, (run.seed, record.replay, record.report(None), ""))
        return
    keep_text = _ini(config, "tk_keep_failures")
    keep = int(keep_text) if keep_text else DEFAULT_KEEP_FAILURES
    document = None
    if shrunk is not None and outcome is not None:
        document = shrunk_document(
            nodeid=record.nodeid,
            seed=run.seed,
            choices=shrunk.choices,
            faults=list(shrunk.faults or []),
            description=record.shrunk,
            shrinking=outcome.summary,
            exception=outcome.exception,
            trace_hash=outcome.trace_hash,
            replay=replay_shrunk,
            original=outcome.original,
            seconds=outcome.seconds,
        )
    folder: Path | None
    try:
        folder = save_failure(directory, record, sim, run.faults, keep=keep, shrunk=document)
    except OSError as error:
        folder = None
        exc.add_note(f"transportkit could not save the failure folder: {error}")
        record = dataclasses.replace(record, replay_shrunk="")
    shown = _relative(folder, config) if folder is not None else None
    exc.add_note(f"replay: {record.replay}")
    if shown is not None:
        exc.add_note(f"trace, schedule and faults of seed {run.seed}: {shown}")
    if record.shrunk:
        exc.add_note(f"shrunk: {record.shrunk}")
    elif record.shrinking:
        exc.add_note(f"shrinking: {record.shrinking}")
    if record.replay_shrunk:
        exc.add_note(f"replay shrunk: {record.replay_shrunk}")
    report = (run.seed, record.replay, record.report(shown), record.replay_shrunk)
    with contextlib.suppress(AttributeError):  # an exception type without a __dict__
        setattr(exc, REPORT_ATTRIBUTE, report)


def _scheduler_name(sim: Simulation) -> str:
    scheduler = getattr(sim, "scheduler", None)
    name = getattr(scheduler, "name", None)
    return str(name) if name else "fifo"


def _ini(config: Any, name: str) -> str:
    try:
        value = config.getini(name)
    except (ValueError, KeyError):
        return ""
    return str(value).strip() if value else ""


def _relative_file(path: Path, config: Any) -> str:
    """``path`` relative to the directory pytest was invoked in, if it can be."""
    import os  # noqa: PLC0415

    try:
        return Path(os.path.relpath(path, config.invocation_params.dir)).as_posix()
    except (AttributeError, ValueError):
        return str(path)


def _relative(path: Path, config: Any) -> str:
    import os  # noqa: PLC0415

    try:
        return Path(os.path.relpath(path, config.invocation_params.dir)).as_posix() + "/"
    except (AttributeError, ValueError):
        return str(path)


def _run_zmq(call: _Call, request: Any) -> None:
    """The zmq run: once, with the fault schedule of the first seed (or ``--tk-seed``)
    applied through the harness's fault proxy in real time; never shrunk.
    """
    spec = call.spec
    replay: ReplayRecord | None = getattr(request.config, REPLAY_ATTRIBUTE, None)
    if replay is not None:
        import pytest  # noqa: PLC0415 - only ever called under pytest

        pytest.skip(f"--tk-replay={replay.source} replays a simulation run, not a zmq run")
    seed = spec.seed_list(_option(request, "tk_seed"), _option(request, "tk_seeds"))[0]
    run = _ZmqRun(call, seed)
    try:
        run.execute()
    except BaseException as exc:
        if _is_test_failure(exc):
            run.report(request, exc)
        raise
    run.warn_not_applied()


class _ZmqRun:
    """One run of a body on real sockets, with one seed's fault schedule.

    What a seed means here: the schedule ``spec.faults_for(seed)`` (drawn the same way
    as on the sim, so the same seed gives the same faults), its times in real seconds
    from the start of the run; and ``tk_seed``. There is no scheduler (the OS and
    libzmq interleave), so the same seed need not fail the same way twice, and the run
    is not shrunk (shrinking replays a simulation's choices in virtual time).
    """

    def __init__(self, call: _Call, seed: int) -> None:
        self.call = call
        self.spec = call.spec
        self.seed = seed
        self.faults: FaultSchedule = []
        self.harness: ZmqHarness | None = None
        self.routed: set[frozenset[str]] = set()

    def execute(self) -> None:
        self.faults = self.spec.faults_for(self.seed)
        harness = self.harness = ZmqHarness(faults=True, seed=self.seed)
        try:
            # Refused before anything runs: a fault the proxy cannot realise.
            harness.schedule_faults(self.faults)

            async def main() -> None:
                given = {
                    "tk_seed": self.seed,
                    "tk_harness": harness,
                    "tk_faults": list(self.faults),
                }
                body = self.call.coroutine(given)
                await _run_with_mains(body, self.spec, harness, self.spec.zmq_timeout)

            run_in_own_loop(main())
        finally:
            proxy = harness.proxy
            with contextlib.suppress(Exception):
                if proxy is not None and not proxy.closed:
                    self.routed = {frozenset((s, d)) for s, d, _ in proxy.routes}
            harness.close()

    def outcome_lines(self) -> list[str]:
        """Each fault of the schedule with what the zmq run did with it."""
        harness = self.harness
        done = list(harness.outcomes) if harness is not None else []
        lines = []
        for at, fault, outcome in done:
            lines.append(f"  {at:8.3f} s  {fault!r}  ({self._verdict(fault, outcome)})")
        for at, fault in harness._pending if harness is not None else []:
            lines.append(f"  {at:8.3f} s  {fault!r}  (not reached: the run ended first)")
        return lines

    def _verdict(self, fault: Any, outcome: str) -> str:
        if outcome.startswith("not applicable"):
            pair = frozenset((getattr(fault, "a", ""), getattr(fault, "b", "")))
            if pair in self.routed:  # a connection made later obeyed the link's state
                return "applied to the connections made after it"
            return "not applied: " + outcome
        return outcome

    def not_applied(self) -> list[str]:
        harness = self.harness
        if harness is None:
            return []
        return [
            f"{fault!r} at {at:.3f} s: {verdict}"
            for at, fault, outcome in harness.outcomes
            if (verdict := self._verdict(fault, outcome)).startswith("not applied")
        ]

    def warn_not_applied(self) -> None:
        """Warn (:class:`FaultNotAppliedWarning`) about faults that reached no
        connection: the zmq run passed without them.
        """
        missed = self.not_applied()
        if missed:
            warnings.warn(
                FaultNotAppliedWarning(
                    f"zmq run of seed {self.seed}: {len(missed)} fault(s) reached no "
                    "connection (no tcp connection between the two networks went "
                    "through the fault proxy): " + "; ".join(missed)
                ),
                stacklevel=1,
            )

    def report(self, request: Any, exc: BaseException) -> None:
        """Note the zmq run's seed, replay lines and fault outcomes on ``exc``."""
        test_arg = _test_arg(request)
        replay = replay_command(test_arg, self.seed)
        sim_arg = re.sub(r"\[zmq\]$", "[sim]", test_arg)
        lines = [
            f"zmq run of seed {self.seed}: real sockets in real time, the fault schedule "
            f"of seed {self.seed} ({_count(len(self.faults), 'fault')}) applied through "
            "the fault proxy; no scheduler, so a replay may interleave otherwise; not "
            "shrunk (shrinking needs the simulation)",
        ]
        if self.faults:
            lines.append("faults (times in real seconds from the start of the run):")
            lines += self.outcome_lines()
        lines.append(f"replay: {replay}")
        if "sim" in self.spec.backends and sim_arg != test_arg:
            lines.append(f"the same seed on the sim: {replay_command(sim_arg, self.seed)}")
        for line in lines:
            exc.add_note(line)
        text = "\n".join(lines)
        with contextlib.suppress(AttributeError):  # an exception type without a __dict__
            setattr(exc, REPORT_ATTRIBUTE, (self.seed, replay, text, ""))


async def _run_with_mains(
    coro: Coroutine[Any, Any, Any], spec: _Spec, harness: ZmqHarness, timeout: float
) -> None:
    """Run the body beside the node mains and the fault schedule; fail on the first
    main that raises, or fault that cannot be applied.

    A crash of a node with a main cancels the main (as the sim cancels a crashed
    node's tasks) before its network closes; its restart starts the main again on
    the new network.
    """
    loop = asyncio.get_running_loop()
    mains: dict[asyncio.Future[Any], str] = {}
    running: dict[str, asyncio.Future[Any]] = {}
    node_mains = dict(spec.nodes)

    def start(name: str) -> None:
        task = asyncio.ensure_future(node_mains[name](harness.network(name)))
        mains[task] = name
        running[name] = task

    for name in node_mains:
        start(name)

    async def apply(fault: Any) -> str:
        node = getattr(fault, "node", None)
        if isinstance(fault, Crash) and node in running:
            task = running.pop(node)
            mains.pop(task, None)
            task.cancel()
            await asyncio.wait([task], timeout=_MAIN_STOP_TIMEOUT)
            return harness.apply(fault) + "; its main cancelled"
        if isinstance(fault, Restart) and node in node_mains and node not in running:
            text = harness.apply(fault)
            start(node)
            return text + "; its main started again"
        return harness.apply(fault)

    zero = _wallclock.monotonic()
    harness._zero = zero
    faults = asyncio.ensure_future(harness._drive(zero, apply, strict=True))
    body = asyncio.ensure_future(coro)
    deadline = loop.time() + timeout
    try:
        while not body.done():
            left = deadline - loop.time()
            if left <= 0:
                raise Timeout(f"the test did not finish within {timeout} s on zmq")
            pending: set[asyncio.Future[Any]] = {body, faults, *mains}
            done, _ = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is body or task.cancelled() or task.exception() is None:
                    continue
                error = task.exception()
                assert error is not None
                if task is faults:
                    error.add_note("raised applying a fault of the schedule (zmq run)")
                    raise error
                if task in mains:
                    error.add_note(f"raised by the main of node {mains[task]!r} (zmq run)")
                    raise error
        body.result()
    finally:
        everything = [body, faults, *mains, *running.values()]
        for task in everything:
            task.cancel()
        await asyncio.gather(*everything, return_exceptions=True)
