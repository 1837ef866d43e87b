r"""Paranoid Pirate: a queue and workers that watch each other (ZeroMQ Guide, chapter 4).

The queue (:class:`ParanoidPirateQueue`) is a load-balancing broker whose workers are
DEALER sockets that exchange heartbeats with it both ways. The queue forgets a worker it
has not heard from for ``heartbeat_interval * liveness`` seconds, so requests stop going
to dead workers; a worker (:class:`ParanoidPirateWorker`) that has not heard from the
queue for as long closes its socket, waits, and reconnects with a fresh one, doubling the
wait from ``reconnect_initial`` up to ``reconnect_max`` until the queue answers.

Clients are Lazy Pirate clients (:class:`~transportkit.patterns.lazy_pirate.LazyPirateClient`),
so a request lost with a dying worker is retried. The queue and the worker pass request
and reply bodies through unchanged, so a plain Lazy Pirate client (the default, or the
Guide's ``lpclient``) works through them with a worker that echoes
``[client, b"", request]`` as the Guide's ``ppworker`` does.

Wire format (the Guide's): worker to queue ``[READY]`` (``b"\x01"``) on connecting,
``[HEARTBEAT]`` (``b"\x02"``) when due, and replies ``[*envelope, *reply]``; queue to
worker ``[HEARTBEAT]`` and requests ``[*envelope, *request]``, where the envelope is the
client's routing id and the empty delimiter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transportkit._closing import Closeable
from transportkit._errors import ClosedError, HostUnreachableError, WouldBlock
from transportkit._log import limited, peer
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._poll import poll
from transportkit._socket import Dealer, Frame, Message, Router, Sender
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
from transportkit.patterns.load_balancing import DEFAULT_MAX_WORKERS, split_envelope

logger = logging.getLogger(__name__)

__all__ = [
    "HEARTBEAT",
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_LIVENESS",
    "HISTORY",
    "PPP_READY",
    "RECONNECT_INITIAL",
    "RECONNECT_MAX",
    "ParanoidPirateQueue",
    "ParanoidPirateWorker",
    "QueueStats",
    "WorkerStats",
]

PPP_READY = b"\x01"
"""A worker's first message: it is connected and ready for work."""

HEARTBEAT = b"\x02"
"""A heartbeat, in either direction."""

HEARTBEAT_INTERVAL = 1.0
"""Seconds between heartbeats (the Guide's 1000 ms)."""

HEARTBEAT_LIVENESS = 3
"""Heartbeats a peer may miss before it is taken for dead (the Guide's 3)."""

RECONNECT_INITIAL = 1.0
"""A worker's first wait, in seconds, before reconnecting to a silent queue."""

RECONNECT_MAX = 32.0
"""The longest wait between a worker's reconnections, in seconds."""

HISTORY = 1024
"""How many of the latest events the records of a queue or a worker keep
(:attr:`ParanoidPirateQueue.purged`, :attr:`ParanoidPirateWorker.connections` and
:attr:`ParanoidPirateWorker.backoffs`): enough to see a schedule, bounded for ever."""


def _record(events: list[Any], event: object) -> None:
    """Append ``event``, keeping the latest :data:`HISTORY` events only."""
    events.append(event)
    if len(events) > HISTORY:
        del events[0]


def _check_timing(heartbeat_interval: float, liveness: int) -> None:
    if not heartbeat_interval > 0:
        raise ValueError(f"heartbeat_interval must be positive, got {heartbeat_interval!r}")
    if isinstance(liveness, bool) or not isinstance(liveness, int) or liveness < 1:
        raise ValueError(f"liveness must be an int >= 1, got {liveness!r}")


def _send(sock: Sender, frames: Sequence[Frame]) -> bool:
    """Send without waiting; False when the message could not go (HWM, unroutable)."""
    try:
        sock.try_send(frames)
    except (WouldBlock, HostUnreachableError):
        return False
    return True


