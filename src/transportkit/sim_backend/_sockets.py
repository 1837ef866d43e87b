"""Simulated sockets: libzmq's per-type behaviour on top of the pipe model.

The table this follows is libzmq 4.3's (docs/simulator.md): PUB fans out and drops at
the HWM, PUSH, DEALER, REQ and PAIR round-robin and block, ROUTER routes by id and
drops (or raises with ``router_mandatory``), receivers fair-queue, REQ/REP keep their
lockstep and envelopes.
"""

from __future__ import annotations

import _asyncio
import asyncio
import math
from asyncio import Future as _Future
from collections import deque
from collections.abc import Callable, Sequence
from heapq import heappop
from typing import TYPE_CHECKING, Any, ClassVar

from transportkit._endpoint import parse_endpoint
from transportkit._errors import (
    ClosedError,
    EndpointError,
    FrameError,
    HostUnreachableError,
    StateError,
    Timeout,
    UnsupportedError,
    WouldBlock,
)
from transportkit._kinds import SocketKind
from transportkit._options import SocketOptions
from transportkit._socket import (
    Dealer,
    Frame,
    Message,
    Monitor,
    MonitorEvent,
    Pair,
    Publisher,
    Puller,
    Pusher,
    Requester,
    Router,
    Socket,
    SocketStats,
    Subscriber,
    Worker,
    XPublisher,
    XSubscriber,
    check_frames,
    check_manual,
    check_xsub_message,
    parse_subscription,
)
from transportkit.sim_backend._loop import SimCall
from transportkit.sim_backend._pipes import Item, Peer
from transportkit.sim_backend._trace import TRACE_BATCH

if TYPE_CHECKING:
    from transportkit.sim_backend._wire import Connecter, Wire
    from transportkit.sim_backend._world import Node, Simulation

__all__ = ["SOCKET_CLASSES", "SimSocket"]

# The running task of a loop, without a Python frame: C in Python 3.12+, the dict the
# pure-Python ``asyncio.current_task`` reads in 3.11.
_tasks_module: Any = asyncio.tasks
_current_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None] = (
    getattr(_asyncio, "current_task", None) or _tasks_module._current_tasks.get
)


def _wake(waiters: list[asyncio.Future[bool]]) -> None:
    for fut in waiters:
        if not fut.done():
            fut.set_result(True)
    waiters.clear()


def _expire(fut: asyncio.Future[bool]) -> None:
    if not fut.done():
        fut.set_result(False)


async def _wait(waiters: list[asyncio.Future[bool]], deadline: float | None) -> bool:
    """Wait to be woken (True) or for the virtual deadline (False)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bool] = loop.create_future()
    waiters.append(fut)
    handle = None if deadline is None else loop.call_at(deadline, _expire, fut)
    try:
        return await fut
    finally:
        if handle is not None:
            handle.cancel()
        if fut in waiters:
            waiters.remove(fut)


def _arrives_next(loop: asyncio.AbstractEventLoop, sock: SimSocket) -> Message | bool:
    """Deliver the next message of ``sock`` here, if waiting for it would change nothing.

    Called by a receive that found nothing and is about to wait, in the task that
    receives. If the world's event loop, once this task has suspended, would do nothing
    but process the SimPy event at the head of the heap, and that event is a message
    arriving at ``sock`` that is simply queued (its link passes, its connection is
    alive, ``sock`` is open and has no other waiter, no ``maxmsgsize``), and no timer
    is due by then, then waiting would only let the loop deliver that message and wake
    this task straight away, before anything else runs. Delivering it now, at the
    same virtual time (the clock moves to it), is the same run without the wait: the
    same trace, the same order of everything after. Return False if nothing was
    delivered, the message if it was delivered and taken at once (the usual case), and
    True if it was delivered into the socket's queues (then ``_take`` it).

    It holds for the loop's FIFO fast path only: with a scheduler, invariants or debug
    mode the loop counts and checks steps, and the receive waits. A task with a
    cancellation pending waits too (the cancellation is delivered at the wait).
    """
    if loop is not sock.sim.loop:
        return False
    this: Any = loop  # asyncio internals (untyped)
    if this._ready or this._stopping or this._debug:
        return False
    # Invariants registered during a run stop the FIFO path (``refresh``: stopping),
    # so out of the general path none is active.
    exploring = this._exploring
    if exploring.in_general or exploring.scheduler is not None:
        return False
    env = sock.env
    queue: list[Any] = env._queue
    if not queue:
        return False
    entry = queue[0]
    event = entry[3]
    if type(event) is not SimCall or event[0] is not sock.wire.arrive:
        return False
    conn, remote, item, link = event[1]
    if remote.sock is not sock or remote.dead or sock._closed or sock.maxmsgsize >= 0:
        return False
    if link is None or not (conn.alive and link.up and not link.holding):
        return False
    when = entry[0]
    # The loop's timer heap holds float keys (``_loop._TimerKey``): its head is the
    # earliest timer's time, cancelled or not (a cancelled one only forgoes the shortcut).
    scheduled = this._scheduled
    if (scheduled and scheduled[0] <= when) or when == math.inf:
        return False
    task: Any = _current_task(loop)
    if task is None or task._must_cancel:  # a cancellation waits for the suspension
        return False
    heappop(queue)
    env._now = when
    if remote.conflate or not sock._plain_arrival or remote.in_q or remote.queued:
        event[0](*event[1])
        return True
    # Wire._arrive, SimSocket.arrived and _take for the case checked above, inlined:
    # the message would be queued, its peer made ready, and both taken back at once
    # (the socket's ready list is empty: the receive found nothing).
    remote.in_flight -= 1
    pending = sock.trace_pending
    pending.append((when, "deliver", sock.name, item[0]))
    if len(pending) >= TRACE_BATCH:
        sock.trace.flush()
    kq = remote.kq
    if kq:  # the oldest message in the kernel's buffer moves into the pipe
        remote.kused -= kq.popleft()
    other = remote.remote
    if other is not None and other.out_q:
        sock.wire.pump(other)
    msg: Message | None = sock._accept(remote, item[1])
    if msg is None:
        return True
    sock._stats.received += 1
    return msg


def _deadline(timeout: float | None, option_ms: int) -> float | None:
    if timeout is None:
        if option_ms < 0:
            return None
        seconds = option_ms / 1000
    elif timeout == math.inf:
        return None
    else:
        seconds = max(0.0, timeout)
    return asyncio.get_running_loop().time() + seconds


class _SimMonitor(Monitor):
    def __init__(self, sock: SimSocket) -> None:
        self._sock = sock
        self._events: deque[MonitorEvent] = deque()
        self._waiters: list[asyncio.Future[bool]] = []
        self._closed = False

    def push(self, event: MonitorEvent) -> None:
        self._events.append(event)
        _wake(self._waiters)

    async def recv(self, timeout: float | None = None) -> MonitorEvent:
        deadline = _deadline(math.inf if timeout is None else timeout, -1)
        while True:
            if self._closed:
                raise ClosedError("monitor is closed")
            if self._events:
                return self._events.popleft()
            if not await _wait(self._waiters, deadline):
                raise Timeout(f"no monitor event from {self._sock.name} within {timeout} s")

    def try_recv(self) -> MonitorEvent | None:
        if self._closed:
            raise ClosedError("monitor is closed")
        return self._events.popleft() if self._events else None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self in self._sock.monitors:
                self._sock.monitors.remove(self)
            _wake(self._waiters)


class SimSocket(Socket):
    """Behaviour shared by every simulated socket kind."""

    # Slots: attribute access on the path of every message stays fast however many
    # attributes there are (an instance dict stops sharing its keys past 30).
    __slots__ = (
        "_can_recv",
        "_can_send",
        "_closed",
        "_draining",
        "_last_endpoint",
        "_message_ids",
        "_next_routing_id",
        "_options",
        "_rcvtimeo",
        "_rr",
        "_stats",
        "bound",
        "closing",
        "conflate",
        "connecters",
        "destroyed",
        "env",
        "maxmsgsize",
        "monitors",
        "name",
        "node",
        "peers",
        "rcvhwm",
        "ready",
        "recv_waiters",
        "send_waiters",
        "sim",
        "sndhwm",
        "trace",
        "trace_pending",
        "wire",
    )

    immediate_attach: ClassVar[bool] = False
    # Whether the class overrides a per-kind send hook that most kinds leave as a no-op:
    # the path of every message skips the calls otherwise.
    _has_send_state: ClassVar[bool] = False
    _has_envelope: ClassVar[bool] = False
    _has_after_send: ClassVar[bool] = False
    # Whether the class keeps SimSocket.arrived (a receive may then deliver inline).
    _plain_arrival: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls._has_send_state = cls._check_send_state is not SimSocket._check_send_state
        cls._has_envelope = cls._envelope is not SimSocket._envelope
        cls._has_after_send = cls._after_send is not SimSocket._after_send
        cls._plain_arrival = cls.arrived is SimSocket.arrived and cls._take is SimSocket._take

    def __init__(self, node: Node, options: SocketOptions, index: int) -> None:
        self.node = node
        self.sim: Simulation = node.sim
        self.wire: Wire = node.sim.wire
        self._options = options
        self._stats = SocketStats()
        self.name = f"{node.name}/{self.kind.value.lower()}{index}"
        self.sndhwm = options.sndhwm
        self.rcvhwm = options.rcvhwm
        self.conflate = options.conflate
        self.maxmsgsize = options.maxmsgsize
        self._rcvtimeo = options.rcvtimeo
        self._can_send = self.kind.can_send
        self._can_recv = self.kind.can_recv
        self.trace = node.sim.trace
        self.trace_pending = self.trace.pending
        self.env = node.sim.env
        self._message_ids = node.sim._message_ids
        self.peers: list[Peer] = []
        self.ready: deque[Peer] = deque()
        self.recv_waiters: list[asyncio.Future[bool]] = []
        self.send_waiters: list[asyncio.Future[bool]] = []
        self.monitors: list[_SimMonitor] = []
        self.connecters: dict[str, Connecter] = {}
        self.bound: dict[str, object] = {}
        self._rr = 0
        self._closed = False
        self._draining = False
        self.closing = False
        self.destroyed = False
        self._last_endpoint: str | None = None
        self._next_routing_id = 1

    # -- the Socket interface -------------------------------------------------------

    @property
    def options(self) -> SocketOptions:
        return self._options

    @property
    def stats(self) -> SocketStats:
        return self._stats

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_endpoint(self) -> str | None:
        return self._last_endpoint

    def bind(self, endpoint: str) -> str:
        self._check_open()
        resolved = self.wire.bind(self, parse_endpoint(endpoint))
        self._last_endpoint = resolved
        return resolved

    def connect(self, endpoint: str) -> None:
        self._check_open()
        parsed = parse_endpoint(endpoint)
        if parsed.transport == "tcp" and endpoint.endswith(":*"):
            # libzmq refuses it (EINVAL), as the zmq backend does; it used to be retried
            # here for ever, silently.
            raise EndpointError(
                f"{self.name}: cannot connect to {endpoint}: a wildcard port is for bind() "
                "only; connect to the endpoint bind() returned"
            )
        self.wire.connect(self, parsed)
        self._last_endpoint = str(parsed)

    def disconnect(self, endpoint: str) -> None:
        self._check_open()
        self.wire.disconnect(self, str(parse_endpoint(endpoint)))

    def close(self) -> None:
        if self._closed:
            return
        self.abort()
        self.wire.close_socket(self)

    def abort(self) -> None:
        """Mark closed and wake every waiter (they raise ClosedError); no teardown."""
        self._closed = True
        _wake(self.recv_waiters)
        _wake(self.send_waiters)

    def monitor(self) -> Monitor:
        self._check_open()
        mon = _SimMonitor(self)
        self.monitors.append(mon)
        return mon

    # -- sending ----------------------------------------------------------------------

    async def send(self, frames: Sequence[Frame]) -> None:
        item = self._prepare(frames)
        if self._route(item):  # _dispatch and Trace.add, inlined: the path of every message
            self._stats.sent += 1
            pending = self.trace_pending
            pending.append((self.env._now, "send", self.name, item[0]))
            if len(pending) >= TRACE_BATCH:
                self.trace.flush()
            if self._has_after_send:
                self._after_send()
            return
        deadline = _deadline(None, self._options.sndtimeo)
        while True:
            woke = await _wait(self.send_waiters, deadline)
            self._check_open()
            if self._dispatch(item):
                return
            if not woke:
                raise Timeout(
                    f"{self.name}: send timed out after {self._options.sndtimeo} ms "
                    f"(all pipes at their HWM of {self.sndhwm}, or no peer)"
                )

    def try_send(self, frames: Sequence[Frame]) -> None:
        item = self._prepare(frames)
        if not self._dispatch(item):
            raise WouldBlock(
                f"{self.name}: cannot send now (all pipes at their HWM of {self.sndhwm}, "
                "or no peer)"
            )

    def _prepare(self, frames: Sequence[Frame]) -> Item:
        if self._closed:
            self._check_open()
        kind = type(frames)
        if (kind is list or kind is tuple) and frames:
            # Fast path: a list (or tuple) of bytes needs no checks and no conversion.
            for frame in frames:
                if type(frame) is not bytes:
                    copied = self._checked(frames)
                    break
            else:
                copied = list(frames)  # type: ignore[arg-type]
        else:
            copied = self._checked(frames)
        if self.conflate and len(copied) > 1:
            raise FrameError(
                f"{self.name}: conflate keeps single-frame messages only, got {len(frames)} frames"
            )
        if not self._can_send:
            raise UnsupportedError(f"{self.name}: {self.kind.value} sockets cannot send")
        if self._has_send_state:
            self._check_send_state()
        if self._has_envelope:
            copied = self._envelope(copied)
        return (next(self._message_ids), copied)

    @staticmethod
    def _checked(frames: Sequence[Frame]) -> list[bytes]:
        # check_frames iterates the message once; each frame is C-contiguous, so
        # bytes() copies exactly its memory, as the zmq backend sends it.
        return [bytes(f) for f in check_frames(frames)]

    def _dispatch(self, item: Item) -> bool:
        if not self._route(item):
            return False
        self._stats.sent += 1
        self.trace.add(self.env._now, "send", self.name, item[0])
        self._after_send()
        return True

    def _round_robin(self, item: Item) -> Peer | None:
        peers = self.peers
        count = len(peers)
        immediate = self._options.immediate
        hwm = self.sndhwm
        for i in range(count):
            idx = (self._rr + i) % count
            peer = peers[idx]
            if (peer.remote is not None or not immediate or peer.inproc) and (
                hwm == 0 or len(peer.out_q) + peer.unseen < hwm
            ):
                self._rr = idx + 1
                self.wire.offer(peer, item)
                return peer
        return None

    def drop(self, count: int, reason: str, detail: str = "") -> None:
        """Count ``count`` messages this socket lost, and trace why."""
        if count:
            assert self._stats.dropped is not None
            self._stats.dropped += count
            self.sim.trace.add(self.sim.env.now, "drop", self.name, f"{reason} x{count} {detail}")

    def truncate(self, item: Item) -> Item:
        """A conflating pipe keeps one frame: the last of ``item``; counted in
        ``stats.truncated`` and traced (libzmq does the same, silently).
        """
        assert self._stats.truncated is not None
        self._stats.truncated += 1
        frames = item[1]
        self.sim.trace.add(
            self.sim.env.now, "truncated", self.name, f"m{item[0]} kept 1 of {len(frames)} frames"
        )
        return (item[0], frames[-1:])

    # -- receiving --------------------------------------------------------------------

    async def recv(self, timeout: float | None = None) -> Message:
        self._check_recv()
        if self.ready:  # (an empty ready list is the usual case when waiting)
            msg = self._take()
            if msg is not None:
                return msg
        if timeout is None and self._rcvtimeo < 0:
            # No deadline (the usual case): wait on a bare future, no timer.
            waiters = self.recv_waiters
            loop = asyncio.get_running_loop()
            while True:
                # A pre-check of _arrives_next (is the heap's head an arrival here?)
                # without its call: a REQ/REP wait fails it (the head is the peer's).
                queue: list[Any] = self.env._queue
                head: Any = queue[0][3] if queue else None
                here: bool = (
                    type(head) is SimCall
                    and head[0] is self.wire.arrive
                    and head[1][1].sock is self
                )
                if here and not waiters:
                    got = _arrives_next(loop, self)
                    if got is not False:
                        if got is not True:
                            return got
                        msg = self._take()
                        if msg is not None:
                            return msg
                        continue
                fut: asyncio.Future[bool] = _Future(loop=loop)  # loop.create_future()
                waiters.append(fut)
                try:
                    await fut
                finally:
                    if waiters and fut in waiters:
                        waiters.remove(fut)
                if self._closed:
                    self._check_open()
                msg = self._take()
                if msg is not None:
                    return msg
        deadline = _deadline(timeout, self._rcvtimeo)
        while True:
            woke = await _wait(self.recv_waiters, deadline)
            self._check_open()
            msg = self._take()
            if msg is not None:
                return msg
            if not woke:
                shown = f"{self._options.rcvtimeo} ms" if timeout is None else f"{timeout} s"
                raise Timeout(f"{self.name}: nothing received within {shown}")

    def try_recv(self) -> Message | None:
        self._check_recv()
        return self._take()

    async def poll(self, timeout: float = math.inf) -> bool:
        self._check_open()
        deadline = _deadline(timeout, -1)
        while True:
            if any(peer.in_q for peer in self.ready):
                return True
            if not await _wait(self.recv_waiters, deadline):
                return any(peer.in_q for peer in self.ready)
            self._check_open()

    def _take(self) -> Message | None:
        ready = self.ready
        while ready:
            peer = ready.popleft()
            if not peer.in_q:
                peer.queued = False
                continue
            item = peer.in_q.popleft()
            if peer.kq:  # the oldest message in the kernel's buffer moves into the pipe
                peer.kused -= peer.kq.popleft()
            if peer.in_q:
                ready.append(peer)
            else:
                peer.queued = False
            remote = peer.remote
            if remote is not None and remote.out_q:
                self.wire.pump(remote)
            msg = self._accept(peer, item[1])
            if msg is not None:
                self._stats.received += 1
                return msg
        return None

    def arrived(self, peer: Peer) -> None:
        """A message reached ``peer``'s inbound queue (called by the simulator)."""
        if not peer.queued:
            peer.queued = True
            self.ready.append(peer)
        waiters = self.recv_waiters
        if waiters:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(True)
            waiters.clear()

    def space(self) -> None:
        """Some pipe can take more (called by the simulator)."""
        if self.send_waiters:
            _wake(self.send_waiters)

    # -- connection lifecycle hooks (called by the simulator) ---------------------------

    def admits(self, other: SimSocket) -> bool:
        """Whether a new connection from/to ``other`` is accepted."""
        return True

    def attached(self, peer: Peer) -> None:
        """A connection for ``peer`` is up."""
        self.space()

    def detached(self, peer: Peer) -> None:
        """``peer``'s connection went down."""
        peer.subs.clear()

    def pipe_ended(self, peer: Peer) -> None:
        """``peer``'s pipe is gone for good (libzmq's ``pipe_terminated``): the
        connection ended and will not be made again on this pipe.
        """

    def subscription(self, peer: Peer, prefix: bytes, add: bool) -> None:
        """A (un)subscription from ``peer``'s subscriber arrived (PUB and XPUB).

        A pipe's subscriptions are a set, as in libzmq's trie: subscribing twice to a
        prefix on one pipe is subscribing once, and one unsubscription removes it (a
        SUB or XSUB counts its own subscriptions and sends the unsubscription only
        when the last one goes).
        """
        subs = peer.subs
        if add:
            if prefix not in subs:
                subs.append(prefix)
        elif prefix in subs:
            subs.remove(prefix)

    def _drain_upstream(self, peer: Peer) -> None:
        """Read at once all that arrived from ``peer``'s XSUB (a PUB or an XPUB reads
        its inbound pipes as soon as they have something, as libzmq's do): a one-frame
        message starting with byte 1 or 0 is a (un)subscription, anything else is
        data, for :meth:`_upstream_data`.
        """
        in_q = peer.in_q
        now = self.env.now
        while in_q:
            item = in_q.popleft()
            if peer.kq:  # as in _take: the oldest message in the kernel moves on
                peer.kused -= peer.kq.popleft()
            what = parse_subscription(item[1])
            if what is None:
                self._upstream_data(peer, item)
                continue
            add, prefix = what
            self.subscription(peer, prefix, add)
            self.trace.add(now, "subscribe" if add else "unsubscribe", self.name, repr(prefix))
        remote = peer.remote
        if remote is not None and remote.out_q and not self._draining:
            # Over inproc the pump delivers at once, back into this method: the outer
            # pump's loop goes on, so the inner call must not pump again (one level
            # of nesting, however long the queue).
            self._draining = True
            try:
                self.wire.pump(remote)
            finally:
                self._draining = False

    def _upstream_data(self, peer: Peer, item: Item) -> None:
        """A data message from an XSUB arrived: a PUB discards it (counted), as
        libzmq's PUB never reads user messages.
        """
        self.drop(1, "upstream-data", f"m{item[0]} from {peer.endpoint}")

    def new_routing_id(self) -> bytes:
        """A generated routing id: a zero byte and a 32-bit counter, as libzmq does."""
        rid = b"\x00" + self._next_routing_id.to_bytes(4, "big")
        self._next_routing_id += 1
        return rid

    def emit(self, name: str, endpoint: str, value: int = 0, peer: str | None = None) -> None:
        """Record a lifecycle event and hand it to monitors and the connection log (not
        for inproc: libzmq 4.3 reports no monitor event of an inproc bind, connection
        or disconnection; the trace still records them). ``peer``: the other end's
        address, for the connection log only.
        """
        self.sim.trace.add(self.sim.env.now, name.lower(), self.name, endpoint)
        if endpoint.startswith("inproc:"):
            return
        if self.monitors:
            event = MonitorEvent(name, endpoint, value)
            for mon in self.monitors:
                mon.push(event)
        log = self.sim.connection_log
        if log is not None:
            log.event(self.kind.value, self.name, name, endpoint, value=value, peer=peer)

    # -- per-kind behaviour -----------------------------------------------------------

    def _route(self, item: Item) -> bool:
        return self._round_robin(item) is not None

    def _accept(self, peer: Peer, frames: list[bytes]) -> list[bytes] | None:
        return frames

    def _envelope(self, frames: list[bytes]) -> list[bytes]:
        return frames

    def _check_send_state(self) -> None:
        """Raise if this socket's state forbids a send now (REQ/REP lockstep)."""

    def _after_send(self) -> None:
        pass

    def _check_recv(self) -> None:
        if self._closed:
            self._check_open()
        if not self._can_recv:
            raise UnsupportedError(f"{self.name}: {self.kind.value} sockets cannot receive")

    def _check_open(self) -> None:
        if self._closed:
            if self.destroyed and self.node.crashes:
                raise ClosedError(f"{self.name} is gone: its node crashed")
            raise ClosedError(f"{self.name} is closed")


class SimPublisher(SimSocket, Publisher):
    """PUB: fan-out to matching subscribers, drop at the HWM, never block."""

    __slots__ = ()

    def arrived(self, peer: Peer) -> None:
        # Only an XSUB sends to a PUB: its subscription messages, and data, discarded.
        self._drain_upstream(peer)

    def _route(self, item: Item) -> bool:
        topic = item[1][0]
        wire = self.wire
        hwm = self.sndhwm
        for peer in self.peers:
            command = peer.pending_command
            if command is not None:
                peer.pending_command = None
                command()
            if peer.remote is None:
                continue
            for prefix in peer.subs:
                if topic.startswith(prefix):
                    break
            else:
                continue
            if hwm == 0 or len(peer.out_q) + peer.unseen < hwm:
                wire.offer(peer, item)
            else:
                self.drop(1, "hwm", f"m{item[0]} to {peer.endpoint}")
        return True


class SimSubscriber(SimSocket, Subscriber):
    """SUB: fair-queue in; subscriptions travel to publishers with the link's delay."""

    __slots__ = ("_subs",)

    def __init__(self, node: Node, options: SocketOptions, index: int) -> None:
        super().__init__(node, options, index)
        self._subs: list[bytes] = []

    def subscribe(self, prefix: bytes) -> None:
        self._check_open()
        if not isinstance(prefix, bytes):
            raise FrameError(f"topic must be bytes, got {type(prefix).__name__} {prefix!r}")
        self._subs.append(prefix)
        for peer in self.peers:
            if peer.remote is not None:
                self.wire.send_subscription(peer, prefix, add=True)

    def unsubscribe(self, prefix: bytes) -> None:
        self._check_open()
        if prefix not in self._subs:
            return
        self._subs.remove(prefix)
        if prefix in self._subs:
            # Counted, as libzmq's SUB counts: the unsubscription goes upstream only
            # when the last subscription to the prefix is removed.
            return
        for peer in self.peers:
            if peer.remote is not None:
                self.wire.send_subscription(peer, prefix, add=False)

    @property
    def subscriptions(self) -> tuple[bytes, ...]:
        return tuple(self._subs)

    def attached(self, peer: Peer) -> None:
        # A conflating SUB's queued subscription commands collapse to the newest.
        # Otherwise each prefix goes once, in byte order: libzmq's SUB sends what its
        # trie holds, walking it in that order.
        for prefix in self._subs[-1:] if self.conflate else sorted(set(self._subs)):
            self.wire.send_subscription(peer, prefix, add=True)

    def _accept(self, peer: Peer, frames: list[bytes]) -> list[bytes] | None:
        topic = frames[0]
        for prefix in self._subs:
            if topic.startswith(prefix):
                return frames
        return None


class SimRequester(SimSocket, Requester):
    """REQ: envelope ``[b""]`` (or ``[id, b""]`` with req_correlate), strict lockstep."""

    __slots__ = ("_awaiting", "_expecting", "_request_id")

    def __init__(self, node: Node, options: SocketOptions, index: int) -> None:
        super().__init__(node, options, index)
        self._awaiting: Peer | None = None
        self._expecting = False
        self._request_id = 0

    def _check_send_state(self) -> None:
        if self._expecting and not self._options.req_relaxed:
            raise StateError(
                f"{self.name}: REQ must receive the reply before sending again "
                "(set req_relaxed to allow it)"
            )

    def _envelope(self, frames: list[bytes]) -> list[bytes]:
        if self._options.req_correlate:
            self._request_id += 1
            return [self._request_id.to_bytes(4, "big"), b"", *frames]
        return [b"", *frames]

    def _route(self, item: Item) -> bool:
        peer = self._round_robin(item)
        if peer is None:
            return False
        self._awaiting = peer
        return True

    def _after_send(self) -> None:
        self._expecting = True

    def _check_recv(self) -> None:
        if self._closed:
            self._check_open()
        if not self._expecting:
            raise StateError(f"{self.name}: REQ must send a request before receiving")

    def _accept(self, peer: Peer, frames: list[bytes]) -> list[bytes] | None:
        if peer is not self._awaiting or not self._expecting:
            self.drop(1, "stray-reply", "not from the peer asked")
            return None
        if self._options.req_correlate:
            expected = self._request_id.to_bytes(4, "big")
            if len(frames) < 3 or frames[0] != expected or frames[1] != b"":
                self.drop(1, "stray-reply", "request id does not match")
                return None
            body = frames[2:]
        else:
            if len(frames) < 2 or frames[0] != b"":
                self.drop(1, "malformed", "reply without empty delimiter")
                return None
            body = frames[1:]
        self._expecting = False
        self._awaiting = None
        return body


