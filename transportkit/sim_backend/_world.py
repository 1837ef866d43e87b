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
import contextvars
import itertools
import random
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar

import simpy

from transportkit._endpoint import Endpoint
from transportkit._errors import ClosedError, OptionError, Timeout
from transportkit._kinds import SocketKind
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._timeouts import wait_for
from transportkit.sim_backend._guards import RunGuard
from transportkit.sim_backend._invariants import Invariants
from transportkit.sim_backend._latency import Constant, LatencyModel
from transportkit.sim_backend._loop import IdleEvents, SimEventLoop, schedule_call
from transportkit.sim_backend._pipes import Connection, Item, Peer
from transportkit.sim_backend._sched import FifoScheduler, Schedule, Scheduler, make_scheduler
from transportkit.sim_backend._sockets import SOCKET_CLASSES, SimSocket
from transportkit.sim_backend._topology import Link, Topology
from transportkit.sim_backend._trace import Trace
from transportkit.sim_backend._wire import Wire

__all__ = ["Link", "Node", "Simulation"]

T = TypeVar("T")
_current_node: contextvars.ContextVar[Node | None] = contextvars.ContextVar(
    "transportkit_sim_node", default=None
)


class Node(Network):
    """One simulated process: a :class:`~transportkit.Network` whose sockets live in it.

    Tasks started with :meth:`spawn` (and the tasks they create) belong to the node and
    are cancelled when it crashes; its sockets vanish with their queues.
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

    def forget(self, sock: SimSocket) -> None:
        """Drop a destroyed socket from the node's books (a lingering one stays until then)."""
        self.sockets.pop(sock, None)

    def time_ns(self) -> int:
        """Virtual time in nanoseconds."""
        return round(self.sim.env.now * 1e9)

    def close(self) -> None:
        """Close every socket of the node (each with its linger)."""
        self._closed = True
        for sock in list(self.sockets):
            sock.close()

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Start ``coro`` as a task of this node (cancelled if the node crashes).

        Must be called while the simulation runs (from inside :meth:`Simulation.run`).
        """
        if not self.alive:
            raise ClosedError(f"node {self._name!r} is down (crashed)")
        loop = self.sim.loop
        if loop is None:
            raise RuntimeError("Node.spawn needs a running simulation (call it inside run)")
        ctx = contextvars.copy_context()
        ctx.run(_current_node.set, self)
        return loop.create_task(coro, name=name, context=ctx)

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
            one node over ipc/tcp); inproc has no delay.
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

    Raises:
        OptionError: ``seed`` is not an int, or ``scheduler`` is not one of the above.

    Example:
        >>> sim = Simulation(seed=1)
        >>> exchange, trader = sim.node("exchange"), sim.node("trader")
        >>> result = sim.run(main(exchange, trader))  # doctest: +SKIP
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        latency: LatencyModel | None = None,
        record_trace: bool = True,
        shuffle_ties: bool = False,
        scheduler: str | Scheduler = "fifo",
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
        self._tasks: dict[asyncio.Task[Any], None] = {}
        self._message_ids = itertools.count(1)
        self.scheduler = make_scheduler(scheduler, seed)
        self.schedule = Schedule(self.scheduler.name, seed)
        """The record of this run's scheduling choices that differ from FIFO."""
        self._invariants = Invariants(lambda: float(self.env._now), seed, self.trace)

    # -- topology ---------------------------------------------------------------------

    @property
    def now(self) -> float:
        """Virtual seconds since the start."""
        return float(self.env.now)

    def node(self, name: str, main: Callable[[Node], Awaitable[Any]] | None = None) -> Node:
        """The node called ``name``, created on first use.

        Args:
            name: Node name (also usable as a tcp host name).
            main: Optional ``async def main(node)``, started when the simulation runs
                and again after every restart of the node.
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
        """Give the link ``a -> b`` (and ``b -> a``) a new latency model."""
        self.topology.set_latency(self.now, a, b, model, both_ways=both_ways)

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

        Unlike a partition, connections stay up and new ones can be made (handshakes
        are not modelled as traffic), and heartbeats do not expire: it is a stall.
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
        reconnect, as libzmq does (DESIGN.md section 3); with ``discard_queues`` it loses
        it too (both pipes destroyed, DESIGN.md section 4), counted as drops.
        """
        return self.wire.drop_connection(a, b, discard_queues=discard_queues)

    # -- running ----------------------------------------------------------------------

    def run(self, main: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run ``main`` to completion in virtual time and return its result.

        Nodes' ``main`` functions start first (once per life of a node: at the first
        run, and after each restart). When ``main`` returns, every task still running
        is cancelled, node mains included (as ``asyncio.run`` does). A run may be
        followed by another on the same simulation: virtual time, sockets and queues
        carry over, tasks do not (spawn them again).

        While it runs, the calls that would leave virtual time (``time.sleep``, starting a
        thread or a process, blocking waits on threading primitives and queues, real
        network I/O: the list is in :mod:`transportkit.sim_backend`) raise
        :class:`~transportkit.SimulationError` in this thread; other threads are not
        affected, and the originals are back when the run ends, however it ends. In
        this thread too, ``time.time``/``monotonic``/``perf_counter`` read virtual time
        and the global ``random`` functions, ``os.urandom`` and ``uuid.uuid4`` draw
        from :attr:`global_rng` (the list is in :mod:`transportkit.sim_backend`).

        Raises:
            RuntimeError: The simulation is already running, or an event loop is running
                in this thread (runs do not nest: asyncio allows one loop per thread).
            Timeout: ``timeout`` virtual seconds passed before ``main`` finished.
            SimulationDeadlock: Nothing can ever happen again but ``main`` still waits.
            SimulationError: A call was refused, as above. If the code caught that error,
                or it ended a task nobody awaited, the run still fails: with a
                SimulationError whose cause is the first refusal.
        """
        if self.loop is not None:
            raise RuntimeError("Simulation.run is not reentrant")
        if asyncio._get_running_loop() is not None:
            raise RuntimeError(
                "Simulation.run cannot be called from a running event loop (a task of "
                "another simulation, or asyncio.run): run simulations one after another"
            )
        with RunGuard(clock=lambda: float(self.env._now), rng=self.global_rng) as guard:
            loop = self._new_loop()
            loop.set_task_factory(self._task_factory)
            self.loop = loop
            try:
                try:
                    for node in self.nodes.values():
                        if node.main is not None and node.alive and not node.main_started:
                            self._start_main(node)
                    result = loop.run_until_complete(self._bounded(main, timeout))
                finally:
                    try:
                        self._finish(loop)
                    finally:
                        self.loop = None
                        self.trace.add(self.now, "run-end", "", "")
            except Exception as exc:
                guard.check(exc)
                raise
            guard.check(None)
            return result

    async def _bounded(self, main: Coroutine[Any, Any, T], timeout: float | None) -> T:
        if timeout is None:
            return await main
        try:
            return await wait_for(main, timeout)
        except TimeoutError as exc:
            raise Timeout(f"simulation main did not finish within {timeout} virtual s") from exc

    def _finish(self, loop: SimEventLoop) -> None:
        try:
            # In creation order: asyncio.all_tasks() is a set, ordered by memory address,
            # and the order of cancellation is visible (sockets close in that order).
            pending = [t for t in self._tasks if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            self._tasks.clear()
            loop.close()

    def _task_factory(
        self,
        loop: asyncio.AbstractEventLoop,
        coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
        *,
        context: contextvars.Context | None = None,
        **kwargs: Any,
    ) -> asyncio.Task[Any]:
        """Make every task of the run: remember it in creation order, and give it to the
        node whose context created it (so a crash of that node cancels it).
        """
        task = asyncio.Task(coro, loop=loop, context=context, **kwargs)
        tasks = self._tasks
        tasks[task] = None
        task.add_done_callback(tasks.pop)
        node = (context or contextvars.copy_context()).get(_current_node)
        if node is not None:
            node.tasks[task] = None
            task.add_done_callback(node.tasks.pop)
        return task

    def _start_main(self, node: Node) -> None:
        assert node.main is not None
        node.main_started = True
        coro = node.main(node)
        node.spawn(_as_coroutine(coro), name=f"{node.name}.main")

    # -- scheduling and invariants ----------------------------------------------------

    def _new_loop(self) -> SimEventLoop:
        fifo = type(self.scheduler) is FifoScheduler
        return SimEventLoop(
            self.env,
            idle=self._idle,
            scheduler=None if fifo else self.scheduler,
            schedule=self.schedule,
            trace=self.trace,
            invariants=self._invariants,
        )

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
