r"""The Majordomo Protocol, 7/MDP version 0.1: service-oriented reliable request/reply.

Clients ask a broker for a *service* by name; the broker hands each request to a worker
that registered that service, and returns the worker's reply. Workers and broker
heartbeat each other, so a dead worker is forgotten and a dead broker is left for a
fresh connection. :class:`MajordomoClient` (the Guide's ``mdcliapi``) asks one request
at a time and retries as the Lazy Pirate does (new REQ socket per attempt);
:class:`AsyncMajordomoClient` (the Guide's ``mdcliapi2``) sends and receives apart over
a DEALER, with many requests in flight, and never retries.

The wire format is the one of rfc.zeromq.org/spec:7 (frames as a ROUTER sees them,
after the peer's routing id):

=========================  ===========================================================
client REQUEST / REPLY     ``[b"", b"MDPC01", service, body...]`` (REQ adds the empty
                           frame; a DEALER client must send it)
worker READY               ``[b"", b"MDPW01", b"\x01", service]``
worker REQUEST / REPLY     ``[b"", b"MDPW01", b"\x02"|b"\x03", client, b"", body...]``
HEARTBEAT / DISCONNECT     ``[b"", b"MDPW01", b"\x04"|b"\x05"]``
=========================  ===========================================================

The broker also answers the Majordomo Management Interface (rfc.zeromq.org/spec:8):
``mmi.service`` replies ``b"200"`` when its body is one frame naming a service that has a
worker, and ``b"404"`` otherwise; any other ``mmi.*`` service replies ``b"501"``.

A request or reply body is one or more frames (7/MDP: "frames 3+" of a command of "4 or
more frames"); a frame may be empty. A message with no body frame is malformed on every
side: clients and workers refuse to send one, the broker drops it.

The broker and the worker follow the rules of :mod:`transportkit.patterns._limits`:
nothing a peer sends ends their loops, what they hold for peers is bounded (see
:class:`MajordomoBroker`), and they never wait on one peer. 7/MDP has no error reply:
a worker gives a request it cannot answer back to the broker (DISCONNECT, then READY
on a new connection), and the broker requeues a request a bounded number of times.

Everything here uses only transportkit's interfaces and asyncio, so it runs on the zmq
backend in real time and in the simulator in virtual time. Timing parameters are
arguments; their defaults are the Guide's constants.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Final, NamedTuple, Self, TypeAlias

from transportkit import (
    ClosedError,
    Dealer,
    Frame,
    FrameError,
    HostUnreachableError,
    Message,
    Network,
    ProtocolError,
    Requester,
    Router,
    ServiceUnavailableError,
    SocketOptions,
    StateError,
    Timeout,
    WouldBlock,
)
from transportkit._closing import Closeable
from transportkit._keywords import RETRIES_COUNTED_ATTEMPTS, renamed
from transportkit._log import limited, peer
from transportkit._socket import check_frames
from transportkit._timeouts import wait_for
from transportkit.patterns._limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    bounded_options,
    check_bound,
    check_finite_hwm,
    check_message_limit,
    message_bytes,
    too_large,
)
from transportkit.patterns._shutdown import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    DrainTimeout,
    GracefulStop,
    check_shutdown_timeout,
    stop_then_close,
)

logger = logging.getLogger(__name__)

__all__ = [
    "MDPC01",
    "MDPW01",
    "MDPW_DISCONNECT",
    "MDPW_HEARTBEAT",
    "MDPW_READY",
    "MDPW_REPLY",
    "MDPW_REQUEST",
    "MDP_HEARTBEAT_INTERVAL",
    "MDP_HEARTBEAT_LIVENESS",
    "MDP_MAX_REQUEUES",
    "MDP_MAX_SERVICE_NAME",
    "MDP_RECONNECT_INTERVAL",
    "MMI_NOT_FOUND",
    "MMI_NOT_IMPLEMENTED",
    "MMI_OK",
    "MMI_SERVICE",
    "AsyncMajordomoClient",
    "AsyncMajordomoClientStats",
    "MajordomoBroker",
    "MajordomoBrokerStats",
    "MajordomoClient",
    "MajordomoClientStats",
    "MajordomoErrorReply",
    "MajordomoHandler",
    "MajordomoReply",
    "MajordomoWorker",
    "MajordomoWorkerStats",
]

MDPC01: Final = b"MDPC01"
"""Protocol header of MDP/Client version 0.1 (frame 1 of every client command)."""

MDPW01: Final = b"MDPW01"
"""Protocol header of MDP/Worker version 0.1 (frame 1 of every worker command)."""

MDPW_READY: Final = b"\x01"
"""Worker command: register for a service (worker to broker, once per connection)."""

MDPW_REQUEST: Final = b"\x02"
"""Worker command: a client's request (broker to worker)."""

MDPW_REPLY: Final = b"\x03"
"""Worker command: the reply to the request being served (worker to broker)."""

MDPW_HEARTBEAT: Final = b"\x04"
"""Worker command: I am alive (both ways)."""

MDPW_DISCONNECT: Final = b"\x05"
"""Worker command: end of the conversation (both ways); a worker then reconnects."""

MDP_HEARTBEAT_LIVENESS: Final = 3
"""Heartbeat intervals of silence after which a peer is considered dead (the Guide's 3)."""

MDP_HEARTBEAT_INTERVAL: Final = 2.5
"""Seconds between heartbeats (the Guide's 2500 ms)."""

MDP_RECONNECT_INTERVAL: Final = 2.5
"""Seconds a worker waits before reconnecting to a silent broker (the Guide's 2500 ms)."""

MMI_SERVICE: Final = b"mmi.service"
"""The MMI service that says whether a service has workers."""

MMI_OK: Final = b"200"
"""MMI reply: the service has at least one worker."""

MMI_NOT_FOUND: Final = b"404"
"""MMI reply: the service has no worker."""

MMI_NOT_IMPLEMENTED: Final = b"501"
"""MMI reply: no such ``mmi.*`` service."""

_MMI_PREFIX: Final = b"mmi."

MajordomoHandler: TypeAlias = Callable[[Message], Awaitable[Sequence[Frame]] | Sequence[Frame]]
"""A worker's request handler: request body in, reply body out (plain or async function)."""


def _check_worker_service(service: object) -> bytes:
    name = _check_service(service)
    if name.startswith(_MMI_PREFIX):
        raise ValueError(
            f"service {name!r}: the 'mmi.' namespace belongs to the broker (8/MMI), "
            "which disconnects workers that register in it"
        )
    return name


def _check_service(service: object) -> bytes:
    if not isinstance(service, bytes):
        raise FrameError(
            f"a service name is bytes, got {type(service).__name__} {service!r:.40} "
            "(encode text explicitly, e.g. b'echo' or 'echo'.encode())"
        )
    if not service:
        raise FrameError("a service name must not be empty")
    return service


def _check_timing(**values: float) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number of seconds, got {value!r}")
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive, finite number of seconds, got {value}")


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _now() -> float:
    return asyncio.get_running_loop().time()


# Deadlines are compared with this much slack: a wait of ``deadline - now`` seconds can
# end a rounding error short of the deadline (in virtual time it then never gets there).
_SLACK: Final = 1e-6


# -- broker ---------------------------------------------------------------------------


MDP_MAX_SERVICE_NAME: Final = 255
"""Default longest service name (bytes) a broker accepts: a ZeroMQ short string."""

MDP_MAX_REQUEUES: Final = 2
"""Default times a broker hands one request again after its worker died or left."""

_FRAME_COST: Final = 48
"""Bytes charged per frame on top of its length (a bytes object's header and its list
slot, rounded up), so that a request of many empty frames is not free."""


@dataclass(slots=True)
class MajordomoBrokerStats:
    """Counters of a :class:`MajordomoBroker`, updated as it runs.

    Attributes:
        requests: Client requests accepted for a service (``mmi.*`` ones excluded).
        dispatched: Requests handed to a worker (a request handed again after its
            worker died counts again).
        replies: Worker replies forwarded to clients.
        mmi: ``mmi.*`` requests answered by the broker itself.
        malformed: Messages that broke the protocol (too short, unknown header, bad
            delimiter, invalid or unexpected worker command); each was dropped.
        over_limit: Messages refused by a bound: larger than ``max_message_bytes``, a
            service name longer than ``max_service_name``, a request past one of the
            ``max_pending*`` bounds, a new service past ``max_services``, a READY past
            ``max_workers``. Each was dropped (a worker's READY or REPLY is answered
            with DISCONNECT).
        disconnects: DISCONNECT commands sent to workers (misbehaving or refused).
        expired_workers: Workers forgotten because they fell silent.
        expired_requests: Queued requests dropped after ``request_ttl``.
        requeued: Requests put back in their queue because their worker died or left.
        poisoned: Requests dropped instead of being requeued again: ``max_requeues``
            workers had already died or left while serving them.
        undeliverable: Messages the socket would not take at once (with
            ``router_mandatory``: a peer gone, or one at its high-water mark); each was
            dropped, and a worker it was meant for is forgotten.
        shutdown_dropped: Requests a graceful stop (:meth:`MajordomoBroker.shutdown`)
            dropped: client requests (``mmi.*`` ones too) that came once it had
            started, and requests still pending at its deadline.
    """

    requests: int = 0
    dispatched: int = 0
    replies: int = 0
    mmi: int = 0
    malformed: int = 0
    over_limit: int = 0
    disconnects: int = 0
    expired_workers: int = 0
    expired_requests: int = 0
    requeued: int = 0
    poisoned: int = 0
    undeliverable: int = 0
    shutdown_dropped: int = 0