class SimWorker(SimSocket, Worker):
    """REP: strips and remembers the envelope; replies to the peer asked."""

    __slots__ = ("_reply_to",)

    def __init__(self, node: Node, options: SocketOptions, index: int) -> None:
        super().__init__(node, options, index)
        self._reply_to: tuple[Peer, list[bytes]] | None = None

    def _check_recv(self) -> None:
        if self._closed:
            self._check_open()
        if self._reply_to is not None:
            raise StateError(f"{self.name}: REP must send the reply before receiving again")

    def _check_send_state(self) -> None:
        if self._reply_to is None:
            raise StateError(f"{self.name}: REP must receive a request before sending")

    def _accept(self, peer: Peer, frames: list[bytes]) -> list[bytes] | None:
        for i, frame in enumerate(frames):
            if not frame:
                body = frames[i + 1 :]
                if not body:
                    break
                self._reply_to = (peer, frames[: i + 1])
                return body
        self.drop(1, "malformed", "request without envelope delimiter")
        return None

    def _route(self, item: Item) -> bool:
        assert self._reply_to is not None
        peer, envelope = self._reply_to
        self._reply_to = None
        reply = (item[0], envelope + item[1])
        if peer.dead or (peer.remote is None and not peer.connecter):
            self.drop(1, "peer-gone", f"reply m{item[0]}")
        elif not peer.room():
            self.drop(1, "hwm", f"reply m{item[0]}")
        else:
            self.wire.offer(peer, reply)
        return True


