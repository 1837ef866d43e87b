"""An asyncio event loop whose clock is a SimPy environment's virtual clock.

asyncio asks its selector to wait for I/O for at most ``timeout`` seconds, the time to
its next timer. The virtual selector instead steps the SimPy environment: it processes
SimPy events (message arrivals, connection changes, faults) until one of them makes
asyncio work ready, or until the virtual deadline, and then moves the clock there. Real
time never passes, so ``asyncio.sleep(60)`` costs nothing, and the order of everything is
fixed by SimPy's ``(time, priority, sequence)`` event heap: the run is deterministic.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import selectors
from asyncio import Future as _Future
from asyncio import Handle as _Handle
from asyncio import format_helpers
from collections import deque
from collections.abc import Callable, Mapping, Sized
from contextvars import copy_context
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any, NoReturn

from transportkit._errors import SimulationDeadlock, SimulationError
from transportkit.sim_backend._guards import refuse
from transportkit.sim_backend._sched import RandomScheduler
from transportkit.sim_backend._trace import TRACE_BATCH

if TYPE_CHECKING:
    import simpy

    from transportkit.sim_backend._invariants import Invariants
    from transportkit.sim_backend._sched import Schedule, Scheduler
    from transportkit.sim_backend._trace import Trace

__all__ = ["IdleEvents", "SimCall", "SimEventLoop", "schedule_call"]

# asyncio.base_events' constants, for the same timer housekeeping as its _run_once.
_MIN_SCHEDULED_TIMER_HANDLES = 100
_MIN_CANCELLED_TIMER_HANDLES_FRACTION = 0.5
_MAXIMUM_SELECT_TIMEOUT = 24 * 3600
_NORMAL = 1  # simpy.events.NORMAL: the priority of a Timeout
_new_handle = object.__new__


class TimerHandle(asyncio.TimerHandle):
    """The handle :meth:`SimEventLoop.call_at` and ``call_later`` return: asyncio's
    ``TimerHandle`` (same name, fields and repr) whose ``cancel`` takes one frame
    instead of four (its own, the loop's ``_timer_handle_cancelled``,
    ``Handle.cancel`` and ``get_debug``). ``asyncio.sleep`` cancels its timer every time it returns.
    """

    __slots__ = ()

    def cancel(self) -> None:
        """:meth:`asyncio.TimerHandle.cancel`, inlined."""
        this: Any = self
        if not this._cancelled:
            loop = this._loop
            if this._scheduled:
                loop._timer_cancelled_count += 1
            this._cancelled = True
            if loop._debug:  # what get_debug() returns, without its frame
                this._repr = repr(self)
            this._callback = None
            this._args = None


class _TimerKey(float):
    """A timer's place in the loop's heap: its time, as a float, and the handle.

    asyncio's heap holds the handles themselves and orders them with
    ``TimerHandle.__lt__``, a Python method called a few times per push and pop.
    These keys compare as floats, in C, and give exactly the same answers (both
    compare ``when`` alone), so the heap takes the same shape and timers set for the
    same instant still run in the same order.
    """

    __slots__ = ("handle",)
    handle: TimerHandle


class SimCall(tuple[Callable[..., object], tuple[Any, ...]]):
    """A triggered SimPy event whose processing calls ``fn(*args)``: ``SimCall((fn, args))``.

    The simulator's deliveries and timers are scheduled as these instead of a
    ``Timeout`` with a callback: a 2-tuple (built in C, no ``__init__`` frame) instead
    of an event with an instance dict, a callback list and a ``functools.partial``.
    They sit in SimPy's heap with a Timeout's priority and the next event id, so they
    are ordered exactly as Timeouts scheduled at the same moments would be, and
    ``Environment.step`` still processes them (through ``callbacks``, a class attribute
    until ``step`` replaces it in the instance's dict); the virtual selector calls
    ``fn`` directly.
    """

    _ok = True
    _value = None
    callbacks: Any

    @property
    def fn(self) -> Callable[..., object]:
        """The function to call."""
        return self[0]

    @property
    def args(self) -> tuple[Any, ...]:
        """Its arguments."""
        return self[1]


def _fire(event: SimCall) -> None:
    event[0](*event[1])


SimCall.callbacks = (_fire,)


class IdleEvents:
    """How many of the pending SimPy events are idle: retries that cannot succeed on
    their own, which do not count as pending work for deadlock detection.

    Shared by a simulation (which counts) and its event loop (which reads ``count``
    while waiting forever, without a call per processed event).
    """

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


def schedule_call(
    env: simpy.Environment,
    at: float,
    fn: Callable[..., object],
    args: tuple[Any, ...],
    priority: Any = _NORMAL,
) -> None:
    """Schedule ``fn(*args)`` at virtual time ``at`` (absolute, so that two things
    computed to happen at the same instant are in the heap at the same instant; a
    relative delay would round ``now + (at - now)`` differently from one ``now`` to
    the next). Ordered like a ``Timeout`` scheduled at the same moment.
    """
    if at < env._now:
        raise ValueError(f"cannot schedule at {at}, before now ({env._now})")
    queue: list[Any] = env._queue
    heappush(queue, (at, priority, next(env._eid), SimCall((fn, args))))


def _process(event: Any) -> None:
    """``simpy.Environment.step`` for one popped event (the clock is already set)."""
    callbacks, event.callbacks = event.callbacks, None
    for callback in callbacks:
        callback(event)
    if not event._ok and not hasattr(event, "_defused"):
        exc = type(event._value)(*event._value.args)
        exc.__cause__ = event._value
        raise exc


def _deadlock(env: simpy.Environment) -> NoReturn:
    raise SimulationDeadlock(
        f"simulation deadlock at t={env.now:.6f}s: no event is pending (at most "
        "reconnect retries that cannot succeed) and no timer is set, yet the main "
        "coroutine has not finished (a receive nobody will ever satisfy, without "
        "a timeout?)"
    )


def _report(loop: asyncio.AbstractEventLoop, handle: Any, exc: BaseException) -> None:
    """What ``asyncio.Handle._run`` does with an exception escaping a callback."""
    cb = format_helpers._format_callback_source(handle._callback, handle._args)
    context = {"message": f"Exception in callback {cb}", "exception": exc, "handle": handle}
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    loop.call_exception_handler(context)


def _forbidden(what: str) -> NoReturn:
    refuse(
        what,
        "it would use real time, real I/O or threads and make the run non-deterministic",
        "use transportkit sockets and asyncio tasks instead",
    )


class _VirtualSelector(selectors.BaseSelector):
    """A selector that never reports I/O; waiting in it advances virtual time."""

    def __init__(self, env: simpy.Environment, idle: IdleEvents) -> None:
        self._env = env
        self._map: dict[Any, selectors.SelectorKey] = {}
        self.ready: Sized = ()
        self.idle = idle

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._map[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._map.pop(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._map

    def close(self) -> None:
        self._map.clear()

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return []
        self.advance_to(math.inf if timeout is None else self._env._now + timeout)
        return []

    def advance_to(self, deadline: float) -> None:
        """Process SimPy events up to virtual time ``deadline`` (inclusive), stopping early
        when one makes asyncio work ready; otherwise leave the clock exactly at
        ``deadline``. With ``deadline=inf``, nothing pending (or only idle events) is a
        deadlock.
        """
        env = self._env
        # SimPy's ``peek``/``step`` inlined (same heap, same order, same clock), with a
        # fast path for the simulator's own :class:`SimCall` events.
        queue: list[Any] = env._queue
        ready = self.ready
        forever = deadline == math.inf
        idle = self.idle
        while queue:
            entry = queue[0]
            when = entry[0]
            if when > deadline or when == math.inf or (forever and len(queue) <= idle.count):
                break
            heappop(queue)
            env._now = when
            event: Any = entry[3]
            if type(event) is SimCall:
                event[0](*event[1])
            else:
                _process(event)
            if ready:
                return
        if forever:
            _deadlock(env)
        # Nothing is scheduled before the deadline: the clock jumps straight to it,
        # exactly (stepping a SimPy timeout would round ``now + (deadline - now)``).
        env._now = max(env._now, deadline)

    def advance_checked(self, deadline: float, check: Callable[[], None]) -> None:
        """:meth:`advance_to`, calling ``check`` after each SimPy event it processes."""
        env = self._env
        queue: list[Any] = env._queue
        ready = self.ready
        forever = deadline == math.inf
        idle = self.idle
        while queue:
            entry = queue[0]
            when = entry[0]
            if when > deadline or when == math.inf or (forever and len(queue) <= idle.count):
                break
            heappop(queue)
            env._now = when
            event: Any = entry[3]
            if type(event) is SimCall:
                event[0](*event[1])
            else:
                _process(event)
            check()
            if ready:
                return
        if forever:
            _deadlock(env)
        env._now = max(env._now, deadline)


def _no_check() -> None:
    pass


class _Exploring:
    """What the loop needs beyond FIFO: the scheduler, its record, the trace, the
    invariants, and the state of a switch away from the fast path.
    """

    __slots__ = ("in_general", "invariants", "schedule", "scheduler", "switching", "trace")

    def __init__(
        self,
        scheduler: Scheduler | None,
        schedule: Schedule | None,
        trace: Trace | None,
        invariants: Invariants | None,
    ) -> None:
        self.scheduler = scheduler
        self.schedule = schedule
        self.trace = trace
        self.invariants = invariants
        self.switching = False
        self.in_general = False


class SimEventLoop(asyncio.SelectorEventLoop):
    """The event loop of a :class:`~transportkit.sim_backend.Simulation`.

    ``time()`` is the SimPy clock in seconds. Its methods that would use threads, real
    I/O or subprocesses (``run_in_executor``, ``add_reader``, ``add_writer``,
    ``getaddrinfo``, ``create_connection``, ``create_server``, ``subprocess_exec``,
    ``subprocess_shell``) raise :class:`~transportkit.SimulationError`; the calls that
    bypass the loop (``time.sleep``, threads, blocking primitives, real sockets,
    processes) are refused by :meth:`Simulation.run
    <transportkit.sim_backend.Simulation.run>`. ``idle`` counts the pending events that
    cannot make progress alone (none if not given).

    ``scheduler`` orders the callbacks of each iteration (None: FIFO, asyncio's order,
    on a fast path that counts nothing); its non-FIFO choices go to ``schedule`` and,
    as ``schedule`` events, to ``trace``. ``invariants`` are checked after every step
    (each callback run and each SimPy event processed) while any is registered.
    """

    def __init__(
        self,
        env: simpy.Environment,
        idle: IdleEvents | None = None,
        *,
        scheduler: Scheduler | None = None,
        schedule: Schedule | None = None,
        trace: Trace | None = None,
        invariants: Invariants | None = None,
    ) -> None:
        selector = _VirtualSelector(env, IdleEvents() if idle is None else idle)
        super().__init__(selector)
        self._env = env
        self._clock_resolution = 1e-9
        self._sim_selector = selector
        selector.ready = self._ready  # type: ignore[attr-defined]
        if scheduler is not None and schedule is None:
            from transportkit.sim_backend._sched import Schedule  # noqa: PLC0415

            schedule = Schedule(scheduler.name, 0)
        # One attribute: a bigger instance dict would slow the lookups of every
        # call_soon (measured: +0.6% instructions per message in FIFO mode).
        self._exploring = _Exploring(scheduler, schedule, trace, invariants)

    def _needs_general(self) -> bool:
        invariants = self._exploring.invariants
        return self._exploring.scheduler is not None or (
            invariants is not None and invariants.active
        )

    def refresh(self) -> None:
        """Take note that invariants were registered: from the next iteration on, the
        loop leaves its FIFO fast path to check them after every step.
        """
        this: Any = self
        if this.is_running() and not self._exploring.in_general and not this._stopping:
            self._exploring.switching = True
            this._stopping = True

    def stop(self) -> None:
        """:meth:`asyncio.BaseEventLoop.stop`."""
        self._exploring.switching = False
        super().stop()

    def time(self) -> float:
        """Virtual seconds since the start of the simulation."""
        return float(self._env._now)

    def set_debug(self, enabled: bool) -> None:
        """:meth:`asyncio.BaseEventLoop.set_debug`, and :meth:`get_debug` rebound to a C
        callable returning ``enabled``: every Future asks ``get_debug()`` when it is
        created (one per awaited receive), and this answers without a Python frame.
        """
        super().set_debug(enabled)
        self.get_debug = bool(enabled).__bool__  # type: ignore[method-assign]

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.Handle:
        """:meth:`asyncio.BaseEventLoop.call_soon` without its layers (outside debug mode).

        Every awaited future that completes comes through here (a Task's wake-up), so
        the handle is built in place: the same fields ``Handle.__init__`` sets.
        """
        this: Any = self
        if this._debug:
            return super().call_soon(callback, *args, context=context)
        if this._closed:
            raise RuntimeError("Event loop is closed")
        handle: Any = _new_handle(_Handle)
        handle._context = copy_context() if context is None else context
        handle._loop = self
        handle._callback = callback
        handle._args = args
        handle._cancelled = False
        handle._repr = None
        handle._source_traceback = None
        this._ready.append(handle)
        return handle  # type: ignore[no-any-return]

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        """:meth:`asyncio.BaseEventLoop.call_at`, the handle built in place (outside debug
        mode) and the heap keyed by :class:`_TimerKey`.
        """
        this: Any = self
        if when is None:
            raise TypeError("when cannot be None")
        if this._closed:
            raise RuntimeError("Event loop is closed")
        if this._debug:
            this._check_thread()
            this._check_callback(callback, "call_at")
            timer: Any = TimerHandle(when, callback, args, self, context)
            if timer._source_traceback:
                del timer._source_traceback[-1]
        else:
            timer = _new_handle(TimerHandle)
            timer._context = copy_context() if context is None else context
            timer._loop = self
            timer._callback = callback
            timer._args = args
            timer._cancelled = False
            timer._repr = None
            timer._source_traceback = None
            timer._when = when
        key = _TimerKey(when)
        key.handle = timer
        heappush(this._scheduled, key)
        timer._scheduled = True
        return timer  # type: ignore[no-any-return]

    def call_later(  # type: ignore[override]
        self, delay: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        """:meth:`asyncio.BaseEventLoop.call_later`: :meth:`call_at` ``time() + delay``
        (the same sum, so the same instant), without the two calls in between.
        """
        this: Any = self
        if delay is None:
            raise TypeError("delay must not be None")
        when = float(self._env._now) + delay
        if this._debug:
            timer: Any = self.call_at(when, callback, *args, context=context)
            if timer._source_traceback:
                del timer._source_traceback[-1]
            return timer  # type: ignore[no-any-return]
        if this._closed:
            raise RuntimeError("Event loop is closed")
        timer = _new_handle(TimerHandle)
        timer._context = copy_context() if context is None else context
        timer._loop = self
        timer._callback = callback
        timer._args = args
        timer._cancelled = False
        timer._repr = None
        timer._source_traceback = None
        timer._when = when
        key = _TimerKey(when)
        key.handle = timer
        heappush(this._scheduled, key)
        timer._scheduled = True
        return timer  # type: ignore[no-any-return]

    def create_future(self) -> asyncio.Future[Any]:
        """A future bound to this loop (asyncio's C ``Future``, without a Python layer).

        Not a ``functools.partial`` in the instance's dict: that saved a frame per call
        in isolation but cost about 2% more instructions per ``asyncio.sleep`` wake-up
        in a run (callgrind).
        """
        return _Future(loop=self)

    def _run_once(self) -> None:
        """Loop iterations until :meth:`stop`: :meth:`asyncio.BaseEventLoop._run_once`
        without I/O, repeated in place.

        Each iteration takes the same steps in the same order as asyncio's (drop
        cancelled timers, wait in the selector, make due timers ready, run what was
        ready), minus what a virtual selector never needs: no I/O events, and no select
        call when work is ready. ``run_forever`` calls ``_run_once`` until the loop is
        stopping; iterating here until then is the same thing without a call and its
        lookups per iteration (the wake-up of every awaited message). The wait is
        :meth:`_VirtualSelector.advance_to`, called directly instead of through
        ``select``.

        Debug mode takes the same path: what asyncio's debug ``_run_once`` adds is a
        warning for callbacks that take longer than ``slow_callback_duration`` by
        ``time()``, and virtual time never passes during a callback. (The timer heap
        holds :class:`_TimerKey` entries, which asyncio's own ``_run_once`` cannot read.)
        """
        this: Any = self  # asyncio internals (untyped)
        while True:
            if self._needs_general():
                self._exploring.in_general = True
                try:
                    self._run_scheduled()
                finally:
                    self._exploring.in_general = False
                return
            self._run_fifo()
            if not self._exploring.switching:
                return
            # refresh() stopped the fast path to switch to the checked one.
            self._exploring.switching = False
            this._stopping = False

    def _compact_timers(self) -> list[Any]:
        """Drop the cancelled timers from the heap, as asyncio's ``_run_once`` does when
        they are more than half of it (the rare branch, shared by both loop paths).
        """
        this: Any = self
        kept = []
        for key in this._scheduled:
            handle = key.handle
            if handle._cancelled:
                handle._scheduled = False
            else:
                kept.append(key)
        heapq.heapify(kept)
        this._scheduled = kept
        this._timer_cancelled_count = 0
        return kept

    def _run_fifo(self) -> None:
        this: Any = self
        env = self._env
        ready: deque[Any] = this._ready
        popleft = ready.popleft
        queue: list[Any] = env._queue
        idle = self._sim_selector.idle
        inf = math.inf
        while True:
            scheduled: list[Any] = this._scheduled
            sched_count = len(scheduled)
            if (
                sched_count > _MIN_SCHEDULED_TIMER_HANDLES
                and this._timer_cancelled_count / sched_count
                > _MIN_CANCELLED_TIMER_HANDLES_FRACTION
            ):
                scheduled = self._compact_timers()
            else:
                while scheduled and scheduled[0].handle._cancelled:
                    this._timer_cancelled_count -= 1
                    heappop(scheduled).handle._scheduled = False

            if not ready and not this._stopping:
                deadline = scheduled[0].handle._when if scheduled else inf
                if deadline > env._now:
                    # _VirtualSelector.advance_to inlined (a call per wait saved: every
                    # awaited message waits here): SimPy events up to ``deadline``, stopping
                    # at the first that makes asyncio work ready.
                    forever = deadline == inf
                    while queue:
                        entry = queue[0]
                        when = entry[0]
                        if when > deadline or when == inf or (forever and len(queue) <= idle.count):
                            break
                        heappop(queue)
                        env._now = when
                        event: Any = entry[3]
                        if type(event) is SimCall:
                            event[0](*event[1])
                        else:
                            _process(event)
                        if ready:
                            break
                    if not ready:
                        if forever:
                            _deadlock(env)
                        env._now = max(env._now, deadline)

            # A timer runs when the clock has reached its time, never before: asyncio's
            # clock-resolution slack would let a deadline loop spin at a fixed time.
            now = env._now
            while scheduled:
                if scheduled[0] > now:
                    break
                handle = heappop(scheduled).handle
                handle._scheduled = False
                ready.append(handle)

            for _ in range(len(ready)):
                handle = popleft()
                if handle._cancelled:
                    continue
                try:
                    handle._context.run(handle._callback, *handle._args)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:  # as asyncio.Handle._run reports it
                    _report(self, handle, exc)
            if this._stopping:
                return

    def _run_scheduled(self) -> None:
        """Loop iterations as in :meth:`_run_once`, with the scheduler picking the order
        of each iteration's callbacks, and invariants checked after every step.
        """
        this: Any = self
        env = self._env
        ready: deque[Any] = this._ready
        popleft = ready.popleft
        selector = self._sim_selector
        invariants = self._exploring.invariants
        check = invariants.check if invariants is not None else _no_check
        scheduler = self._exploring.scheduler
        choose = scheduler.choose if scheduler is not None else None
        # The random walk's choice, inlined (the same draw and arithmetic as
        # RandomScheduler.choose, without a call per step); subclasses keep theirs.
        draw = None
        if type(scheduler) is RandomScheduler:
            draw = scheduler._rng.random
        record = self._exploring.schedule
        if record is not None:
            record_steps = record._steps.append
            record_indices = record._indices.append
        trace = self._exploring.trace
        # Trace.add inlined, as its docstring allows: append to ``pending`` (always the
        # same list), flush once it holds TRACE_BATCH events.
        pending = trace.pending if trace is not None else None
        inf = math.inf
        while True:
            scheduled: list[Any] = this._scheduled
            sched_count = len(scheduled)
            if (
                sched_count > _MIN_SCHEDULED_TIMER_HANDLES
                and this._timer_cancelled_count / sched_count
                > _MIN_CANCELLED_TIMER_HANDLES_FRACTION
            ):
                scheduled = self._compact_timers()
            else:
                while scheduled and scheduled[0].handle._cancelled:
                    this._timer_cancelled_count -= 1
                    heappop(scheduled).handle._scheduled = False

            if not ready and not this._stopping:
                deadline = scheduled[0].handle._when if scheduled else inf
                if deadline > env._now:
                    if invariants is not None and (invariants._always or invariants._eventually):
                        selector.advance_checked(deadline, check)
                    else:
                        selector.advance_to(deadline)

            now = env._now
            while scheduled:
                if scheduled[0] > now:
                    break
                handle = heappop(scheduled).handle
                handle._scheduled = False
                ready.append(handle)

            # As many steps as callbacks were ready when the iteration started (as in
            # asyncio); ``old`` of those have not run yet, the front of ``ready``.
            left = old = len(ready)
            while left:
                left -= 1
                index = 0
                size = len(ready)
                if size > 1 and choose is not None:
                    assert record is not None
                    step = record.steps
                    if draw is not None:
                        weight = scheduler.fifo_weight  # type: ignore[union-attr]
                        x = draw() * (weight + size - 1) - weight
                        if x >= 0:
                            index = 1 + int(x)
                            if index >= size:
                                index = size - 1
                    else:
                        index = choose(step, ready, old)
                        if index and (type(index) is not int or not 0 < index < size):
                            self._exploring.scheduler = None  # FIFO for the clean-up that follows
                            raise SimulationError(
                                f"scheduler {scheduler!r} chose {index!r} at step {step}: "
                                f"an index from 0 to {size - 1} was expected"
                            )
                    if index:
                        record_steps(step)
                        record_indices(index)
                        if pending is not None:
                            pending.append((env._now, "schedule", "", f"{step} {index}"))
                            if len(pending) >= TRACE_BATCH:
                                trace.flush()  # type: ignore[union-attr]
                        handle = ready[index]
                        del ready[index]
                        if index < old:
                            old -= 1
                    else:
                        handle = popleft()
                        old -= 1
                    record.steps = step + 1
                else:
                    handle = popleft()
                    old -= 1
                    if record is not None:
                        record.steps += 1
                if handle._cancelled:
                    continue
                try:
                    handle._context.run(handle._callback, *handle._args)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:  # as asyncio.Handle._run reports it
                    _report(self, handle, exc)
                # Invariants.check does nothing while none is registered.
                if invariants is not None and (invariants._always or invariants._eventually):
                    check()
            if this._stopping:
                return

    def _write_to_self(self) -> None:
        """Nothing to wake: the virtual selector never waits in real time, so a callback
        added by ``call_soon_threadsafe`` (asyncio's own async-generator finalizer
        included) runs at the next iteration without a byte on the self-pipe, a real
        socket that a run's guards refuse to write to.
        """

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> NoReturn:  # type: ignore[override]
        """Refused: executors run on real threads."""
        _forbidden("run_in_executor (threads)")

    def add_reader(self, fd: Any, callback: Any, *args: Any) -> NoReturn:  # type: ignore[override]
        """Refused: real file descriptors do not exist in virtual time."""
        _forbidden("add_reader (real I/O, e.g. a pyzmq socket)")

    def add_writer(self, fd: Any, callback: Any, *args: Any) -> NoReturn:  # type: ignore[override]
        """Refused: real file descriptors do not exist in virtual time."""
        _forbidden("add_writer (real I/O)")

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused: name resolution is real I/O."""
        _forbidden("getaddrinfo (DNS)")

    async def create_connection(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused: real sockets."""
        _forbidden("create_connection (real sockets)")

    async def create_server(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused: real sockets."""
        _forbidden("create_server (real sockets)")

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused: subprocesses run in real time."""
        _forbidden("subprocess_exec")

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Refused: subprocesses run in real time."""
        _forbidden("subprocess_shell")
