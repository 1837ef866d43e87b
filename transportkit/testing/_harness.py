"""Harnesses: one way to make networks, endpoints and runs on every backend.

A conformance check receives a :class:`Harness` and never knows which backend it is
on. :func:`open_harness` makes one by backend name; :data:`BACKENDS` lists the names.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import shutil
import tempfile
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar

from transportkit._errors import Timeout
from transportkit._network import Network
from transportkit.sim_backend import Simulation
from transportkit.zmq_backend import ZmqNetwork

__all__ = ["BACKENDS", "Harness", "SimHarness", "ZmqHarness", "open_harness"]

T = TypeVar("T")

BACKENDS: Final = ("sim", "zmq")
"""Backend names, in the order the pytest plugin parametrizes them."""


class Harness(abc.ABC):
    """Networks, fresh endpoints and a way to run a coroutine, for one backend.

    Attributes:
        name: ``"sim"`` or ``"zmq"``.
        settle: Seconds (virtual on the sim) that comfortably let connections and
            subscriptions establish on this backend.
        exact_drops: Whether sockets count their drops (``stats.dropped`` is an int).
        virtual_time: Whether time is simulated (so races have one certain outcome).
    """

    name: str
    settle: float
    exact_drops: bool
    virtual_time: bool

    def __init__(self) -> None:
        self._counter = itertools.count()

    @abc.abstractmethod
    def network(self, name: str = "main") -> Network:
        """The network called ``name``: a node on the sim, a context on zmq (inproc
        connects only sockets of one network, as it connects only one process's).
        """

    @abc.abstractmethod
    def endpoint(self, transport: str = "tcp") -> str:
        """A fresh endpoint to bind: use the string ``bind()`` returns to connect."""

    @abc.abstractmethod
    def run(self, main: Coroutine[Any, Any, T], *, timeout: float = 10.0) -> T:
        """Run ``main`` to completion; raise Timeout after ``timeout`` seconds."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release everything (sockets, contexts, temporary directories)."""

    def _unique(self) -> int:
        return next(self._counter)


class SimHarness(Harness):
    """Runs checks inside a :class:`~transportkit.sim_backend.Simulation`."""

    name = "sim"
    settle = 0.05
    exact_drops = True
    virtual_time = True

    def __init__(
        self, seed: int = 0, *, sim: Simulation | None = None, **simulation_options: Any
    ) -> None:
        """A harness on a new ``Simulation(seed, **simulation_options)``, or on ``sim``.

        Raises:
            ValueError: Both ``sim`` and options for a new simulation were given.
        """
        super().__init__()
        if sim is not None and simulation_options:
            raise ValueError("give either sim or options for a new Simulation, not both")
        self.sim = Simulation(seed, **simulation_options) if sim is None else sim

    def network(self, name: str = "main") -> Network:
        return self.sim.node(name)

    def endpoint(self, transport: str = "tcp") -> str:
        n = self._unique()
        if transport == "tcp":
            return "tcp://127.0.0.1:*"
        if transport == "ipc":
            return f"ipc://@transportkit-sim-{n}"
        return f"{transport}://ep{n}"

    def run(self, main: Coroutine[Any, Any, T], *, timeout: float = 10.0) -> T:
        return self.sim.run(main, timeout=timeout)

    def close(self) -> None:
        for node in list(self.sim.nodes.values()):
            node.close()
        self.sim.close()  # tasks left by the checks' runs are cancelled here


class ZmqHarness(Harness):
    """Runs checks on real pyzmq sockets over loopback, ipc and inproc."""

    name = "zmq"
    settle = 0.2
    exact_drops = False
    virtual_time = False

    def __init__(self) -> None:
        super().__init__()
        self._nets: dict[str, ZmqNetwork] = {}
        self._tmp = tempfile.mkdtemp(prefix="transportkit-")

    def network(self, name: str = "main") -> Network:
        """A network (its own ZeroMQ context, like a process) per name."""
        net = self._nets.get(name)
        if net is None:
            net = self._nets[name] = ZmqNetwork(name=name)
        return net

    def endpoint(self, transport: str = "tcp") -> str:
        n = self._unique()
        if transport == "tcp":
            return "tcp://127.0.0.1:*"
        if transport == "ipc":
            return f"ipc://{self._tmp}/ep{n}.ipc"
        return f"{transport}://ep{n}-{id(self)}"

    def run(self, main: Coroutine[Any, Any, T], *, timeout: float = 10.0) -> T:
        async def bounded() -> T:
            try:
                return await asyncio.wait_for(main, timeout)
            except TimeoutError as exc:
                raise Timeout(f"check did not finish within {timeout} s") from exc

        return run_in_own_loop(bounded())

    def close(self) -> None:
        for net in self._nets.values():
            net.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


def run_in_own_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` in a new event loop and return its result, leaving the thread's
    current event loop as it was.

    ``asyncio.run`` sets the current loop to None on the way out, which breaks an
    asyncio test plugin (pytest-asyncio) that set one for the session.
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


@contextmanager
def open_harness(backend: str, *, seed: int = 0) -> Iterator[Harness]:
    """A harness for ``backend`` (``"sim"`` or ``"zmq"``), closed on exit."""
    harness: Harness
    if backend == "sim":
        harness = SimHarness(seed)
    elif backend == "zmq":
        harness = ZmqHarness()
    else:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    try:
        yield harness
    finally:
        harness.close()