class SimPusher(SimSocket, Pusher):
    """PUSH: round-robin, blocks at the HWM."""

    __slots__ = ()


class SimPuller(SimSocket, Puller):
    """PULL: fair-queue."""

    __slots__ = ()


class SimDealer(SimSocket, Dealer):
    """DEALER: round-robin out, fair-queue in."""

    __slots__ = ()


class SimPair(SimSocket, Pair):
    """PAIR: at most one live peer."""

    __slots__ = ()

    def admits(self, other: SimSocket) -> bool:
        return not any(peer.remote is not None for peer in self.peers)


class SimRouter(SimSocket, Router):
    """ROUTER: routes by the peer's routing id, prefixes it on receipt."""

    __slots__ = ("_by_id",)

    def __init__(self, node: Node, options: SocketOptions, index: int) -> None:
        super().__init__(node, options, index)
        self._by_id: dict[bytes, Peer] = {}

    def admits(self, other: SimSocket) -> bool:
        rid = other.options.routing_id
        return rid is None or rid not in self._by_id

    def attached(self, peer: Peer) -> None:
        self._by_id[peer.routing_id] = peer
        self.space()

    def detached(self, peer: Peer) -> None:
        if self._by_id.get(peer.routing_id) is peer:
            del self._by_id[peer.routing_id]
        peer.subs.clear()

    def _prepare(self, frames: Sequence[Frame]) -> Item:
        item = super()._prepare(frames)
        if len(item[1]) < 2:
            raise FrameError(
                f"{self.name}: a ROUTER message is [routing id, frame, ...]; "
                f"got {len(item[1])} frame(s)"
            )
        return item

    def _route(self, item: Item) -> bool:
        mid, frames = item
        peer = self._by_id.get(frames[0])
        mandatory = self._options.router_mandatory
        if peer is None:
            if mandatory:
                raise HostUnreachableError(
                    f"{self.name}: no peer with routing id {frames[0]!r} (router_mandatory)"
                )
            self.drop(1, "no-route", f"m{mid} to {frames[0]!r}")
            return True
        if not peer.room():
            if mandatory:
                return False
            self.drop(1, "hwm", f"m{mid} to {frames[0]!r}")
            return True
        self.wire.offer(peer, (mid, frames[1:]))
        return True

    def _accept(self, peer: Peer, frames: list[bytes]) -> list[bytes] | None:
        return [peer.routing_id, *frames]