@dataclass(slots=True)
class QueueStats:
    """Counters of a :class:`ParanoidPirateQueue`.

    Attributes:
        requests: Client requests handed to a worker.
        replies: Worker replies forwarded to a client.
        heartbeats_sent: Heartbeats sent to workers.
        heartbeats_received: Heartbeats received from workers.
        purged: Workers forgotten for silence.
        malformed: Messages that follow no protocol (counted and dropped; a malformed
            message is no sign of life: it does not list or refresh a worker).
        over_limit: Messages dropped for a bound: larger than ``max_message_bytes``, or
            from a new worker while ``max_workers`` are listed.
        dropped: Messages a ``router_mandatory`` socket could not route.
        shutdown_dropped: Requests a graceful stop (``shutdown``) left unanswered: those
            still with a worker at its deadline.
    """

    requests: int = 0
    replies: int = 0
    heartbeats_sent: int = 0
    heartbeats_received: int = 0
    purged: int = 0
    malformed: int = 0
    over_limit: int = 0
    dropped: int = 0
    shutdown_dropped: int = 0


class ParanoidPirateQueue(RouterPair):
    """A load-balancing queue that heartbeats its workers and purges silent ones.

    Contract: each client request goes to exactly one worker among those heard from in
    the last ``heartbeat_interval * liveness`` seconds (least recently used first), and
    each reply goes back to the client it answers. A worker is purged at the latest
    ``heartbeat_interval * liveness`` seconds after the last message it sent. Every
    listed worker gets a heartbeat every ``heartbeat_interval`` seconds. Requests are
    read from clients only while a worker is listed. The queue never blocks on a
    send, and bad input is counted and dropped, never fatal.

    Bounds: messages over ``max_message_bytes`` are dropped (and, over ipc and tcp,
    libzmq drops the connection of a peer that sends a larger frame: it is the ROUTERs'
    ``maxmsgsize`` unless ``options`` set one); at most ``max_workers`` are listed;
    :attr:`purged` keeps the latest :data:`HISTORY` purges. The queue holds no
    request: it reads clients only while a worker is listed.

    The sockets are bound on construction and closed by :meth:`close` (the hard stop).
    ``await queue.shutdown(timeout)`` is the graceful one: the front end is no longer
    read (a request waiting there gets no answer; the Lazy Pirate client retries), the
    workers go on being heartbeated and the replies to the requests they hold are
    forwarded for at most ``timeout`` seconds (default 5); what is still held then is
    counted in ``stats.shutdown_dropped``, and both sockets are closed with their
    ``linger`` (give them one, e.g. 1000 ms, for the last replies to leave over tcp).

    Args:
        network: Where the sockets come from.
        frontend: Endpoint(s) to bind for clients.
        backend: Endpoint(s) to bind for workers.
        heartbeat_interval: Seconds between heartbeats.
        liveness: Heartbeat intervals a worker may stay silent.
        options: Options of both ROUTER sockets (the front end's only, when
            ``backend_options`` is given).
        backend_options: Options of the back end ROUTER (default: ``options``), e.g.
            a plaintext ipc back end behind a CURVE tcp front end.
        max_message_bytes: Largest message accepted, all frames (None: no limit).
        max_workers: Most workers listed at once.

    Raises:
        ValueError: ``heartbeat_interval`` is not positive, ``liveness`` below 1, a
            bound is not an int >= 1, or ``options`` has an unlimited (0) HWM.
    """

    def __init__(
        self,
        network: Network,
        *,
        frontend: str,
        backend: str,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        liveness: int = HEARTBEAT_LIVENESS,
        options: SocketOptions | None = None,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
        max_workers: int = DEFAULT_MAX_WORKERS,
        backend_options: SocketOptions | None = None,
    ) -> None:
        _check_timing(heartbeat_interval, liveness)
        self.heartbeat_interval = float(heartbeat_interval)
        self.liveness = liveness
        self.max_message_bytes = check_message_limit(max_message_bytes)
        self.max_workers = check_bound("max_workers", max_workers)
        self.stats = QueueStats()
        self.purged: list[tuple[float, bytes]] = []
        self._expiry: dict[bytes, float] = {}
        self._busy: dict[bytes, None] = {}  # workers holding a request
        self._graceful = GracefulStop()
        opts = bounded_options(options, self.max_message_bytes)
        check_finite_hwm(opts, "ParanoidPirateQueue", "sndhwm", "rcvhwm")
        back = opts
        if backend_options is not None:
            back = bounded_options(backend_options, self.max_message_bytes)
            check_finite_hwm(back, "ParanoidPirateQueue", "sndhwm", "rcvhwm")
        super().__init__(
            network, frontend=frontend, backend=backend, options=opts, backend_options=back
        )

    @property
    def workers(self) -> tuple[bytes, ...]:
        """Routing ids of the listed (live, idle) workers, the next to get work first."""
        return tuple(self._expiry)

    @property
    def expiries(self) -> Mapping[bytes, float]:
        """Each listed worker's expiry, in the event loop's clock (``loop.time()``)."""
        return dict(self._expiry)

    async def run(self) -> None:
        """Serve until :meth:`close` or :meth:`shutdown` (then return); returns at once
        after a :meth:`shutdown`.
        """
        graceful = self._graceful
        if graceful.requested:
            return
        graceful.started()
        loop = asyncio.get_running_loop()
        heartbeat_at = loop.time() + self.heartbeat_interval
        try:
            while True:
                stopping = graceful.requested
                if stopping and (not self._busy or graceful.expired()):
                    break
                due = min([heartbeat_at, graceful.deadline, *self._expiry.values()])
                wait = max(0.0, due - loop.time())
                accepting = self._expiry and not stopping
                sockets = [self.backend, self.frontend] if accepting else [self.backend]
                if stopping:
                    ready: list[Router] | None = await poll(sockets, wait)
                else:
                    ready = await graceful.interruptible(poll(sockets, wait))
                if ready is None:  # the stop request woke the loop
                    continue
                if self.backend in ready:
                    self._from_worker(loop.time())
                if self.frontend in ready and self._expiry and not graceful.requested:
                    self._from_client()
                now = loop.time()
                if now >= heartbeat_at:
                    heartbeat_at = now + self.heartbeat_interval
                    for worker in list(self._expiry):
                        if _send(self.backend, [worker, HEARTBEAT]):
                            self.stats.heartbeats_sent += 1
                        else:
                            self.stats.dropped += 1
                            limited(
                                logger,
                                logging.WARNING,
                                "dropped",
                                "heartbeat to worker %s could not be sent (HWM or unroutable)",
                                peer(worker),
                                extra={"peer": peer(worker), "counter": "dropped"},
                            )
                self._purge(now)
            if self._busy:
                self.stats.shutdown_dropped += len(self._busy)
                graceful.clean = False
            self.close()
        except ClosedError:
            return
        finally:
            graceful.finished()

    async def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Stop gracefully (see the class docstring) and close the sockets; a queue
        that is not running is closed at once. Idempotent.

        Returns:
            True if every request a worker held was answered before the deadline.

        Raises:
            ValueError: ``timeout`` is not from 0 to 3600 seconds.
        """
        return await stop_then_close(self._graceful, timeout, self.close)

    def _from_worker(self, now: float) -> None:
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
        worker, content = msg[0], msg[1:]
        if content == [HEARTBEAT]:
            self.stats.heartbeats_received += 1
        elif content == [PPP_READY]:
            pass
        elif split_envelope(content) is not None:
            if not _send(self.frontend, content):
                self.stats.dropped += 1
                limited(
                    logger,
                    logging.WARNING,
                    "dropped",
                    "reply from worker %s could not be sent to its client (HWM or unroutable)",
                    peer(worker),
                    extra={"peer": peer(worker), "counter": "dropped"},
                )
            self.stats.replies += 1
            self._busy.pop(worker, None)
        else:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed message from worker %s: %s",
                peer(worker),
                "not a heartbeat, READY or reply",
                extra={
                    "peer": peer(worker),
                    "reason": "not a heartbeat, READY or reply",
                    "counter": "malformed",
                },
            )
            return
        if worker not in self._expiry and len(self._expiry) >= self.max_workers:
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
        self._expiry.pop(worker, None)
        self._expiry[worker] = now + self.heartbeat_interval * self.liveness

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
        worker = next(iter(self._expiry))
        del self._expiry[worker]
        if _send(self.backend, [worker, *msg]):
            self.stats.requests += 1
            self._busy[worker] = None
            if len(self._busy) > self.max_workers:  # the oldest died holding its request
                del self._busy[next(iter(self._busy))]
        else:
            self.stats.dropped += 1
            limited(
                logger,
                logging.WARNING,
                "dropped",
                "request for worker %s could not be sent (HWM or unroutable): lost",
                peer(worker),
                extra={"peer": peer(worker), "counter": "dropped"},
            )

    def _purge(self, now: float) -> None:
        for worker, expiry in list(self._expiry.items()):
            if expiry <= now:
                del self._expiry[worker]
                _record(self.purged, (now, worker))
                self.stats.purged += 1
                logger.warning(
                    "worker %s purged: no heartbeat for %g s",
                    peer(worker),
                    self.heartbeat_interval * self.liveness,
                    extra={"peer": peer(worker), "counter": "purged"},
                )


@dataclass(slots=True)
class WorkerStats:
    """Counters of a :class:`ParanoidPirateWorker`.

    Attributes:
        served: Requests answered.
        heartbeats_sent: Heartbeats sent to the queue.
        heartbeats_received: Heartbeats received from the queue.
        reconnects: Times the worker gave up on its socket and opened a new one.
        malformed: Messages from the queue that follow no protocol (dropped).
        over_limit: Requests larger than ``max_message_bytes`` (dropped).
        handler_errors: Requests whose handler raised or returned something that is
            not a message (dropped; the client's retry or timeout deals with them).
        dropped: Messages the worker could not send (its socket at the HWM).
    """

    served: int = 0
    heartbeats_sent: int = 0
    heartbeats_received: int = 0
    reconnects: int = 0
    malformed: int = 0
    over_limit: int = 0
    handler_errors: int = 0
    dropped: int = 0


class ParanoidPirateWorker(Closeable):
    """A worker that heartbeats its queue and reconnects, backing off, when it goes quiet.

    Contract: the worker sends READY on every (re)connection and a heartbeat every
    ``heartbeat_interval`` seconds while idle. When nothing has come from the queue for
    ``liveness`` heartbeat intervals, it waits (``reconnect_initial`` seconds, doubling
    each time up to ``reconnect_max``; reset by any message from the queue), closes its
    DEALER and opens a new one. Requests are handled one at a time by ``handler``.

    No request ends the loop: one that is too large (over ``max_message_bytes``), or
    whose handler raises (any ``Exception``) or returns something that is not a
    message, is dropped and counted, and the worker says READY at once so that the
    queue lists it again. A message that follows no protocol is counted and ignored.

    :attr:`connections` (loop times of each socket opening) and :attr:`backoffs` (each
    wait) record the schedule, for tests and monitoring (the latest :data:`HISTORY`
    of each).

    Args:
        network: Where the sockets come from.
        endpoint: The queue's back end.
        handler: Makes a reply from a request body (for Lazy Pirate clients of the
            sequenced wire format, wrap it with
            :func:`~transportkit.patterns.lazy_pirate.sequenced`; plain clients, the
            default and the Guide's ``lpclient``, need nothing).
        heartbeat_interval: Seconds between heartbeats.
        liveness: Heartbeat intervals the queue may stay silent.
        reconnect_initial: First wait before reconnecting, in seconds.
        reconnect_max: Longest wait before reconnecting, in seconds.
        options: Options of the DEALER sockets. A socket that connects is given no
            ``maxmsgsize`` (see :mod:`transportkit.patterns._limits`).
        max_message_bytes: Largest request accepted, all frames (None: no limit).

    Raises:
        ValueError: A timing argument is out of range, ``max_message_bytes`` is not
            None or an int >= 1, or ``options`` has an unlimited (0) HWM.
    """

    def __init__(
        self,
        network: Network,
        endpoint: str,
        handler: Handler,
        *,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        liveness: int = HEARTBEAT_LIVENESS,
        reconnect_initial: float = RECONNECT_INITIAL,
        reconnect_max: float = RECONNECT_MAX,
        options: SocketOptions | None = None,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        _check_timing(heartbeat_interval, liveness)
        if not 0 < reconnect_initial <= reconnect_max:
            raise ValueError(
                "need 0 < reconnect_initial <= reconnect_max, got "
                f"{reconnect_initial!r} and {reconnect_max!r}"
            )
        self.network = network
        self.endpoint = endpoint
        self.handler = handler
        self.heartbeat_interval = float(heartbeat_interval)
        self.liveness = liveness
        self.reconnect_initial = float(reconnect_initial)
        self.reconnect_max = float(reconnect_max)
        self.max_message_bytes = check_message_limit(max_message_bytes)
        self.options = SocketOptions() if options is None else options
        check_finite_hwm(self.options, "ParanoidPirateWorker", "sndhwm", "rcvhwm")
        self.stats = WorkerStats()
        self.connections: list[float] = []
        self.backoffs: list[float] = []
        self._socket: Dealer | None = None
        self._closed = False

    def _connect(self, now: float) -> Dealer:
        if self._closed:
            raise ClosedError(f"Paranoid Pirate worker of {self.endpoint} is closed")
        sock = self._socket = self.network.dealer(connect=self.endpoint, options=self.options)
        _record(self.connections, now)
        self._send([PPP_READY])
        return sock

    def _send(self, frames: Sequence[Frame]) -> bool:
        if self._socket is not None and _send(self._socket, frames):
            return True
        self.stats.dropped += 1
        limited(
            logger,
            logging.WARNING,
            "dropped",
            "message to the queue at %s could not be sent (HWM or not connected)",
            self.endpoint,
            extra={"endpoint": self.endpoint, "counter": "dropped"},
        )
        return False

    async def run(self, *, max_requests: int | None = None) -> int:
        """Work until :meth:`close` (or ``max_requests`` replies); return replies sent."""
        loop = asyncio.get_running_loop()
        hb = self.heartbeat_interval
        served_before = self.stats.served
        liveness = self.liveness
        backoff = self.reconnect_initial
        try:
            sock = self._connect(loop.time())
            heartbeat_at = loop.time() + hb
            while max_requests is None or self.stats.served - served_before < max_requests:
                if await sock.poll(hb):
                    msg = sock.try_recv()
                    if msg is None:
                        continue
                    await self._handle(msg)
                    if msg != [HEARTBEAT] and split_envelope(msg) is None:
                        continue
                    liveness = self.liveness
                    backoff = self.reconnect_initial
                else:
                    liveness -= 1
                    if liveness == 0:
                        _record(self.backoffs, backoff)
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, self.reconnect_max)
                        sock.close()
                        self.stats.reconnects += 1
                        logger.warning(
                            "queue at %s silent for %d heartbeats: reconnecting",
                            self.endpoint,
                            self.liveness,
                            extra={"endpoint": self.endpoint, "counter": "reconnects"},
                        )
                        sock = self._connect(loop.time())
                        liveness = self.liveness
                if loop.time() >= heartbeat_at:
                    heartbeat_at = loop.time() + hb
                    if self._send([HEARTBEAT]):
                        self.stats.heartbeats_sent += 1
        except ClosedError:
            pass
        finally:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
        return self.stats.served - served_before

    async def _handle(self, msg: Message) -> None:
        if msg == [HEARTBEAT]:
            self.stats.heartbeats_received += 1
            return
        parts = split_envelope(msg)
        if parts is None:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed message from the queue at %s: %s",
                self.endpoint,
                "not a heartbeat or request",
                extra={
                    "endpoint": self.endpoint,
                    "reason": "not a heartbeat or request",
                    "counter": "malformed",
                },
            )
            return
        if too_large(msg, self.max_message_bytes):
            self.stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "request of %d bytes over max_message_bytes (%d): dropped",
                message_bytes(msg),
                self.max_message_bytes,
                extra={"endpoint": self.endpoint, "reason": "too large", "counter": "over_limit"},
            )
            self._send([PPP_READY])  # dropped: let the queue list this worker again
            return
        envelope, body = parts
        reply = await reply_or_none(self.handler, body, log=logger)
        if reply is None:
            self.stats.handler_errors += 1
            self._send([PPP_READY])
            return
        self._send([*envelope, *reply])
        self.stats.served += 1

    def close(self) -> None:
        """Stop: close the socket; a running :meth:`run` returns. Idempotent."""
        self._closed = True
        if self._socket is not None:
            self._socket.close()
