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
crashes close a network (see :class:`ZmqHarness`); a fault the proxy cannot realise is
refused with UnsupportedError. ``@sim_test(backends=("sim", "zmq"), faults=...)``
runs its zmq run on such a harness.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Final, TypeVar

from transportkit import _wallclock as wallclock
from transportkit._errors import ClosedError, OptionError, Timeout, UnsupportedError
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
from transportkit.testing._ports import free_tcp_endpoint
from transportkit.zmq_backend import ZmqNetwork

__all__ = [
    "BACKENDS",
    "FaultNotAppliedWarning",
    "Harness",
    "SimHarness",
    "ZmqHarness",
    "open_harness",
]

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
    def bind_endpoint(self, transport: str = "tcp") -> str:
        """A fresh endpoint to *bind*; connect to the string ``bind()`` returns.

        tcp gets a wildcard port on loopback (``tcp://127.0.0.1:*``: ``bind()`` picks
        a free port, so there is no race with other processes), which cannot itself be
        connected to; ipc a fresh path; inproc a fresh name. Use :meth:`endpoint` when
        the connecting side needs the address before (or without) the bind.

        Args:
            transport: ``"tcp"`` (default), ``"ipc"`` or ``"inproc"``.
        """

    @abc.abstractmethod
    def endpoint(self, transport: str = "tcp", *, network: str = "main") -> str:
        """A fresh, concrete endpoint that a socket of the network called ``network``
        can bind, and that the harness's networks can connect to as it is, before or
        after the bind.

        tcp: on the sim ``tcp://{network}:{port}`` (a port unique in this harness, on
        that node: any node can connect to it); on zmq ``tcp://127.0.0.1:{port}``, a
        port that was free a moment ago (another process could take it before the
        bind: rare, but :meth:`bind_endpoint` has no such race). ipc: a fresh path,
        reachable from every network. inproc: a fresh name, reachable from the same
        network only (as inproc reaches only its own process).

        Args:
            transport: ``"tcp"`` (default), ``"ipc"`` or ``"inproc"``.
            network: The network whose socket will bind it (default ``"main"``, as
                :meth:`network`'s). It matters on the sim only, where a tcp host is a
                node's name; binding it from another node raises EndpointError.
        """

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
            UnsupportedError: The backend cannot realise ``fault`` here (on zmq: a
                network fault on a harness made without ``faults=True``, a
                ``DropConnection(discard_queues=True)``, or a fault between two
                networks joined by a connection the fault proxy does not sit in).
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

    def bind_endpoint(self, transport: str = "tcp") -> str:
        n = self._unique()
        if transport == "tcp":
            return "tcp://127.0.0.1:*"
        if transport == "ipc":
            return f"ipc://@transportkit-sim-{n}"
        return f"{transport}://ep{n}"

    def endpoint(self, transport: str = "tcp", *, network: str = "main") -> str:
        if transport == "tcp":
            # Below the sim's wildcard ports (49152 up), so the two never meet.
            return f"tcp://{network}:{_FIRST_SIM_PORT + self._unique()}"
        return self.bind_endpoint(transport)

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


_FIRST_SIM_PORT: Final = 20000
"""The first tcp port :meth:`SimHarness.endpoint` gives (then 20001, ...)."""

_LOOPBACK_TCP = re.compile(r"^tcp://(?:127\.0\.0\.1|localhost):(\d+)$")
_BOUND_TCP = re.compile(r"^tcp://(?:127\.0\.0\.1|localhost|0\.0\.0\.0|\*):(\d+)$")


class FaultNotAppliedWarning(UserWarning):
    """A fault of a ``@sim_test`` zmq run reached no connection: no tcp connection
    between the two networks it names went through the fault proxy during the run
    (they never connected, or only within one network). Turn it into an error with
    ``-W error::transportkit.testing.FaultNotAppliedWarning``.
    """