@dataclass(slots=True, eq=False)
class _Request:
    client: bytes
    service: _Service
    body: list[bytes]
    queued_at: float
    cost: int
    requeues: int = 0


@dataclass(slots=True, eq=False)
class _WorkerEntry:
    identity: bytes
    service: _Service
    expiry: float
    serving: _Request | None = None


@dataclass(slots=True)
class _Account:
    """What one service or one client has pending in the broker."""

    count: int = 0
    cost: int = 0


@dataclass(slots=True, eq=False)
class _Service:
    name: bytes
    requests: deque[_Request] = field(default_factory=deque)
    workers: dict[bytes, _WorkerEntry] = field(default_factory=dict)
    # Idle workers in the order they became idle: the first waited longest.
    idle: dict[bytes, None] = field(default_factory=dict)
    pending: _Account = field(default_factory=_Account)


class MajordomoBroker:
    """A Majordomo broker: one ROUTER socket for clients and workers alike.

    It tells clients from workers by the protocol header (frame 1). Requests queue per
    service and go to the worker of that service that has been idle longest. Every
    worker is sent a HEARTBEAT every ``heartbeat_interval``; a worker silent for
    ``heartbeat_liveness`` intervals is forgotten (at once, not at the next heartbeat
    tick), and a request it was serving is queued again for another worker (MDP
    workers are idempotent), at most ``max_requeues`` times: a request whose workers
    keep dying or leaving (DISCONNECT) is then dropped and counted
    (``stats.poisoned``), so that a poison request cannot go round the workers for
    ever. Queued requests older than ``request_ttl`` are dropped: their clients have
    retried or given up.

    A worker that sends an invalid or unexpected command (a second READY, a REPLY when
    it serves nothing or for another client, an ``mmi.*`` READY, anything before
    READY but DISCONNECT) is sent DISCONNECT and forgotten. Malformed messages are
    dropped and counted in :attr:`stats`; nothing a peer sends stops the loop.

    **Bounds.** Whatever its peers send, the broker holds at most ``max_pending``
    requests and ``max_pending_bytes`` bytes of them (a request is *pending* from the
    moment it is accepted until its reply is forwarded or it is dropped, whether it
    waits in a queue or is being served), at most ``max_pending_per_service`` /
    ``max_pending_bytes_per_service`` of them for one service (a service without
    workers cannot take the room of the others) and ``max_pending_per_client`` /
    ``max_pending_bytes_per_client`` for one client (a flooding client cannot starve
    the others); a request is charged the length of its body's frames and of the
    client's routing id, plus 48 bytes for each of those frames (what Python holds per
    frame), so that a request of thousands of empty frames is not free. It knows at
    most ``max_services`` services (every service a client asks for is one, until its
    requests are gone) and ``max_workers`` workers, and service names of at most
    ``max_service_name`` bytes.
    A message larger than ``max_message_bytes`` is dropped; the same figure is the
    ROUTER's ``maxmsgsize`` (unless ``options`` set one), so over tcp and ipc libzmq
    drops a peer that sends a larger frame before it reaches the broker. What a bound
    refuses is dropped and counted (``stats.over_limit``): 7/MDP has no error reply, so
    a refused client sees a timeout (and, after its retries,
    :class:`~transportkit.ServiceUnavailableError`); a refused worker gets DISCONNECT.
    A request put back in its queue after its worker died is not refused: it was
    already counted.

    The broker never waits on one peer: every send is non-blocking. Without
    ``router_mandatory`` (the default) the ROUTER drops what a peer at its high-water
    mark cannot take; with it, a send the socket refuses (peer gone, or at its HWM) is
    dropped and counted (``stats.undeliverable``), and a worker it was meant for is
    forgotten (its request requeued). ``sndtimeo`` plays no part. Without
    ``router_mandatory`` the broker cannot know of such a drop: a worker that
    heartbeats but never reads keeps the one request it was handed until it falls
    silent (each such worker holds one request, and there are at most ``max_workers``).

    **Stopping.** :meth:`stop` is the hard stop (the socket closes at once);
    ``await broker.shutdown(timeout)`` the graceful one: from then on every client
    request is dropped (counted in ``stats.shutdown_dropped``; 7/MDP has no error reply,
    so the client times out and retries, perhaps on another broker), while the
    requests already accepted are still dispatched and their workers' replies
    forwarded, for at most ``timeout`` seconds (default 5). Once none is pending, or at
    the deadline (what is still pending is dropped and counted), every worker is sent
    DISCONNECT, the socket is closed with its ``linger`` (give it one, e.g. 1000 ms,
    for the last replies to leave over tcp), and :meth:`run` returns.

    Args:
        network: The network that makes the ROUTER socket.
        endpoint: Where to bind (a wildcard tcp port is fine: see :meth:`bind`).
        heartbeat_interval: Seconds between heartbeats to workers.
        heartbeat_liveness: Silent intervals after which a worker is dead.
        request_ttl: Seconds a request may wait in a queue for a worker (None: for ever).
        max_requeues: Times one request may be handed again after its worker died or
            left (0: never; the Guide's broker never does).
        max_message_bytes: Largest message accepted, all frames (None: no limit).
        max_pending: Requests pending in all.
        max_pending_bytes: Bytes of pending requests in all.
        max_pending_per_service: Requests pending for one service.
        max_pending_bytes_per_service: Bytes of pending requests for one service.
        max_pending_per_client: Requests pending for one client (routing id).
        max_pending_bytes_per_client: Bytes of pending requests for one client.
        max_services: Services known at once (with workers or pending requests).
        max_service_name: Longest service name, in bytes.
        max_workers: Workers registered at once.
        options: Options of the ROUTER socket (its HWMs must not be 0, unlimited).

    Raises:
        ValueError: A timing or a bound is out of range, or ``options`` has an
            unlimited HWM.

    Example:
        >>> with MajordomoBroker(network, "tcp://*:5555") as broker:  # doctest: +SKIP
        ...     await broker.run()  # until broker.stop(), from another task
    """

    def __init__(
        self,
        network: Network,
        endpoint: str,
        *,
        heartbeat_interval: float = MDP_HEARTBEAT_INTERVAL,
        heartbeat_liveness: int = MDP_HEARTBEAT_LIVENESS,
        request_ttl: float | None = 30.0,
        max_requeues: int = MDP_MAX_REQUEUES,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
        max_pending: int = 10_000,
        max_pending_bytes: int = 64 << 20,
        max_pending_per_service: int = 1_000,
        max_pending_bytes_per_service: int = 16 << 20,
        max_pending_per_client: int = 100,
        max_pending_bytes_per_client: int = 8 << 20,
        max_services: int = 1_000,
        max_service_name: int = MDP_MAX_SERVICE_NAME,
        max_workers: int = 1_000,
        options: SocketOptions | None = None,
    ) -> None:
        _check_timing(heartbeat_interval=heartbeat_interval)
        if request_ttl is not None:
            _check_timing(request_ttl=request_ttl)
        self.network: Final = network
        self.heartbeat_interval: Final = float(heartbeat_interval)
        self.heartbeat_liveness: Final = _check_count("heartbeat_liveness", heartbeat_liveness)
        self.request_ttl: Final = request_ttl
        self.max_requeues: Final = check_bound("max_requeues", max_requeues, 0)
        self.max_message_bytes: Final = check_message_limit(max_message_bytes)
        self.max_pending: Final = check_bound("max_pending", max_pending)
        self.max_pending_bytes: Final = check_bound("max_pending_bytes", max_pending_bytes)
        self.max_pending_per_service: Final = check_bound(
            "max_pending_per_service", max_pending_per_service
        )
        self.max_pending_bytes_per_service: Final = check_bound(
            "max_pending_bytes_per_service", max_pending_bytes_per_service
        )
        self.max_pending_per_client: Final = check_bound(
            "max_pending_per_client", max_pending_per_client
        )
        self.max_pending_bytes_per_client: Final = check_bound(
            "max_pending_bytes_per_client", max_pending_bytes_per_client
        )
        self.max_services: Final = check_bound("max_services", max_services)
        self.max_service_name: Final = check_bound("max_service_name", max_service_name)
        self.max_workers: Final = check_bound("max_workers", max_workers)
        self.stats: Final = MajordomoBrokerStats()
        self._endpoint_spec = endpoint
        self._options = bounded_options(options, self.max_message_bytes)
        check_finite_hwm(self._options, "MajordomoBroker", "sndhwm", "rcvhwm")
        self._socket: Router | None = None
        self._endpoint: str | None = None
        self._services: dict[bytes, _Service] = {}
        self._workers: dict[bytes, _WorkerEntry] = {}
        self._clients: dict[bytes, _Account] = {}
        self._pending = _Account()
        self._ready: dict[_Service, None] = {}  # insertion order keeps runs deterministic
        self._next_check = math.inf
        self._running = False
        self._stopping = False
        self._graceful = GracefulStop()

    @property
    def expiry(self) -> float:
        """Seconds of silence after which a worker is forgotten (liveness x interval)."""
        return self.heartbeat_interval * self.heartbeat_liveness

    @property
    def endpoint(self) -> str | None:
        """The endpoint bound (resolved), or None before :meth:`bind`."""
        return self._endpoint

    @property
    def options(self) -> SocketOptions:
        """The ROUTER socket's options (``maxmsgsize`` set from ``max_message_bytes``)."""
        return self._options

    @property
    def pending_requests(self) -> int:
        """Requests accepted and not yet answered or dropped (queued or being served)."""
        return self._pending.count

    @property
    def pending_bytes(self) -> int:
        """Bytes charged for the pending requests (see the class docstring)."""
        return self._pending.cost

    def bind(self) -> str:
        """Make the ROUTER socket and bind it; return the resolved endpoint. Idempotent.

        Call it before :meth:`run` to learn a wildcard port; :meth:`run` binds otherwise.

        Raises:
            ClosedError: The broker was stopped.
            EndpointError: The endpoint is malformed or in use.
        """
        if self._stopping:
            raise ClosedError("the Majordomo broker was stopped")
        if self._socket is None:
            sock = self.network.router(options=self._options)
            try:
                self._endpoint = sock.bind(self._endpoint_spec)
            except BaseException:
                sock.close()
                raise
            self._socket = sock
        assert self._endpoint is not None
        return self._endpoint

    def stop(self) -> None:
        """Make :meth:`run` return, and close the socket, at once (the hard stop: what
        is pending is lost; see :meth:`shutdown`). Idempotent.
        """
        self._stopping = True
        if self._socket is not None:
            self._socket.close()

    async def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Stop gracefully: drop new client requests, finish the pending ones within
        ``timeout`` seconds, DISCONNECT the workers, close the socket (see the class
        docstring). Idempotent; if :meth:`run` is not running, the same as :meth:`stop`.

        Returns:
            True if no pending request was dropped at the deadline.

        Raises:
            ValueError: ``timeout`` is not from 0 to 3600 seconds.
        """
        check_shutdown_timeout(timeout)
        if not self._running:
            self._graceful.request(timeout)
            self.stop()
            return True
        return await self._graceful.shutdown(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def services(self) -> dict[bytes, int]:
        """How many workers each known service has (services with none may be absent)."""
        return {name: len(svc.workers) for name, svc in self._services.items()}

    def worker_count(self, service: bytes) -> int:
        """How many live workers have registered ``service``."""
        svc = self._services.get(service)
        return 0 if svc is None else len(svc.workers)

    def queued(self, service: bytes) -> int:
        """How many requests for ``service`` wait for a worker."""
        svc = self._services.get(service)
        return 0 if svc is None else len(svc.requests)

    async def run(self) -> None:
        """Serve clients and workers until :meth:`stop` (or cancellation); close the socket.

        Returns at once if the broker was already stopped.

        Raises:
            StateError: The broker is already running.
            ClosedError: The socket was closed by someone other than :meth:`stop`.
        """
        if self._stopping:
            return
        if self._running:
            raise StateError("the Majordomo broker is already running")
        self.bind()
        sock = self._socket
        assert sock is not None
        self._running = True
        graceful = self._graceful
        graceful.started()
        heartbeat_at = _now() + self.heartbeat_interval
        try:
            while True:
                now = _now()
                wake = min(heartbeat_at, self._next_check, graceful.deadline)
                try:
                    msg = await graceful.receive(sock, max(wake - now, 0.0))
                except Timeout:
                    pass
                else:
                    if msg is not None:
                        self._handle(sock, msg)
                now = _now() + _SLACK
                if now >= self._next_check:
                    self._purge(now)
                self._dispatch(sock)
                if graceful.requested and (not self._pending.count or graceful.expired()):
                    self._drained(sock)
                    break
                if now >= heartbeat_at:
                    for worker in list(self._workers.values()):
                        if not self._send(sock, [worker.identity, b"", MDPW01, MDPW_HEARTBEAT]):
                            self._forget(worker)
                    heartbeat_at = now + self.heartbeat_interval
        except ClosedError:
            if not self._stopping:
                raise
        finally:
            self._running = False
            if graceful.requested:
                self._stopping = True
            sock.close()
            graceful.finished()

    def _drained(self, sock: Router) -> None:
        """End a graceful stop: count what is still pending, DISCONNECT the workers."""
        if self._pending.count:
            self.stats.shutdown_dropped += self._pending.count
            self._graceful.clean = False
        for worker in list(self._workers.values()):
            self._disconnect(sock, worker.identity)

    # -- internals --------------------------------------------------------------------

    def _send(self, sock: Router, frames: list[bytes]) -> bool:
        """Send without waiting; False (counted) if the socket would not take it now."""
        try:
            sock.try_send(frames)
        except (WouldBlock, HostUnreachableError):
            self.stats.undeliverable += 1
            limited(
                logger,
                logging.WARNING,
                "undeliverable",
                "message to %s could not be sent (gone or at its HWM): dropped",
                peer(frames[0]),
                extra={"peer": peer(frames[0]), "counter": "undeliverable"},
            )
            return False
        return True

    def _watch(self, deadline: float) -> None:
        """Make sure the loop wakes by ``deadline`` to purge what expires then."""
        self._next_check = min(self._next_check, deadline)

    def _next_deadline(self) -> float:
        """The earliest time a worker or a queued request expires (inf if none).

        Deadlines only move later (a worker heard again), so between purges the last
        value is a safe, possibly early, time to look again.
        """
        deadline = math.inf
        for worker in self._workers.values():
            deadline = min(deadline, worker.expiry)
        if self.request_ttl is not None:
            for svc in self._services.values():
                if svc.requests:
                    deadline = min(deadline, svc.requests[0].queued_at + self.request_ttl)
        return deadline

    def _purge(self, now: float) -> None:
        for worker in [w for w in self._workers.values() if w.expiry <= now]:
            self.stats.expired_workers += 1
            logger.warning(
                "worker %s of service %r expired: no heartbeat for %g s",
                peer(worker.identity),
                worker.service.name,
                self.expiry,
                extra={
                    "peer": peer(worker.identity),
                    "service": worker.service.name,
                    "counter": "expired_workers",
                },
            )
            self._forget(worker)
        if self.request_ttl is not None:
            limit = now - self.request_ttl
            for svc in self._services.values():
                while svc.requests and svc.requests[0].queued_at <= limit:
                    self._release(svc.requests.popleft())
                    self.stats.expired_requests += 1
                    limited(
                        logger,
                        logging.WARNING,
                        "expired_requests",
                        "request for service %r expired after %g s in the queue: dropped",
                        svc.name,
                        self.request_ttl,
                        extra={"service": svc.name, "counter": "expired_requests"},
                    )

        for name in [n for n, s in self._services.items() if not s.workers and not s.requests]:
            del self._services[name]
        self._next_check = self._next_deadline()

    def _handle(self, sock: Router, msg: Message) -> None:
        if len(msg) < 3 or msg[1] != b"":
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed message from %s: %s",
                peer(msg[0]),
                "no empty delimiter and header",
                extra={
                    "peer": peer(msg[0]),
                    "reason": "no empty delimiter and header",
                    "counter": "malformed",
                },
            )
            return
        sender, header, frames = msg[0], msg[2], msg[3:]
        if too_large(msg[1:], self.max_message_bytes):
            self.stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "message from %s of %d bytes over max_message_bytes (%d): dropped",
                peer(sender),
                message_bytes(msg[1:]),
                self.max_message_bytes,
                extra={"peer": peer(sender), "reason": "too large", "counter": "over_limit"},
            )
            worker = self._workers.get(sender) if header == MDPW01 else None
            if worker is not None:
                self._disconnect(sock, sender)
            return
        if header == MDPC01:
            self._client_message(sock, sender, frames)
        elif header == MDPW01:
            self._worker_message(sock, sender, frames)
        else:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed message from %s: %s",
                peer(sender),
                "unknown header",
                extra={"peer": peer(sender), "reason": "unknown header", "counter": "malformed"},
            )

    def _client_message(self, sock: Router, client: bytes, frames: list[bytes]) -> None:
        if len(frames) < 2 or not frames[0]:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed request from client %s: %s",
                peer(client),
                "no service or body",
                extra={
                    "peer": peer(client),
                    "reason": "no service or body",
                    "counter": "malformed",
                },
            )
            return
        if self._graceful.requested:
            self.stats.shutdown_dropped += 1
            return
        service, body = frames[0], frames[1:]
        if len(service) > self.max_service_name:
            self.stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "request from client %s: service name of %d bytes over %d: dropped",
                peer(client),
                len(service),
                self.max_service_name,
                extra={
                    "peer": peer(client),
                    "reason": "service name too long",
                    "counter": "over_limit",
                },
            )
            return
        if service.startswith(_MMI_PREFIX):
            self.stats.mmi += 1
            if service == MMI_SERVICE:
                # The body is one service name (8/MMI); anything else names no service.
                found = len(body) == 1 and self.worker_count(body[0]) > 0
                code = MMI_OK if found else MMI_NOT_FOUND
            else:
                code = MMI_NOT_IMPLEMENTED
            self._send(sock, [client, b"", MDPC01, service, code])
            return
        svc = self._services.get(service)
        account = self._clients.get(client)
        cost = len(client) + _FRAME_COST + sum(len(frame) + _FRAME_COST for frame in body)
        if (
            (svc is None and len(self._services) >= self.max_services)
            or not self._room(self._pending, cost, self.max_pending, self.max_pending_bytes)
            or not self._room(
                _Account() if svc is None else svc.pending,
                cost,
                self.max_pending_per_service,
                self.max_pending_bytes_per_service,
            )
            or not self._room(
                _Account() if account is None else account,
                cost,
                self.max_pending_per_client,
                self.max_pending_bytes_per_client,
            )
        ):
            self.stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "request from client %s for service %r refused: a pending-request bound is reached",
                peer(client),
                service,
                extra={
                    "peer": peer(client),
                    "service": service,
                    "reason": "queue full",
                    "counter": "over_limit",
                },
            )
            return
        if svc is None:
            svc = self._services[service] = _Service(service)
        if account is None:
            account = self._clients[client] = _Account()
        for charged in (self._pending, svc.pending, account):
            charged.count += 1
            charged.cost += cost
        self.stats.requests += 1
        request = _Request(client, svc, body, _now(), cost)
        svc.requests.append(request)
        if self.request_ttl is not None:
            self._watch(request.queued_at + self.request_ttl)
        self._ready[svc] = None

    @staticmethod
    def _room(account: _Account, cost: int, count: int, size: int) -> bool:
        return account.count < count and account.cost + cost <= size

    def _release(self, request: _Request) -> None:
        """Uncharge a request that was answered or dropped."""
        account = self._clients[request.client]
        for charged in (self._pending, request.service.pending, account):
            charged.count -= 1
            charged.cost -= request.cost
        if not account.count:
            del self._clients[request.client]

    def _worker_message(self, sock: Router, identity: bytes, frames: list[bytes]) -> None:
        worker = self._workers.get(identity)
        command = frames[0] if frames else b""
        if command == MDPW_DISCONNECT and len(frames) == 1:
            if worker is not None:
                self._forget(worker)
            return
        if worker is None:
            if command == MDPW_READY and len(frames) == 2 and frames[1]:
                self._register(sock, identity, frames[1])
            else:
                self._reject(sock, identity)
            return
        worker.expiry = _now() + self.expiry
        if command == MDPW_HEARTBEAT and len(frames) == 1:
            return
        serving = worker.serving
        if (
            command == MDPW_REPLY
            and serving is not None
            and len(frames) >= 4
            and frames[1] == serving.client
            and frames[2] == b""
        ):
            worker.serving = None
            self._release(serving)
            self.stats.replies += 1
            svc = worker.service
            self._send(sock, [serving.client, b"", MDPC01, svc.name, *frames[3:]])
            svc.idle[identity] = None
            self._ready[svc] = None
            return
        self._reject(sock, identity)

    def _register(self, sock: Router, identity: bytes, service: bytes) -> None:
        if service.startswith(_MMI_PREFIX):
            self._reject(sock, identity)
            return
        svc = self._services.get(service)
        if (
            len(service) > self.max_service_name
            or len(self._workers) >= self.max_workers
            or (svc is None and len(self._services) >= self.max_services)
        ):
            self.stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "worker %s for service %r refused: a bound (workers, services, name) is reached",
                peer(identity),
                service,
                extra={
                    "peer": peer(identity),
                    "service": service,
                    "reason": "too many workers or services",
                    "counter": "over_limit",
                },
            )
            self._disconnect(sock, identity)
            return
        if svc is None:
            svc = self._services[service] = _Service(service)
        worker = _WorkerEntry(identity, svc, _now() + self.expiry)
        self._watch(worker.expiry)
        self._workers[identity] = worker
        svc.workers[identity] = worker
        svc.idle[identity] = None
        self._ready[svc] = None

    def _reject(self, sock: Router, identity: bytes) -> None:
        """Count a protocol violation by a worker, DISCONNECT it and forget it."""
        self.stats.malformed += 1
        limited(
            logger,
            logging.WARNING,
            "malformed",
            "malformed message from worker %s: %s: disconnected",
            peer(identity),
            "not a 7/MDP worker command in its state",
            extra={
                "peer": peer(identity),
                "reason": "not a 7/MDP worker command in its state",
                "counter": "malformed",
            },
        )
        self._disconnect(sock, identity)

    def _disconnect(self, sock: Router, identity: bytes) -> None:
        """Send DISCONNECT to a peer and forget it if it was a worker."""
        self.stats.disconnects += 1
        worker = self._workers.get(identity)
        if worker is not None:
            self._forget(worker)
        self._send(sock, [identity, b"", MDPW01, MDPW_DISCONNECT])

    def _forget(self, worker: _WorkerEntry) -> None:
        """Drop a worker; put the request it was serving back at the head of its queue.

        Unless that request has been requeued ``max_requeues`` times already: then it
        is dropped (``stats.poisoned``).
        """
        self._workers.pop(worker.identity, None)
        svc = worker.service
        svc.workers.pop(worker.identity, None)
        svc.idle.pop(worker.identity, None)
        request, worker.serving = worker.serving, None
        if request is not None:
            if request.requeues >= self.max_requeues:
                self._release(request)
                self.stats.poisoned += 1
                limited(
                    logger,
                    logging.WARNING,
                    "poisoned",
                    "request for service %r dropped: requeued %d times, its workers all died",
                    svc.name,
                    request.requeues,
                    extra={"service": svc.name, "counter": "poisoned"},
                )

            else:
                request.requeues += 1
                svc.requests.appendleft(request)
                if self.request_ttl is not None:
                    self._watch(request.queued_at + self.request_ttl)
                self.stats.requeued += 1
                logger.info(
                    "request for service %r requeued (%d of max_requeues %d): its worker %s "
                    "is gone",
                    svc.name,
                    request.requeues,
                    self.max_requeues,
                    peer(worker.identity),
                    extra={
                        "service": svc.name,
                        "peer": peer(worker.identity),
                        "counter": "requeued",
                    },
                )
                self._ready[svc] = None
        if not svc.workers and not svc.requests and self._services.get(svc.name) is svc:
            del self._services[svc.name]

    def _dispatch(self, sock: Router) -> None:
        """Hand queued requests to idle workers, in the services that changed."""
        ready, self._ready = self._ready, {}
        for svc in ready:
            while svc.idle and svc.requests:
                identity = next(iter(svc.idle))
                del svc.idle[identity]
                worker = svc.workers[identity]
                request = svc.requests.popleft()
                frames = [identity, b"", MDPW01, MDPW_REQUEST, request.client, b"", *request.body]
                if self._send(sock, frames):
                    worker.serving = request
                    self.stats.dispatched += 1
                else:
                    # Never handed over: back at the head, not a requeue; the worker
                    # the socket cannot reach is forgotten.
                    svc.requests.appendleft(request)
                    self._forget(worker)


# -- worker ---------------------------------------------------------------------------


MajordomoErrorReply: TypeAlias = Callable[
    [Message, Exception], Awaitable[Sequence[Frame]] | Sequence[Frame]
]
"""Turns a failed request and the handler's exception into a reply body (opt-in)."""

_RETIRED_SOCKETS: Final = 4
"""Replaced worker sockets kept open at once so that their DISCONNECT can leave."""


@dataclass(slots=True)
class MajordomoWorkerStats:
    """Counters of a :class:`MajordomoWorker`, updated as it runs.

    Attributes:
        requests: Requests received from the broker.
        replies: Replies sent to the broker.
        connects: Connections opened to the broker (each one sends READY).
        disconnects: DISCONNECT commands received from the broker.
        malformed: Messages from the broker that broke the protocol (dropped): not
            7/MDP, an invalid command, or a second REQUEST before the reply to the
            first.
        over_limit: Messages from the broker larger than ``max_message_bytes`` (all
            frames, the client address included), dropped; a request among them is
            given back to the broker as :meth:`MajordomoWorker.abandon` does (unless it
            came while another was held: that one breaks the lockstep and is only
            dropped).
        handler_errors: Requests whose handler (in :meth:`MajordomoWorker.serve`)
            raised or returned something that is not a non-empty sequence of frames.
        error_replies: Of those, the ones answered with the ``on_error`` reply.
        abandoned: Requests given back to the broker (:meth:`MajordomoWorker.abandon`,
            by the application or by :meth:`MajordomoWorker.serve` after a handler
            error).
        unsent: Commands (replies, heartbeats, READY) the socket would not take at once
            (the broker has not read the last ``sndhwm`` messages); each was dropped.
        stale_requests: Requests dropped unread because the connection that brought
            them was replaced meanwhile (the broker has given them to another worker
            or dropped them).
        stale_replies: Replies dropped for the same reason.
        shutdown_dropped: Requests a graceful stop (:meth:`MajordomoWorker.shutdown`)
            gave back to the broker because the handler was still running at its
            deadline (counted in ``abandoned`` too).
    """

    requests: int = 0
    replies: int = 0
    connects: int = 0
    disconnects: int = 0
    malformed: int = 0
    over_limit: int = 0
    handler_errors: int = 0
    error_replies: int = 0
    abandoned: int = 0
    unsent: int = 0
    stale_requests: int = 0
    stale_replies: int = 0
    shutdown_dropped: int = 0


