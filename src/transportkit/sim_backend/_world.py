"""The simulated world: nodes, their faults and the run.

:class:`Simulation` is the facade: it owns the :class:`~transportkit.sim_backend._topology.Topology`
(links and their faults) and the :class:`~transportkit.sim_backend._wire.Wire` (endpoints,
connections, transmission, heartbeats), and delegates to them. Runtime imports go one
way: ``_world`` imports ``_sockets`` and ``_wire``, which import ``_pipes``; ``_wire``
also imports ``_topology`` and ``_loop``. The layers are checked by
``tests/sim_backend/test_sim_module_graph.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Coroutine, Generator
from functools import partial
from typing import Any, TypeVar

import simpy

from transportkit._endpoint import Endpoint
from transportkit._errors import ClosedError, OptionError, Timeout
from transportkit._kinds import SocketKind
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._socket import Socket
from transportkit._timeouts import wait_for
from transportkit.security import AuthPolicy
from transportkit.sim_backend._auth import SimAuthenticator
from transportkit.sim_backend._guards import RunGuard
from transportkit.sim_backend._guards import current as guards_current
from transportkit.sim_backend._invariants import Invariants
from transportkit.sim_backend._latency import Constant, LatencyModel
from transportkit.sim_backend._loop import IdleEvents, SimEventLoop, schedule_call
from transportkit.sim_backend._pipes import Connection, Item, Peer
from transportkit.sim_backend._run import (
    FailureTracker,
    TaskFailure,
    WorldLoop,
    WorldTask,
    allow_failure,
    call_in_thread,
)
from transportkit.sim_backend._sched import FifoScheduler, Schedule, Scheduler, make_scheduler
from transportkit.sim_backend._sockets import SOCKET_CLASSES, SimSocket
from transportkit.sim_backend._topology import Link, Topology
from transportkit.sim_backend._trace import Trace
from transportkit.sim_backend._wire import Wire
from transportkit.sim_backend.connections import ConnectionLog

__all__ = ["Link", "Node", "Simulation"]

T = TypeVar("T")
_current_node: contextvars.ContextVar[Node | None] = contextvars.ContextVar(
    "transportkit_sim_node", default=None
)


class Node(Network):
    """One simulated process: a :class:`~transportkit.Network` whose sockets live in it.

    Tasks started with :meth:`spawn` (and the tasks they create) belong to the node and
    are cancelled when it crashes or the simulation is closed; its sockets vanish with
    their queues.
    """

    def __init__(
        self, sim: Simulation, name: str, main: Callable[[Node], Awaitable[Any]] | None
    ) -> None:
        self.sim = sim
        self._name = name
        self.main = main
        self.alive = True
        self.main_started = False
        self.crashes = 0
        self._closed = False
        self.sockets: dict[SimSocket, None] = {}
        self.tasks: dict[asyncio.Task[Any], None] = {}
        self._counter = itertools.count()
        self.authenticator: SimAuthenticator | None = None
        """The node's authenticator (its ZAP handler) while one was started; see
        :meth:`start_authenticator`."""

    @property
    def name(self) -> str:
        return self._name

    def _open(self, kind: SocketKind, options: SocketOptions) -> SimSocket:
        if not self.alive:
            raise ClosedError(f"node {self._name!r} is down (crashed)")
        if self._closed:
            raise ClosedError(f"network of node {self._name!r} is closed")
        sock = SOCKET_CLASSES[kind](self, options, next(self._counter))
        self.sockets[sock] = None
        return sock

    def start_authenticator(self, policy: AuthPolicy | None = None) -> SimAuthenticator:
        """Start this node's authenticator (its ZAP handler, RFC 27) with ``policy``.

        From now on every CURVE server socket of the node (``curve_server=True``) lets
        in only the clients ``policy`` allows, decided once per connection when the
        client's INITIATE arrives (see :mod:`transportkit.sim_backend._auth` for the
        rules): by the client's public key, its ZAP domain, and its address, which on
        the sim is the name of the client's node over tcp (``allow_ips=["trader"]``)
        and the empty string over ipc. The decision is :meth:`AuthPolicy.decide
        <transportkit.security.AuthPolicy.decide>`, as on the zmq backend. A refused
        client never delivers a message: both monitors report
        ``HANDSHAKE_FAILED_AUTH`` (value 400; 500 if the policy's ``decide`` raised)
        and, as libzmq 4.3.5 does (measured: no retry in 800 refused CURVE clients),
        the client does not retry that connection (its session ends, and what it
        queued is dropped); ``disconnect()`` and ``connect()`` again, after an
        :meth:`~transportkit.security.Authenticator.update`, try afresh. (On real
        sockets a loaded client can see the server's close before the refusal and
        retry instead: :meth:`ZmqNetwork.start_authenticator
        <transportkit.zmq_backend.ZmqNetwork.start_authenticator>`; the sim does not
        model that race.) Handshakes decided before the authenticator runs were not
        authenticated. A plaintext socket of the node with a ``zap_domain`` asks it
        too, about every peer (the domain and address rules only: there is no key),
        as libzmq's NULL mechanism does. Refusals are logged at WARNING
        (rate-limited by virtual time), the start, updates and stop at INFO (logger
        ``transportkit.sim_backend._auth``).

        It stops when closed, when the node's network is closed (:meth:`close`) and
        when the node crashes; a restarted node has none until it starts one again.

        Args:
            policy: Who gets in; default ``AuthPolicy()``: any client that completes
                the CURVE handshake, from any address, for every domain.

        Raises:
            ClosedError: The node is down or its network is closed.
            OptionError: An authenticator of this node is running, or ``policy`` is
                not an AuthPolicy.
        """
        if not self.alive:
            raise ClosedError(f"node {self._name!r} is down (crashed)")
        if self._closed:
            raise ClosedError(f"network of node {self._name!r} is closed")
        running = self.authenticator
        if running is not None and not running.closed:
            raise OptionError(
                f"node {self._name!r} already has a running authenticator: update its "
                "policy with update(), or close it first"
            )
        sim = self.sim
        self.authenticator = SimAuthenticator(
            self._name,
            AuthPolicy() if policy is None else policy,
            sim.trace,
            lambda: float(sim.env._now),
        )
        return self.authenticator

    def forget(self, sock: SimSocket) -> None:
        """Drop a destroyed socket from the node's books (a lingering one stays until then)."""
        self.sockets.pop(sock, None)

    def open_sockets(self) -> tuple[Socket, ...]:
        """The node's sockets that are not closed, oldest first (a lingering one is closed)."""
        return tuple(sock for sock in tuple(self.sockets) if not sock.closed)

    def time_ns(self) -> int:
        """Virtual time in nanoseconds."""
        return round(self.sim.env.now * 1e9)

    def close(self) -> None:
        """Close every socket of the node (each with its linger)."""
        self._closed = True
        for sock in list(self.sockets):
            sock.close()
        if self.authenticator is not None:
            self.authenticator.close()

    def spawn(
        self,
        coro: Coroutine[Any, Any, T],
        *,
        name: str | None = None,
        may_fail: bool = False,
    ) -> asyncio.Task[T]:
        """Start ``coro`` as a task of this node (cancelled if the node crashes).

        The task lives until it ends, the node crashes or the simulation is closed,
        across calls of ``run``, ``run_for`` and ``run_until``; called between those
        calls, it starts at the next one.

        Args:
            coro: The coroutine to run.
            name: The task's name (in :class:`~transportkit.TaskFailed` and traces).
            may_fail: If True, an exception that ends the task unretrieved is recorded
                in :attr:`Simulation.task_failures` (and traced) instead of failing the
                run with :class:`~transportkit.TaskFailed`.

        Raises:
            ClosedError: The node is down (crashed).
            RuntimeError: The simulation is closed.
        """
        if not self.alive:
            coro.close()
            raise ClosedError(f"node {self._name!r} is down (crashed)")
        if self.sim.closed:
            coro.close()
            raise RuntimeError("Node.spawn: the simulation is closed")
        loop = self.sim._world_loop()
        ctx = contextvars.copy_context()
        ctx.run(_current_node.set, self)
        task = loop.create_task(coro, name=name, context=ctx)
        if may_fail:
            allow_failure(task)
        return task

    def __repr__(self) -> str:
        state = "up" if self.alive else "down"
        return f"<Node {self._name} {state} sockets={len(self.sockets)}>"


class Simulation:
    """A deterministic, virtual-time model of a ZeroMQ deployment.

    Args:
        seed: Seeds the run's two RNGs: ``rng`` (latency samples, tie-breaking and every
            other choice of the model) and ``global_rng``, which the global ``random``
            functions, ``random.SystemRandom``, ``secrets``, ``os.urandom`` and so
            ``uuid.uuid4`` draw from inside a run (apart, so that code drawing random
            numbers does not shift the model's draws); a scheduler other than FIFO
            derives a third RNG of its own from it.
        latency: Default one-way latency of links between nodes (and between sockets of
            one node over ipc/tcp); inproc has no delay, and follows libzmq's inproc
            pipes (no reconnect after the binder closes, ``immediate`` ignored, the
            connecter's ``conflate``: see :mod:`transportkit.sim_backend`).
        record_trace: Keep every trace event (the hash is always kept).
        shuffle_ties: Order simultaneous events (deliveries on different pipes,
            connection changes, faults) by the seed instead of by the order they were
            scheduled, to explore other interleavings. Per-pipe FIFO still holds; the
            run is still a pure function of the seed.
        scheduler: The order in which the asyncio callbacks ready at the same step of
            the event loop run (tasks resuming): ``"fifo"`` (asyncio's own order, the
            default: runs, trace hashes and golden files as before), ``"random"`` (a
            random walk: each choice uniform, from an RNG derived from ``seed`` but
            separate from :attr:`rng`), ``"pct"`` (probabilistic concurrency testing,
            :class:`~transportkit.sim_backend.PCTScheduler` with its defaults), or a
            :class:`~transportkit.sim_backend.Scheduler` object (such as a
            :class:`~transportkit.sim_backend.ReplayScheduler` replaying
            :attr:`schedule`). Only callbacks are reordered, never SimPy events, so
            per-pipe FIFO and multipart atomicity hold in every mode. Non-FIFO
            choices are recorded in :attr:`schedule` and in the trace (so in its hash).
        kernel_buffers: Model the kernel's socket buffers on ipc and tcp connections
            and libzmq's pipe notifications (the default; docs/simulator.md, "Kernel
            socket buffers"). False gives every transport inproc's path capacity, exactly
            SNDHWM + RCVHWM messages, for tests about the HWMs alone.
        log_connections: Log every socket's monitor events (connects, accepts,
            disconnects, retries, failed handshakes) on
            ``transportkit.sim_backend.connections``, with the zmq backend's
            ``log_connections`` lines and levels, in virtual time, the same on every
            run of a seed (default False; see
            :mod:`transportkit.sim_backend.connections`). Opens no monitor and does
            not change the trace.

    Raises:
        OptionError: ``seed`` is not an int, or ``scheduler`` is not one of the above.

    One world from the first :meth:`run`, :meth:`run_for` or :meth:`run_until` to
    :meth:`close` (also ``with Simulation(...) as sim:``): tasks live across those calls.

    Example:
        >>> with Simulation(seed=1) as sim:  # doctest: +SKIP
        ...     exchange, trader = sim.node("exchange", main=feed), sim.node("trader")
        ...     result = sim.run(main(trader))
        ...     sim.run_for(10.0)  # the feed goes on
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        latency: LatencyModel | None = None,
        record_trace: bool = True,
        shuffle_ties: bool = False,
        scheduler: str | Scheduler = "fifo",
        kernel_buffers: bool = True,
        log_connections: bool = False,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise OptionError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
        self.seed = seed
        self.env = simpy.Environment()
        self.rng = random.Random(seed)
        self.global_rng = random.Random(f"transportkit.global_rng/{seed}")
        self.trace = Trace(record=record_trace)
        self.shuffle_ties = shuffle_ties
        self.default_latency = Constant(50e-6) if latency is None else latency
        self.nodes: dict[str, Node] = {}
        self.topology = Topology(self.default_latency, self.trace)
        self.links: dict[tuple[str, str], Link] = self.topology.links
        self.loop: SimEventLoop | None = None
        self._idle = IdleEvents()
        self.wire = Wire(
            self.env,
            self.rng,
            self.trace,
            self.topology,
            nodes=self.nodes,
            idle=self._idle,
            shuffle_ties=shuffle_ties,
        )
        self.wire.kernel_buffers = bool(kernel_buffers)
        self._tasks: dict[asyncio.Task[Any], None] = {}
        self._failures = FailureTracker(self.env, self.trace, seed)
        self._advancing = False
        self._closed = False
        self._message_ids = itertools.count(1)
        self.scheduler = make_scheduler(scheduler, seed)
        self.schedule = Schedule(self.scheduler.name, seed)
        """The record of this run's scheduling choices that differ from FIFO."""
        self._invariants = Invariants(lambda: float(self.env._now), seed, self.trace)
        if not isinstance(log_connections, bool):
            raise OptionError(f"log_connections must be a bool, got {log_connections!r}")
        self.connection_log: ConnectionLog | None = (
            ConnectionLog(lambda: float(self.env._now)) if log_connections else None
        )
        """The connection log while ``log_connections`` is on, else None."""

    # -- topology ---------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Virtual seconds since the start."""
        return float(self.env.now)

    def node(self, name: str, main: Callable[[Node], Awaitable[Any]] | None = None) -> Node:
        """The node called ``name``, created on first use.

        Args:
            name: Node name (also usable as a tcp host name).
            main: Optional ``async def main(node)``, started by the next call that
                advances the world (``run``, ``run_for``, ``run_until``) and again after
                every restart of the node; it lives until it returns, the node crashes
                or the simulation is closed.
        """
        node = self.nodes.get(name)
        if node is None:
            node = self.nodes[name] = Node(self, name, main)
            if main is not None and self.loop is not None:
                self._start_main(node)
        elif main is not None:
            raise ValueError(f"node {name!r} already exists")
        return node

    def link(self, src: str, dst: str) -> Link:
        """The one-way link from node ``src`` to node ``dst``, created on first use."""
        return self.topology.link(src, dst)

    def set_latency(self, a: str, b: str, model: LatencyModel, *, both_ways: bool = True) -> None:
        """Give the link ``a -> b`` (and ``b -> a``) a new latency model of its own.

        It is what the link keeps: a latency spike in progress on it ends (see
        :meth:`spike_latency`).
        """
        self.topology.set_latency(self.now, a, b, model, both_ways=both_ways)

    def spike_latency(self, a: str, b: str, model: LatencyModel, *, both_ways: bool = True) -> None:
        """Start (or change) a latency spike on the link ``a -> b`` (and ``b -> a``).

        Each direction remembers the latency it had before its first spike, and
        :meth:`end_latency_spike` gives it back; a ``SetLatency`` fault with a model
        calls this.
        """
        self.topology.spike_latency(self.now, a, b, model, both_ways=both_ways)

    def end_latency_spike(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """End the latency spike on the link ``a -> b`` (and ``b -> a``): each direction
        gets back the latency it had before its spike (its own, set by
        :meth:`set_latency` or a scenario's ``[[link]]``, or the simulation's default);
        a direction without a spike keeps its latency. ``SetLatency(a, b, None)`` calls
        this.
        """
        self.topology.end_latency_spike(self.now, a, b, both_ways=both_ways)

    # -- faults -----------------------------------------------------------------------

    def partition(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """Cut the link ``a -> b`` (and ``b -> a``): traffic waits, connects fail.

        Connections whose sockets use ZMTP heartbeats are dropped once the heartbeat
        timeout passes without traffic, as libzmq would.
        """
        self.topology.partition(
            self.now, a, b, both_ways=both_ways, on_cut=self.wire.watch_heartbeats
        )

    def repair(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """Heal the link(s) cut by :meth:`partition`; held traffic is delivered in order."""
        self.topology.repair(self.now, a, b, both_ways=both_ways)

    def hold(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """Hold the traffic on link ``a -> b`` (and ``b -> a``) until :meth:`release`.

        Unlike a partition, connections stay up and new ones can be made (the
        plaintext handshake is not modelled as traffic; a CURVE handshake's commands
        wait for the release like messages), and heartbeats do not expire: it is a
        stall.
        """
        self.topology.hold(self.now, a, b, both_ways=both_ways)

    def release(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """Deliver, in order, what :meth:`hold` kept back, and let traffic through."""
        self.topology.release(self.now, a, b, both_ways=both_ways)

    def crash(self, name: str) -> None:
        """Kill node ``name``: cancel its tasks, destroy its sockets and their queues.

        Peers notice after one link delay (the kernel's reset), as with a real crash;
        across a partitioned link the news waits for the repair (or a heartbeat timeout).
        """
        node = self.nodes[name]
        if not node.alive:
            return
        node.alive = False
        node.crashes += 1
        self.trace.add(self.now, "fault", name, "crash")
        for task in list(node.tasks):
            task.cancel()
        for sock in list(node.sockets):
            sock.abort()
            self.wire.destroy(sock, "crash")
        if node.authenticator is not None:
            node.authenticator.close("crash")

    def restart(self, name: str) -> None:
        """Bring node ``name`` back, empty; its ``main`` (if any) starts again."""
        node = self.nodes[name]
        if node.alive:
            return
        node.alive = True
        node.main_started = False
        node._closed = False
        self.trace.add(self.now, "fault", name, "restart")
        if node.main is not None and self.loop is not None:
            self._start_main(node)

    def drop_connection(self, a: str, b: str, *, discard_queues: bool = False) -> int:
        """Break every live connection between nodes ``a`` and ``b``; return how many.

        Both sides lose what was in flight and the binding side loses its queue to the
        peer; the connecting side reconnects. By default it keeps its queue across the
        reconnect, as libzmq does; with ``discard_queues`` it loses
        it too (both pipes destroyed), counted as drops. A
        connecting socket whose ``reconnect_ivl`` is 0 or -1 does not reconnect: its
        pipe ends and its queue is lost, counted as drops, as libzmq does.
        """
        return self.wire.drop_connection(a, b, discard_queues=discard_queues)

    # -- running ----------------------------------------------------------------------

    def run(self, main: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Advance the world until ``main`` completes, and return its result.

        Nodes' ``main`` functions start first (once per life of a node: at the first
        call that advances the world, and after each restart). When ``main`` returns,
        the world stops there; every other task (node mains, spawned tasks) stays as it
        is, alive, and goes on at the next :meth:`run`, :meth:`run_for` or
        :meth:`run_until`, until :meth:`close` cancels it. Virtual time, sockets and
        queues carry over too. A simulation that is garbage collected without
        :meth:`close` frees its tasks silently (no "Task was destroyed" or "unclosed
        event loop" warnings), but their ``finally`` blocks only run on ``close``: a
        ``finally`` that awaits may make Python report "coroutine ignored
        GeneratorExit" when it frees the task before the simulation (the collector's
        order within a cycle is not promised). Close simulations (``with``).

        A task that ends with an exception nobody retrieved (awaiting the task,
        gathering it, ``result()``/``exception()``) by the time the loop has nothing
        left ready at that virtual instant fails the call with
        :class:`~transportkit.TaskFailed` (``__cause__`` is the task's exception),
        raised at that instant; so does an exception escaping a loop callback.
        Cancellations (a crash, ``close``) are not failures. Declare a task that may
        fail with ``node.spawn(coro, may_fail=True)`` or
        :func:`~transportkit.sim_backend.allow_failure`: its failure is recorded in
        :attr:`task_failures` (and traced as ``task-failed``) instead. After a
        failure the world stays where it stopped; :meth:`close` ends it. ``main``'s own
        exception is not a task failure: it is raised as it is.

        While it runs, the calls that would leave virtual time (``time.sleep``, starting a
        thread or a process, blocking waits on threading primitives and queues, real
        network I/O: the list is in :mod:`transportkit.sim_backend`) raise
        :class:`~transportkit.SimulationError` in the thread running the simulation;
        other threads are not affected, and the originals are back when the call ends,
        however it ends. In that thread too, ``time.time``/``monotonic``/
        ``perf_counter`` read virtual time and the global ``random`` functions,
        ``os.urandom`` and ``uuid.uuid4`` draw from :attr:`global_rng` (the list is in
        :mod:`transportkit.sim_backend`). Between calls nothing is guarded.

        Called from a thread whose event loop is running (an ``async def`` test under
        pytest-asyncio or anyio, or inside ``asyncio.run``), the world is advanced on
        a dedicated thread while the caller's thread, and so its loop, waits blocked;
        the guards then protect that thread. Tasks of the caller's loop do not run
        meanwhile, so ``main`` must not wait for them.

        Args:
            main: The coroutine to run to completion.
            timeout: Virtual seconds after which ``main`` is cancelled and
                :class:`~transportkit.Timeout` raised (None: no limit).

        Raises:
            RuntimeError: The simulation is closed, already advancing (in this thread
                or another), or called from a task of a simulation (runs do not nest).
            Timeout: ``timeout`` virtual seconds passed before ``main`` finished.
            TaskFailed: A task's exception went unhandled, as above.
            SimulationDeadlock: Nothing can ever happen again but ``main`` still waits.
            SimulationError: A call was refused, as above. If the code caught that error,
                or it ended a task nobody awaited, the run still fails: with a
                SimulationError whose cause is the first refusal.
        """

        def advance(loop: SimEventLoop, tracker: FailureTracker) -> T:
            task = loop.create_task(self._bounded(main, timeout), name="Simulation.run")
            tracker.exempt.add(task)
            try:
                return loop.run_until_complete(task)
            finally:
                self.trace.add(self.now, "run-end", "", "")

        try:
            return self._call(advance)
        except BaseException:
            if inspect.iscoroutine(main) and inspect.getcoroutinestate(main) == "CORO_CREATED":
                main.close()  # never started (a closed or busy simulation): no warning
            raise

    def run_for(self, seconds: float) -> None:
        """Advance the world by ``seconds`` of virtual time, then stop it there.

        The same as :meth:`run_until` ``(now + seconds)``.

        Raises:
            ValueError: ``seconds`` is negative, infinite or not a number.
            RuntimeError, TaskFailed, SimulationError: As :meth:`run`.
        """
        if not (isinstance(seconds, int | float) and 0 <= seconds < math.inf):
            raise ValueError(f"run_for needs a finite duration >= 0 s, got {seconds!r}")
        self.run_until(self.now + seconds)

    def run_until(self, time: float) -> None:
        """Advance the world to virtual time ``time`` (absolute seconds), then stop it.

        Everything scheduled before ``time`` happens; of what is due at ``time`` itself
        some may happen now and the rest at the next call. The clock is then exactly
        ``time``. Tasks stay alive between calls, as after :meth:`run`; a run that
        cannot progress just waits (there is no deadlock before a fixed time).

        Raises:
            ValueError: ``time`` is before :attr:`now`, infinite or not a number.
            RuntimeError, TaskFailed, SimulationError: As :meth:`run`.
        """
        if not (isinstance(time, int | float) and self.now <= time < math.inf):
            raise ValueError(f"run_until needs a finite time >= now ({self.now} s), got {time!r}")

        def advance(loop: SimEventLoop, tracker: FailureTracker) -> None:
            stop = loop.create_future()
            timer = loop.call_at(time, stop.set_result, None)
            try:
                loop.run_until_complete(stop)
            finally:
                timer.cancel()

        self._call(advance)

    @property
    def task_failures(self) -> list[TaskFailure]:
        """Every unhandled task failure so far, allowed or not, in order."""
        return self._failures.failures

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """End the world: cancel every task left (in creation order) and wait for them,
        then close the event loop. Idempotent; the simulation cannot advance again.

        Sockets are closed by their tasks' ``with`` blocks as they are cancelled; the
        trace, the nodes and :attr:`now` stay readable. Also ``with Simulation(...) as
        sim:``.

        Raises:
            RuntimeError: The simulation is advancing (called from one of its tasks).
            TaskFailed: A task raised something else than the cancellation while it was
                being cancelled (an error in its ``finally`` or ``except`` block).
        """
        if self._closed:
            return
        if self._advancing:
            raise RuntimeError("Simulation.close cannot be called while it is advancing")
        if self.loop is None:
            self._closed = True
            return

        def finish(loop: SimEventLoop, tracker: FailureTracker) -> None:
            # In creation order: asyncio.all_tasks() is a set, ordered by memory address,
            # and the order of cancellation is visible (sockets close in that order).
            pending = [t for t in self._tasks if not t.done()]
            owners = {t: n.name for n in self.nodes.values() for t in n.tasks}
            for task in pending:
                task.cancel()
            if pending:
                outcomes = loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                for task, outcome in zip(pending, outcomes, strict=True):
                    if isinstance(outcome, Exception):  # not the CancelledError asked for
                        tracker.failed(owners.get(task), task.get_name(), outcome)
            loop.run_until_complete(loop.shutdown_asyncgens())
            if self.connection_log is not None:
                self.connection_log.flush()

        try:
            self._call(finish, closing=True)
        finally:
            self._abandon()

    def __enter__(self) -> Simulation:
        return self

    def __del__(self) -> None:
        # Garbage collected without close(): end the tasks' coroutines here, in creation
        # order, rather than let Python close them one by one as it frees them (an
        # ``await`` in a ``finally`` block would then print "coroutine ignored
        # GeneratorExit"). Nothing runs on the loop any more. A simulation whose
        # __init__ raised (a bad argument) has none of this.
        if getattr(self, "_closed", True) or getattr(self, "loop", None) is None:
            return
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):  # a finalizer: nowhere to report to
                task.get_coro().close()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(
        self, advance: Callable[[SimEventLoop, FailureTracker], T], *, closing: bool = False
    ) -> T:
        """Advance the world with ``advance(loop, tracker)``, in this thread or, if an
        event loop is running in it, on a dedicated thread.
        """
        if self._closed:
            raise RuntimeError("the simulation is closed")
        if self._advancing:
            raise RuntimeError("Simulation.run is not reentrant (the simulation is advancing)")
        running = asyncio._get_running_loop()
        if running is None:
            return self._advance(advance, closing)
        if isinstance(running, SimEventLoop) or guards_current() is not None:
            raise RuntimeError(
                "a simulation cannot be advanced from a task of a simulation (runs do "
                "not nest): run simulations one after another"
            )
        return call_in_thread(partial(self._advance, advance, closing))

    def _advance(self, advance: Callable[[SimEventLoop, FailureTracker], T], closing: bool) -> T:
        tracker = self._failures
        with RunGuard(clock=lambda: float(self.env._now), rng=self.global_rng) as guard:
            self._advancing = True
            try:
                try:
                    loop = self._world_loop()
                    if not closing:
                        for node in self.nodes.values():
                            if node.main is not None and node.alive and not node.main_started:
                                self._start_main(node)
                    result = advance(loop, tracker)
                    tracker.check()  # failures of the last instant, if the loop stopped first
                except Exception:
                    tracker.check()  # an unhandled failure is the cause of what followed
                    raise
                except (KeyboardInterrupt, SystemExit):
                    # KeyboardInterrupt or SystemExit went through the loop: the tasks
                    # it crossed are broken (awaiting one raises it again), so the
                    # world ends here, without running anything more.
                    self._abandon()
                    raise
                finally:
                    self._advancing = False
            except Exception as exc:
                guard.check(exc)
                raise
            guard.check(None)
            return result

    def _abandon(self) -> None:
        self._closed = True
        loop, self.loop = self.loop, None
        self._tasks.clear()
        if loop is not None:
            loop.close()

    def _world_loop(self) -> SimEventLoop:
        """The world's event loop, made at the first call that advances it."""
        loop = self.loop
        if loop is None:
            fifo = type(self.scheduler) is FifoScheduler
            loop = WorldLoop(
                self.env,
                idle=self._idle,
                scheduler=None if fifo else self.scheduler,
                schedule=self.schedule,
                trace=self.trace,
                invariants=self._invariants,
            )
            loop.tracker = self._failures
            loop.set_task_factory(self._task_factory)
            loop.set_exception_handler(self._failures.on_loop_error)
            self.loop = loop
        return loop

    async def _bounded(self, main: Coroutine[Any, Any, T], timeout: float | None) -> T:
        if timeout is None:
            return await main
        try:
            return await wait_for(main, timeout)
        except TimeoutError as exc:
            raise Timeout(f"simulation main did not finish within {timeout} virtual s") from exc

    def _task_factory(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        *,
        context: contextvars.Context | None = None,
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        """Make every task of the world: remember it in creation order, give it to the
        node whose context created it (so a crash of that node cancels it), and watch
        how it ends (an unhandled exception fails the run).
        """
        task: WorldTask[Any] = WorldTask(coro, loop=loop, context=context, **kwargs)
        task._log_destroy_pending = False  # type: ignore[attr-defined]  # close() ends it
        tasks = self._tasks
        tasks[task] = None
        task.watch(tasks.pop)
        node = (context or contextvars.copy_context()).get(_current_node)
        if node is not None:
            node.tasks[task] = None
            task.watch(node.tasks.pop)
        task.watch(partial(self._failures.on_done, None if node is None else node.name))
        return task

    def _start_main(self, node: Node) -> None:
        assert node.main is not None
        node.main_started = True
        coro = node.main(node)
        if not inspect.iscoroutine(coro):
            coro = _as_coroutine(coro)
        node.spawn(coro, name=f"{node.name}.main")

    # -- scheduling and invariants ----------------------------------------------------

    def always(self, predicate: Callable[[], object], *, name: str | None = None) -> None:
        """Check that ``predicate()`` is true after every step from now on.

        A step is one asyncio callback the event loop runs (a task resuming) or one
        SimPy event it processes (a delivery, a connection change, a fault); the first
        check is after the next step. While no invariant is registered nothing is
        checked; each registered one costs a call per step.

        Args:
            predicate: Called with no argument; a false result fails the run.
            name: Names the invariant in the error (default: the predicate's name).

        Raises:
            OptionError: ``predicate`` is not callable.
            InvariantViolation: Out of :meth:`run`, at the first step after which the
                predicate is false or raises (then its ``__cause__``); it names the
                invariant, the virtual time and the seed and carries the last trace
                events. The run stops there (its tasks are cancelled).
        """
        self._invariants.add_always(predicate, name or _name_of(predicate))
        if self.loop is not None:
            self.loop.refresh()

    def eventually(
        self, predicate: Callable[[], object], *, within: float, name: str | None = None
    ) -> None:
        """Check that ``predicate()`` becomes true after some step within ``within``
        virtual seconds from now (checked after every step until it has held once).

        Args:
            predicate: Called with no argument.
            within: The bound, in virtual seconds (finite, >= 0).
            name: Names the invariant in the error (default: the predicate's name).

        Raises:
            OptionError: ``predicate`` is not callable, or ``within`` is not a finite
                number of seconds >= 0.
            InvariantViolation: Out of :meth:`run`, at the deadline if the predicate
                never held (or when it raises). A run that ends before the deadline
                leaves the invariant pending for the next run of the simulation.
        """
        deadline = self._invariants.add_eventually(predicate, within, name or _name_of(predicate))
        # A step at the deadline, so that a violation is reported exactly then.
        schedule_call(self.env, deadline, _nothing, ())
        if self.loop is not None:
            self.loop.refresh()

    # -- endpoints and connections (used by sockets) ----------------------------------

    def next_message_id(self) -> int:
        """A fresh message id for traces."""
        return next(self._message_ids)

    def bind(self, sock: SimSocket, ep: Endpoint) -> str:
        """Register ``sock`` at ``ep``; return the resolved endpoint."""
        return self.wire.bind(sock, ep)

    def unbind_all(self, sock: SimSocket) -> None:
        """Release every endpoint ``sock`` is bound to."""
        self.wire.unbind_all(sock)

    def connect(self, sock: SimSocket, ep: Endpoint) -> None:
        """Start connecting ``sock`` to ``ep`` (completes later, retries on failure)."""
        self.wire.connect(sock, ep)

    def disconnect(self, sock: SimSocket, endpoint: str) -> None:
        """Undo ``connect(endpoint)``: the connection and its queue go."""
        self.wire.disconnect(sock, endpoint)

    def break_connection(self, conn: Connection) -> None:
        """Tear down a live connection with libzmq's asymmetric queue semantics."""
        self.wire.break_connection(conn)

    def close_socket(self, sock: SimSocket) -> None:
        """Close ``sock``: unbind now, keep sending queued messages for ``linger`` ms."""
        self.wire.close_socket(sock)

    # -- moving messages (the wire's; sockets call it directly) -----------------------

    def offer(self, peer: Peer, item: Item) -> None:
        """Hand a message to ``peer``: onto the wire if there is room, else queue it."""
        self.wire.offer(peer, item)

    def pump(self, peer: Peer) -> None:
        """Move queued messages of ``peer`` onto the wire while the receiver has room."""
        self.wire.pump(peer)

    def send_subscription(self, peer: Peer, prefix: bytes, *, add: bool) -> None:
        """Carry a (un)subscription from a SUB's ``peer`` to the publisher's end."""
        self.wire.send_subscription(peer, prefix, add=add)

    def _later(self, delay: float, callback: Callable[[], object], *, idle: bool = False) -> None:
        """Call ``callback`` after ``delay`` virtual seconds (the wire's timers)."""
        self.wire._later(delay, callback, idle=idle)


def _name_of(predicate: Callable[[], object]) -> str:
    return str(getattr(predicate, "__qualname__", None) or repr(predicate))


def _nothing() -> None:
    pass


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable
