"""The running of a simulation: its long-lived loop, unhandled task failures, threads.

A :class:`~transportkit.sim_backend.Simulation` keeps one event loop (a
:class:`WorldLoop`) from its first ``run``/``run_for``/``run_until`` to ``close()``; tasks
live in it across those calls. This module holds what that needs besides the world:

- :class:`FailureTracker` decides, deterministically, which task failures nobody
  handled, and turns the first into :class:`~transportkit.TaskFailed`;
- :class:`WorldLoop` is the simulation's loop, quiet when a simulation that was never
  closed is garbage collected;
- :func:`call_in_thread` runs a call on a dedicated thread, for a simulation advanced
  from a thread whose own event loop is running (an ``async def`` test).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from transportkit._errors import TaskFailed
from transportkit.sim_backend._loop import SimEventLoop, schedule_call

if TYPE_CHECKING:
    import simpy

    from transportkit.sim_backend._trace import Trace

__all__ = [
    "FailureTracker",
    "TaskFailure",
    "WorldLoop",
    "WorldTask",
    "allow_failure",
    "call_in_thread",
]

T = TypeVar("T")

_NOT_ERRORS = (
    # asyncio's garbage-collection reports: whether an exception was handled is decided
    # by FailureTracker at a fixed virtual instant, never by when an object is freed.
    "Task exception was never retrieved",
    "Future exception was never retrieved",
    "Task was destroyed but it is pending!",
)


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """A task that ended with an exception nobody retrieved.

    Attributes:
        time: Virtual time (s) at which the failure was found unhandled.
        node: The task's node, or None.
        task: The task's name (or the failed callback's description).
        exception: What it raised.
        allowed: Whether the task was declared allowed to fail (``may_fail``); if not,
            the failure failed the run.
    """

    time: float
    node: str | None
    task: str
    exception: BaseException
    allowed: bool


class FailureTracker:
    """Finds the unhandled failures of a simulation's tasks, at fixed virtual instants.

    A task that ends with an exception (not a cancellation) is a candidate. When the
    loop next has nothing ready at that virtual instant (a SimPy call scheduled at the
    current time runs exactly then: the virtual selector steps SimPy only with asyncio's
    ready queue empty), every candidate whose exception is still unretrieved (nobody
    awaited it, gathered it, or called ``result()``/``exception()``) is unhandled. If it
    was declared allowed, it is recorded; otherwise the run fails with
    :class:`~transportkit.TaskFailed`. An exception escaping a loop callback (reported to
    the loop's exception handler) fails the run in the same way.
    """

    __slots__ = (
        "_candidates",
        "_check_scheduled",
        "_env",
        "_errors",
        "_seed",
        "_trace",
        "allowed",
        "exempt",
        "failures",
    )

    def __init__(self, env: simpy.Environment, trace: Trace, seed: int) -> None:
        self._env = env
        self._trace = trace
        self._seed = seed
        self._candidates: list[tuple[asyncio.Task[Any], str | None]] = []
        self._errors: list[tuple[str | None, str, BaseException]] = []
        self._check_scheduled = False
        self.allowed: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self.exempt: weakref.WeakSet[asyncio.Future[Any]] = weakref.WeakSet()
        self.failures: list[TaskFailure] = []

    def on_done(self, node: str | None, task: asyncio.Task[Any]) -> None:
        """A task of the simulation finished (its done callback)."""
        if task.cancelled() or not task._log_traceback:
            return  # cancelled, returned, or its exception already retrieved
        if task in self.exempt:
            return
        self._candidates.append((task, node))
        self._schedule_check()

    def on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler: a callback raised (or asyncio reports GC)."""
        exc = context.get("exception")
        message = str(context.get("message", ""))
        if exc is None or message.startswith(_NOT_ERRORS):
            return
        what = message.removeprefix("Exception in callback ") or "a loop callback"
        self._errors.append((None, what, exc))
        self._schedule_check()

    def failed(self, node: str | None, task: str, exc: BaseException) -> None:
        """Fail the run at the next check with ``exc`` (already retrieved) of ``task``."""
        self._errors.append((node, task, exc))

    def _schedule_check(self) -> None:
        if not self._check_scheduled:
            self._check_scheduled = True
            schedule_call(self._env, self._env._now, self._scheduled_check, ())

    def _scheduled_check(self) -> None:
        self._check_scheduled = False
        self.check()

    def check(self) -> None:
        """Record the unhandled failures found so far; raise for the first not allowed.

        Raises:
            TaskFailed: A task failed and nobody retrieved its exception, or a loop
                callback raised. Its ``__cause__`` is that exception.
        """
        candidates, self._candidates = self._candidates, []
        errors, self._errors = self._errors, []
        now = float(self._env._now)
        fatal: list[TaskFailure] = []
        for task, node in candidates:
            if not task._log_traceback or (isinstance(task, WorldTask) and task.watchers):
                continue  # retrieved in time, or the end of a task something waits for
            allowed = task in self.allowed
            exc = task.exception()  # retrieved now: asyncio will not report it at GC
            assert exc is not None
            failure = TaskFailure(now, node, task.get_name(), exc, allowed)
            self._record(failure)
            if not allowed:
                fatal.append(failure)
        for node_name, what, exc in errors:
            failure = TaskFailure(now, node_name, what, exc, False)
            self._record(failure)
            fatal.append(failure)
        if fatal:
            raise self._error(fatal)

    def _record(self, failure: TaskFailure) -> None:
        self.failures.append(failure)
        exc = failure.exception
        detail = f"{type(exc).__name__}{' (allowed)' if failure.allowed else ''}"
        self._trace.add(failure.time, "task-failed", failure.task, detail)

    def _error(self, fatal: list[TaskFailure]) -> TaskFailed:
        first = fatal[0]
        exc = first.exception
        where = f"of node {first.node!r}" if first.node is not None else "of no node"
        more = f" (and {len(fatal) - 1} more at that instant)" if len(fatal) > 1 else ""
        error = TaskFailed(
            f"task {first.task!r} {where} failed at t={first.time:.6f}s with seed "
            f"{self._seed}: {type(exc).__name__}: {exc}{more}; declare a task that may "
            "fail with node.spawn(..., may_fail=True) or allow_failure(task)",
            first.node,
            first.task,
            first.time,
            self._seed,
        )
        error.__cause__ = exc
        return error


class WorldTask(asyncio.Task[T]):
    """A task of a simulation: an :class:`asyncio.Task` that counts its watchers.

    A watcher is a done callback added by the program or by asyncio on its behalf
    (awaiting the task, ``gather``, ``wait``, ``shield``) and not removed: whoever
    watches the end of a task is the one to handle its exception (``gather(...,
    return_exceptions=True)`` retrieves it only when every task is done). The
    simulation's own callbacks go through :meth:`watch` and do not count.
    """

    watchers = 0
    _added: list[Any] | None = None

    def add_done_callback(self, fn: Any, /, *, context: Any = None) -> None:
        """:meth:`asyncio.Task.add_done_callback`, counting the watcher."""
        self.watchers += 1
        if self._added is None:
            self._added = []
        self._added.append(fn)
        super().add_done_callback(fn, context=context)

    def remove_done_callback(self, fn: Any, /) -> int:
        """:meth:`asyncio.Task.remove_done_callback`, counting the watcher out (even
        after the task is done, when asyncio has already consumed its callbacks).
        """
        if self._added:
            kept = [f for f in self._added if f != fn]
            self.watchers -= len(self._added) - len(kept)
            self._added = kept
        return super().remove_done_callback(fn)

    def watch(self, fn: Any) -> None:
        """Add a done callback of the simulation's own (not a watcher)."""
        asyncio.Task.add_done_callback(self, fn)


class WorldLoop(SimEventLoop):
    """A simulation's event loop, kept from its first run to ``Simulation.close``.

    Garbage collected unclosed (a simulation nobody closed), it frees its self-pipe and
    stays usable for the ``finally`` blocks of its tasks' coroutines, which Python runs
    as it frees them, in any order: they may still schedule callbacks (that never run).
    Neither asyncio's "unclosed event loop" nor an "unclosed socket" ResourceWarning is
    raised: ``close()`` is the way to end the tasks.
    """

    tracker: FailureTracker | None = None

    def __del__(self) -> None:
        this: Any = self
        if not self.is_closed() and this._ssock is not None:
            this._close_self_pipe()


def allow_failure(task: asyncio.Task[T]) -> asyncio.Task[T]:
    """Declare that ``task`` may end with an exception without failing its simulation.

    Its failure is still recorded, in ``Simulation.task_failures`` and as a
    ``task-failed`` trace event. On any other event loop (the zmq backend) this does
    nothing, so code shared by both backends can call it.

    Returns:
        ``task``, for ``allow_failure(asyncio.create_task(...))``.
    """
    loop = task.get_loop()
    tracker = loop.tracker if isinstance(loop, WorldLoop) else None
    if tracker is not None:
        tracker.allowed.add(task)
    return task


def call_in_thread(fn: Callable[[], T]) -> T:
    """Call ``fn()`` on a new thread, in a copy of the caller's context; return its
    result or raise its exception, once it has finished.

    For a simulation advanced from a thread whose event loop is running (asyncio allows
    one running loop per thread): the caller's loop is blocked meanwhile, so nothing of
    it runs alongside the simulation, and the run guards protect the thread that runs
    the simulation.
    """
    ctx = contextvars.copy_context()
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append((True, ctx.run(fn)))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="transportkit-simulation", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value
