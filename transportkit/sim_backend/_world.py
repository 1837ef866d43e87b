"""The simulated world: nodes, links, endpoints, connections, faults and the run."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import itertools
import math
import random
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, field
from functools import partial
from heapq import heappush
from typing import Any, TypeVar

import simpy

from transportkit._endpoint import Endpoint
from transportkit._errors import (
    AddressInUseError,
    ClosedError,
    EndpointError,
    OptionError,
    Timeout,
    UnsupportedError,
)
from transportkit._kinds import PEERS, SocketKind
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit.sim_backend._guards import RunGuard
from transportkit.sim_backend._guards import current as guards_current
from transportkit.sim_backend._latency import Constant, LatencyModel
from transportkit.sim_backend._loop import (
    _NORMAL,
    IdleEvents,
    SimCall,
    SimEventLoop,
    schedule_call,
)
from transportkit.sim_backend._pipes import Connection, Item, Peer
from transportkit.sim_backend._run import (
    FailureTracker,
    TaskFailure,
    WorldLoop,
    WorldTask,
    allow_failure,
    call_in_thread,
)
from transportkit.sim_backend._sockets import SOCKET_CLASSES, SimSocket
from transportkit.sim_backend._trace import TRACE_BATCH, Trace

__all__ = ["Link", "Node", "Simulation"]

T = TypeVar("T")
_current_node: contextvars.ContextVar[Node | None] = contextvars.ContextVar(
    "transportkit_sim_node", default=None
)
_FIRST_EPHEMERAL_PORT = 49152
_LOCAL_HOSTS = frozenset({"*", "0.0.0.0", "127.0.0.1", "localhost", "::", "::1"})


@dataclass(eq=False, slots=True)
class Link:
    """The one-way path from node ``src`` to node ``dst``.

    Attributes:
        src: Sending node's name.
        dst: Receiving node's name.
        latency: The delay model of messages on this link.
        up: False while partitioned: messages wait (as TCP retransmits would) and are
            delivered, in order, on repair; new connections cannot be made.
        holding: True while held (:meth:`Simulation.hold`): messages wait for the
            release, but connections stay up and can still be made.
    """

    src: str
    dst: str
    latency: LatencyModel
    up: bool = True
    holding: bool = False
    epoch: int = 0
    held: list[Callable[[], None]] = field(default_factory=list)

    @property
    def passes(self) -> bool:
        """Whether traffic gets through now (neither partitioned nor held)."""
        return self.up and not self.holding


class Connecter:
    """A socket's ``connect()`` to one endpoint: retries and reconnects with back-off."""

    __slots__ = ("active", "endpoint", "ivl", "key", "peer", "sock")

    def __init__(self, sock: SimSocket, endpoint: str, key: tuple[str, ...]) -> None:
        self.sock = sock
        self.endpoint = endpoint
        self.key = key
        self.peer: Peer | None = None
        self.active = True
        self.ivl = sock.options.reconnect_ivl


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
        seed: Seeds the one RNG of the run (latency samples and anything else random).
        latency: Default one-way latency of links between nodes (and between sockets of
            one node over ipc/tcp); inproc has no delay.
        record_trace: Keep every trace event (the hash is always kept).
        shuffle_ties: Order simultaneous events (deliveries on different pipes,
            connection changes, faults) by the seed instead of by the order they were
            scheduled, to explore other interleavings. Per-pipe FIFO still holds; the
            run is still a pure function of the seed.

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
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise OptionError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
        self.seed = seed
        self.env = simpy.Environment()
        self.rng = random.Random(seed)
        self.trace = Trace(record=record_trace)
        self.shuffle_ties = shuffle_ties
        self.default_latency = Constant(50e-6) if latency is None else latency
        self.nodes: dict[str, Node] = {}
        self.links: dict[tuple[str, str], Link] = {}
        self.loop: SimEventLoop | None = None
        self._bound: dict[tuple[str, ...], SimSocket] = {}
        self._inproc_waiting: dict[tuple[str, ...], list[Connecter]] = {}
        self._idle = IdleEvents()
        self._tasks: dict[asyncio.Task[Any], None] = {}
        self._failures = FailureTracker(self.env, self.trace, seed)
        self._advancing = False
        self._closed = False
        self._message_ids = itertools.count(1)
        self._ports = itertools.count(_FIRST_EPHEMERAL_PORT)

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
        key = (src, dst)
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = Link(src, dst, self.default_latency)
        return link

    def set_latency(self, a: str, b: str, model: LatencyModel, *, both_ways: bool = True) -> None:
        """Give the link ``a -> b`` (and ``b -> a``) a new latency model."""
        self.link(a, b).latency = model
        if both_ways:
            self.link(b, a).latency = model
        self.trace.add(self.now, "fault", f"{a}->{b}", f"latency {model}")

    # -- faults -----------------------------------------------------------------------

    def partition(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """Cut the link ``a -> b`` (and ``b -> a``): traffic waits, connects fail.

        Connections whose sockets use ZMTP heartbeats are dropped once the heartbeat
        timeout passes without traffic, as libzmq would.
        """
        for src, dst in [(a, b), (b, a)] if both_ways else [(a, b)]:
            link = self.link(src, dst)
            if link.up:
                link.up = False
                link.epoch += 1
                self.trace.add(self.now, "fault", f"{src}->{dst}", "partition")
                self._watch_heartbeats(link)

    def repair(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """Heal the link(s) cut by :meth:`partition`; held traffic is delivered in order."""
        for src, dst in [(a, b), (b, a)] if both_ways else [(a, b)]:
            link = self.link(src, dst)
            if not link.up:
                link.up = True
                link.epoch += 1
                self.trace.add(self.now, "fault", f"{src}->{dst}", "repair")
                self._flush(link)

    def hold(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """Hold the traffic on link ``a -> b`` (and ``b -> a``) until :meth:`release`.

        Unlike a partition, connections stay up and new ones can be made (handshakes
        are not modelled as traffic), and heartbeats do not expire: it is a stall.
        """
        for src, dst in [(a, b), (b, a)] if both_ways else [(a, b)]:
            link = self.link(src, dst)
            if not link.holding:
                link.holding = True
                self.trace.add(self.now, "fault", f"{src}->{dst}", "hold")

    def release(self, a: str, b: str, *, both_ways: bool = True) -> None:
        """Deliver, in order, what :meth:`hold` kept back, and let traffic through."""
        for src, dst in [(a, b), (b, a)] if both_ways else [(a, b)]:
            link = self.link(src, dst)
            if link.holding:
                link.holding = False
                self.trace.add(self.now, "fault", f"{src}->{dst}", "release")
                self._flush(link)

    def _flush(self, link: Link) -> None:
        if link.passes:
            held, link.held = link.held, []
            for deliver in held:
                deliver()

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
            self._destroy(sock, "crash")

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
        broken = 0
        for conn in self._connections_between(a, b):
            detail = "drop-connection" + (" discard-queues" if discard_queues else "")
            self.trace.add(self.now, "fault", f"{a}<->{b}", detail)
            connecter = conn.a
            self.break_connection(conn)
            if discard_queues:
                connecter.sock.drop(len(connecter.out_q), "disconnect", "queue discarded")
                connecter.out_q.clear()
            broken += 1
        return broken

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
        event loop" warnings), but their ``finally`` blocks only run on ``close``.

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
        however it ends. Between calls nothing is guarded.

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
        # GeneratorExit"). Nothing runs on the loop any more.
        if self._closed or self.loop is None:
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
        with RunGuard() as guard:
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
            loop = WorldLoop(self.env, idle=self._idle)
            loop.tracker = self._failures
            loop.set_task_factory(self._task_factory)
            loop.set_exception_handler(self._failures.on_loop_error)
            self.loop = loop
        return loop

    async def _bounded(self, main: Coroutine[Any, Any, T], timeout: float | None) -> T:
        if timeout is None:
            return await main
        try:
            return await asyncio.wait_for(main, timeout)
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

    # -- endpoints and connections (used by sockets) ----------------------------------

    def next_message_id(self) -> int:
        """A fresh message id for traces."""
        return next(self._message_ids)

    def _key(self, sock: SimSocket, ep: Endpoint) -> tuple[str, ...]:
        if ep.transport in ("pgm", "epgm"):
            raise UnsupportedError(
                f"{ep}: the sim backend does not model {ep.transport} multicast yet; "
                "use PUB/SUB over tcp or ipc"
            )
        if ep.transport == "inproc":
            return ("inproc", sock.node.name, ep.address)
        if ep.transport == "ipc":
            return ("ipc", ep.address)
        return ("tcp", str(ep.port))

    def bind(self, sock: SimSocket, ep: Endpoint) -> str:
        """Register ``sock`` at ``ep``; return the resolved endpoint."""
        if ep.transport == "tcp":
            if ep.host not in _LOCAL_HOSTS and ep.host != sock.node.name:
                raise EndpointError(
                    f"cannot bind {ep}: host {ep.host!r} is not this node "
                    f"({sock.node.name!r}) nor a local address"
                )
            if ep.port is None:
                port = next(self._ports)
                while ("tcp", str(port)) in self._bound:
                    port = next(self._ports)
                host = "0.0.0.0" if ep.host == "*" else ep.host
                ep = Endpoint("tcp", f"{host}:{port}", ep.host, port)
        key = self._key(sock, ep)
        if key in self._bound:
            raise AddressInUseError(f"cannot bind {ep}: address already in use")
        self._bound[key] = sock
        resolved = str(ep)
        sock.bound[resolved] = key
        sock.emit("LISTENING", resolved)
        for connecter in self._inproc_waiting.pop(key, []):
            if connecter.active:
                self._attempt(connecter)
        return resolved

    def unbind_all(self, sock: SimSocket) -> None:
        """Release every endpoint ``sock`` is bound to."""
        for key in sock.bound.values():
            assert isinstance(key, tuple)
            if self._bound.get(key) is sock:
                del self._bound[key]
        sock.bound.clear()

    def connect(self, sock: SimSocket, ep: Endpoint) -> None:
        """Start connecting ``sock`` to ``ep`` (completes later, retries on failure)."""
        endpoint = str(ep)
        if endpoint in sock.connecters:
            return
        connecter = Connecter(sock, endpoint, self._key(sock, ep))
        sock.connecters[endpoint] = connecter
        if not sock.options.immediate:
            connecter.peer = Peer(sock, endpoint, connecter=True)
            sock.peers.append(connecter.peer)
        if ep.transport == "inproc":
            if not self._attempt(connecter):
                self._inproc_waiting.setdefault(connecter.key, []).append(connecter)
            return
        sock.emit("CONNECT_DELAYED", endpoint)
        target = self._bound.get(connecter.key)
        node = target.node.name if target is not None else sock.node.name
        delay = self.link(sock.node.name, node).latency.sample(self.rng)
        self._later(delay, partial(self._attempt, connecter))

    def disconnect(self, sock: SimSocket, endpoint: str) -> None:
        """Undo ``connect(endpoint)``: the connection and its queue go."""
        connecter = sock.connecters.pop(endpoint, None)
        if connecter is None:
            raise EndpointError(f"{sock.name} is not connected to {endpoint}")
        connecter.active = False
        peer = connecter.peer
        if peer is not None:
            if peer.conn is not None:
                self.break_connection(peer.conn)
            self._discard_peer(peer, "disconnect")

    def _attempt(self, connecter: Connecter) -> bool:
        sock = connecter.sock
        if not connecter.active or sock.destroyed:
            return False
        target = self._bound.get(connecter.key)
        inproc = connecter.key[0] == "inproc"
        failure = ""
        if target is None or target.closed:
            failure = "nothing bound"
        elif target.kind not in PEERS[sock.kind]:
            failure = f"{sock.kind.value} cannot talk to {target.kind.value}"
            sock.emit("HANDSHAKE_FAILED_PROTOCOL", connecter.endpoint)
        elif not (target.admits(sock) and sock.admits(target)):
            failure = "refused by peer"
        elif not inproc and not (
            self.link(sock.node.name, target.node.name).up
            and self.link(target.node.name, sock.node.name).up
        ):
            failure = "partitioned"
        if not failure:
            assert target is not None
            self._establish(connecter, target)
            return True
        if inproc:
            return False
        self.trace.add(self.now, "connect-failed", sock.name, f"{connecter.endpoint} {failure}")
        self._schedule_reconnect(connecter, after_failure=True)
        return False

    def _schedule_reconnect(self, connecter: Connecter, *, after_failure: bool) -> None:
        sock = connecter.sock
        opts = sock.options
        # libzmq retries only for a positive interval: 0, like -1, never retries.
        if opts.reconnect_ivl <= 0 or not connecter.active:
            return
        ivl = connecter.ivl
        sock.emit("CONNECT_RETRIED", connecter.endpoint, ivl)
        if opts.reconnect_ivl_max > 0:
            connecter.ivl = min(ivl * 2, opts.reconnect_ivl_max)
        # A retry after a failed attempt can only succeed if something else changes the
        # world first; alone, such retries cannot wake anyone (unless a monitor watches
        # them), so they do not keep a deadlocked run alive.
        idle = after_failure and not sock.monitors
        self._later(ivl / 1000, partial(self._attempt, connecter), idle=idle)

    def _establish(self, connecter: Connecter, target: SimSocket) -> None:
        sock = connecter.sock
        a = connecter.peer
        if a is None:
            a = connecter.peer = Peer(sock, connecter.endpoint, connecter=True)
            sock.peers.append(a)
        b = Peer(target, connecter.endpoint, connecter=False)
        target.peers.append(b)
        inproc = connecter.key[0] == "inproc"
        link_ab = None if inproc else self.link(sock.node.name, target.node.name)
        link_ba = None if inproc else self.link(target.node.name, sock.node.name)
        conn = Connection(a, b, link_ab, link_ba)
        now = self.env.now
        a.remote, b.remote = b, a
        a.conn = b.conn = conn
        a.last_arrival = b.last_arrival = now
        a.routing_id = target.options.routing_id or sock.new_routing_id()
        b.routing_id = sock.options.routing_id or target.new_routing_id()
        connecter.ivl = sock.options.reconnect_ivl
        self.trace.add(now, "connect", sock.name, f"{target.name} via {connecter.endpoint}")
        sock.emit("CONNECTED", connecter.endpoint)
        target.emit("ACCEPTED", connecter.endpoint)
        sock.emit("HANDSHAKE_SUCCEEDED", connecter.endpoint)
        target.emit("HANDSHAKE_SUCCEEDED", connecter.endpoint)
        sock.attached(a)
        target.attached(b)
        self.pump(a)
        self.pump(b)

    def break_connection(self, conn: Connection) -> None:
        """Tear down a live connection with libzmq's asymmetric queue semantics."""
        if not conn.alive:
            return
        conn.alive = False
        a, b = conn.a, conn.b
        for peer in (a, b):
            sender = conn.other(peer).sock
            sender.drop(peer.in_flight, "disconnect", "in flight")
            peer.in_flight = 0
            peer.remote = None
            peer.conn = None
        self.trace.add(self.now, "disconnect", a.sock.name, f"{b.sock.name} via {a.endpoint}")
        for peer in (a, b):
            sock = peer.sock
            if sock.destroyed:
                continue
            sock.detached(peer)
            sock.emit("DISCONNECTED", peer.endpoint)
            if peer.connecter:
                connecter = sock.connecters.get(peer.endpoint)
                if connecter is not None and connecter.peer is peer:
                    self._schedule_reconnect(connecter, after_failure=False)
            else:
                self._discard_peer(peer, "disconnect")

    def _discard_peer(self, peer: Peer, reason: str) -> None:
        """Remove ``peer`` from its socket; its outbound queue is lost, inbound drains."""
        sock = peer.sock
        peer.dead = True
        sock.drop(len(peer.out_q), reason, f"queued to {peer.endpoint}")
        peer.out_q.clear()
        if peer in sock.peers:
            sock.peers.remove(peer)

    def close_socket(self, sock: SimSocket) -> None:
        """Close ``sock``: unbind now, keep sending queued messages for ``linger`` ms.

        While it lingers the socket keeps (re)connecting, as libzmq's sessions do, so a
        peer that appears in time still gets the queued messages.
        """
        self.unbind_all(sock)
        linger = sock.options.linger
        if linger == 0 or not any(p.out_q for p in sock.peers):
            self._destroy(sock, "close")
            return
        sock.closing = True
        if linger > 0:
            self._later(linger / 1000, partial(self._destroy, sock, "linger"))

    def _destroy(self, sock: SimSocket, reason: str) -> None:
        if sock.destroyed:
            return
        sock.destroyed = True
        sock.closing = False
        sock.node.forget(sock)
        self.unbind_all(sock)
        for connecter in sock.connecters.values():
            connecter.active = False
        for waiting in self._inproc_waiting.values():
            waiting[:] = [c for c in waiting if c.sock is not sock]
        lost = 0
        now = self.env.now
        for peer in dict.fromkeys([*sock.peers, *sock.ready]):
            if peer.dead and not peer.in_q:
                continue
            lost += len(peer.out_q) + len(peer.in_q)
            peer.out_q.clear()
            peer.in_q.clear()
            peer.dead = True
            conn = peer.conn
            if conn is not None and conn.alive:
                link = conn.link_from(peer)
                when = now if link is None else self._arrival(peer, link)
                self._later_at(when, partial(self._reset, conn, link))
        sock.drop(lost, reason, "queued")
        sock.peers.clear()
        sock.ready.clear()
        for mon in list(sock.monitors):
            mon.close()
        self.trace.add(now, "closed", sock.name, reason)

    def _reset(self, conn: Connection, link: Link | None) -> None:
        """The peer learns that ``conn`` is gone, once ``link`` lets the news through."""
        if link is not None and not link.passes:
            link.held.append(partial(self._reset, conn, link))
            return
        self.break_connection(conn)

    def _connections_between(self, a: str, b: str) -> list[Connection]:
        found: list[Connection] = []
        for name in (a, b):
            other = b if name == a else a
            for sock in self.nodes[name].sockets:
                for peer in sock.peers:
                    conn = peer.conn
                    if (
                        conn is not None
                        and conn.alive
                        and conn.other(peer).sock.node.name == other
                        and conn not in found
                    ):
                        found.append(conn)
        return found

    def _watch_heartbeats(self, link: Link) -> None:
        epoch = link.epoch
        for conn in self._connections_between(link.src, link.dst):
            ivls = [
                (s.options.heartbeat_ivl, s.options.heartbeat_timeout_effective)
                for s in (conn.a.sock, conn.b.sock)
                if s.options.heartbeat_ivl > 0
            ]
            if not ivls:
                continue
            wait = min(ivl + timeout for ivl, timeout in ivls) / 1000

            def expire(conn: Connection = conn) -> None:
                if not link.up and link.epoch == epoch and conn.alive:
                    self.trace.add(self.now, "heartbeat-timeout", conn.a.sock.name, "")
                    self.break_connection(conn)

            self._later(wait, expire)

    # -- moving messages --------------------------------------------------------------

    def offer(self, peer: Peer, item: Item) -> None:
        """Hand a message to ``peer``: onto the wire if there is room, else queue it."""
        remote = peer.remote
        if peer.conn is not None and not peer.out_q:
            assert remote is not None
            receiver = remote.sock
            hwm = receiver.rcvhwm
            if hwm == 0 or receiver.conflate or len(remote.in_q) + remote.in_flight < hwm:
                self._transmit(peer, item)
                return
        if peer.sock.conflate:
            peer.out_q.clear()
        peer.out_q.append(item)

    def _has_room(self, peer: Peer) -> bool:
        remote = peer.remote
        assert remote is not None
        receiver = remote.sock
        hwm = receiver.rcvhwm
        return hwm == 0 or receiver.conflate or len(remote.in_q) + remote.in_flight < hwm

    def pump(self, peer: Peer) -> None:
        """Move queued messages of ``peer`` onto the wire while the receiver has room."""
        if peer.conn is None or not peer.out_q:
            return
        moved = False
        while peer.out_q and self._has_room(peer):
            self._transmit(peer, peer.out_q.popleft())
            moved = True
        sock = peer.sock
        if moved:
            sock.space()
            if sock.closing and not any(p.out_q for p in sock.peers):
                self._destroy(sock, "linger-done")

    def _transmit(self, peer: Peer, item: Item) -> None:
        conn = peer.conn
        assert conn is not None
        if peer is conn.a:
            remote, link = conn.b, conn.link_ab
        else:
            remote, link = conn.a, conn.link_ba
        remote.in_flight += 1
        if link is None:
            self._arrive(conn, remote, item, None)
            return
        if self.shuffle_ties:
            self._schedule_at(self._arrival(peer, link), self._arrive, conn, remote, item, link)
            return
        # The hot path of every message: _arrival and schedule_call, inlined.
        env = self.env
        when = env._now + link.latency.sample(self.rng)
        if when < peer.last_arrival:  # noqa: PLR1730 (no max() call per message)
            when = peer.last_arrival
        peer.last_arrival = when
        queue: list[Any] = env._queue
        heappush(
            queue,
            (when, _NORMAL, next(env._eid), SimCall((self._arrive, (conn, remote, item, link)))),
        )

    def _arrival(self, peer: Peer, link: Link) -> float:
        """When something sent now by ``peer`` over ``link`` arrives: never before what
        it sent earlier (a pipe is FIFO), strictly after it when ties are shuffled.
        """
        when = self.env._now + link.latency.sample(self.rng)
        last = peer.last_arrival
        if when < last or (self.shuffle_ties and when == last):
            when = math.nextafter(last, math.inf) if self.shuffle_ties else last
        peer.last_arrival = when
        return when

    def _schedule_at(self, at: float, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn(*args)`` at virtual time ``at``; ties ordered by the seed if asked."""
        if not self.shuffle_ties:
            schedule_call(self.env, at, fn, args)
            return
        priority: Any = self.rng.randrange(1 << 30)  # any int orders within a time
        schedule_call(self.env, at, fn, args, priority)

    def _arrive(self, conn: Connection, remote: Peer, item: Item, link: Link | None) -> None:
        if link is not None and not (link.up and not link.holding):
            link.held.append(partial(self._arrive, conn, remote, item, link))
            return
        if not conn.alive:
            return
        remote.in_flight -= 1
        receiver = remote.sock
        if remote.dead or receiver._closed:
            conn.other(remote).sock.drop(1, "peer-gone", f"m{item[0]}")
            return
        limit = receiver.maxmsgsize
        if limit >= 0 and link is not None and any(len(f) > limit for f in item[1]):
            self._refuse_oversized(conn, remote, item, limit)
            return
        if receiver.conflate:
            # libzmq's conflate queue holds one frame: of a multipart message only the
            # last frame survives (and a SUB then filters on it).
            if len(item[1]) > 1:
                item = (item[0], item[1][-1:])
            remote.in_q.clear()
        remote.in_q.append(item)
        pending = receiver.trace_pending  # Trace.add, inlined: the path of every message
        pending.append((self.env._now, "deliver", receiver.name, item[0]))
        if len(pending) >= TRACE_BATCH:
            self.trace.flush()
        receiver.arrived(remote)

    def _refuse_oversized(self, conn: Connection, remote: Peer, item: Item, limit: int) -> None:
        """A frame over the receiver's ``maxmsgsize`` arrived: libzmq 4.3's behaviour.

        Its decoder refuses the frame (a ZMTP protocol error): the message is lost,
        counted in the receiver's ``stats.dropped``, and the connection is dropped as
        :meth:`break_connection` models it (what was in flight behind it is lost,
        both sides' monitors report DISCONNECTED, a connecting sender reconnects and
        keeps its queue). A connecting receiver ends its session instead of
        reconnecting, as libzmq does after a protocol error: that connection is not
        made again (until the socket disconnects and connects), and what the
        receiver had queued to that peer is lost.
        """
        receiver = remote.sock
        largest = max(len(f) for f in item[1])
        receiver.drop(1, "maxmsgsize", f"m{item[0]} frame of {largest} bytes > {limit}")
        connecter = receiver.connecters.get(remote.endpoint) if remote.connecter else None
        if connecter is not None and connecter.peer is remote:
            connecter.active = False  # no reconnect after a protocol error
        else:
            connecter = None
        self.break_connection(conn)
        if connecter is not None:
            self._discard_peer(remote, "maxmsgsize")

    def send_subscription(self, peer: Peer, prefix: bytes, *, add: bool) -> None:
        """Carry a (un)subscription from a SUB's ``peer`` to the publisher's end.

        A conflating SUB conflates its subscription commands too, as libzmq does: a
        command still on its way when a newer one is sent is lost, and over inproc the
        publisher only picks up the newest pending command when it next sends.
        """
        conn = peer.conn
        assert conn is not None
        link = conn.link_from(peer)
        remote = conn.other(peer)
        conflated = peer.sock.conflate
        peer.sub_gen += 1
        generation = peer.sub_gen

        def apply(_event: object = None) -> None:
            if link is not None and not link.passes:
                link.held.append(apply)
                return
            if not conn.alive:
                return
            what = "subscribe" if add else "unsubscribe"
            if conflated and generation != peer.sub_gen:
                self.trace.add(self.now, "conflated", remote.sock.name, f"{what} {prefix!r}")
                return
            if add:
                remote.subs.append(prefix)
            elif prefix in remote.subs:
                remote.subs.remove(prefix)
            self.trace.add(self.now, what, remote.sock.name, repr(prefix))

        if link is None:
            if conflated:
                remote.pending_command = apply
            else:
                apply()
            return
        self._later_at(self._arrival(peer, link), apply)

    def _later(self, delay: float, callback: Callable[[], object], *, idle: bool = False) -> None:
        """Call ``callback`` after ``delay`` virtual seconds (see :meth:`_later_at`)."""
        self._later_at(self.env._now + delay, callback, idle=idle)

    def _later_at(self, at: float, callback: Callable[[], object], *, idle: bool = False) -> None:
        """Call ``callback`` at virtual time ``at``.

        ``idle`` events (retries that cannot succeed on their own) do not count as
        pending work for deadlock detection.
        """
        if idle:
            self._idle.count += 1
            self._schedule_at(at, self._fire_idle, callback)
        else:
            self._schedule_at(at, callback)

    def _fire_idle(self, callback: Callable[[], object]) -> None:
        self._idle.count -= 1
        callback()


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable
