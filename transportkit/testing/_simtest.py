"""``@sim_test``: an ``async def`` test body run in a simulation once per seed.

The decorator turns the body into an ordinary (synchronous) pytest test function, so it
needs no asyncio plugin and no asyncio plugin takes it over; the transportkit pytest
plugin (registered when transportkit is installed) parametrizes it by backend and
provides the ``--tk-seed``/``--tk-seeds`` options and the failure report.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
import random
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

from transportkit._errors import Timeout
from transportkit._network import Network
from transportkit.sim_backend import FaultSchedule, Simulation, schedule_faults
from transportkit.testing._harness import BACKENDS, SimHarness, ZmqHarness, run_in_own_loop
from transportkit.testing._simtest_failures import (
    DEFAULT_FAILURES_DIR,
    DEFAULT_KEEP_FAILURES,
    FailureRecord,
    replay_command,
    save_failure,
)

__all__ = [
    "DEFAULT_SEEDS",
    "DEFAULT_TIMEOUT",
    "DEFAULT_ZMQ_TIMEOUT",
    "MAX_SEEDS",
    "REPORT_ATTRIBUTE",
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

REPORT_ATTRIBUTE: Final = "_transportkit_sim_test_report"
"""The attribute of a failing seed's exception holding ``(seed, replay command, report
text)``, for the pytest plugin."""

INJECTED: Final = ("tk_sim", "tk_seed", "tk_harness", "tk_faults")
"""Parameters of a body that ``@sim_test`` fills in (every other one is a fixture)."""

NodeMain = Callable[[Network], Awaitable[Any]]
AsyncTest = Callable[..., Coroutine[Any, Any, Any]]
FaultSource = FaultSchedule | Callable[[int], FaultSchedule] | Any
SchedulerSource = str | Callable[[int], Any]

_EXPLORING = "random"


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
    **simulation_options: Any,
) -> Callable[..., None] | Callable[[AsyncTest], Callable[..., None]]:
    """Run an ``async def`` pytest test body in a fresh simulation once per seed.

    Use it bare (``@sim_test``) or with arguments (``@sim_test(seeds=200)``). The body's
    parameters named ``tk_sim`` (the run's :class:`~transportkit.sim_backend.Simulation`),
    ``tk_seed`` (its seed), ``tk_faults`` (the fault schedule it runs with) and
    ``tk_harness`` (a :class:`~transportkit.testing.Harness` on the run's backend:
    ``network(name)`` and ``endpoint()``, not ``run``, since the body already runs)
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
            a seed). The zmq run has no faults.
        nodes: Node names and their ``async def main(network)``: on the sim each is a
            node with that main (restarted after each crash); on zmq each main runs
            as a task on ``tk_harness.network(name)`` (its own context). A main that
            raises fails the zmq run.
        backends: Which backends to run on, of ``("sim", "zmq")``. The zmq run is
            once (with ``tk_seed`` the first seed), on real sockets in real time; a
            body that takes ``tk_sim`` runs only on the sim.
        timeout: Virtual seconds one seed may run before it fails with
            :class:`~transportkit.Timeout` (positive, finite).
        zmq_timeout: Real seconds the zmq run may take (positive, finite).
        **simulation_options: More keywords for ``Simulation`` (``latency``,
            ``shuffle_ties``, ``record_trace``).

    Returns:
        A synchronous test function for pytest (or a decorator making one).

    Raises:
        TypeError: The body is not an ``async def`` function, or takes ``tk_sim`` while
            ``backends`` includes zmq, or an argument has the wrong type.
        ValueError: ``seeds``, ``backends``, a timeout or ``scheduler`` is out of range
            (an explicit scheduler on a Simulation that takes none).
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
    ) -> None:
        self.seeds = seeds
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
        return cls(
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

    def simulation(self, seed: int) -> Simulation:
        """A fresh simulation for ``seed``."""
        options = dict(self.simulation_options)
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
        from hypothesis.strategies import SearchStrategy  # noqa: PLC0415 - test extra only
    except ImportError:  # pragma: no cover - Hypothesis is in the test extra
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
    seeds = spec.seed_list(_option(request, "tk_seed"), _option(request, "tk_seeds"))
    for passed, seed in enumerate(seeds):
        run = _SeedRun(call, seed)
        try:
            run.execute()
        except BaseException as exc:
            if not _is_test_failure(exc):
                raise
            _report(request, run, exc, passed)
            raise


class _SeedRun:
    """One seed's simulation of a body."""

    def __init__(self, call: _Call, seed: int) -> None:
        self.call = call
        self.spec = call.spec
        self.seed = seed
        self.faults: FaultSchedule = []
        self.sim: Simulation | None = None
        self.failed_at: int | None = None

    def execute(self) -> None:
        """Run the body in this seed's simulation, with its nodes and faults."""
        self.faults = self.spec.faults_for(self.seed)
        sim = self.sim = self.spec.simulation(self.seed)
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


def _report(request: Any, run: _SeedRun, exc: BaseException, passed: int) -> None:
    """Save the failure folder, note the replay line on ``exc`` and keep the report."""
    sim = run.sim
    if sim is None:  # failed before the simulation existed (faults(seed) raised)
        exc.add_note(f"replay: {replay_command(_test_arg(request), run.seed)}")
        return
    events = sim.trace.events
    failed_at = run.failed_at
    if failed_at is None:
        when = getattr(exc, "time", None)
        if isinstance(when, float | int):
            failed_at = sum(1 for e in events if e.time <= when)
    schedule = getattr(sim, "schedule", None)
    describe = getattr(schedule, "describe", None)
    record = FailureRecord(
        nodeid=request.node.nodeid,
        test_arg=_test_arg(request),
        seed=run.seed,
        passed=passed,
        scheduler=_scheduler_name(sim),
        schedule=describe() if callable(describe) else "FIFO (no scheduler record)",
        exception=f"{type(exc).__name__}: {exc}",
        trace_hash=sim.trace.hash,
        events=events,
        failed_at=failed_at,
    )
    config = request.config
    directory = Path(config.rootpath) / (_ini(config, "tk_failures_dir") or DEFAULT_FAILURES_DIR)
    keep_text = _ini(config, "tk_keep_failures")
    keep = int(keep_text) if keep_text else DEFAULT_KEEP_FAILURES
    folder: Path | None
    try:
        folder = save_failure(directory, record, sim, run.faults, keep=keep)
    except OSError as error:
        folder = None
        exc.add_note(f"transportkit could not save the failure folder: {error}")
    shown = _relative(folder, config) if folder is not None else None
    exc.add_note(f"replay: {record.replay}")
    if shown is not None:
        exc.add_note(f"trace, schedule and faults of seed {run.seed}: {shown}")
    with contextlib.suppress(AttributeError):  # an exception type without a __dict__
        setattr(exc, REPORT_ATTRIBUTE, (run.seed, record.replay, record.report(shown)))


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


def _relative(path: Path, config: Any) -> str:
    import os  # noqa: PLC0415

    try:
        return Path(os.path.relpath(path, config.invocation_params.dir)).as_posix() + "/"
    except (AttributeError, ValueError):
        return str(path)


def _run_zmq(call: _Call, request: Any) -> None:
    spec = call.spec
    seeds = spec.seed_list(_option(request, "tk_seed"), _option(request, "tk_seeds"))
    harness = ZmqHarness()
    try:

        async def main() -> None:
            given = {"tk_seed": seeds[0], "tk_harness": harness, "tk_faults": []}
            body = call.coroutine(given)
            await _run_with_mains(body, spec, harness, spec.zmq_timeout)

        run_in_own_loop(main())
    finally:
        harness.close()


async def _run_with_mains(
    coro: Coroutine[Any, Any, Any], spec: _Spec, harness: ZmqHarness, timeout: float
) -> None:
    """Run the body beside the node mains; fail on the first main that raises."""
    mains: dict[asyncio.Future[Any], str] = {
        asyncio.ensure_future(main(harness.network(name))): name for name, main in spec.nodes
    }
    body = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        pending: set[asyncio.Future[Any]] = {body, *mains}
        while not body.done():
            left = deadline - loop.time()
            if left <= 0:
                raise Timeout(f"the test did not finish within {timeout} s on zmq")
            done, pending = await asyncio.wait(
                pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task is not body and not task.cancelled() and task.exception() is not None:
                    error = task.exception()
                    assert error is not None
                    error.add_note(f"raised by the main of node {mains[task]!r} (zmq run)")
                    raise error
        body.result()
    finally:
        for task in (body, *mains):
            task.cancel()
        await asyncio.gather(body, *mains, return_exceptions=True)
