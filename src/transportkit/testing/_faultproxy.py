"""A tcp fault proxy: the sim backend's network faults on real sockets.

Each tcp connection between two nodes (two processes, two ZeroMQ contexts) is routed
through a :class:`FaultProxy` listener: the connecting side's endpoint is rewritten to
the proxy's port, and the proxy opens its own connection to the real bound port for
each connection it accepts, then forwards bytes both ways. The fault objects of
:mod:`transportkit.sim_backend` drive it (:meth:`FaultProxy.apply`,
:meth:`FaultProxy.schedule`), so one fault schedule runs on both backends. The
scenario runner (``--backend zmq``: the tcp connects from one node to another node's
name, between two nodes that some network fault or ``[[link]]`` names; a link's
latency is :meth:`FaultProxy.set_link_latency` from the start) and
:class:`~transportkit.testing.ZmqHarness` (``faults=True``: tcp connects from one of
its networks to a port another one bound; ``@sim_test``'s zmq run uses one) route
through it. A connection whose real
port does not accept (nothing bound yet, the node crashed) is reset at once, and
libzmq retries after ``reconnect_ivl``, as it would after a refused connect.

What each fault means at the TCP level (per one-way link ``a -> b``: the bytes that
``a``'s sockets send to ``b``'s over every route between the two):

- :class:`~transportkit.sim_backend.Partition`: the proxy stops reading and forwarding
  on the cut direction(s). Bytes wait in the kernel buffers of the proxy's socket and
  of the sender's; once those are full, TCP backpressure reaches libzmq (its pipe
  fills to the high-water mark: a PUSH blocks, a PUB drops), as on a black-holed link
  where TCP retransmits. New connections between the two nodes are refused while
  either direction is cut (accepted, then reset at once: libzmq sees a disconnect and
  retries after ``reconnect_ivl``, as the sim's connect fails and is retried). ZMTP
  heartbeats that cannot pass expire as they would on a real cut link.
- :class:`~transportkit.sim_backend.Repair`: forwarding resumes; what waited is
  delivered in order (TCP lost nothing).
- :class:`~transportkit.sim_backend.Hold` / :class:`~transportkit.sim_backend.Release`:
  the same stall in one or both directions, but connections stay up and new ones are
  accepted (their handshakes wait for the release too).
- :class:`~transportkit.sim_backend.DropConnection`: every proxied connection between
  the two nodes is closed on both halves with a TCP reset; what the proxy held is
  lost, and libzmq on the connecting side reconnects (through the proxy again),
  keeping its queue. ``discard_queues=True`` cannot be realised: the proxy cannot
  reach into libzmq's queues (the outcome says so).
- :class:`~transportkit.sim_backend.SetLatency`: each chunk the proxy reads is
  forwarded no earlier than a delay drawn from the model (the proxy's own seeded RNG)
  after it was read, never before an earlier chunk; ``latency=None`` ends the spike:
  the link is back to its own added delay (:meth:`FaultProxy.set_link_latency`, a
  scenario's ``[[link]]``), or to no added delay (its real latency) if it has none.
  :class:`~transportkit.sim_backend.Crash` and
  :class:`~transportkit.sim_backend.Restart` are not network faults: the runner and
  the harness realise them by closing and reopening a node's sockets (the proxy then
  forwards the resulting close like any other).

What the proxy adds to latency: measured on loopback with REQ/REP round trips of small
messages, direct and through the proxy interleaved (``tests/zmq_backend/
test_fault_proxy.py`` measures it again and prints it with ``-s``), 50 to 110 us per
round trip at the median: 0.08 to 0.13 ms through the proxy against 0.03 ms direct,
and a P99 of about 0.3 ms against 0.09 ms, on a shared two-core machine (load 2 to 5).
A round trip crosses the proxy twice, each crossing one more asyncio read and write
in one Python thread, which also bounds throughput (chunks of at most
:data:`CHUNK_BYTES`).

What it cannot model:

- exact per-message timing: libzmq batches messages into one TCP write, and the proxy
  delays chunks, not messages, so one delay applies to a batch, and a latency model's
  per-message jitter is not reproduced;
- exact in-flight capacity: during a partition what waits is what the kernel buffers
  of both legs hold, not the sim's model of them;
- faults on ``ipc://`` and ``inproc://`` (no TCP to sit in), nor a tcp connect to an
  address that names no node (nothing says whose it is);
- a Hold that outlasts a heartbeat timeout (``heartbeat_ivl``) or the ZMTP handshake
  timeout (30 s): real libzmq drops that connection, the sim keeps it;
- the monitor events of a refused connect (libzmq reports ``CONNECTED`` then
  ``DISCONNECTED`` where a black-holed SYN would give ``CONNECT_DELAYED``).

Bounds: every direction of every connection buffers at most ``buffer_bytes`` (reading
stops there, so TCP backpressure does the rest), at most ``max_connections``
connections are open at once (more are refused), an upstream connect gives up after
``connect_timeout`` seconds, control calls from other threads wait at most
``call_timeout`` seconds, and :meth:`FaultProxy.close` closes every listener,
connection and task, then stops the proxy's thread, within its ``timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from transportkit._errors import ClosedError, EndpointError, OptionError, Timeout
from transportkit.sim_backend._faults import (
    Crash,
    DropConnection,
    Fault,
    Hold,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
    describe_latency,
    sorted_schedule,
)
from transportkit.sim_backend._latency import LatencyModel

__all__ = ["CHUNK_BYTES", "FaultProxy", "ProxyStats"]

T = TypeVar("T")

CHUNK_BYTES: Final = 64 * 1024
"""The most bytes the proxy reads (and forwards, and delays as one) at a time."""

DEFAULT_BUFFER_BYTES: Final = 256 * 1024
DEFAULT_MAX_CONNECTIONS: Final = 1024
_STREAM_LIMIT: Final = 64 * 1024
"""asyncio's default StreamReader limit (it reads ahead up to twice this)."""

_TCP = re.compile(r"^tcp://(127\.0\.0\.1|localhost|\[::1\]|::1):(\d+)$")

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a TCP reset


@dataclass
class ProxyStats:
    """What a :class:`FaultProxy` did (a snapshot; counts since it started).

    Attributes:
        accepted: Connections accepted and forwarded.
        refused: Connections reset at once because a direction between the two nodes
            was partitioned (or ``max_connections`` were open).
        upstream_failed: Connections reset because the real port did not accept (not
            bound yet, or the node is down) within ``connect_timeout``.
        dropped: Connections closed by :class:`~transportkit.sim_backend.DropConnection`.
        open: Connections open now.
        forwarded_bytes: Bytes forwarded, both directions.
        held_bytes: Bytes read and not yet forwarded now, all connections (each
            direction of each connection holds at most ``buffer_bytes`` plus one chunk).
    """

    accepted: int = 0
    refused: int = 0
    upstream_failed: int = 0
    dropped: int = 0
    open: int = 0
    forwarded_bytes: int = 0
    held_bytes: int = 0


@dataclass(eq=False)
class _Direction:
    """The one-way link ``src -> dst``: its faults, shared by every route between them."""

    src: str
    dst: str
    cut: bool = False
    held: bool = False
    delay: LatencyModel | None = None
    base: LatencyModel | None = None  # the link's own added delay (a scenario's [[link]])
    passing: asyncio.Event = field(default_factory=asyncio.Event)

    def update(self) -> None:
        if self.cut or self.held:
            self.passing.clear()
        else:
            self.passing.set()


@dataclass(eq=False)
class _Route:
    """One listener: connections from node ``src`` to ``host:port`` of node ``dst``."""

    src: str
    dst: str
    host: str
    port: int
    server: asyncio.base_events.Server | None = None
    listen_port: int = 0
    connections: set[_Connection] = field(default_factory=set)


class _Pump:
    """One direction of one proxied connection: read chunks, delay, forward."""

    def __init__(
        self,
        proxy: FaultProxy,
        conn: _Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Direction,
    ) -> None:
        self.proxy = proxy
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.link = link
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.buffered = 0
        self.last_due = 0.0
        self.room = asyncio.Event()
        self.ready = asyncio.Event()

    async def read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        bound = self.proxy.buffer_bytes
        while True:
            # Nothing is read while the direction is cut or held: the bytes stay in the
            # kernel buffers, so the proxy adds no capacity to a stalled link.
            await self.link.passing.wait()
            while self.buffered >= bound:
                self.room.clear()
                await self.room.wait()
            try:
                data = await self.reader.read(CHUNK_BYTES)
            except OSError:
                data = b""
            now = loop.time()
            model = self.link.delay
            due = now if model is None else now + max(0.0, model.sample(self.proxy.rng))
            self.last_due = due = max(due, self.last_due)
            self.queue.append((due, data or None))
            self.buffered += len(data)
            self.ready.set()
            if not data:
                return

    async def write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.queue:
                self.ready.clear()
                await self.ready.wait()
            await self.link.passing.wait()
            due, data = self.queue[0]
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue  # the link may have been cut meanwhile
            self.queue.popleft()
            if data is None:  # the source closed: close both halves (ZMTP never half-closes)
                self.conn.close(reset=False)
                return
            self.buffered -= len(data)
            self.room.set()
            try:
                self.writer.write(data)
                await self.writer.drain()
            except OSError:
                self.conn.close(reset=True)
                return
            self.proxy._stats.forwarded_bytes += len(data)