@dataclass(frozen=True, slots=True)
class _Job:
    connection: int
    client: bytes
    body: Message


class MajordomoWorker:
    """A Majordomo worker: serves one service for a broker over a DEALER socket.

    Once started (by :meth:`start`, the first :meth:`recv`, or ``async with``) a
    background task keeps the conversation with the broker: READY on every new
    connection, a HEARTBEAT every ``heartbeat_interval``, and a new connection (after
    ``reconnect_interval``) when the broker has been silent for ``heartbeat_liveness``
    intervals; at once when the broker sends DISCONNECT (unless DISCONNECT was all the
    broker said on that connection: then after ``reconnect_interval`` too, so that a
    broker refusing the worker does not get a storm of READYs). Heartbeats continue
    while the application works on a request, so a slow handler is not taken for a
    dead one. The worker never waits on the broker: its sends are non-blocking, and a
    command the socket will not take at once is dropped and counted
    (``stats.unsent``).

    The application side is a strict lockstep, like a REP socket: :meth:`recv` a
    request, :meth:`send` its reply (or :meth:`abandon` it), :meth:`recv` again; or
    hand a handler to :meth:`serve`. A reply to a request that came on a connection
    since replaced is dropped (and counted): the broker no longer expects it.

    7/MDP has no error reply. A request the worker will not answer (a handler error,
    a request over ``max_message_bytes``) is given back: the worker sends DISCONNECT and
    registers again on a new connection at once, so the broker does not keep it
    marked busy; the broker hands the request to another worker, a bounded number of
    times (:class:`MajordomoBroker`'s ``max_requeues``), and the client, if nobody
    answers, retries and then gets :class:`~transportkit.ServiceUnavailableError`.
    The replaced socket stays open one ``heartbeat_interval`` more so that the
    DISCONNECT can leave (at most 4 such sockets at once).

    At most one request is held for the application: a broker that sends a second
    REQUEST before the reply to the first breaks the protocol, and the second is
    dropped (``stats.malformed``).

    Args:
        network: The network that makes the DEALER sockets.
        broker: The broker's endpoint.
        service: The service name to register (bytes, not starting with ``mmi.``).
        heartbeat_interval: Seconds between heartbeats; use the broker's value.
        heartbeat_liveness: Silent intervals after which the broker is dead.
        reconnect_interval: Seconds to wait before reconnecting to a silent broker.
        max_message_bytes: Largest message accepted from the broker, all frames (the
            client address too, which goes back with the reply; None: no limit).
            Checked in process, so that a larger request can be given back to the
            broker; it is not made the DEALER's ``maxmsgsize`` (the worker's one peer
            is its broker, which bounds what it forwards): set that in ``options`` to
            have libzmq refuse larger frames as well (it then drops the connection,
            and the broker notices only when the worker's entry expires).
        options: Options of the DEALER sockets (their HWMs must not be 0, unlimited).

    Raises:
        ValueError: A timing or a bound is out of range, the service is in the
            ``mmi.`` namespace, or ``options`` has an unlimited HWM.
        FrameError: ``service`` is not non-empty bytes.
    """

    def __init__(
        self,
        network: Network,
        broker: str,
        service: bytes,
        *,
        heartbeat_interval: float = MDP_HEARTBEAT_INTERVAL,
        heartbeat_liveness: int = MDP_HEARTBEAT_LIVENESS,
        reconnect_interval: float = MDP_RECONNECT_INTERVAL,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
        options: SocketOptions | None = None,
    ) -> None:
        _check_timing(heartbeat_interval=heartbeat_interval, reconnect_interval=reconnect_interval)
        self.network: Final = network
        self.broker: Final = broker
        self.service: Final = _check_worker_service(service)
        self.heartbeat_interval: Final = float(heartbeat_interval)
        self.heartbeat_liveness: Final = _check_count("heartbeat_liveness", heartbeat_liveness)
        self.reconnect_interval: Final = float(reconnect_interval)
        self.max_message_bytes: Final = check_message_limit(max_message_bytes)
        self.stats: Final = MajordomoWorkerStats()
        self._graceful = GracefulStop()
        # No maxmsgsize from max_message_bytes here: the worker's one peer is its
        # broker, and a request refused in process can be given back (a frame libzmq
        # refuses drops the connection, and the broker learns only by expiry).
        self._options = SocketOptions() if options is None else options
        check_finite_hwm(self._options, "MajordomoWorker", "sndhwm", "rcvhwm")
        self._socket: Dealer | None = None
        self._retired: deque[tuple[Dealer, asyncio.TimerHandle]] = deque()
        self._connection = 0
        self._heartbeat_at = 0.0
        # The one request received and not yet taken by recv (None: none), and the
        # event recv waits on for it (or for close, or for the pump's failure).
        self._pending: _Job | None = None
        self._wakeup = asyncio.Event()
        self._current: _Job | None = None
        self._pump: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def options(self) -> SocketOptions:
        """The DEALER sockets' options."""
        return self._options

    async def start(self) -> None:
        """Connect, send READY and start heartbeating. Idempotent.

        Returns once READY is queued for the broker (not once the broker has it).

        Raises:
            ClosedError: The worker is closed.
        """
        if self._closed:
            raise ClosedError(f"Majordomo worker for {self.service!r} is closed")
        if self._pump is None:
            self._connect()
            self._start_pump()

    async def recv(self) -> Message:
        """Wait for the next request and return its body.

        Raises:
            StateError: The last request has not been answered with :meth:`send` (or
                given back with :meth:`abandon`).
            ClosedError: The worker is (or became, while waiting) closed.
        """
        if self._current is not None:
            raise StateError("Majordomo worker: send the reply to the current request first")
        await self.start()
        while True:
            if self._failure is not None:
                raise self._failure
            if self._closed:
                raise ClosedError(f"Majordomo worker for {self.service!r} is closed")
            job, self._pending = self._pending, None
            if job is None:
                self._wakeup.clear()
                await self._wakeup.wait()
            elif job.connection == self._connection:
                self._current = job
                return list(job.body)
            else:
                self.stats.stale_requests += 1

    async def send(self, reply: Sequence[Frame]) -> None:
        """Send the reply (one or more frames) to the request :meth:`recv` returned.

        Never waits: a reply the socket will not take at once is dropped and counted
        (``stats.unsent``; the client retries).

        Raises:
            StateError: There is no request to answer.
            FrameError: ``reply`` is not a non-empty sequence of bytes-like frames
                (7/MDP: a reply body has at least one frame, which may be empty).
            ClosedError: The worker is closed.
        """
        job = self._current
        if job is None:
            raise StateError("Majordomo worker: no request to reply to (call recv first)")
        frames = check_frames(reply)
        if self._closed:
            raise ClosedError(f"Majordomo worker for {self.service!r} is closed")
        self._current = None
        sock = self._socket
        if job.connection != self._connection or sock is None:
            self.stats.stale_replies += 1
            return
        if self._try_send(sock, [b"", MDPW01, MDPW_REPLY, job.client, b"", *frames]):
            self.stats.replies += 1
            self._heartbeat_at = _now() + self.heartbeat_interval

    def abandon(self) -> None:
        """Give the current request back to the broker instead of answering it.

        7/MDP has no error reply, so the worker sends DISCONNECT (the broker forgets it
        and requeues the request, at most its ``max_requeues`` times) and registers
        again at once on a new connection. :meth:`recv` then waits for the next request.

        Raises:
            StateError: There is no request to give back.
            ClosedError: The worker is closed.
        """
        job = self._current
        if job is None:
            raise StateError("Majordomo worker: no request to abandon (call recv first)")
        if self._closed:
            raise ClosedError(f"Majordomo worker for {self.service!r} is closed")
        self._current = None
        self.stats.abandoned += 1
        sock = self._socket
        if job.connection != self._connection or sock is None:
            return  # that connection is gone already: the broker has dealt with it
        self._try_send(sock, [b"", MDPW01, MDPW_DISCONNECT])
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        self._connect()
        self._start_pump()

    async def serve(
        self,
        handler: MajordomoHandler,
        *,
        max_requests: int | None = None,
        on_error: MajordomoErrorReply | None = None,
    ) -> int:
        """Answer requests with ``handler`` until the worker is closed or shut down
        (:meth:`shutdown`); return how many.

        A handler that raises (an :class:`Exception`) or returns something that is not
        a non-empty sequence of bytes-like frames is counted
        (``stats.handler_errors``) and the loop goes on: the request is answered with
        ``on_error(request, exc)`` if given (``stats.error_replies``), else given back
        to the broker (:meth:`abandon`). An ``on_error`` that fails in turn is counted
        again and the request given back.

        Args:
            handler: Turns a request body into a reply body; a plain or async function.
            max_requests: Return after answering this many (None: no limit); requests
                given back do not count.
            on_error: Opt-in: turns a failed request and the exception (a
                :class:`~transportkit.FrameError` for an invalid reply) into an
                application-level reply body, e.g. ``[b"ERROR", str(exc).encode()]``.
        """
        served = 0
        graceful = self._graceful
        if graceful.requested:
            return 0
        graceful.started()
        try:
            served = await self._serve(handler, max_requests, on_error)
            if graceful.requested:
                self.close()
        finally:
            graceful.finished()
        return served

    async def _serve(
        self,
        handler: MajordomoHandler,
        max_requests: int | None,
        on_error: MajordomoErrorReply | None,
    ) -> int:
        served = 0
        graceful = self._graceful
        while max_requests is None or served < max_requests:
            try:
                request = await graceful.interruptible(self.recv())
            except ClosedError:
                break
            if request is None:  # a graceful stop; a request taken meanwhile is given
                break  # back by the DISCONNECT of close()
            try:
                reply = await graceful.bounded(_call(handler, request))
            except DrainTimeout:
                self._current = None  # given back: close() sends DISCONNECT
                self.stats.abandoned += 1
                self.stats.shutdown_dropped += 1
                graceful.clean = False
                break
            except Exception as exc:
                self.stats.handler_errors += 1
                limited(
                    logger,
                    logging.ERROR,
                    "handler",
                    "handler of service %r failed",
                    self.service,
                    exc_info=True,
                    extra={"service": self.service, "counter": "handler_errors"},
                )
                reply = None
                if on_error is not None:
                    try:
                        reply = await _call(on_error, request, exc)
                    except Exception:
                        self.stats.handler_errors += 1
                        limited(
                            logger,
                            logging.ERROR,
                            "handler",
                            "on_error of service %r failed",
                            self.service,
                            exc_info=True,
                            extra={"service": self.service, "counter": "handler_errors"},
                        )

                    else:
                        self.stats.error_replies += 1
            try:
                if reply is None:
                    self.abandon()
                    continue
                await self.send(reply)
            except ClosedError:
                break
            served += 1
        return served

    async def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Stop :meth:`serve` gracefully: take no new request, let the handler answer
        the one it holds within ``timeout`` seconds (default 5; past it the handler is
        cancelled and the request given back to the broker, which hands it to another
        worker), then :meth:`close` (DISCONNECT; give ``options`` a ``linger``, e.g.
        1000 ms, for the last reply and the DISCONNECT to leave over tcp). Idempotent;
        a worker not serving is closed at once.

        Returns:
            True if no request was given back at the deadline.

        Raises:
            ValueError: ``timeout`` is not from 0 to 3600 seconds.
        """
        return await stop_then_close(self._graceful, timeout, self.aclose)

    def close(self) -> None:
        """Stop the conversation, close the socket and wake a waiting :meth:`recv`.

        Sends DISCONNECT first, best effort (with ``linger`` 0 it may never leave).
        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
        sock, self._socket = self._socket, None
        if sock is not None:
            with contextlib.suppress(Exception):
                sock.try_send([b"", MDPW01, MDPW_DISCONNECT])
            sock.close()
        while self._retired:
            old, timer = self._retired.popleft()
            timer.cancel()
            old.close()
        self._wakeup.set()

    async def aclose(self) -> None:
        """Close (see :meth:`close`) and wait for the background task to end."""
        self.close()
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- internals --------------------------------------------------------------------

    def _try_send(self, sock: Dealer, frames: Sequence[Frame]) -> bool:
        """Send without waiting; False (counted) if the socket would not take it now."""
        try:
            sock.try_send(frames)
        except WouldBlock:
            self.stats.unsent += 1
            limited(
                logger,
                logging.WARNING,
                "unsent",
                "message to the broker at %s could not be sent (HWM): dropped",
                self.broker,
                extra={"endpoint": self.broker, "service": self.service, "counter": "unsent"},
            )
            return False
        return True

    def _connect(self) -> Dealer:
        """Replace the socket by a new connection and send READY on it."""
        old, self._socket = self._socket, None
        if old is not None:
            self._retire(old)
        sock = self.network.dealer(connect=self.broker, options=self._options)
        self._socket = sock
        self._connection += 1
        self.stats.connects += 1
        self._try_send(sock, [b"", MDPW01, MDPW_READY, self.service])
        self._heartbeat_at = _now() + self.heartbeat_interval
        return sock

    def _retire(self, sock: Dealer) -> None:
        """Close ``sock`` one heartbeat interval from now (what it sent can still leave)."""
        if len(self._retired) >= _RETIRED_SOCKETS:
            oldest, timer = self._retired.popleft()
            timer.cancel()
            oldest.close()
        timer = asyncio.get_running_loop().call_later(
            self.heartbeat_interval, self._close_retired, sock
        )
        self._retired.append((sock, timer))

    def _close_retired(self, sock: Dealer) -> None:
        for i, (old, _) in enumerate(self._retired):
            if old is sock:
                del self._retired[i]
                break
        sock.close()

    def _start_pump(self) -> None:
        self._pump = asyncio.get_running_loop().create_task(
            self._run_pump(), name=f"mdp-worker-{self.service!r}"
        )

    async def _run_pump(self) -> None:
        try:
            while True:
                sock = self._socket
                assert sock is not None
                if await self._converse(sock):
                    logger.warning(
                        "worker of service %r: broker at %s lost or refused us: reconnecting "
                        "in %g s",
                        self.service,
                        self.broker,
                        self.reconnect_interval,
                        extra={"endpoint": self.broker, "service": self.service},
                    )
                    await asyncio.sleep(self.reconnect_interval)
                self._connect()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if not self._closed:
                self._failure = exc
                self._wakeup.set()
            if not isinstance(exc, Exception):
                raise

    def _busy(self) -> bool:
        """Whether a request of the current connection is held or being served."""
        return any(
            job is not None and job.connection == self._connection
            for job in (self._pending, self._current)
        )

    async def _converse(self, sock: Dealer) -> bool:
        """Talk to the broker on ``sock`` until it goes silent or says DISCONNECT.

        Returns whether to pause ``reconnect_interval`` before the next connection: after
        silence, and after a DISCONNECT that answered a READY with nothing else (a
        broker refusing us; reconnecting at once would make a storm). A DISCONNECT on
        an established conversation (a restarted broker that does not know us) is
        answered by a new connection at once, as in the Guide; so is a request too
        large to take, which is given back with DISCONNECT.
        """
        expiry = self.heartbeat_interval * self.heartbeat_liveness
        heard = _now()
        established = False
        while True:
            now = _now() + _SLACK
            if now >= heard + expiry:
                return True
            if now >= self._heartbeat_at:
                self._try_send(sock, [b"", MDPW01, MDPW_HEARTBEAT])
                self._heartbeat_at = now + self.heartbeat_interval
            wake = min(self._heartbeat_at, heard + expiry)
            try:
                msg = await sock.recv(timeout=max(wake - now, 0.0))
            except Timeout:
                continue
            request = (
                len(msg) >= 6
                and msg[0] == b""
                and msg[1] == MDPW01
                and msg[2] == MDPW_REQUEST
                and msg[3] != b""
                and msg[4] == b""
            )
            # All frames count: the client address is held and sent back with the reply.
            if too_large(msg, self.max_message_bytes):
                self.stats.over_limit += 1
                limited(
                    logger,
                    logging.WARNING,
                    "over_limit",
                    "message from the broker of %d bytes over max_message_bytes (%d)",
                    message_bytes(msg),
                    self.max_message_bytes,
                    extra={"endpoint": self.broker, "reason": "too large", "counter": "over_limit"},
                )
                if request and not self._busy():
                    self._try_send(sock, [b"", MDPW01, MDPW_DISCONNECT])  # give it back
                    return False
                continue
            if len(msg) < 3 or msg[0] != b"" or msg[1] != MDPW01:
                self.stats.malformed += 1
                limited(
                    logger,
                    logging.WARNING,
                    "malformed",
                    "malformed message from the broker at %s: %s",
                    self.broker,
                    "no MDPW01 header",
                    extra={
                        "endpoint": self.broker,
                        "reason": "no MDPW01 header",
                        "counter": "malformed",
                    },
                )
                continue
            command = msg[2]
            if request:
                if self._busy():
                    self.stats.malformed += 1
                    limited(
                        logger,
                        logging.WARNING,
                        "malformed",
                        "malformed message from the broker at %s: %s",
                        self.broker,
                        "a request while one is being served",
                        extra={
                            "endpoint": self.broker,
                            "reason": "a request while one is being served",
                            "counter": "malformed",
                        },
                    )
                    continue
                self.stats.requests += 1
                if self._pending is not None:  # from a replaced connection
                    self.stats.stale_requests += 1
                self._pending = _Job(self._connection, msg[3], msg[5:])
                self._wakeup.set()
            elif command == MDPW_HEARTBEAT and len(msg) == 3:
                pass
            elif command == MDPW_DISCONNECT and len(msg) == 3:
                self.stats.disconnects += 1
                logger.info(
                    "worker of service %r: DISCONNECT from the broker at %s",
                    self.service,
                    self.broker,
                    extra={"endpoint": self.broker, "service": self.service},
                )
                return not established
            else:
                self.stats.malformed += 1
                limited(
                    logger,
                    logging.WARNING,
                    "malformed",
                    "malformed message from the broker at %s: %s",
                    self.broker,
                    "unknown command",
                    extra={
                        "endpoint": self.broker,
                        "reason": "unknown command",
                        "counter": "malformed",
                    },
                )
                continue
            heard = _now()
            established = True


