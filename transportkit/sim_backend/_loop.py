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
import math
import selectors
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from transportkit._errors import SimulationDeadlock, SimulationError

if TYPE_CHECKING:
    import simpy

__all__ = ["SimEventLoop"]


def _forbidden(what: str) -> NoReturn:
    raise SimulationError(
        f"{what} is not available inside a simulation: it would use real time, real I/O "
        "or threads and make the run non-deterministic; use transportkit sockets instead"
    )


class _VirtualSelector(selectors.BaseSelector):
    """A selector that never reports I/O; waiting in it advances virtual time."""

    def __init__(self, env: simpy.Environment, idle: Callable[[], bool]) -> None:
        self._env = env
        self._map: dict[Any, selectors.SelectorKey] = {}
        self.ready_probe: Callable[[], bool] = lambda: False
        self.idle_probe = idle

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
        env = self._env
        now = env.now
        deadline = math.inf if timeout is None else now + timeout
        ready = self.ready_probe
        step = env.step
        peek = env.peek
        forever = deadline == math.inf
        idle = self.idle_probe
        while True:
            when = peek()
            if when > deadline or when == math.inf or (forever and idle()):
                break
            step()
            if ready():
                return []
        if deadline == math.inf:
            raise SimulationDeadlock(
                f"simulation deadlock at t={env.now:.6f}s: no event is pending (at most "
                "reconnect retries that cannot succeed) and no timer is set, yet the main "
                "coroutine has not finished (a receive nobody will ever satisfy, without "
                "a timeout?)"
            )
        if env.now < deadline:
            env.timeout(deadline - env.now)
            step()
        return []


class SimEventLoop(asyncio.SelectorEventLoop):
    """The event loop of a :class:`~transportkit.sim_backend.Simulation`.

    ``time()`` is the SimPy clock in seconds. Threads, executors, subprocesses and real
    sockets raise :class:`~transportkit.SimulationError`.
    """

    def __init__(self, env: simpy.Environment, idle: Callable[[], bool] = lambda: False) -> None:
        selector = _VirtualSelector(env, idle)
        super().__init__(selector)
        self._env = env
        self._clock_resolution = 1e-9
        ready = self._ready  # type: ignore[attr-defined]
        selector.ready_probe = ready.__len__

    def time(self) -> float:
        """Virtual seconds since the start of the simulation."""
        return float(self._env.now)

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