class _Connection:
    """A proxied connection: the accepted half, the upstream half, two pumps."""

    def __init__(
        self,
        proxy: FaultProxy,
        route: _Route,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.route = route
        self.writers = (client[1], upstream[1])
        up = _Pump(proxy, self, client[0], upstream[1], proxy._direction(route.src, route.dst))
        down = _Pump(proxy, self, upstream[0], client[1], proxy._direction(route.dst, route.src))
        self.pumps = (up, down)
        loop = asyncio.get_running_loop()
        self.tasks = [
            loop.create_task(pump_loop)
            for pump in self.pumps
            for pump_loop in (pump.read_loop(), pump.write_loop())
        ]
        self.closed = False

    @property
    def held_bytes(self) -> int:
        return sum(pump.buffered for pump in self.pumps)

    def close(self, *, reset: bool) -> None:
        """Close both halves (with a TCP reset if ``reset``) and stop the pumps."""
        if self.closed:
            return
        self.closed = True
        self.route.connections.discard(self)
        self.proxy._stats.open -= 1
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        for writer in self.writers:
            _close_writer(writer, reset=reset)


def _close_writer(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    if reset:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        writer.transport.abort()
    else:
        writer.close()


def _check_number(name: str, value: object, *, minimum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum:
        raise OptionError(f"{name} must be a number >= {minimum:g}, got {value!r}")


class FaultProxy:
    """A tcp proxy in its own thread that the sim's fault objects drive.

    Make one per run, :meth:`route` each connection between two nodes through it
    before the connecting side connects, apply faults with :meth:`apply` or
    :meth:`schedule`, and :meth:`close` it (or use it as a context manager). The
    module docstring says what each fault does at the TCP level, what the proxy adds
    to latency and what it cannot model. Thread-safe: every method may be called from
    any thread (the work happens in the proxy's thread).

    Args:
        seed: Seeds the RNG that draws added delays from latency models.
        buffer_bytes: The most bytes one direction of one connection holds (read and
            not yet forwarded) before the proxy stops reading (>= 1; default 256 KiB).
        max_connections: The most connections open at once; more are refused
            (>= 1; default 1024).
        connect_timeout: Seconds an upstream connect may take (> 0; default 2).
        call_timeout: Seconds a control call waits for the proxy's thread (> 0;
            default 5).
        socket_buffer_bytes: When set (>= 1), ``SO_SNDBUF`` and ``SO_RCVBUF`` of the
            proxy's own sockets (both legs of every connection, set before they
            connect), the high-water mark of its asyncio write buffers and the
            read-ahead of its stream readers, so that the proxy adds little capacity
            to a routed link (the kernel rounds the
            socket buffers up to its minimum); None (the default) keeps the
            system's, which on loopback grow to megabytes.

    Raises:
        OptionError: A bound is out of range.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float = 2.0,
        call_timeout: float = 5.0,
        socket_buffer_bytes: int | None = None,
    ) -> None:
        bounded = [("buffer_bytes", buffer_bytes), ("max_connections", max_connections)]
        if socket_buffer_bytes is not None:
            bounded.append(("socket_buffer_bytes", socket_buffer_bytes))
        for name, value in bounded:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(f"{name} must be an int >= 1, got {value!r}")
        self.socket_buffer_bytes = socket_buffer_bytes
        _check_number("connect_timeout", connect_timeout, minimum=1e-6)
        _check_number("call_timeout", call_timeout, minimum=1e-6)
        self.buffer_bytes = buffer_bytes
        self.max_connections = max_connections
        self.connect_timeout = float(connect_timeout)
        self.call_timeout = float(call_timeout)
        self.rng = random.Random(seed)
        self._stats = ProxyStats()
        self._routes: dict[tuple[str, str, str, int], _Route] = {}
        self._directions: dict[tuple[str, str], _Direction] = {}
        self._timers: list[asyncio.TimerHandle] = []
        self._outcomes: list[tuple[float, Fault, str]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._serve, name="transportkit-fault-proxy", daemon=True
        )
        self._thread.start()

    # -- the proxy's thread -------------------------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            try:
                pending = asyncio.all_tasks(self._loop)
                for task in pending:
                    task.cancel()
                if pending:
                    self._loop.run_until_complete(asyncio.wait(pending, timeout=self.call_timeout))
                # Aborted transports close their sockets in callbacks: let them run.
                self._loop.run_until_complete(asyncio.sleep(0))
            finally:
                self._loop.close()

    def _call(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``make()`` in the proxy's thread and return its result (bounded)."""
        with self._lock:
            if self._closed:
                raise ClosedError("the fault proxy is closed")
        if threading.current_thread() is self._thread:
            raise RuntimeError("FaultProxy methods cannot be called from its own thread")
        future = asyncio.run_coroutine_threadsafe(make(), self._loop)
        try:
            return future.result(self.call_timeout)
        except TimeoutError as exc:
            future.cancel()
            raise Timeout(f"the fault proxy did not answer within {self.call_timeout:g} s") from exc

    def _direction(self, src: str, dst: str) -> _Direction:
        key = (src, dst)
        direction = self._directions.get(key)
        if direction is None:
            direction = self._directions[key] = _Direction(src, dst)
            direction.update()
        return direction

    def _cut_between(self, a: str, b: str) -> bool:
        return self._direction(a, b).cut or self._direction(b, a).cut

    async def _accept(
        self, route: _Route, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._cut_between(route.src, route.dst) or self._stats.open >= self.max_connections:
            self._stats.refused += 1
            _close_writer(writer, reset=True)
            return
        try:
            upstream = await asyncio.wait_for(
                self._connect_upstream(route.host, route.port), self.connect_timeout
            )
        except (OSError, TimeoutError):
            self._stats.upstream_failed += 1
            _close_writer(writer, reset=True)
            return
        if self._cut_between(route.src, route.dst):  # cut while the upstream connected
            self._stats.refused += 1
            _close_writer(writer, reset=True)
            _close_writer(upstream[1], reset=True)
            return
        self._stats.accepted += 1
        self._stats.open += 1
        if self.socket_buffer_bytes is not None:  # nor much in asyncio's write buffers
            for half in (writer, upstream[1]):
                half.transport.set_write_buffer_limits(high=self.socket_buffer_bytes)
        route.connections.add(_Connection(self, route, (reader, writer), upstream))

    def _size_buffers(self, sock: socket.socket) -> None:
        if self.socket_buffer_bytes is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_buffer_bytes)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.socket_buffer_bytes)

    async def _connect_upstream(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.socket_buffer_bytes is None:
            return await asyncio.open_connection(host, port)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._size_buffers(sock)  # before the connect: the window is set then
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, limit=self.socket_buffer_bytes)

    async def _open_route(self, key: tuple[str, str, str, int]) -> int:
        route = self._routes.get(key)
        if route is None:
            src, dst, host, port = key
            route = _Route(src, dst, host, port)
            self._direction(src, dst)
            self._direction(dst, src)

            async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._accept(route, reader, writer)

            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self._size_buffers(listener)  # accepted sockets inherit them
                listener.bind(("127.0.0.1", 0))
            except BaseException:
                listener.close()
                raise
            route.server = await asyncio.start_server(
                accept, sock=listener, limit=self.socket_buffer_bytes or _STREAM_LIMIT
            )
            route.listen_port = route.server.sockets[0].getsockname()[1]
            self._routes[key] = route
        return route.listen_port

    def _between(self, a: str, b: str) -> list[_Route]:
        return [r for r in self._routes.values() if {r.src, r.dst} == {a, b}]

    def _apply(self, fault: Fault) -> str:
        """Apply ``fault`` (in the proxy's thread) and say what was done."""
        match fault:
            case Partition(a, b, both_ways) | Hold(a, b, both_ways):
                return self._stall(fault, a, b, both_ways, on=True)
            case Repair(a, b, both_ways) | Release(a, b, both_ways):
                return self._stall(fault, a, b, both_ways, on=False)
            case DropConnection(a, b, discard_queues):
                return self._drop(a, b, discard_queues=discard_queues)
            case SetLatency(a, b, latency, both_ways):
                return self._latency(a, b, latency, both_ways)
            case _:
                raise ValueError(
                    f"{fault!r} is not a network fault: crashes and restarts are realised "
                    "by closing and reopening a node's sockets, not by the proxy"
                )

    def _links(self, a: str, b: str, both_ways: bool) -> list[_Direction]:
        pairs = [(a, b), (b, a)] if both_ways else [(a, b)]
        return [self._direction(src, dst) for src, dst in pairs]

    @staticmethod
    def _names(links: list[_Direction]) -> str:
        return " and ".join(f"{link.src}->{link.dst}" for link in links)

    def _none_routed(self, a: str, b: str) -> str:
        return (
            f"not applicable on zmq: no tcp connection between {a} and {b} goes through "
            "the fault proxy (only tcp connects to another node are routed; ipc and "
            "inproc cannot be faulted); the link state is kept for later connections"
        )

    def _stall(self, fault: Fault, a: str, b: str, both_ways: bool, *, on: bool) -> str:
        links = self._links(a, b, both_ways)
        cut = isinstance(fault, Partition | Repair)
        for link in links:
            if cut:
                link.cut = on
            else:
                link.held = on
            link.update()
        routes = self._between(a, b)
        if not routes:
            return self._none_routed(a, b)
        count = sum(len(r.connections) for r in routes)
        held = sum(c.held_bytes for r in routes for c in r.connections)
        names = self._names(links)
        if on and cut:
            return (
                f"applied: {names} cut on {count} connection(s): forwarding stopped (bytes "
                "wait in the kernel buffers, then TCP backpressure), new connections refused"
            )
        if on:
            return (
                f"applied: {names} held on {count} connection(s): forwarding paused, "
                "connections stay up, new ones accepted"
            )
        return (
            f"applied: {names} {'repaired' if cut else 'released'} on {count} "
            f"connection(s): forwarding resumed, {held} byte(s) the proxy held go first"
        )

    def _drop(self, a: str, b: str, *, discard_queues: bool) -> str:
        routes = self._between(a, b)
        if not routes:
            return self._none_routed(a, b)
        conns = [c for r in routes for c in r.connections]
        lost = sum(c.held_bytes for c in conns)
        for conn in conns:
            conn.close(reset=True)
        self._stats.dropped += len(conns)
        text = (
            f"applied: {len(conns)} connection(s) between {a} and {b} reset on both "
            f"halves ({lost} byte(s) the proxy held lost); libzmq reconnects"
        )
        if discard_queues:
            text += (
                "; discard_queues not realised: the connecting side keeps its queue "
                "(the proxy cannot reach libzmq's)"
            )
        return text

    def _latency(self, a: str, b: str, model: LatencyModel | None, both_ways: bool) -> str:
        links = self._links(a, b, both_ways)
        for link in links:
            link.delay = link.base if model is None else model
        routes = self._between(a, b)
        if not routes:
            return self._none_routed(a, b)
        count = sum(len(r.connections) for r in routes)
        if model is not None:
            what = f"+{describe_latency(model)} per chunk"
        elif any(link.base is not None for link in links):
            each = [
                f"{link.src}->{link.dst} "
                + ("none" if link.base is None else f"+{describe_latency(link.base)}")
                for link in links
            ]
            what = "back to the link's own added delay (" + ", ".join(each) + ")"
        else:
            what = "added delay removed"
        return f"applied: {self._names(links)}: {what} ({count} connection(s) now)"

    def _link_latency(self, a: str, b: str, model: LatencyModel, both_ways: bool) -> str:
        links = self._links(a, b, both_ways)
        for link in links:
            link.base = link.delay = model
        routes = self._between(a, b)
        count = sum(len(r.connections) for r in routes)
        return (
            f"applied: {self._names(links)}: +{describe_latency(model)} per chunk from now on, "
            f"the link's own latency, on top of loopback's and the proxy's "
            f"({len(routes)} route(s), {count} connection(s) now)"
        )

    def _fire(self, at: float, fault: Fault) -> None:
        try:
            text = self._apply(fault)
        except Exception as exc:  # a scheduled fault never kills the proxy's loop
            text = f"failed: {type(exc).__name__}: {exc}"
        self._outcomes.append((at, fault, text))

    # -- the public, thread-safe API ----------------------------------------------------

    def route(self, src: str, dst: str, endpoint: str) -> str:
        """Route connections from node ``src`` to ``endpoint`` (bound by node ``dst``).

        Idempotent: the same ``(src, dst, endpoint)`` gets the same listener.

        Args:
            src: The connecting node.
            dst: The node that bound ``endpoint``.
            endpoint: ``tcp://127.0.0.1:PORT`` (or ``localhost``, ``[::1]``): the real
                bound port.

        Returns:
            The endpoint ``src`` connects to instead: ``tcp://127.0.0.1:LISTEN_PORT``.

        Raises:
            EndpointError: ``endpoint`` is not a loopback tcp endpoint with a port.
            ClosedError: The proxy is closed.
            Timeout: The proxy's thread did not answer within ``call_timeout``.
        """
        match = _TCP.match(endpoint)
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise EndpointError(
                f"the fault proxy routes tcp://127.0.0.1:PORT endpoints, got {endpoint!r}"
            )
        host = match.group(1).strip("[]")
        host = "127.0.0.1" if host == "localhost" else host
        key = (src, dst, host, int(match.group(2)))
        port = self._call(lambda: self._open_route(key))
        return f"tcp://127.0.0.1:{port}"

    def apply(self, fault: Fault) -> str:
        """Apply a network fault now, on every route between its two nodes.

        The state is kept per one-way link, so routes made later obey it too.

        Returns:
            What was done, starting with ``"applied"``, or ``"not applicable on zmq"``
            when no route joins the two nodes.

        Raises:
            ValueError: ``fault`` is a :class:`~transportkit.sim_backend.Crash` or
                :class:`~transportkit.sim_backend.Restart` (not the proxy's to do).
            ClosedError: The proxy is closed.
            Timeout: The proxy's thread did not answer within ``call_timeout``.
        """
        if isinstance(fault, Crash | Restart):
            raise ValueError(
                f"{fault!r} is not a network fault: crashes and restarts are realised by "
                "closing and reopening a node's sockets, not by the proxy"
            )

        async def apply() -> str:
            return self._apply(fault)

        return self._call(apply)

    def set_link_latency(
        self, a: str, b: str, latency: LatencyModel, *, both_ways: bool = True
    ) -> str:
        """Give the link ``a -> b`` (and ``b -> a`` if ``both_ways``) its own added
        delay, as a scenario's ``[[link]]`` does: each chunk is delayed by a draw from
        ``latency``, from now on, on every route between the two (made before or after).

        A :class:`~transportkit.sim_backend.SetLatency` fault replaces it while it
        lasts, and ``SetLatency(a, b, None)`` restores it (not zero), as the sim
        restores a link's own latency after a spike.

        Returns:
            What was done, starting with ``"applied"``.

        Raises:
            TypeError: ``latency`` is not a latency model.
            ClosedError: The proxy is closed.
            Timeout: The proxy's thread did not answer within ``call_timeout``.
        """
        if not isinstance(latency, LatencyModel):
            raise TypeError(f"latency must be a latency model, got {type(latency).__name__}")

        async def set_base() -> str:
            return self._link_latency(a, b, latency, both_ways)

        return self._call(set_base)

    def schedule(self, schedule: Iterable[tuple[float, Fault]], *, start: float) -> None:
        """Apply each network fault of ``schedule`` at ``start + time`` (in the proxy's
        thread, so faults fire on time whatever the caller's event loop is doing).

        Outcomes are collected in :attr:`outcomes`. A fault whose time has passed is
        applied at once.

        Args:
            schedule: ``(seconds, fault)`` pairs (times >= 0), network faults only.
            start: The zero of the schedule's times, in ``time.monotonic()`` seconds
                (the clock of asyncio's loops).

        Raises:
            ValueError: A time is negative, or a fault is a crash or a restart.
            ClosedError: The proxy is closed.
        """
        items = sorted_schedule(schedule)
        for _, fault in items:
            if isinstance(fault, Crash | Restart):
                raise ValueError(f"{fault!r} is not a network fault: the proxy cannot apply it")

        async def arm() -> None:
            for at, fault in items:
                self._timers.append(self._loop.call_at(start + at, self._fire, at, fault))

        self._call(arm)

    @property
    def outcomes(self) -> list[tuple[float, Fault, str]]:
        """``(time, fault, outcome)`` of each fault :meth:`schedule` applied, in order."""
        return list(self._outcomes)

    @property
    def stats(self) -> ProxyStats:
        """A snapshot of what the proxy did (see :class:`ProxyStats`)."""

        async def snapshot() -> ProxyStats:
            held = sum(c.held_bytes for r in self._routes.values() for c in r.connections)
            return ProxyStats(**{**vars(self._stats), "held_bytes": held})

        return self._call(snapshot)

    @property
    def routes(self) -> list[tuple[str, str, str]]:
        """``(src, dst, real endpoint)`` of every route, in the order they were made."""
        return [(s, d, f"tcp://{h}:{p}") for s, d, h, p in list(self._routes)]

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def close(self, timeout: float = 2.0) -> None:
        """Close every listener and connection, cancel timers and tasks, stop the
        thread. Idempotent; returns within about ``timeout`` seconds.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True

        async def shut() -> None:
            for timer in self._timers:
                timer.cancel()
            for route in self._routes.values():
                if route.server is not None:
                    route.server.close()
                for conn in list(route.connections):
                    conn.close(reset=True)
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=timeout / 2)

        if self._loop.is_running() or self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(shut(), self._loop)
            with contextlib.suppress(Exception):
                future.result(timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._routes)} routes"
        return f"<FaultProxy {state}>"