class SimXPublisher(SimSocket, XPublisher):
    """XPUB: a PUB that passes its subscribers' subscriptions to the application.

    libzmq 4.3's ``xpub.cpp``, modelled:

    - Each pipe's subscriptions are a set (see :meth:`SimSocket.subscription`); the
      socket counts, per prefix, the pipes that hold it. A subscription is passed up
      when it is the prefix's first (or always, with ``xpub_verbose``); an
      unsubscription when it removes the prefix's last pipe, or when the pipe did
      not hold it (libzmq's ``not_found``), or always with ``xpub_verboser``.
    - When a pipe ends (the subscriber disconnected, closed or crashed, and the
      connection is gone: on the binding side at once, on a connecting XPUB when
      its endpoint is given up), every prefix it held is removed and unsubscribed,
      in byte order, under the same rule. A connecting XPUB keeps its pipe, and
      its subscriptions, across reconnects, as libzmq's session does.
    - What it receives (subscription messages and an XSUB's data) waits in one
      queue in arrival order, without bound, as libzmq's pending queue does.
    - ``xpub_welcome_msg`` is sent once per pipe when it is first attached, before
      anything else; ``xpub_nodrop`` makes a send wait while any matching
      subscriber is at its SNDHWM, and then go to all of them.
    - ``xpub_manual``: a pipe's (un)subscriptions go to a set of what it asked for,
      apply nothing, and are all passed up; :meth:`subscribe` and
      :meth:`unsubscribe` act on the pipe of the last (un)subscription received (none
      once it has ended, or once a pipe that ended was unsubscribed). When a pipe ends,
      everything it asked for is unsubscribed, in byte order. libzmq 4.3 pairs
      received messages with pipes in a queue that an XSUB's data messages do not
      enter, so data received between subscriptions shifts which pipe is "last"
      there; the sim pairs each subscription message with its own pipe.
    """

    __slots__ = (
        "_asked",
        "_last_pipe",
        "_manual",
        "_nodrop",
        "_pending",
        "_topics",
        "_verbose",
        "_verboser",
        "_welcomed",
    )

    def __init__(self, node: Node, options: SocketOptions, index: int) -> None:
        super().__init__(node, options, index)
        # (the pipe it came from, the message, whether it is a subscription message)
        self._pending: deque[tuple[Peer | None, list[bytes], bool]] = deque()
        self._topics: dict[bytes, int] = {}
        self._verbose = options.xpub_verbose or options.xpub_verboser
        self._verboser = options.xpub_verboser
        self._nodrop = options.xpub_nodrop
        self._welcomed: set[Peer] = set()  # membership only, never iterated
        self._manual = options.xpub_manual
        self._asked: dict[Peer, list[bytes]] = {}  # xpub_manual: what each pipe asked
        self._last_pipe: Peer | None = None

    def _route(self, item: Item) -> bool:
        topic = item[1][0]
        matching = []
        for peer in self.peers:
            command = peer.pending_command
            if command is not None:
                peer.pending_command = None
                command()
            if peer.remote is None:
                continue
            for prefix in peer.subs:
                if topic.startswith(prefix):
                    matching.append(peer)
                    break
        hwm = self.sndhwm
        if self._nodrop and hwm:
            for peer in matching:
                if len(peer.out_q) + peer.unseen >= hwm:
                    return False  # libzmq's EAGAIN: nobody gets it yet
        wire = self.wire
        for peer in matching:
            if hwm == 0 or len(peer.out_q) + peer.unseen < hwm:
                wire.offer(peer, item)
            else:
                self.drop(1, "hwm", f"m{item[0]} to {peer.endpoint}")
        return True

    # -- what the subscribers send --------------------------------------------------

    def _notify(self, add: bool, prefix: bytes, peer: Peer | None) -> None:
        self._pending.append((peer, [(b"\x01" if add else b"\x00") + prefix], True))
        if self.recv_waiters:
            _wake(self.recv_waiters)

    def subscription(self, peer: Peer, prefix: bytes, add: bool) -> None:
        if self._manual:
            asked = self._asked.setdefault(peer, [])
            if add and prefix not in asked:
                asked.append(prefix)
            elif not add and prefix in asked:
                asked.remove(prefix)
            self._notify(add, prefix, peer)
            return
        subs = peer.subs
        topics = self._topics
        if add:
            if prefix in subs:
                notify = self._verbose
            else:
                subs.append(prefix)
                count = topics.get(prefix, 0)
                topics[prefix] = count + 1
                notify = count == 0 or self._verbose
        elif prefix not in subs:
            notify = True  # libzmq passes an unsubscription it cannot match
        else:
            subs.remove(prefix)
            notify = self._forget(prefix) or self._verboser
        if notify:
            self._notify(add, prefix, peer)

    def _forget(self, prefix: bytes) -> bool:
        """One pipe fewer holds ``prefix``; True if it was the last."""
        left = self._topics[prefix] - 1
        if left:
            self._topics[prefix] = left
            return False
        del self._topics[prefix]
        return True

    def arrived(self, peer: Peer) -> None:
        self._drain_upstream(peer)

    def _upstream_data(self, peer: Peer, item: Item) -> None:
        self._pending.append((peer, item[1], False))
        if self.recv_waiters:
            _wake(self.recv_waiters)

    # -- connections ------------------------------------------------------------------

    def attached(self, peer: Peer) -> None:
        welcome = self._options.xpub_welcome_msg
        if welcome is not None and peer not in self._welcomed:
            self._welcomed.add(peer)
            mid = next(self._message_ids)
            self.trace.add(self.env.now, "welcome", self.name, mid)
            self.wire.offer(peer, (mid, [welcome]))
        self.space()

    def detached(self, peer: Peer) -> None:
        """The connection went down: the pipe's subscriptions stay until it ends."""

    def pipe_ended(self, peer: Peer) -> None:
        self._welcomed.discard(peer)
        if self._last_pipe is peer:
            self._last_pipe = None
        if self._manual:
            asked = self._asked.pop(peer, [])
            peer.subs.clear()  # what the application set, dropped silently
            if asked:
                self._last_pipe = None
            for prefix in sorted(asked):
                self.trace.add(self.env.now, "unsubscribe", self.name, f"{prefix!r} pipe ended")
                self._notify(False, prefix, None)
            return
        if not peer.subs:
            return
        held = sorted(peer.subs)
        peer.subs.clear()
        now = self.env.now
        for prefix in held:
            last = self._forget(prefix)
            self.trace.add(now, "unsubscribe", self.name, f"{prefix!r} pipe ended")
            if last or self._verboser:
                self._notify(False, prefix, None)

    # -- receiving --------------------------------------------------------------------

    def _take(self) -> Message | None:
        if not self._pending:
            return None
        peer, frames, notification = self._pending.popleft()
        if self._manual and notification:
            self._last_pipe = peer if peer is not None and peer in self.peers else None
        self._stats.received += 1
        return frames

    # -- xpub_manual ------------------------------------------------------------------

    def subscribe(self, prefix: bytes) -> None:
        topic = check_manual(self, "subscribe", prefix, self.name)
        peer = self._last_pipe
        if peer is not None and topic not in peer.subs:
            peer.subs.append(topic)
            self.trace.add(self.env.now, "manual-subscribe", self.name, repr(topic))

    def unsubscribe(self, prefix: bytes) -> None:
        topic = check_manual(self, "unsubscribe", prefix, self.name)
        peer = self._last_pipe
        if peer is not None and topic in peer.subs:
            peer.subs.remove(topic)
            self.trace.add(self.env.now, "manual-unsubscribe", self.name, repr(topic))

    async def recv(self, timeout: float | None = None) -> Message:
        self._check_recv()
        msg = self._take()
        if msg is not None:
            return msg
        return await super().recv(timeout)

    async def poll(self, timeout: float = math.inf) -> bool:
        self._check_open()
        deadline = _deadline(timeout, -1)
        while not self._pending:
            if not await _wait(self.recv_waiters, deadline):
                return bool(self._pending)
            self._check_open()
        return True

    def abort(self) -> None:
        lost = len(self._pending)
        self._pending.clear()
        super().abort()
        self.drop(lost, "closed", "received, never read")


