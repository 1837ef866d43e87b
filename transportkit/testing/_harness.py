"""Harnesses: one way to make networks, endpoints, faults and runs on every backend.

A conformance check receives a :class:`Harness` and never knows which backend it is
on. :func:`open_harness` makes one by backend name; :data:`BACKENDS` lists the names.

A fault schedule written once runs on both: name the harness's networks as the nodes
the faults name, and give the schedule to :meth:`Harness.schedule_faults` (or apply a
fault now with :meth:`Harness.apply`)::

    with open_harness(backend, faults=True) as h:
        srv, cli = h.network("srv"), h.network("cli")
        h.schedule_faults([(0.3, Partition("cli", "srv")), (0.6, Repair("cli", "srv"))])
        h.run(main(srv, cli))

On the sim they are the simulation's own faults. On zmq, network faults act on a
:class:`~transportkit.testing.FaultProxy` that every tcp connection from one of the
harness's networks to a port another one bound goes through (``faults=True``), and
crashes close a network (see :class:`ZmqHarness`).
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import re
import shutil
import tempfile
from collections.abc import Coroutine, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar

from transportkit import _wallclock as wallclock
from transportkit._errors import ClosedError, Timeout, UnsupportedError
from transportkit._network import Network
from transportkit.sim_backend import (
    Crash,
    Fault,
    Restart,
    Simulation,
    apply_fault,
    schedule_faults,
)
from transportkit.sim_backend._faults import sorted_schedule
from transportkit.testing._faultproxy import FaultProxy
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

    @abc.abstractmethod
    def apply(self, fault: Fault) -> str:
        """Apply ``fault`` now (from inside a :meth:`run` or between runs); the
        networks it names are :meth:`network` names. Return what was done.

        Raises:
            UnsupportedError: The backend cannot realise ``fault`` here (a network
                fault on a zmq harness made without ``faults=True``).
        """

    @abc.abstractmethod
    def schedule_faults(self, schedule: Iterable[tuple[float, Fault]]) -> None:
        """Apply each fault of ``schedule`` at its time on the harness's clock.

        The clock: virtual time on the sim (0 when the simulation starts), seconds
        since the first :meth:`run` began on zmq. Faults fire while a :meth:`run`
        is in progress (virtual time only passes then); one whose time passed
        between runs fires at the start of the next.

        Raises:
            ValueError: A time is negative (or, on the sim, in the past).
            UnsupportedError: As for :meth:`apply`, checked before anything is
                scheduled.
        """

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

    def apply(self, fault: Fault) -> str:
        """Apply ``fault`` to the simulation now (:func:`~transportkit.sim_backend.apply_fault`)."""
        apply_fault(self.sim, fault)
        return "applied"

    def schedule_faults(self, schedule: Iterable[tuple[float, Fault]]) -> None:
        """:func:`~transportkit.sim_backend.schedule_faults` on the simulation
        (times are absolute virtual seconds).
        """
        schedule_faults(self.sim, schedule)


_LOOPBACK_TCP = re.compile(r"^tcp://(?:127\.0\.0\.1|localhost):(\d+)$")
_BOUND_TCP = re.compile(r"^tcp://(?:127\.0\.0\.1|localhost|0\.0\.0\.0|\*):(\d+)$")


class _ProxyRoutes:
    """One harness network's :class:`~transportkit.zmq_backend.EndpointMap`: records
    its tcp binds, and routes its connects to another network's port through the proxy.
    """

    def __init__(self, harness: ZmqHarness, name: str) -> None:
        self.harness = harness
        self.name = name

    def bound(self, endpoint: str) -> None:
        match = _BOUND_TCP.match(endpoint)
        if match is not None:
            self.harness._owners[int(match.group(1))] = self.name

    def connect(self, endpoint: str) -> str:
        match = _LOOPBACK_TCP.match(endpoint)
        proxy = self.harness._proxy
        if match is None or proxy is None:
            return endpoint
        owner = self.harness._owners.get(int(match.group(1)))
        if owner is None or owner == self.name:
            return endpoint
        return proxy.route(self.name, owner, endpoint)


class ZmqHarness(Harness):
    """Runs checks on real pyzmq sockets over loopback, ipc and inproc.

    With ``faults=True``, every tcp connect from one of the harness's networks to a
    loopback port that another of its networks bound before (``bind()`` first, then
    connect to what it returned, as the harness's endpoints require anyway) goes
    through a :class:`~transportkit.testing.FaultProxy`, so that
    :meth:`apply`/:meth:`schedule_faults` realise every network fault between the
    two networks (partitions, holds, dropped connections, latency; what each means
    at the TCP level, and what the proxy adds and cannot model, is in
    :mod:`transportkit.testing._faultproxy`). Connections within one network, over
    ipc or inproc, or to a port bound elsewhere are direct and cannot be faulted.

    :class:`~transportkit.sim_backend.Crash` closes the network of that name (every
    socket: a task waiting on one gets ClosedError, where the sim cancels the node's
    tasks), and :meth:`network` then raises ClosedError for that name until a
    :class:`~transportkit.sim_backend.Restart`, after which it makes a new network
    (call it again: the old object stays closed).

    Args:
        faults: Route tcp between networks through a fault proxy (default False:
            direct connections, and network faults raise UnsupportedError).
        seed: Seeds the proxy's latency draws.
    """

    name = "zmq"
    settle = 0.2
    exact_drops = False
    virtual_time = False

    def __init__(self, *, faults: bool = False, seed: int = 0) -> None:
        super().__init__()
        self._nets: dict[str, ZmqNetwork] = {}
        self._down: set[str] = set()
        self._owners: dict[int, str] = {}
        self._tmp = tempfile.mkdtemp(prefix="transportkit-")
        self._proxy = FaultProxy(seed=seed) if faults else None
        self._pending: list[tuple[float, Fault]] = []
        self._zero: float | None = None
        self.outcomes: list[tuple[float, Fault, str]] = []
        """``(time, fault, outcome)`` of every fault :meth:`schedule_faults` applied."""

    @property
    def proxy(self) -> FaultProxy | None:
        """The fault proxy (None unless made with ``faults=True``)."""
        return self._proxy

    def network(self, name: str = "main") -> Network:
        """A network (its own ZeroMQ context, like a process) per name.

        Raises:
            ClosedError: ``name`` was crashed (:meth:`apply` of a Crash) and not
                restarted.
        """
        if name in self._down:
            raise ClosedError(f"network {name!r} is down (crashed)")
        net = self._nets.get(name)
        if net is None:
            routes = _ProxyRoutes(self, name) if self._proxy is not None else None
            net = self._nets[name] = ZmqNetwork(name=name, endpoint_map=routes)
        return net

    def endpoint(self, transport: str = "tcp") -> str:
        n = self._unique()
        if transport == "tcp":
            return "tcp://127.0.0.1:*"
        if transport == "ipc":
            return f"ipc://{self._tmp}/ep{n}.ipc"
        return f"{transport}://ep{n}-{id(self)}"

    def apply(self, fault: Fault) -> str:
        """Apply ``fault`` now: a crash closes the network, a restart lets
        :meth:`network` make it again, network faults go to the proxy.

        Raises:
            UnsupportedError: A network fault, and the harness was made without
                ``faults=True``.
        """
        if isinstance(fault, Crash):
            net = self._nets.pop(fault.node, None)
            self._down.add(fault.node)
            if net is None:
                return "applied: no network of that name was open"
            net.close()
            return "applied: network closed (its sockets and their connections)"
        if isinstance(fault, Restart):
            self._down.discard(fault.node)
            return "applied: network(name) makes a new network"
        return self._need_proxy(fault).apply(fault)

    def _need_proxy(self, fault: Fault) -> FaultProxy:
        if self._proxy is None:
            raise UnsupportedError(
                f"{fault!r} needs the fault proxy on zmq: make the harness with "
                "faults=True (open_harness(backend, faults=True))"
            )
        return self._proxy

    def schedule_faults(self, schedule: Iterable[tuple[float, Fault]]) -> None:
        items = sorted_schedule(schedule)
        for _, fault in items:
            if not isinstance(fault, Crash | Restart):
                self._need_proxy(fault)
        self._pending = sorted_schedule([*self._pending, *items])

    async def _fire_pending(self, zero: float) -> None:
        while self._pending:
            at, fault = self._pending[0]
            wait = zero + at - wallclock.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._pending.pop(0)
            try:
                outcome = self.apply(fault)
            except Exception as exc:  # recorded; the check's own run goes on
                outcome = f"failed: {type(exc).__name__}: {exc}"
            self.outcomes.append((at, fault, outcome))
            await asyncio.sleep(0)

    def run(self, main: Coroutine[Any, Any, T], *, timeout: float = 10.0) -> T:
        if self._zero is None:
            self._zero = wallclock.monotonic()
        zero = self._zero

        async def bounded() -> T:
            faults = asyncio.get_running_loop().create_task(self._fire_pending(zero))
            try:
                return await asyncio.wait_for(main, timeout)
            except TimeoutError as exc:
                raise Timeout(f"check did not finish within {timeout} s") from exc
            finally:
                faults.cancel()
                await asyncio.gather(faults, return_exceptions=True)

        return run_in_own_loop(bounded())

    def close(self) -> None:
        try:
            for net in self._nets.values():
                net.close()
        finally:
            if self._proxy is not None:
                self._proxy.close()
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
def open_harness(backend: str, *, seed: int = 0, faults: bool = False) -> Iterator[Harness]:
    """A harness for ``backend`` (``"sim"`` or ``"zmq"``), closed on exit.

    ``faults=True`` makes a zmq harness route tcp between its networks through a fault
    proxy (:class:`ZmqHarness`); the sim always realises every fault.
    """
    harness: Harness
    if backend == "sim":
        harness = SimHarness(seed)
    elif backend == "zmq":
        harness = ZmqHarness(faults=faults, seed=seed)
    else:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    try:
        yield harness
    finally:
        harness.close()