def _pair(fault: Fault) -> frozenset[str] | None:
    """The two networks a network fault names (None for a crash or a restart)."""
    if isinstance(fault, Crash | Restart):
        return None
    a, b = getattr(fault, "a", None), getattr(fault, "b", None)
    return frozenset((a, b)) if isinstance(a, str) and isinstance(b, str) else None


class _ProxyRoutes:
    """One harness network's :class:`~transportkit.zmq_backend.EndpointMap`: records
    its tcp and ipc binds, routes its tcp connects to another network's port through
    the proxy, and notes the connects to another network that cannot be routed (ipc,
    or a tcp port bound only after the connect): faults between those two networks
    are refused (see :meth:`ZmqHarness.apply`).
    """

    def __init__(self, harness: ZmqHarness, name: str) -> None:
        self.harness = harness
        self.name = name

    def bound(self, endpoint: str) -> None:
        harness = self.harness
        match = _BOUND_TCP.match(endpoint)
        if match is not None:
            port = int(match.group(1))
            harness._owners[port] = self.name
            for src, early in harness._unowned.pop(port, []):
                if src != self.name:  # it connected before this bind: direct, unfaultable
                    harness._direct_connect(src, self.name, early)
        elif endpoint.startswith("ipc://"):
            harness._ipc_owners[endpoint] = self.name

    def connect(self, endpoint: str) -> str:
        harness = self.harness
        proxy = harness._proxy
        if proxy is None:
            return endpoint
        if endpoint.startswith("ipc://"):
            owner = harness._ipc_owners.get(endpoint)
            if owner is not None and owner != self.name:
                harness._direct_connect(self.name, owner, endpoint)
            return endpoint
        match = _LOOPBACK_TCP.match(endpoint)
        if match is None:
            return endpoint
        port = int(match.group(1))
        owner = harness._owners.get(port)
        if owner is None:
            harness._unowned.setdefault(port, []).append((self.name, endpoint))
            return endpoint
        if owner == self.name:
            return endpoint
        return proxy.route(self.name, owner, endpoint)


