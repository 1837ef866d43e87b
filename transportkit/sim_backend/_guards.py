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
when pyzmq is imported); nothing is added to a delivery. A guard costs a thread-id
lookup per call of the guarded function, in any thread, while a run is under way.

Later interception of clock and randomness reads (``time.time``, ``random``, ...) joins
here: a target whose replacement answers from the innermost run of the thread
(:func:`current`) instead of refusing.
"""

from __future__ import annotations

import _thread
import functools
import importlib
import os
import queue
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from transportkit._errors import SimulationError

__all__ = ["RunGuard", "current", "refuse"]

_get_ident = _thread.get_ident
_runs: dict[int, list[RunGuard]] = {}
"""Thread id -> the runs under way in that thread, innermost last. Guards check
membership only: a thread with no run passes straight through."""
_lock = _thread.allocate_lock()
_users = 0
"""Runs under way in the whole process: the guards are installed while it is not 0."""
_MISSING = object()
_MARK = "__transportkit_guarded__"


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

    Attributes:
        refused: The errors raised for refused calls during the run, in order.
    """

    __slots__ = ("_ident", "refused")

    def __init__(self) -> None:
        self.refused: list[SimulationError] = []
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