class SimXSubscriber(SimSocket, XSubscriber):
    """XSUB: subscriptions are messages it sends upstream; receives unfiltered.

    libzmq 4.3's ``xsub.cpp``, modelled: a subscription message is counted in the
    socket's own list and sent to every connected publisher; an unsubscription goes
    upstream only when it removes the prefix's last subscription (one never made is
    not sent); data goes to every pipe, queued to one still connecting, dropped at a
    pipe's SNDHWM. A new connection first gets each subscribed prefix once, in byte
    order, ahead of anything queued to it (libzmq writes them when it attaches the
    pipe, and again on a reconnect).
    """

    __slots__ = ("_subs",)

    def __init__(self, node: Node, options: SocketOptions, index: int) -> None:
        super().__init__(node, options, index)
        self._subs: list[bytes] = []

    @property
    def subscriptions(self) -> tuple[bytes, ...]:
        return tuple(self._subs)

    def _envelope(self, frames: list[bytes]) -> list[bytes]:
        # The check before a message gets its id (the hook that runs there).
        check_xsub_message(frames, self.name)
        return frames

    def _route(self, item: Item) -> bool:
        what = parse_subscription(item[1])
        peers = self.peers
        if what is not None:
            add, prefix = what
            subs = self._subs
            if add:
                subs.append(prefix)
            else:
                if prefix not in subs:
                    self.trace.add(self.env.now, "unsubscribe-unknown", self.name, repr(prefix))
                    return True
                subs.remove(prefix)
                if prefix in subs:
                    return True  # still subscribed: nothing goes upstream
            # The pipes still connecting get every subscription when they connect.
            peers = [peer for peer in peers if peer.remote is not None]
        wire = self.wire
        for peer in peers:
            if peer.room():
                wire.offer(peer, item)
            else:
                self.drop(1, "hwm", f"m{item[0]} to {peer.endpoint}")
        return True

    def attached(self, peer: Peer) -> None:
        ids = self._message_ids
        items = [(next(ids), [b"\x01" + prefix]) for prefix in sorted(set(self._subs))]
        peer.out_q.extendleft(reversed(items))
        self.space()


SOCKET_CLASSES: dict[SocketKind, type[SimSocket]] = {
    SocketKind.PUB: SimPublisher,
    SocketKind.SUB: SimSubscriber,
    SocketKind.REQ: SimRequester,
    SocketKind.REP: SimWorker,
    SocketKind.PUSH: SimPusher,
    SocketKind.PULL: SimPuller,
    SocketKind.PAIR: SimPair,
    SocketKind.DEALER: SimDealer,
    SocketKind.ROUTER: SimRouter,
    SocketKind.XPUB: SimXPublisher,
    SocketKind.XSUB: SimXSubscriber,
}