class ZmqHarness(Harness):
    """Runs checks on real pyzmq sockets over loopback, ipc and inproc.

    With ``faults=True``, every tcp connect from one of the harness's networks to a
    loopback port that another of its networks bound before (``bind()`` first, then
    connect: to what it returned, as :meth:`bind_endpoint`'s wildcard requires anyway,
    or to an :meth:`endpoint`, which could be connected before the bind but is
    faultable only after it) goes
    through a :class:`~transportkit.testing.FaultProxy`, so that
    :meth:`apply`/:meth:`schedule_faults` realise every network fault between the
    two networks (partitions, holds, dropped connections, latency; what each means
    at the TCP level, and what the proxy adds and cannot model, is in
    :mod:`transportkit.testing._faultproxy`). Connections within one network, over
    ipc or inproc, or to a port bound elsewhere are direct and cannot be faulted: a
    network fault between two networks that such a connection joins is refused with
    UnsupportedError (by :meth:`apply` and :meth:`schedule_faults`, and by the connect
    itself when a fault between the two was scheduled or applied before), never
    silently left undone; so is ``DropConnection(discard_queues=True)``, which the
    proxy cannot realise (it cannot reach into libzmq's queues).

    :class:`~transportkit.sim_backend.Crash` closes the network of that name (every
    socket: a task waiting on one gets ClosedError, where the sim cancels the node's
    tasks), and :meth:`network` then raises ClosedError for that name until a
    :class:`~transportkit.sim_backend.Restart`, after which it makes a new network
    (call it again: the old object stays closed).

    Args:
        faults: Route tcp between networks through a fault proxy (default False:
            direct connections, and network faults raise UnsupportedError).
        seed: Seeds the proxy's latency draws.
        log_connections: Make every network with ``ZmqNetwork(log_connections=True)``
            (default False): its sockets' connects, accepts, disconnects and handshake
            failures go to the ``transportkit.zmq_backend.connections`` logger.

    Raises:
        OptionError: ``log_connections`` is not a bool.
    """

    name = "zmq"
    settle = 0.2
    exact_drops = False
    virtual_time = False

    def __init__(
        self, *, faults: bool = False, seed: int = 0, log_connections: bool = False
    ) -> None:
        super().__init__()
        self._log_connections = _check_log_connections(log_connections)
        self._nets: dict[str, ZmqNetwork] = {}
        self._down: set[str] = set()
        self._owners: dict[int, str] = {}
        self._tmp = tempfile.mkdtemp(prefix="transportkit-")
        self._proxy = FaultProxy(seed=seed) if faults else None
        self._ipc_owners: dict[str, str] = {}
        self._unowned: dict[int, list[tuple[str, str]]] = {}
        self._direct: dict[frozenset[str], list[str]] = {}
        self._named: set[frozenset[str]] = set()
        self._pending: list[tuple[float, Fault]] = []
        self._wake: asyncio.Event | None = None
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
            net = self._nets[name] = ZmqNetwork(
                name=name, endpoint_map=routes, log_connections=self._log_connections
            )
        return net

    def bind_endpoint(self, transport: str = "tcp") -> str:
        n = self._unique()
        if transport == "tcp":
            return "tcp://127.0.0.1:*"
        if transport == "ipc":
            return f"ipc://{self._tmp}/ep{n}.ipc"
        return f"{transport}://ep{n}-{id(self)}"

    def endpoint(self, transport: str = "tcp", *, network: str = "main") -> str:
        if transport == "tcp":
            return free_tcp_endpoint("127.0.0.1")
        return self.bind_endpoint(transport)

    def apply(self, fault: Fault) -> str:
        """Apply ``fault`` now: a crash closes the network, a restart lets
        :meth:`network` make it again, network faults go to the proxy.

        Returns:
            What was done: ``"applied: ..."``, or the proxy's ``"not applicable on
            zmq: ..."`` when no tcp connection between the two networks went through
            it yet (the link's state is kept for later connections).

        Raises:
            UnsupportedError: A network fault, and the harness was made without
                ``faults=True``; or one the proxy cannot realise: a
                ``DropConnection(discard_queues=True)``, or a fault between two
                networks that a connection the proxy does not sit in joins (ipc, or
                tcp connected before the port was bound).
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
        proxy = self._check_network_fault(fault)
        pair = _pair(fault)
        if pair is not None:
            self._named.add(pair)
        return proxy.apply(fault)

    def _need_proxy(self, fault: Fault) -> FaultProxy:
        if self._proxy is None:
            raise UnsupportedError(
                f"{fault!r} needs the fault proxy on zmq: make the harness with "
                "faults=True (open_harness(backend, faults=True))"
            )
        return self._proxy

    def _check_network_fault(self, fault: Fault) -> FaultProxy:
        """The proxy, if it can realise ``fault`` (a network fault); else raise."""
        proxy = self._need_proxy(fault)
        if getattr(fault, "discard_queues", False):
            raise UnsupportedError(
                f"{fault!r} cannot be realised on zmq: the fault proxy resets the "
                "connections but cannot reach into libzmq's queues (the connecting side "
                "keeps its queue); use discard_queues=False, or the sim backend"
            )
        pair = _pair(fault)
        direct = self._direct.get(pair, []) if pair is not None else []
        if direct:
            raise UnsupportedError(self._unfaultable(fault, direct))
        return proxy

    @staticmethod
    def _unfaultable(fault: Fault, connects: list[str]) -> str:
        return (
            f"{fault!r} cannot be realised on zmq: the two networks are joined by a "
            f"connection the fault proxy does not sit in ({'; '.join(connects)}); the "
            "proxy faults only tcp connects made to a port another network bound "
            "before (bind first, connect to what bind() returned; ipc and inproc "
            "cannot be faulted)"
        )

    def _direct_connect(self, src: str, dst: str, endpoint: str) -> None:
        """Note a connection from network ``src`` to ``dst`` that bypasses the proxy;
        refuse it if a fault between the two was scheduled or applied already.
        """
        pair = frozenset((src, dst))
        what = f"{src} connected to {dst}'s {endpoint}"
        self._direct.setdefault(pair, []).append(what)
        named = pair in self._named or any(_pair(f) == pair for _, f in self._pending)
        if named:
            faults = [f for _, f in self._pending if _pair(f) == pair]
            shown = repr(faults[0]) if faults else f"a fault between {src} and {dst}"
            raise UnsupportedError(self._unfaultable_connect(shown, what))

    @staticmethod
    def _unfaultable_connect(fault: str, what: str) -> str:
        return (
            f"{what}, which the fault proxy cannot sit in (only tcp connects to a port "
            f"another network bound before go through it), but {fault} is to act "
            "between the two: use a tcp endpoint bound first (harness.bind_endpoint('tcp')), "
            "or run on the sim only"
        )

    def schedule_faults(self, schedule: Iterable[tuple[float, Fault]]) -> None:
        items = sorted_schedule(schedule)
        for _, fault in items:
            if not isinstance(fault, Crash | Restart):
                self._check_network_fault(fault)
        self._pending = sorted_schedule([*self._pending, *items])
        if self._wake is not None:
            self._wake.set()

    async def _apply_now(self, fault: Fault) -> str:
        return self.apply(fault)

    async def _drive(
        self,
        zero: float,
        apply: Callable[[Fault], Awaitable[str]] | None = None,
        *,
        strict: bool = False,
    ) -> None:
        """Apply each pending fault at ``zero + time`` (``wallclock.monotonic``), for
        ever (cancel it); faults scheduled meanwhile are picked up at once.

        Outcomes go to :attr:`outcomes`. A fault whose application raises is recorded
        as ``"failed: ..."``; with ``strict`` the error is raised, else the run goes on.
        """
        act = self._apply_now if apply is None else apply
        wake = self._wake = asyncio.Event()
        try:
            while True:
                wait = zero + self._pending[0][0] - wallclock.monotonic() if self._pending else None
                if wait is None or wait > 0:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), wait)
                    continue
                at, fault = self._pending.pop(0)
                try:
                    outcome = await act(fault)
                except Exception as exc:  # recorded; the check's own run goes on
                    self.outcomes.append((at, fault, f"failed: {type(exc).__name__}: {exc}"))
                    if strict:
                        raise
                    continue
                self.outcomes.append((at, fault, outcome))
                await asyncio.sleep(0)
        finally:
            self._wake = None

    def run(self, main: Coroutine[Any, Any, T], *, timeout: float = 10.0) -> T:
        if self._zero is None:
            self._zero = wallclock.monotonic()
        zero = self._zero

        async def bounded() -> T:
            faults = asyncio.get_running_loop().create_task(self._drive(zero))
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


def _check_log_connections(value: object) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"log_connections must be a bool, got {value!r}")
    return value


@contextmanager
def open_harness(
    backend: str, *, seed: int = 0, faults: bool = False, log_connections: bool = False
) -> Iterator[Harness]:
    """A harness for ``backend`` (``"sim"`` or ``"zmq"``), closed on exit.

    ``faults=True`` makes a zmq harness route tcp between its networks through a fault
    proxy (:class:`ZmqHarness`); the sim always realises every fault.
    ``log_connections=True`` (default False) turns on the connection log of every
    network: ``Simulation(log_connections=True)`` on the sim (virtual time; the trace
    is unchanged), ``ZmqNetwork(log_connections=True)`` on zmq; the records go to the
    ``transportkit.sim_backend.connections`` or ``transportkit.zmq_backend.connections``
    logger.

    Raises:
        ValueError: ``backend`` is not one of :data:`BACKENDS`.
        OptionError: ``log_connections`` is not a bool (before anything is made).
    """
    _check_log_connections(log_connections)
    harness: Harness
    if backend == "sim":
        harness = SimHarness(seed, log_connections=log_connections)
    elif backend == "zmq":
        harness = ZmqHarness(faults=faults, seed=seed, log_connections=log_connections)
    else:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    try:
        yield harness
    finally:
        harness.close()
