r"""The load-balancing broker and Simple Pirate (ZeroMQ Guide, chapters 3 and 4).

:class:`LoadBalancingBroker` is the Guide's broker: a ROUTER front end for clients (REQ),
a ROUTER back end for workers, and a queue of the workers ready for work, least
recently used first. A worker announces itself with ``READY`` and after that every
reply it sends also says it is ready again. The front end is only read while a worker
is free, so requests wait in the clients' pipes (not in the broker) when all workers
are busy.

Simple Pirate is this broker with :class:`~transportkit.patterns.lazy_pirate.LazyPirateClient`
clients: a request lost with a crashed worker is retried by its client. The broker does
not notice dead workers (Paranoid Pirate does), so one request per dead worker is lost
and retried. A worker whose connection drops while a request or its reply is on the
wire is lost for good, though it lives: its REQ waits for a request the broker thinks
it is serving, and nothing (no heartbeat, no second READY) brings them back together
until the worker restarts. Use Paranoid Pirate where connections may drop.

Wire format (the Guide's): a worker's REQ sends ``[READY]`` once, then replies
``[*envelope, *reply]``; the broker sends it ``[*envelope, *request]``, where the
envelope is the client's routing id and the empty delimiter (``[client, b""]``).

READY comes in two spellings in the Guide: ``b"\x01"`` (:data:`READY`, the Simple
Pirate ``spworker``/``spqueue``, and the same byte as Paranoid Pirate's ``PPP_READY``)
and ``b"READY"`` (:data:`READY_TEXT`, the chapter 3 ``lbbroker`` and
its Python ports). The broker accepts both and counts neither as malformed. The worker sends
``b"\x01"`` unless told otherwise (``ready=READY_TEXT``): the Guide's ``spqueue`` takes
only that byte for READY (it forwards anything else to the front end as a reply), while
the Guide's ``lbbroker`` takes any short first message for READY, so ``b"\x01"`` is
the one spelling both of the Guide's brokers accept.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Final

from transportkit._errors import ClosedError, HostUnreachableError, WouldBlock
from transportkit._log import limited, peer
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._poll import poll
from transportkit._socket import Message, Router
from transportkit.patterns._broker import RouterPair
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
    GracefulStop,
    stop_then_close,
)
from transportkit.patterns.lazy_pirate import Handler, reply_or_none

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_WORKERS",
    "READY",
    "READY_TEXT",
    "BrokerStats",
    "LoadBalancingBroker",
    "LoadBalancingWorkerStats",
    "SimplePirateQueue",
    "run_load_balancing_worker",
    "split_envelope",
]

READY: Final = b"\x01"
"""What a load-balancing worker sends first by default (the Guide's Simple Pirate
``LRU_READY``/``WORKER_READY``, ``"\\001"``)."""

READY_TEXT: Final = b"READY"
"""The other READY the broker accepts (the Guide's chapter 3 ``lbbroker`` and its
Python ports); a worker sends it when given ``ready=READY_TEXT``."""

_READY_SIGNALS: Final = frozenset({READY, READY_TEXT})

DEFAULT_MAX_WORKERS: Final = 10_000
"""How many ready workers a broker lists at most, by default."""


def split_envelope(frames: Message) -> tuple[Message, Message] | None:
    """Split ``frames`` after the first empty frame: ``(envelope, body)``.

    Returns None when there is no empty delimiter or nothing follows it.
    """
    for i, frame in enumerate(frames):
        if not frame:
            if i + 1 == len(frames):
                return None
            return frames[: i + 1], frames[i + 1 :]
    return None


@dataclass(slots=True)
class BrokerStats:
    """Counters of a broker.

    Attributes:
        requests: Client requests handed to a worker.
        replies: Worker replies forwarded to a client.
        ready: READY announcements received (either spelling: :data:`READY` or
            :data:`READY_TEXT`).
        malformed: Messages that follow no protocol (counted and dropped; a client's
            malformed request gets no reply, so its own timeout handles it; a peer on
            the back end is not listed as a worker for a malformed message).
        over_limit: Messages dropped for a bound: larger than ``max_message_bytes``, or
            a READY from a new worker while ``max_workers`` are listed.
        dropped: Messages a ``router_mandatory`` socket refused to route (without that
            option ROUTERs drop unroutable messages silently, as libzmq does).
        shutdown_dropped: Requests a graceful stop (``shutdown``) left unanswered: those
            still with a worker at its deadline.
    """

    requests: int = 0
    replies: int = 0
    ready: int = 0
    malformed: int = 0
    over_limit: int = 0
    dropped: int = 0
    shutdown_dropped: int = 0


class LoadBalancingBroker(RouterPair):
    """Routes each client request to the least recently used ready worker.

    Contract: each request read from the front end goes to exactly one worker, and each
    worker reply goes to the client whose request it answers (by the envelope the
    worker returns). A worker gets at most one request at a time: it is given work only
    after saying READY or replying. Requests are read from clients only while a worker
    is free. Nothing here blocks: both sockets are ROUTERs, which drop what they cannot
    route (a reply to a client that is gone, a request to a worker that died).

    Bounds: messages over ``max_message_bytes`` are dropped (and, over ipc and tcp,
    libzmq drops the connection of a peer that sends a larger frame: it is the ROUTERs'
    ``maxmsgsize`` unless ``options`` set one); at most ``max_workers`` are listed.
    The broker holds no request: it reads clients only while a worker is free.

    The sockets are bound on construction (so the resolved endpoints can be announced)
    and closed by :meth:`close` (the hard stop). ``await broker.shutdown(timeout)`` is
    the graceful one: the front end is no longer read (a request waiting there gets no
    answer: the client's timeout, then its retry, handles it, as for a dead broker),
    the replies to the requests workers hold are forwarded for at most ``timeout``
    seconds (default 5), what is still held then is counted in
    ``stats.shutdown_dropped``, and both sockets are closed with their ``linger`` (give
    them one, e.g. 1000 ms, for the last replies to leave over tcp).

    Args:
        network: Where the sockets come from.
        frontend: Endpoint(s) to bind for clients.
        backend: Endpoint(s) to bind for workers.
        options: Options of both ROUTER sockets (the front end's only, when
            ``backend_options`` is given).
        backend_options: Options of the back end ROUTER (default: ``options``), e.g.
            a plaintext ipc back end behind a CURVE tcp front end.
        max_message_bytes: Largest message accepted, all frames (None: no limit).
        max_workers: Most ready workers listed at once.

    Raises:
        ValueError: A bound is not an int >= 1, or ``options`` has an unlimited (0) HWM.
    """

    def __init__(
        self,
        network: Network,
        *,
        frontend: str,
        backend: str,
        options: SocketOptions | None = None,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
        max_workers: int = DEFAULT_MAX_WORKERS,
        backend_options: SocketOptions | None = None,
    ) -> None:
        self.max_message_bytes = check_message_limit(max_message_bytes)
        self.max_workers = check_bound("max_workers", max_workers)
        self.stats = BrokerStats()
        self._workers: dict[bytes, None] = {}  # ordered: the first waited longest
        self._busy: dict[bytes, None] = {}  # workers holding a request
        self._graceful = GracefulStop()
        opts = bounded_options(options, self.max_message_bytes)
        check_finite_hwm(opts, type(self).__name__, "sndhwm", "rcvhwm")
        back = opts
        if backend_options is not None:
            back = bounded_options(backend_options, self.max_message_bytes)
            check_finite_hwm(back, type(self).__name__, "sndhwm", "rcvhwm")
        super().__init__(
            network, frontend=frontend, backend=backend, options=opts, backend_options=back
        )

    @property
    def workers(self) -> tuple[bytes, ...]:
        """Routing ids of the ready workers, the next one to get work first."""
        return tuple(self._workers)

    async def run(self) -> None:
        """Broker until :meth:`close` or :meth:`shutdown` (then return); never raises
        for bad input. Returns at once after a :meth:`shutdown`.
        """
        graceful = self._graceful
        if graceful.requested:
            return
        graceful.started()
        try:
            while not graceful.requested:
                sockets = [self.backend, self.frontend] if self._workers else [self.backend]
                ready = await graceful.interruptible(poll(sockets, math.inf))
                if ready is None:
                    break
                if self.backend in ready:
                    self._from_worker()
                if self.frontend in ready and self._workers and not graceful.requested:
                    self._from_client()
            while self._busy and not graceful.expired():
                if self.backend in await poll([self.backend], graceful.remaining()):
                    self._from_worker()
            if self._busy:
                self.stats.shutdown_dropped += len(self._busy)
                graceful.clean = False
            self.close()
        except ClosedError:
            return
        finally:
            graceful.finished()

    async def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Stop gracefully (see the class docstring) and close the sockets; a broker
        that is not running is closed at once. Idempotent.

        Returns:
            True if every request a worker held was answered before the deadline.

        Raises:
            ValueError: ``timeout`` is not from 0 to 3600 seconds.
        """
        return await stop_then_close(self._graceful, timeout, self.close)

    def _from_worker(self) -> None:
        msg = self.backend.try_recv()
        if msg is None:
            return
        if too_large(msg, self.max_message_bytes):
            self.stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "message from worker %s of %d bytes over max_message_bytes (%d): dropped",
                peer(msg[0]),
                message_bytes(msg),
                self.max_message_bytes,
                extra={"peer": peer(msg[0]), "reason": "too large", "counter": "over_limit"},
            )
            return
        worker = msg[0]
        content = msg[2:] if len(msg) >= 3 and msg[1] == b"" else None
        if content is not None and len(content) == 1 and content[0] in _READY_SIGNALS:
            self.stats.ready += 1
        elif content is not None and split_envelope(content) is not None:
            self._send(self.frontend, content)
            self.stats.replies += 1
        else:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed message from worker %s: %s",
                peer(worker),
                "not READY or an enveloped reply",
                extra={
                    "peer": peer(worker),
                    "reason": "not READY or an enveloped reply",
                    "counter": "malformed",
                },
            )
            return
        self._busy.pop(worker, None)
        if worker in self._workers:
            return
        if len(self._workers) >= self.max_workers:
            self.stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "worker %s not listed: max_workers (%d) reached",
                peer(worker),
                self.max_workers,
                extra={"peer": peer(worker), "reason": "max_workers", "counter": "over_limit"},
            )
            return
        self._workers[worker] = None

    def _from_client(self) -> None:
        msg = self.frontend.try_recv()
        if msg is None:
            return
        if too_large(msg, self.max_message_bytes):
            self.stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "request from client %s of %d bytes over max_message_bytes (%d): dropped",
                peer(msg[0]),
                message_bytes(msg),
                self.max_message_bytes,
                extra={"peer": peer(msg[0]), "reason": "too large", "counter": "over_limit"},
            )
            return
        if split_envelope(msg) is None:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed request from client %s: %s",
                peer(msg[0]),
                "no envelope",
                extra={"peer": peer(msg[0]), "reason": "no envelope", "counter": "malformed"},
            )
            return
        worker = next(iter(self._workers))
        del self._workers[worker]
        self._send(self.backend, [worker, b"", *msg])
        self._busy[worker] = None
        if len(self._busy) > self.max_workers:  # the oldest died holding its request
            del self._busy[next(iter(self._busy))]
        self.stats.requests += 1

    def _send(self, router: Router, msg: Message) -> None:
        try:
            router.try_send(msg)
        except (HostUnreachableError, WouldBlock):
            self.stats.dropped += 1
            limited(
                logger,
                logging.WARNING,
                "dropped",
                "message to %s could not be sent (gone or at its HWM): dropped",
                peer(msg[0]),
                extra={"peer": peer(msg[0]), "counter": "dropped"},
            )


