"""What a simulation run refuses: the ways out of virtual time, guarded in one place.

While :meth:`Simulation.run <transportkit.sim_backend.Simulation.run>` runs, the
functions and methods listed in :data:`_TARGETS` are replaced by guards. In the thread
running the simulation a guard raises :class:`~transportkit.SimulationError` for a call
that would wait in real time, start a thread or a process, or do real network I/O; in
every other thread, and in the simulation's thread for calls that cannot wait (a zero
timeout, an item already in the queue, an event already set), it calls the original.
The originals are put back when the last run in the process ends, however it ends.

The refusal is also recorded on the run (:class:`RunGuard`), so that a refused call
fails the run even when the code that made it caught the error, or when it was lost in
a task nobody awaits.

What cannot be guarded this way (C code, which does not look the Python attributes up):
``threading.Lock``/``RLock`` acquisition, ``queue.SimpleQueue``, ``time.sleep``,
``os.system``, ``select.select`` and the other module functions when imported by name
before the run (``from time import sleep``), ``_posixsubprocess``, ``os.exec*`` and
``os.wait*``, reads and writes on ``ssl.SSLSocket`` and on plain files, pipes or the
terminal, work handed to a ``multiprocessing`` pool that existed before the run, and
pyzmq (or the zmq backend) imported for the first time inside a run.

Cost: installing and restoring is one ``setattr`` pair per target (about 20 us a run
when pyzmq is imported; the clocks and randomness below made it about 1.5 times that);
nothing is added to a delivery. A guard costs a thread-id lookup per call of the
guarded function, in any thread, while a run is under way.

Clocks and randomness are answered, not refused: in the thread running the simulation,
a guard answers from the innermost run of the thread (:func:`current`), and everywhere
else calls the original.

- ``time.monotonic``, ``time.perf_counter`` (and ``_ns``), and ``time.clock_gettime``
  (and ``_ns``) of ``CLOCK_MONOTONIC``, ``CLOCK_MONOTONIC_RAW`` and ``CLOCK_BOOTTIME``:
  virtual seconds since the simulation began, the event loop's ``loop.time()``.
- ``time.time`` (and ``_ns``), ``clock_gettime`` of ``CLOCK_REALTIME`` and
  ``CLOCK_TAI``: :data:`VIRTUAL_EPOCH` (2026-01-01T00:00:00Z) plus virtual time; so
  ``time.gmtime()``, ``localtime()``, ``ctime()``, ``asctime()`` and ``strftime(fmt)``
  without a time argument, which are guarded to use it, and ``logging``'s timestamps.
  ``logging``'s record factory is wrapped too: a record made in the simulation's thread
  also has ``sim_time`` (virtual seconds) and ``relativeCreated`` in virtual
  milliseconds (see :mod:`transportkit._log`).
  ``datetime.datetime.now()``, ``utcnow()`` and ``date.today()`` are C code that reads
  the system clock itself: they are not intercepted and give real time; write
  ``datetime.fromtimestamp(time.time(), timezone.utc)``.
- The global ``random`` functions (every module-level function bound to the hidden
  ``random._inst``: ``random()``, ``randint``, ``choice``, ``shuffle``, ``gauss``,
  ``seed``, ``getstate``, ...), ``random.SystemRandom``'s ``random``, ``getrandbits`` and
  ``randbytes`` (so every ``SystemRandom`` method and ``secrets``), ``os.urandom``,
  ``os.getrandom`` (so ``uuid.uuid4``): drawn from the run's seeded RNG (the
  simulation's :attr:`~transportkit.sim_backend.Simulation.global_rng`, separate from
  the one behind latencies, so that code drawing random numbers does not shift the
  network's draws). ``random.Random()`` made without a seed inside the run is seeded
  from it too (``Random.seed(None)``). Refusing them instead would make ordinary code
  (an order id from ``uuid4``, a jittered back-off) unusable in a simulation, and
  nothing drawn in a simulation protects anything real.
- ``uuid.uuid1`` is refused: it embeds the real clock (through C's libuuid) and this
  machine's network address, and keeps a process-wide last timestamp, so no seed can
  reproduce it.
- On Python 3.11 only, ``asyncio.wait_for`` and ``asyncio.gather`` schedule as they do
  on 3.12 and later (3.11's ``wait_for`` runs the awaitable in a new task; its
  ``gather`` wakes up through the loop for arguments already done, where 3.12 takes
  them at once), so that the same program gives the same trace on every interpreter.

Not intercepted: ``time.process_time`` and ``thread_time`` (CPU time, not a clock of
the world); a function imported by name before the run (``from time import monotonic``
keeps the original, as ``from time import sleep`` does); ``random.Random`` instances
seeded before the run (they are deterministic already); the order of sets of strings
(``PYTHONHASHSEED``). transportkit's own wall-time measures use
:mod:`transportkit._wallclock`.
"""

from __future__ import annotations

import _thread
import asyncio
import functools
import importlib
import os
import queue
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NoReturn

from transportkit._errors import SimulationError
from transportkit._timeouts import wait_for as _wait_for
from transportkit._wallclock import GUARD_MARK

__all__ = ["VIRTUAL_EPOCH", "RunGuard", "current", "refuse"]

VIRTUAL_EPOCH = 1_767_225_600
"""What ``time.time()`` reads at virtual time 0 inside a simulation: 2026-01-01T00:00:00Z,
in seconds since the Unix epoch."""
_EPOCH_NS = VIRTUAL_EPOCH * 1_000_000_000

_get_ident = _thread.get_ident
_runs: dict[int, list[RunGuard]] = {}
"""Thread id -> the runs under way in that thread, innermost last. Guards check
membership only: a thread with no run passes straight through."""
_lock = _thread.allocate_lock()
_users = 0
"""Runs under way in the whole process: the guards are installed while it is not 0."""
_MISSING = object()
_MARK = GUARD_MARK


def current() -> RunGuard | None:
    """The innermost run under way in the calling thread, or None."""
    runs = _runs.get(_get_ident())
    return runs[-1] if runs else None


def refuse(what: str, why: str, instead: str) -> NoReturn:
    """Raise :class:`~transportkit.SimulationError` for ``what``, and record it on the
    calling thread's innermost run (if any) so that the run fails with it.

    Raises:
        SimulationError: Always: ``"{what} is not available inside a simulation:
            {why}; {instead}"``.
    """
    error = SimulationError(f"{what} is not available inside a simulation: {why}; {instead}")
    run = current()
    if run is not None:
        run.refused.append(error)
    raise error