async def _call(function: Callable[..., object], *args: object) -> Sequence[Frame]:
    """Call a plain or async handler; return its reply, checked (FrameError if invalid)."""
    reply = function(*args)
    if inspect.isawaitable(reply):
        reply = await reply
    return check_frames(reply)


# -- client ---------------------------------------------------------------------------


@dataclass(slots=True)
class MajordomoClientStats:
    """Counters of a :class:`MajordomoClient`, updated as it works.

    Attributes:
        replies: Requests answered.
        attempts: Requests sent, retries included.
        timeouts: Attempts that got no reply in time (each reopens the socket).
        failures: Requests given up with :class:`~transportkit.ServiceUnavailableError`.
    """

    replies: int = 0
    attempts: int = 0
    timeouts: int = 0
    failures: int = 0


class MajordomoClient(Closeable):
    """A synchronous Majordomo client: one request at a time, Lazy Pirate retries.

    Each attempt sends ``[MDPC01, service, body...]`` on a REQ socket and waits
    ``timeout`` seconds for the reply; after a timeout the socket is closed (so a late
    reply can never be taken for the next one) and a new one sends the request again,
    up to ``attempts`` sends in all, the first included (the Guide's REQUEST_RETRIES,
    which counts the same way). Workers must be
    idempotent: a request may be served more than once.

    Args:
        network: The network that makes the REQ sockets.
        broker: The broker's endpoint.
        timeout: Seconds to wait for each attempt's reply.
        attempts: Sends of each request before giving up, the first included (at
            least 1; default 3). Formerly ``retries``, which counted the same thing:
            passing ``retries=`` raises a TypeError that says what to write.
        options: Options of the REQ sockets.
        latency_observer: Called with the seconds (event-loop time: virtual in a
            simulation) from a request's first send to its valid reply, retries
            included; None (default) measures nothing. It must not raise.
            :class:`transportkit.metrics.LatencyHistogram` is one.

    Raises:
        ValueError: ``timeout`` is not a positive number, or ``attempts`` is not an
            int >= 1.
        TypeError: The removed keyword ``retries`` was given (use ``attempts``).
    """

    @renamed("retries", "attempts", RETRIES_COUNTED_ATTEMPTS)
    def __init__(
        self,
        network: Network,
        broker: str,
        *,
        timeout: float = MDP_HEARTBEAT_INTERVAL,
        attempts: int = 3,
        options: SocketOptions | None = None,
        latency_observer: Callable[[float], object] | None = None,
    ) -> None:
        _check_timing(timeout=timeout)
        self.network: Final = network
        self.broker: Final = broker
        self.timeout: Final = float(timeout)
        self.attempts: Final = _check_count("attempts", attempts)
        """Sends of each request, the first included, before giving up."""
        self.stats: Final = MajordomoClientStats()
        self.latency_observer = latency_observer
        self._options = options
        self._socket: Requester | None = None
        self._busy = False
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    async def request(self, service: bytes, frames: Sequence[Frame]) -> Message:
        """Ask ``service`` and return the reply body (the frames after the service name).

        Args:
            service: The service name, e.g. ``b"echo"`` or ``b"mmi.service"``.
            frames: The request body: a non-empty sequence of bytes-like frames.

        Raises:
            ServiceUnavailableError: No reply after ``attempts`` sends.
            ProtocolError: The reply lacks the MDPC01 header or names another service.
            FrameError: ``service`` or ``frames`` is malformed.
            StateError: Another request of this client is in progress.
            ClosedError: The client is closed.
        """
        name = _check_service(service)
        body = check_frames(frames)
        if self._closed:
            raise ClosedError("Majordomo client is closed")
        if self._busy:
            raise StateError("Majordomo client: one request at a time (use a client per task)")
        self._busy = True
        observer = self.latency_observer
        started = _now() if observer is not None else 0.0
        try:
            for _ in range(self.attempts):
                reply = await self._attempt([MDPC01, name, *body])
                if reply is not None:
                    answer = self._check_reply(reply, name)
                    if observer is not None:
                        observer(_now() - started)
                    return answer
            self.stats.failures += 1
            logger.warning(
                "giving up on service %r at %s after %d attempts of %g s",
                name,
                self.broker,
                self.attempts,
                self.timeout,
                extra={"endpoint": self.broker, "service": name, "counter": "failures"},
            )
            raise ServiceUnavailableError(
                f"Majordomo service {name!r} at {self.broker}: no reply after "
                f"{self.attempts} attempts of {self.timeout} s"
            )
        finally:
            self._busy = False

    def close(self) -> None:
        """Close the socket; later requests raise ClosedError. Idempotent."""
        self._closed = True
        self._reset()

    async def _attempt(self, message: list[Frame]) -> Message | None:
        """One send and wait; the reply, or None after a timeout (socket reset)."""
        if self._socket is None:
            self._socket = self.network.requester(connect=self.broker, options=self._options)
        sock = self._socket
        self.stats.attempts += 1
        try:
            deadline = _now() + self.timeout
            await wait_for(sock.send(message), self.timeout)
            return await sock.recv(timeout=max(deadline - _now(), 0.0))
        except (Timeout, TimeoutError):
            self.stats.timeouts += 1
            logger.info(
                "no reply from %s in %g s: reconnecting (attempt %d)",
                self.broker,
                self.timeout,
                self.stats.attempts,
                extra={"endpoint": self.broker, "counter": "timeouts"},
            )
            self._reset()
            return None
        except BaseException:
            self._reset()
            raise

    def _reset(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def _check_reply(self, reply: Message, service: bytes) -> Message:
        self.stats.replies += 1
        if len(reply) < 3:
            raise ProtocolError(
                f"Majordomo reply has {len(reply)} frames, expected at least 3 "
                "(MDPC01, service, body)"
            )
        if reply[0] != MDPC01:
            raise ProtocolError(f"Majordomo reply header is {reply[0]!r:.40}, expected {MDPC01!r}")
        if reply[1] != service:
            raise ProtocolError(
                f"Majordomo reply is from service {reply[1]!r:.60}, expected {service!r}"
            )
        return reply[2:]


# -- asynchronous client ---------------------------------------------------------------


class MajordomoReply(NamedTuple):
    """A reply taken by :meth:`AsyncMajordomoClient.recv_reply`."""

    service: bytes
    """The service that answered (frame 2 of the reply)."""

    body: Message
    """The reply body: one or more frames."""


@dataclass(slots=True)
class AsyncMajordomoClientStats:
    """Counters of an :class:`AsyncMajordomoClient`, updated as it works.

    Attributes:
        sent: Requests sent.
        replies: Well-formed replies received.
        timeouts: Receives that got no reply within their timeout.
        malformed: Messages received that are not a 7/MDP client reply, or a reply
            from a service with no request outstanding (each raised
            :class:`~transportkit.ProtocolError` and was dropped).
        reconnects: Times :meth:`AsyncMajordomoClient.reconnect` replaced the socket.
    """

    sent: int = 0
    replies: int = 0
    timeouts: int = 0
    malformed: int = 0
    reconnects: int = 0


class AsyncMajordomoClient(Closeable):
    """An asynchronous Majordomo client (the Guide's ``mdcliapi2``): many requests in flight.

    One DEALER socket connected to the broker. :meth:`send` sends
    ``[b"", b"MDPC01", service, body...]`` (the empty frame stands for the one a REQ
    socket would add) and returns at once; :meth:`recv` (or :meth:`recv_reply`) waits
    for the next reply, ``[b"", b"MDPC01", service, body...]`` on the wire, and returns
    its body. Replies come in the order the broker forwards them, which for one
    service with several workers need not be the order of the requests: put a
    correlation id in the body if you need to match them. A reply is taken only from
    a service that has a request outstanding (one reply per request): anything else
    is no answer to this client's requests, and is dropped and counted.

    There are no retries, as in the Guide: a request the broker drops (7/MDP has no
    error reply: a broker past a bound, or one that restarted) or a worker loses is
    never answered, and :meth:`recv` raises :class:`~transportkit.Timeout` after
    ``timeout`` seconds without a reply. What to resend is the application's
    decision (workers must be idempotent); :meth:`reconnect` starts a fresh
    connection, so that replies to what was sent before can no longer arrive.

    Pipelining is bounded by the broker: transportkit's :class:`MajordomoBroker`
    accepts at most ``max_pending_per_client`` requests (default 100) from one client
    at a time and drops the rest; keep that many or fewer in flight (the ``mdclient2``
    example sends in a window), or raise the broker's bound. The socket's own queue is
    bounded by ``sndhwm``: :meth:`send` waits while it is full, at most ``timeout``
    seconds.

    Args:
        network: The network that makes the DEALER socket.
        broker: The broker's endpoint.
        timeout: Default seconds :meth:`recv` waits for a reply, and the most
            :meth:`send` waits for room in the socket's queue.
        options: Options of the DEALER socket.

    Raises:
        ValueError: ``timeout`` is not a positive, finite number.
    """

    def __init__(
        self,
        network: Network,
        broker: str,
        *,
        timeout: float = MDP_HEARTBEAT_INTERVAL,
        options: SocketOptions | None = None,
    ) -> None:
        _check_timing(timeout=timeout)
        self.network: Final = network
        self.broker: Final = broker
        self.timeout: Final = float(timeout)
        self.stats: Final = AsyncMajordomoClientStats()
        self._options = options
        self._socket: Dealer | None = None
        # Requests sent and not answered, per service (since the last reconnect).
        self._outstanding: dict[bytes, int] = {}
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def outstanding(self) -> int:
        """Requests sent and not answered (since the last :meth:`reconnect`)."""
        return sum(self._outstanding.values())

    async def send(self, service: bytes, frames: Sequence[Frame]) -> None:
        """Send one request to ``service``; return without waiting for the reply.

        Args:
            service: The service name, e.g. ``b"echo"`` or ``b"mmi.service"``.
            frames: The request body: a non-empty sequence of bytes-like frames.

        Raises:
            Timeout: The socket's queue stayed full for ``timeout`` seconds (the
                broker is not reading); the request was not sent.
            FrameError: ``service`` or ``frames`` is malformed.
            ClosedError: The client is closed.
        """
        name = _check_service(service)
        body = check_frames(frames)
        sock = self._sock()
        try:
            await wait_for(sock.send([b"", MDPC01, name, *body]), self.timeout)
        except TimeoutError as exc:
            if isinstance(exc, Timeout):
                raise
            raise Timeout(
                f"Majordomo client: the socket to {self.broker} took no request for "
                f"{self.timeout} s (the broker is not reading)"
            ) from None
        self.stats.sent += 1
        self._outstanding[name] = self._outstanding.get(name, 0) + 1

    async def recv(self, timeout: float | None = None) -> Message:
        """Wait for the next reply and return its body (the frames after the service).

        Args:
            timeout: Seconds to wait (None: the client's ``timeout``; ``math.inf``: for
                ever).

        Raises:
            ValueError: ``timeout`` is not positive.
            Timeout: No reply within ``timeout`` seconds (counted in ``stats.timeouts``).
            ProtocolError: The message received is not a 7/MDP client reply, or is
                a reply from a service that has no request outstanding (counted in
                ``stats.malformed``; it is dropped, and the next :meth:`recv` goes
                on with the next message).
            ClosedError: The client is (or became, while waiting) closed.
        """
        return (await self.recv_reply(timeout)).body

    async def recv_reply(self, timeout: float | None = None) -> MajordomoReply:
        """Like :meth:`recv`, but also say which service answered.

        Raises:
            ValueError: As :meth:`recv`.
            Timeout: As :meth:`recv`.
            ProtocolError: As :meth:`recv`.
            ClosedError: As :meth:`recv`.
        """
        wait = self.timeout if timeout is None else timeout
        if wait != math.inf:
            _check_timing(timeout=wait)
        sock = self._sock()
        try:
            msg = await sock.recv(timeout=wait)
        except Timeout:
            self.stats.timeouts += 1
            raise
        if len(msg) < 4 or msg[0] != b"" or msg[1] != MDPC01 or not msg[2]:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed reply from the broker at %s: %s",
                self.broker,
                "not a 7/MDP reply",
                extra={
                    "endpoint": self.broker,
                    "reason": "not a 7/MDP reply",
                    "counter": "malformed",
                },
            )
            raise ProtocolError(
                f"Majordomo client: not a 7/MDP reply ({len(msg)} frames, starting "
                f"{msg[:2]!r:.60}); expected [b'', b'MDPC01', service, body...]"
            )
        service = msg[2]
        waiting = self._outstanding.get(service, 0)
        if not waiting:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed reply from the broker at %s: %s",
                self.broker,
                "no request outstanding for its service",
                extra={
                    "endpoint": self.broker,
                    "reason": "no request outstanding for its service",
                    "counter": "malformed",
                },
            )
            raise ProtocolError(
                f"Majordomo client: a reply from service {service!r:.60}, which has no "
                "request outstanding (dropped)"
            )
        if waiting == 1:
            del self._outstanding[service]
        else:
            self._outstanding[service] = waiting - 1
        self.stats.replies += 1
        return MajordomoReply(service, msg[3:])

    def reconnect(self) -> None:
        """Close the socket and connect a new one at the next :meth:`send` or :meth:`recv`.

        Replies to requests sent before can no longer arrive (the Guide's
        ``reconnect_to_broker``); :attr:`outstanding` starts again at 0.

        Raises:
            ClosedError: The client is closed.
        """
        if self._closed:
            raise ClosedError("Majordomo client is closed")
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()
            self.stats.reconnects += 1
            logger.info(
                "reconnecting to the broker at %s (%d request(s) outstanding are lost)",
                self.broker,
                sum(self._outstanding.values()),
                extra={"endpoint": self.broker, "counter": "reconnects"},
            )
        self._outstanding.clear()

    def close(self) -> None:
        """Close the socket; later calls raise ClosedError. Idempotent."""
        self._closed = True
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def _sock(self) -> Dealer:
        if self._closed:
            raise ClosedError("Majordomo client is closed")
        if self._socket is None:
            self._socket = self.network.dealer(connect=self.broker, options=self._options)
        return self._socket