SimplePirateQueue = LoadBalancingBroker
"""The Guide's Simple Pirate queue is the load-balancing broker, unchanged; its clients
are Lazy Pirate clients and its workers :func:`run_load_balancing_worker` (the Guide's
``spworker``: it says ``b"\\x01"`` and echoes ``[client, b"", request]``)."""


@dataclass(slots=True)
class LoadBalancingWorkerStats:
    """Counters of a :func:`run_load_balancing_worker` loop.

    Attributes:
        served: Requests answered.
        malformed: Messages from the broker that were not a request (no envelope).
        over_limit: Requests larger than ``max_message_bytes``, dropped.
        handler_errors: Requests whose handler raised or returned something that is not
            a message, dropped (the client's retry, or its timeout, handles them).
    """

    served: int = 0
    malformed: int = 0
    over_limit: int = 0
    handler_errors: int = 0


async def run_load_balancing_worker(
    network: Network,
    endpoint: str,
    handler: Handler,
    *,
    options: SocketOptions | None = None,
    max_requests: int | None = None,
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
    stats: LoadBalancingWorkerStats | None = None,
    ready: bytes = READY,
) -> int:
    r"""Work for a :class:`LoadBalancingBroker` at ``endpoint`` (its back end).

    Opens a REQ socket, says READY, then answers each request with ``handler(body)``,
    returning the request's envelope with the reply. The socket is closed on return.

    No request ends the loop: one that is malformed, too large, or whose handler fails
    (raises, or returns something that is not a message) is dropped and counted, and
    the worker says READY again in its place (its REQ socket must send before it can
    receive), so the broker lists it again at once. The client's own retry or timeout
    deals with the dropped request.

    Args:
        network: Where the socket comes from.
        endpoint: The broker's back end.
        handler: Makes a reply from a request body (for Lazy Pirate clients of the
            sequenced wire format, wrap it with
            :func:`~transportkit.patterns.lazy_pirate.sequenced`; plain clients, the
            default, need nothing).
        options: Options of the REQ socket (e.g. a ``routing_id``). A socket that
            connects is given no ``maxmsgsize`` (see :mod:`transportkit.patterns._limits`).
        max_requests: Return after this many replies (None: until the socket closes).
        max_message_bytes: Largest request accepted, all frames (None: no limit).
        stats: Counters to update as the loop runs.
        ready: The READY signal to send: :data:`READY` (``b"\x01"``, the Guide's
            ``spqueue``), or :data:`READY_TEXT` for a broker that wants ``b"READY"``.

    Returns:
        How many requests were answered.

    Raises:
        ValueError: ``max_message_bytes`` is not None or an int >= 1, ``options`` has
            an unlimited (0) HWM, or ``ready`` is neither READY signal.
    """
    if ready not in _READY_SIGNALS:
        raise ValueError(f"ready must be READY or READY_TEXT, got {ready!r}")
    limit = check_message_limit(max_message_bytes)
    opts = SocketOptions() if options is None else options
    check_finite_hwm(opts, "load-balancing worker", "sndhwm", "rcvhwm")
    counters = LoadBalancingWorkerStats() if stats is None else stats
    served = 0
    with network.requester(connect=endpoint, options=opts) as sock:
        await sock.send([ready])
        while max_requests is None or served < max_requests:
            try:
                msg = await sock.recv(timeout=math.inf)
            except ClosedError:
                break
            parts = split_envelope(msg)
            reply = None
            if parts is None:
                counters.malformed += 1
                limited(
                    logger,
                    logging.WARNING,
                    "malformed",
                    "malformed request from the broker at %s: %s",
                    endpoint,
                    "no envelope",
                    extra={"endpoint": endpoint, "reason": "no envelope", "counter": "malformed"},
                )
            elif too_large(msg, limit):
                counters.over_limit += 1
                limited(
                    logger,
                    logging.WARNING,
                    "over_limit",
                    "request of %d bytes over max_message_bytes (%s): not served",
                    message_bytes(msg),
                    limit,
                    extra={"endpoint": endpoint, "reason": "too large", "counter": "over_limit"},
                )
            else:
                reply = await reply_or_none(handler, parts[1], log=logger)
                if reply is None:
                    counters.handler_errors += 1
            if reply is None or parts is None:
                await sock.send([ready])  # not answered: back in the queue, unharmed
                continue
            await sock.send([*parts[0], *reply])
            served += 1
            counters.served += 1
    return served