class RunGuard:
    """The guards of one simulation run, in the thread that runs it (a context manager).

    Entering installs the guards if no other run (in any thread) has them installed, and
    makes them active in the calling thread; leaving deactivates them in the thread and
    restores the originals when no run is left. Runs nest (an inner run's end leaves the
    outer's guards in force) and runs in several threads overlap.

    Args:
        clock: Virtual seconds since the simulation began, read by the guarded clocks
            (``time.monotonic()`` returns it, ``time.time()`` adds
            :data:`VIRTUAL_EPOCH`). None: the clocks read real time.
        rng: The RNG behind the guarded randomness (``random.random()``, ``os.urandom``,
            ``uuid.uuid4()``, ...). None: they use their usual sources.

    Attributes:
        refused: The errors raised for refused calls during the run, in order.
        clock: As given.
        rng: As given.
    """

    __slots__ = ("_ident", "clock", "refused", "rng")

    def __init__(
        self, clock: Callable[[], float] | None = None, rng: random.Random | None = None
    ) -> None:
        self.refused: list[SimulationError] = []
        self.clock = clock
        self.rng = rng
        self._ident = 0

    def __enter__(self) -> RunGuard:
        global _users  # noqa: PLW0603
        ident = _get_ident()
        with _lock:
            if _users == 0:
                _install()
            _users += 1
            self._ident = ident
            _runs.setdefault(ident, []).append(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _users  # noqa: PLW0603
        with _lock:
            runs = _runs[self._ident]
            runs.remove(self)
            if not runs:
                del _runs[self._ident]
            _users -= 1
            if _users == 0:
                _restore()

    def check(self, ended_with: BaseException | None) -> None:
        """Raise the run's error if a call was refused but the run ended without it.

        Args:
            ended_with: The exception the run is ending with, or None if it returned.

        Raises:
            SimulationError: A call was refused during the run and ``ended_with`` neither
                is nor carries one of those errors (as its ``__cause__``, ``raise ...
                from``, or in an exception group): the code caught it, or it ended a
                task nobody awaited. The first refusal is the cause.
        """
        if not self.refused or (ended_with is not None and _carries(ended_with, self.refused)):
            return
        first = self.refused[0]
        more = len(self.refused) - 1
        detail = f" (and {more} more refused call{'s' if more > 1 else ''})" if more else ""
        ended = (
            f"; the run then ended with {type(ended_with).__name__}: {ended_with}"
            if ended_with is not None
            else ""
        )
        raise SimulationError(
            f"the run made a refused call that was caught or lost in a task{detail}: {first}{ended}"
        ) from first


def _carries(exc: BaseException, errors: list[SimulationError]) -> bool:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if any(e is error for error in errors):
            return True
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        if e.__cause__ is not None:
            todo.append(e.__cause__)
    return False


# -- the guards ------------------------------------------------------------------------

_REAL_WAIT = "it would wait in real time while the virtual clock stands still"
_THREAD = "it runs code on another thread, outside the simulation's schedule"
_PROCESS = "it starts a real process, which runs outside the simulation in real time"
_REAL_IO = "it is real network I/O, outside the simulated network and its virtual time"
_USE_TASK = "run the work as a task instead: asyncio.create_task(...) or Node.spawn(...)"
_USE_NODE = "model the other process as a simulated node (Simulation.node)"
_USE_SOCKETS = "use a simulated node's sockets (node.requester(...), node.subscriber(...), ...)"


def _waits(timeout: Any) -> bool:
    """Whether a call with this timeout can block (None: forever; > 0: that long)."""
    try:
        return timeout is None or timeout > 0
    except TypeError:
        return False  # the original raises its own error for a bad timeout


def _wrap(original: Any, replacement: Callable[..., Any]) -> Callable[..., Any]:
    guarded = functools.wraps(original)(replacement)
    setattr(guarded, _MARK, original)
    return guarded


Factory = Callable[[Any], Callable[..., Any]]


def _always(what: str, why: str, instead: str) -> Factory:
    """Guards that refuse every call in a simulation's thread."""

    def make(original: Any) -> Callable[..., Any]:
        def guard(*args: Any, **kwargs: Any) -> Any:
            if _get_ident() in _runs:
                refuse(what, why, instead)
            return original(*args, **kwargs)

        return _wrap(original, guard)

    return make


def _when(what: str, why: str, instead: str, would_wait: Callable[..., bool]) -> Factory:
    """Guards that refuse a call in a simulation's thread if ``would_wait(*args,
    **kwargs)`` (called with the original's arguments) says it can block.
    """

    def make(original: Any) -> Callable[..., Any]:
        def guard(*args: Any, **kwargs: Any) -> Any:
            if _get_ident() in _runs and would_wait(*args, **kwargs):
                refuse(what, why, instead)
            return original(*args, **kwargs)

        return _wrap(original, guard)

    return make


def _sleep(original: Any) -> Callable[..., Any]:
    def sleep(secs: Any, /) -> None:
        if _get_ident() in _runs and secs is not None and _waits(secs):
            refuse(
                f"time.sleep({secs!r})",
                f"it would wait {secs!r} s of real time while the virtual clock stands still",
                "use `await asyncio.sleep(...)`, which waits in virtual time",
            )
        original(secs)

    return _wrap(original, sleep)


def _semaphore_acquire(original: Any) -> Callable[..., Any]:
    def acquire(self: Any, blocking: bool = True, timeout: float | None = None) -> bool:
        if blocking and _get_ident() in _runs and _waits(timeout):
            if original(self, False):
                return True
            refuse("threading.Semaphore.acquire", _REAL_WAIT, "use asyncio.Semaphore")
        return bool(original(self, blocking, timeout))

    return _wrap(original, acquire)


def _queue_get(original: Any) -> Callable[..., Any]:
    def get(self: Any, block: bool = True, timeout: float | None = None) -> Any:
        if block and _get_ident() in _runs and _waits(timeout):
            try:
                return original(self, False)
            except queue.Empty:
                pass
            refuse("queue.Queue.get on an empty queue", _REAL_WAIT, "use asyncio.Queue")
        return original(self, block, timeout)

    return _wrap(original, get)


def _queue_put(original: Any) -> Callable[..., Any]:
    def put(self: Any, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if block and _get_ident() in _runs and _waits(timeout):
            try:
                return original(self, item, False)  # type: ignore[no-any-return]
            except queue.Full:
                pass
            refuse("queue.Queue.put on a full queue", _REAL_WAIT, "use asyncio.Queue")
        return original(self, item, block, timeout)  # type: ignore[no-any-return]

    return _wrap(original, put)


def _join_waits(thread: Any, timeout: float | None = None) -> bool:
    return bool(thread.is_alive()) and _waits(timeout)


def _event_waits(event: Any, timeout: float | None = None) -> bool:
    return not event.is_set() and _waits(timeout)


def _condition_waits(condition: Any, timeout: float | None = None) -> bool:
    return _waits(timeout)


def _barrier_waits(barrier: Any, timeout: float | None = None) -> bool:
    return not barrier.broken and barrier.n_waiting + 1 < barrier.parties and _waits(timeout)


def _future_waits(future: Any, timeout: float | None = None) -> bool:
    return not future.done() and _waits(timeout)


def _popen_wait_waits(popen: Any, timeout: float | None = None) -> bool:
    return popen.poll() is None and _waits(timeout)


def _popen_communicate_waits(popen: Any, input: Any = None, timeout: float | None = None) -> bool:
    return popen.poll() is None and _waits(timeout)


def _select_waits(rlist: Any, wlist: Any, xlist: Any, timeout: float | None = None) -> bool:
    return _waits(timeout)


def _selector_waits(selector: Any, timeout: float | None = None) -> bool:
    return _waits(timeout)


def _socket_ops() -> list[tuple[str, str | None, str, Factory]]:
    ops = [
        "connect",
        "connect_ex",
        "accept",
        "recv",
        "recv_into",
        "recvfrom",
        "recvfrom_into",
        "recvmsg",
        "recvmsg_into",
        "send",
        "sendall",
        "sendto",
        "sendmsg",
        "sendfile",
    ]
    return [
        ("socket", "socket", op, _always(f"socket.socket.{op}", _REAL_IO, _USE_SOCKETS))
        for op in ops
    ]


def _dns_ops() -> list[tuple[str, str | None, str, Factory]]:
    instead = "simulated tcp endpoints name nodes (tcp://exchange:5555) and resolve nothing"
    ops = [
        "getaddrinfo",
        "gethostbyname",
        "gethostbyname_ex",
        "gethostbyaddr",
        "getnameinfo",
    ]
    return [("socket", None, op, _always(f"socket.{op}", _REAL_IO, instead)) for op in ops]


def _process_ops() -> list[tuple[str, str | None, str, Factory]]:
    ops = ["system", "fork", "forkpty", "posix_spawn", "posix_spawnp"]
    return [("os", None, op, _always(f"os.{op}", _PROCESS, _USE_NODE)) for op in ops]


def _selector_ops() -> list[tuple[str, str | None, str, Factory]]:
    names = ["SelectSelector", "PollSelector", "EpollSelector", "DevpollSelector", "KqueueSelector"]
    instead = "wait on a simulated socket: await sock.recv(timeout=...)"
    return [
        (
            "selectors",
            name,
            "select",
            _when(f"selectors.{name}.select", _REAL_WAIT, instead, _selector_waits),
        )
        for name in names
    ]


def _zmq_ops() -> list[tuple[str, str | None, str, Factory]]:
    def zmq_io(what: str) -> Factory:
        return _always(what, _REAL_IO, _USE_SOCKETS)

    def poll_waits(owner: Any, timeout: float | None = None, *args: Any, **kwargs: Any) -> bool:
        # libzmq's poll timeouts are milliseconds, None or negative for ever.
        return timeout is None or timeout != 0

    sugar = "zmq.sugar.socket"
    blocking = "transportkit.zmq_backend._blocking"
    asyncio_sockets = "transportkit.zmq_backend._sockets"
    return [
        *(
            (sugar, "Socket", op, zmq_io(f"zmq.Socket.{op}"))
            for op in ["send", "recv", "recv_into", "send_multipart", "recv_multipart"]
        ),
        (sugar, "Socket", "poll", _when("zmq.Socket.poll", _REAL_WAIT, _USE_SOCKETS, poll_waits)),
        (
            "zmq.sugar.poll",
            "Poller",
            "poll",
            _when("zmq.Poller.poll", _REAL_WAIT, _USE_SOCKETS, poll_waits),
        ),
        *(("zmq", None, op, zmq_io(f"zmq.{op}")) for op in ["proxy", "proxy_steerable", "device"]),
        *(
            (blocking, "BlockingSocket", op, zmq_io(f"BlockingSocket.{op} (zmq backend)"))
            for op in ["send", "try_send", "recv", "recv_buffers", "try_recv"]
        ),
        # Its asyncio sockets: an immediate send or receive goes through C (a wait would
        # reach the loop's add_reader).
        *(
            (asyncio_sockets, cls, op, zmq_io(f"{op} of a zmq backend socket"))
            for cls, op in [
                ("_Sending", "send"),
                ("_Sending", "try_send"),
                ("_Receiving", "recv"),
                ("_Receiving", "try_recv"),
                ("_Receiving", "poll"),
                ("ZmqMonitor", "recv"),
                ("ZmqMonitor", "try_recv"),
            ]
        ),
    ]


# -- clocks and randomness: answered from the run, not refused --------------------------


def _clock_of_thread() -> Callable[[], float] | None:
    """The virtual clock of the calling thread's innermost run (None: real time)."""
    runs = _runs.get(_get_ident())
    return runs[-1].clock if runs else None


def _rng_of_thread() -> random.Random | None:
    """The RNG of the calling thread's innermost run (None: the usual sources)."""
    runs = _runs.get(_get_ident())
    return runs[-1].rng if runs else None


def _virtual_seconds(epoch: float) -> Factory:
    """Clocks in seconds: ``epoch`` plus virtual time in a simulation's thread."""

    def make(original: Any) -> Callable[..., Any]:
        def clock() -> float:
            virtual = _clock_of_thread()
            if virtual is None:
                return original()  # type: ignore[no-any-return]
            return epoch + virtual()

        return _wrap(original, clock)

    return make


def _virtual_ns(epoch_ns: int) -> Factory:
    """Clocks in nanoseconds: ``epoch_ns`` plus virtual time in a simulation's thread."""

    def make(original: Any) -> Callable[..., Any]:
        def clock_ns() -> int:
            virtual = _clock_of_thread()
            if virtual is None:
                return original()  # type: ignore[no-any-return]
            return epoch_ns + round(virtual() * 1e9)

        return _wrap(original, clock_ns)

    return make


def _record_factory(original: Any) -> Callable[..., Any]:
    """``logging``'s record factory: in a simulation's thread a record also gets
    ``sim_time`` (virtual seconds) and a ``relativeCreated`` in virtual milliseconds;
    its ``created`` is virtual already (``time.time`` is guarded).
    """

    def factory(*args: Any, **kwargs: Any) -> Any:
        record = original(*args, **kwargs)
        virtual = _clock_of_thread()
        if virtual is not None:
            now = virtual()
            record.sim_time = now
            record.relativeCreated = now * 1e3
        return record

    setattr(factory, _MARK, original)  # not functools.wraps: the original is a class
    return factory


_MONOTONIC_CLOCKS = frozenset(
    getattr(time, name)
    for name in ("CLOCK_MONOTONIC", "CLOCK_MONOTONIC_RAW", "CLOCK_BOOTTIME")
    if hasattr(time, name)
)
_REALTIME_CLOCKS = frozenset(
    getattr(time, name) for name in ("CLOCK_REALTIME", "CLOCK_TAI") if hasattr(time, name)
)


def _clock_gettime(nanoseconds: bool) -> Factory:
    """``time.clock_gettime[_ns](clk_id)``: virtual for the monotonic and real-time
    clocks (CPU-time clocks stay real).
    """

    def make(original: Any) -> Callable[..., Any]:
        def clock_gettime(clk_id: int, /) -> float | int:
            virtual = _clock_of_thread()
            if virtual is None or (
                clk_id not in _MONOTONIC_CLOCKS and clk_id not in _REALTIME_CLOCKS
            ):
                return original(clk_id)  # type: ignore[no-any-return]
            seconds = virtual() + (VIRTUAL_EPOCH if clk_id in _REALTIME_CLOCKS else 0)
            return round(seconds * 1e9) if nanoseconds else seconds

        return _wrap(original, clock_gettime)

    return make


def _calendar(original: Any) -> Callable[..., Any]:
    """``time.gmtime``, ``localtime``, ``ctime``: without a time, the virtual ``time()``."""

    def calendar(secs: float | None = None, /) -> Any:
        virtual = _clock_of_thread()
        if secs is None and virtual is not None:
            secs = VIRTUAL_EPOCH + virtual()
        return original(secs)

    return _wrap(original, calendar)


def _formatted(original: Any) -> Callable[..., Any]:
    """``time.asctime(t)`` and ``strftime(format, t)``: without ``t``, the virtual
    local time.
    """
    takes_format = original.__name__ == "strftime"

    def formatted(*args: Any) -> Any:
        virtual = _clock_of_thread()
        if virtual is not None and len(args) == (1 if takes_format else 0):
            args = (*args, time.localtime(VIRTUAL_EPOCH + virtual()))
        return original(*args)

    return _wrap(original, formatted)


def _drawn(method: str) -> Factory:
    """A function of the global ``random`` (bound to ``random._inst``), ``os.urandom``
    and the like: ``rng.<method>(*args)`` in a simulation's thread.
    """

    def make(original: Any) -> Callable[..., Any]:
        def draw(*args: Any, **kwargs: Any) -> Any:
            rng = _rng_of_thread()
            if rng is None:
                return original(*args, **kwargs)
            return getattr(rng, method)(*args, **kwargs)

        return _wrap(original, draw)

    return make


def _drawn_method(method: str) -> Factory:
    """A method of ``random.SystemRandom``: ``rng.<method>(*args)`` in a simulation's
    thread, whatever the instance (its other methods all come through these).
    """

    def make(original: Any) -> Callable[..., Any]:
        def draw(self: Any, *args: Any, **kwargs: Any) -> Any:
            rng = _rng_of_thread()
            if rng is None:
                return original(self, *args, **kwargs)
            return getattr(rng, method)(*args, **kwargs)

        return _wrap(original, draw)

    return make


def _random_seed(original: Any) -> Callable[..., Any]:
    """``random.Random.seed``: with no seed (``Random()``, ``rng.seed()``), seeded from
    the run's RNG in a simulation's thread instead of from the operating system.
    """

    def seed(self: Any, a: Any = None, version: int = 2) -> None:
        if a is None:
            rng = _rng_of_thread()
            if rng is not None:
                a = rng.getrandbits(256)
        original(self, a, version)

    return _wrap(original, seed)


def _global_random_ops() -> list[tuple[str, str | None, str, Factory]]:
    """Every module-level function of ``random`` bound to its hidden instance."""
    hidden = getattr(random, "_inst", None)
    names = sorted(
        name
        for name, value in vars(random).items()
        if not name.startswith("_") and getattr(value, "__self__", None) is hidden
    )
    return [("random", None, name, _drawn(name)) for name in names]


def _system_random_ops() -> list[tuple[str, str | None, str, Factory]]:
    return [
        ("random", "SystemRandom", name, _drawn_method(name))
        for name in ("random", "getrandbits", "randbytes")
    ]


def _asyncio_311_ops() -> list[tuple[str, str | None, str, Factory]]:
    """On Python 3.11, ``asyncio.wait_for`` and ``gather`` as 3.12 schedules them."""
    if sys.version_info >= (3, 12):
        return []
    ops: list[tuple[str, str | None, str, Factory]] = []
    for module in ("asyncio", "asyncio.tasks"):
        ops.append((module, None, "wait_for", _wait_for_312))
        ops.append((module, None, "gather", _gather_312))
    return ops


def _wait_for_312(original: Any) -> Callable[..., Any]:
    def wait_for(fut: Any, timeout: float | None) -> Any:
        if _get_ident() in _runs:
            return _wait_for(fut, timeout)
        return original(fut, timeout)

    return _wrap(original, wait_for)


def _gather_312(original: Any) -> Callable[..., Any]:
    """3.11's ``gather`` schedules, through the loop, the bookkeeping of each argument
    already done; 3.12 does it at once, before returning (so a gather of finished tasks
    is finished when made). This runs 3.11's own bookkeeping callbacks at once instead,
    in the order it scheduled them, and leaves the rest of what it scheduled (the steps
    of the tasks it made) in the loop's queue, in order.
    """

    def gather(*aws: Any, return_exceptions: bool = False) -> Any:
        done = [aw for aw in aws if _is_done_future(aw)] if _get_ident() in _runs else []
        ready = getattr(done[0].get_loop(), "_ready", None) if done else None
        if type(ready) is not deque:
            return original(*aws, return_exceptions=return_exceptions)
        before = len(ready)
        outer = original(*aws, return_exceptions=return_exceptions)
        added = [ready.pop() for _ in range(len(ready) - before)]
        added.reverse()
        done_ids = {id(fut) for fut in done}
        now = [handle for handle in added if _gather_callback_of(handle, done_ids)]
        ready.extend(handle for handle in added if not _gather_callback_of(handle, done_ids))
        for handle in now:
            handle._context.run(handle._callback, *handle._args)
        return outer

    return _wrap(original, gather)


def _is_done_future(aw: Any) -> bool:
    return asyncio.isfuture(aw) and aw.done()


def _gather_callback_of(handle: Any, done_ids: set[int]) -> bool:
    callback = getattr(handle, "_callback", None)
    args: tuple[Any, ...] = getattr(handle, "_args", ())
    return (
        getattr(callback, "__qualname__", "") == "gather.<locals>._done_callback"
        and len(args) == 1
        and id(args[0]) in done_ids
    )


_NO_UUID1 = (
    "it embeds the real clock and this machine's network address and keeps a "
    "process-wide last timestamp, so no seed can reproduce it"
)


_ALWAYS_IMPORTED = frozenset(
    [
        "time",
        "threading",
        "_thread",
        "queue",
        "socket",
        "subprocess",
        "os",
        "select",
        "selectors",
        "concurrent.futures._base",
        "random",
        "secrets",
        "uuid",
        "asyncio",
        "asyncio.tasks",
        "logging",
    ]
)
"""Modules imported with this one: their targets are always guarded. The others (the
executors, multiprocessing, pyzmq and the zmq backend) are guarded only if imported when
a run starts: nothing made from them exists before. What the executors and
multiprocessing make during a run starts its threads or processes through the guards
here; pyzmq imported for the first time inside a run is not guarded."""

_TARGETS: list[tuple[str, str | None, str, Factory]] = [
    # (module, class in it or None for a module function, attribute, guard factory)
    ("time", None, "sleep", _sleep),
    ("time", None, "time", _virtual_seconds(VIRTUAL_EPOCH)),
    ("time", None, "monotonic", _virtual_seconds(0)),
    ("time", None, "perf_counter", _virtual_seconds(0)),
    ("time", None, "time_ns", _virtual_ns(_EPOCH_NS)),
    ("time", None, "monotonic_ns", _virtual_ns(0)),
    ("time", None, "perf_counter_ns", _virtual_ns(0)),
    ("time", None, "clock_gettime", _clock_gettime(nanoseconds=False)),
    ("time", None, "clock_gettime_ns", _clock_gettime(nanoseconds=True)),
    *(("time", None, name, _calendar) for name in ("gmtime", "localtime", "ctime")),
    ("time", None, "asctime", _formatted),
    ("time", None, "strftime", _formatted),
    ("logging", None, "_logRecordFactory", _record_factory),
    *_global_random_ops(),
    ("random", "Random", "seed", _random_seed),
    *_system_random_ops(),
    ("secrets", None, "randbits", _drawn("getrandbits")),
    ("os", None, "urandom", _drawn("randbytes")),
    ("os", None, "getrandom", _drawn("randbytes")),
    ("uuid", None, "uuid1", _always("uuid.uuid1", _NO_UUID1, "use uuid.uuid4()")),
    *_asyncio_311_ops(),
    ("threading", "Thread", "start", _always("threading.Thread.start", _THREAD, _USE_TASK)),
    (
        "threading",
        "Thread",
        "join",
        _when("threading.Thread.join", _REAL_WAIT, "await a task instead", _join_waits),
    ),
    ("_thread", None, "start_new_thread", _always("_thread.start_new_thread", _THREAD, _USE_TASK)),
    (
        "threading",
        "Event",
        "wait",
        _when("threading.Event.wait", _REAL_WAIT, "use asyncio.Event", _event_waits),
    ),
    (
        "threading",
        "Condition",
        "wait",
        _when("threading.Condition.wait", _REAL_WAIT, "use asyncio.Condition", _condition_waits),
    ),
    ("threading", "Semaphore", "acquire", _semaphore_acquire),
    ("threading", "Semaphore", "__enter__", _semaphore_acquire),
    (
        "threading",
        "Barrier",
        "wait",
        _when("threading.Barrier.wait", _REAL_WAIT, "use asyncio.Barrier", _barrier_waits),
    ),
    ("queue", "Queue", "get", _queue_get),
    ("queue", "Queue", "put", _queue_put),
    *(
        (
            "concurrent.futures._base",
            "Future",
            method,
            _when(
                f"concurrent.futures.Future.{method}",
                _REAL_WAIT,
                "await an asyncio future or task instead",
                _future_waits,
            ),
        )
        for method in ("result", "exception")
    ),
    (
        "concurrent.futures.thread",
        "ThreadPoolExecutor",
        "submit",
        _always("concurrent.futures.ThreadPoolExecutor.submit", _THREAD, _USE_TASK),
    ),
    (
        "concurrent.futures.process",
        "ProcessPoolExecutor",
        "submit",
        _always("concurrent.futures.ProcessPoolExecutor.submit", _PROCESS, _USE_NODE),
    ),
    (
        "multiprocessing.process",
        "BaseProcess",
        "start",
        _always("multiprocessing.Process.start", _PROCESS, _USE_NODE),
    ),
    ("subprocess", "Popen", "__init__", _always("subprocess.Popen", _PROCESS, _USE_NODE)),
    (
        "subprocess",
        "Popen",
        "wait",
        _when("subprocess.Popen.wait", _REAL_WAIT, _USE_NODE, _popen_wait_waits),
    ),
    (
        "subprocess",
        "Popen",
        "communicate",
        _when("subprocess.Popen.communicate", _REAL_WAIT, _USE_NODE, _popen_communicate_waits),
    ),
    *_process_ops(),
    (
        "socket",
        None,
        "create_connection",
        _always("socket.create_connection", _REAL_IO, _USE_SOCKETS),
    ),
    *_socket_ops(),
    *_dns_ops(),
    (
        "select",
        None,
        "select",
        _when(
            "select.select",
            _REAL_WAIT,
            "wait on a simulated socket: await sock.recv(timeout=...)",
            _select_waits,
        ),
    ),
    *_selector_ops(),
    *_zmq_ops(),
]


for _name in {module for module, _, _, _ in _TARGETS if module in _ALWAYS_IMPORTED}:
    importlib.import_module(_name)  # all but already imported by asyncio; cheap


_Patch = tuple[Any, Any, str, Any, Any]
"""(owner, its ``vars()`` (a live view), attribute, what the owner's own ``__dict__``
held there or _MISSING when it inherits the original, the guard)."""

_plan: list[_Patch] = []
"""The patches of the last install, reused while they still hold (the cheap path)."""
_plan_modules: tuple[bool, ...] = ()
_lazy_modules = sorted({module for module, _, _, _ in _TARGETS} - _ALWAYS_IMPORTED)
_installed: list[_Patch] = []
_made: dict[int, tuple[Any, Any]] = {}
"""Target index -> (original, guard): a guard is made once per original and reused."""


def _install() -> None:
    global _plan, _plan_modules, _installed  # noqa: PLW0603
    present = tuple(name in sys.modules for name in _lazy_modules)
    if present != _plan_modules:
        _plan, _plan_modules = _make_plan(), present
    _installed = _plan
    for owner, namespace, name, saved, guard in _plan:
        if namespace.get(name, _MISSING) is not saved:
            # Patched by someone else since the plan was made: undo, plan again.
            _restore()
            _plan = _installed = _make_plan()
            for owner, _, name, _, guard in _plan:  # noqa: PLW2901
                setattr(owner, name, guard)
            return
        setattr(owner, name, guard)


def _make_plan() -> list[_Patch]:
    plan: list[_Patch] = []
    for index, (module_name, class_name, name, factory) in enumerate(_TARGETS):
        module = sys.modules.get(module_name)
        if module is None:
            continue
        owner = module if class_name is None else getattr(module, class_name, None)
        if owner is None:
            continue
        original = getattr(owner, name, None)
        if original is None:
            continue
        original = getattr(original, _MARK, original)  # a guard left in place
        made = _made.get(index)
        if made is None or made[0] is not original:
            made = _made[index] = (original, factory(original))
        namespace = vars(owner)
        saved = namespace.get(name, _MISSING)
        if saved is made[1]:  # our guard, left in place: restore the original it guards
            inherited = class_name is not None and any(
                vars(base).get(name) is original for base in owner.__mro__[1:]
            )
            saved = _MISSING if inherited else original
        plan.append((owner, namespace, name, saved, made[1]))
    return plan


def _after_fork_in_child() -> None:
    """A forked child runs no simulation (the thread that ran one is not there): it
    starts with the originals, and a fresh lock (another thread may have held it).
    """
    global _lock, _users  # noqa: PLW0603
    _lock = _thread.allocate_lock()
    _runs.clear()
    _users = 0
    _restore()


def _restore() -> None:
    global _installed
    installed, _installed = _installed, []
    for owner, namespace, name, saved, guard in reversed(installed):
        if namespace.get(name) is not guard:
            continue  # patched over by someone else since, or not installed: theirs stays
        if saved is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, saved)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
