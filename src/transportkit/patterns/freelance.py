"""Freelance: brokerless reliable request/reply (ZeroMQ Guide, chapter 4, model 3; 10/FLP).

A :class:`FreelanceClient` talks to several equivalent servers at once over one ROUTER
socket that connects to each of them, and a :class:`FreelanceServer` is a ROUTER bound
with its public endpoint as its routing id, so that the client can address it by the
endpoint it connected to (the Guide's ``flserver3``).

Wire format (10/FLP, the Guide's ``flcliapi``/``flserver3``), after the ROUTER's routing
frame::

    client to server   [b"PING"]                    or  [ccf, *request body]
    server to client   [b"PONG"]                    or  [ccf, *reply body]

where ``ccf``, the client control frame, is the request's sequence number in ASCII
decimal (from 1, as the Guide's C ``flcliapi`` numbers them); the server returns it
unmodified and takes any frame there. The server MUST answer PING with PONG; anything
else of one frame (or nothing) is no FLP command.

How the client decides (the Guide's agent, run inside :meth:`FreelanceClient.request`):

- Every server is pinged every ``ping_interval`` seconds while a request runs (every
  :data:`CONNECT_RETRY` seconds while there is no connection to it yet); any
  message from a server (PONG, a reply) makes it alive again and pushes its expiry to
  ``server_ttl`` seconds from then.
- A request goes to the first live server, in the order the servers were connected (a
  server that comes back alive goes to the back of that order). A server silent for
  ``server_ttl`` seconds is marked dead, and a request that was waiting for it goes to
  the next live server. Until a server's connection is made, a send to it cannot be
  routed (the client's ROUTER is ``router_mandatory``): it is sent as soon as the
  server is heard from, and meanwhile the next live server gets it.
- A request that gets no reply within ``timeout`` seconds fails with
  :class:`~transportkit.ServiceUnavailableError`. With the Guide's constants (3 s
  timeout, 6 s TTL) a server that dies while a request waits for it is passed over
  only by a later request; give ``timeout`` above ``server_ttl`` for a request to move
  on itself.
- Replies carrying an earlier request's number (a server that answered late) are
  counted and dropped; so is a reply carrying the current request's number from a
  server that was never sent it (the numbers are easy to guess: FLP servers answer
  only what they were sent). Between requests nothing runs, so time between requests does
  not count as a server's silence: its expiry moves on by that much at the start of
  the next request.

A server may see a request more than once (sent to it again after it came back, or
to another server after it went silent); make requests idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from transportkit._closing import Closeable
from transportkit._errors import (
    ClosedError,
    HostUnreachableError,
    ServiceUnavailableError,
    WouldBlock,
)
from transportkit._log import limited, peer
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._socket import Frame, Message, Router, check_frames
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
    stop_then_close,
)
from transportkit.patterns.lazy_pirate import Handler, reply_or_none

logger = logging.getLogger(__name__)

__all__ = [
    "CONNECT_RETRY",
    "GLOBAL_TIMEOUT",
    "MAX_SERVERS",
    "PING",
    "PING_INTERVAL",
    "PONG",
    "SERVER_TTL",
    "FreelanceClient",
    "FreelanceClientStats",
    "FreelanceServer",
    "FreelanceServerStats",
]

PING: Final = b"PING"
"""The FLP ping command (client to server)."""

PONG: Final = b"PONG"
"""The FLP answer to a ping (server to client)."""

GLOBAL_TIMEOUT: Final = 3.0
"""Seconds a request waits for a reply from any server (the Guide's 3000 ms)."""

PING_INTERVAL: Final = 2.0
"""Seconds between pings of each server (the Guide's 2000 ms)."""

SERVER_TTL: Final = 6.0
"""Seconds of silence after which a server is taken for dead (the Guide's 6000 ms)."""

CONNECT_RETRY: Final = 0.05
"""Seconds before a client pings again a server it has no connection to yet (the Guide's
client waits 100 ms after each connect for the same reason)."""

MAX_SERVERS: Final = 1_000
"""How many servers a client connects to at most, by default."""


@dataclass(slots=True)
class _Server:
    endpoint: str
    identity: bytes
    alive: bool
    ping_at: float
    expires: float


@dataclass(slots=True)
class FreelanceClientStats:
    """Counters of a :class:`FreelanceClient`.

    Attributes:
        requests: Calls of :meth:`FreelanceClient.request`.
        replies: Requests answered.
        failures: Requests that ended in ServiceUnavailableError.
        sends: Request messages sent (to one server each; a request may be sent to
            several, one after the other).
        unroutable: Sends that could not go (no connection to that server yet, or its
            pipe full); the request goes to the next live server, and to this one when
            it is heard from.
        failovers: Requests sent on to another server after the one they waited for
            was marked dead.
        pings: PINGs sent.
        pongs: PONGs received.
        deaths: Times a server was marked dead (silent for ``server_ttl``).
        late: Replies to an earlier request, and answers to the current one after
            the first (read together with it), dropped.
        malformed: Messages that follow no FLP command, from a peer that is none of
            the servers, or a reply carrying the current request's control frame
            from a server the request was never sent to (dropped).
    """

    requests: int = 0
    replies: int = 0
    failures: int = 0
    sends: int = 0
    unroutable: int = 0
    failovers: int = 0
    pings: int = 0
    pongs: int = 0
    deaths: int = 0
    late: int = 0
    malformed: int = 0


@dataclass(slots=True)
class _Pending:
    ccf: bytes
    body: list[Frame]
    deadline: float
    sent_to: set[bytes] = field(default_factory=set)
    asked: set[bytes] = field(default_factory=set)  # every server it was ever sent to
    waiting_on: bytes | None = None
    reply: Message | None = None


class FreelanceClient(Closeable):
    """A request/reply client over several equivalent servers, with no broker (model 3).

    Contract: every :meth:`request` ends within ``timeout`` seconds (plus one poll) in
    exactly one of two ways: the reply to *that* request, from one of the servers, or
    :class:`~transportkit.ServiceUnavailableError`. Requests from several tasks are
    served one at a time, in order. See the module docstring for how servers are
    chosen, pinged and given up on.

    Args:
        network: Where the ROUTER socket comes from.
        endpoints: Servers to connect to now (more with :meth:`connect`). Each
            server's routing id must be the endpoint exactly as given here.
        timeout: Seconds a request waits for a reply from any server.
        ping_interval: Seconds between pings of each server.
        server_ttl: Seconds of silence after which a server is taken for dead.
        options: Options of the ROUTER socket (``router_mandatory`` is always set;
            default linger 0).
        max_servers: Most servers it connects to.
        latency_observer: Called with the seconds (event-loop time: virtual in a
            simulation) from the start of a request's service (its turn, after
            requests of other tasks) to its reply, for each answered request; None
            (default) measures nothing. It must not raise.
            :class:`transportkit.metrics.LatencyHistogram` is one.

    Raises:
        ValueError: A time is not positive, a bound is not an int >= 1, or ``options``
            has an unlimited (0) HWM.
    """

    def __init__(
        self,
        network: Network,
        endpoints: Iterable[str] = (),
        *,
        timeout: float = GLOBAL_TIMEOUT,
        ping_interval: float = PING_INTERVAL,
        server_ttl: float = SERVER_TTL,
        options: SocketOptions | None = None,
        max_servers: int = MAX_SERVERS,
        latency_observer: Callable[[float], object] | None = None,
    ) -> None:
        for name, value in (
            ("timeout", timeout),
            ("ping_interval", ping_interval),
            ("server_ttl", server_ttl),
        ):
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self.timeout = float(timeout)
        self.ping_interval = float(ping_interval)
        self.server_ttl = float(server_ttl)
        self.max_servers = check_bound("max_servers", max_servers)
        opts = (SocketOptions() if options is None else options).replace(router_mandatory=True)
        check_finite_hwm(opts, "FreelanceClient", "sndhwm", "rcvhwm")
        self.stats = FreelanceClientStats()
        self.latency_observer = latency_observer
        self._router: Router = network.router(options=opts)
        self._servers: dict[bytes, _Server] = {}
        self._actives: list[_Server] = []
        self._sequence = 0
        self._idle_from: float | None = None  # when the latest request ended
        self._lock = asyncio.Lock()
        self._closed = False
        try:
            for endpoint in endpoints:
                self.connect(endpoint)
        except BaseException:
            self._router.close()
            raise

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The servers connected to, in order."""
        return tuple(s.endpoint for s in self._servers.values())

    @property
    def live(self) -> tuple[str, ...]:
        """The servers taken for alive, the next to get a request first."""
        return tuple(s.endpoint for s in self._actives)

    @property
    def sequence(self) -> int:
        """The number of the latest request (its control frame), 0 before any."""
        return self._sequence

    def connect(self, endpoint: str) -> None:
        """Connect to one more server; it is taken for alive until ``server_ttl`` passes
        with no word from it (as the Guide's client does).

        Raises:
            ValueError: ``endpoint`` is already connected, or ``max_servers`` are.
            ClosedError: The client is closed.
        """
        self._check_open()
        identity = endpoint.encode()
        if identity in self._servers:
            raise ValueError(f"already connected to {endpoint}")
        if len(self._servers) >= self.max_servers:
            raise ValueError(f"already connected to max_servers ({self.max_servers}) servers")
        self._router.connect(endpoint)
        now = self._now()
        server = _Server(endpoint, identity, alive=True, ping_at=now, expires=now + self.server_ttl)
        self._servers[identity] = server
        self._actives.append(server)

    @staticmethod
    def _now() -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return -math.inf  # connected outside a loop: refreshed at the first request

    async def request(self, frames: Sequence[Frame]) -> Message:
        """Send ``frames`` to the first live server and return the reply body.

        Raises:
            ServiceUnavailableError: No reply within ``timeout`` (the message names the
                servers and which were live).
            FrameError: ``frames`` is not a non-empty sequence of bytes frames.
            ValueError: No server is connected.
            ClosedError: The client is closed.
        """
        body = list(check_frames(frames))
        async with self._lock:
            self._check_open()
            if not self._servers:
                raise ValueError("a Freelance client needs at least one server: connect() first")
            loop = asyncio.get_running_loop()
            self.stats.requests += 1
            self._sequence += 1
            started = loop.time()
            pending = _Pending(b"%d" % self._sequence, body, started + self.timeout)
            self._resume(loop.time())
            try:
                reply = await self._serve(pending)
                if self.latency_observer is not None:
                    self.latency_observer(loop.time() - started)
                return reply
            finally:
                self._idle_from = loop.time()

    async def _serve(self, pending: _Pending) -> Message:
        """The agent's loop for one request: its reply, or ServiceUnavailableError."""
        loop = asyncio.get_running_loop()
        while True:
            self._drain(loop.time(), pending)
            if pending.reply is not None:
                self.stats.replies += 1
                return pending.reply
            now = loop.time()
            if now >= pending.deadline:
                break
            self._expire(now)
            self._dispatch(pending)
            self._ping(now)
            await self._router.poll(max(0.0, self._wake_at(pending) - loop.time()))
        self.stats.failures += 1
        live = ", ".join(self.live) or "none"
        logger.warning(
            "giving up on request %d: no reply within %g s from %d Freelance server(s) (live: %s)",
            self._sequence,
            self.timeout,
            len(self._servers),
            live,
            extra={"counter": "failures"},
        )
        raise ServiceUnavailableError(
            f"no reply to request {self._sequence} within {self.timeout:g} s from "
            f"{len(self._servers)} Freelance server(s) (live: {live})"
        )

    def _resume(self, now: float) -> None:
        """Move every server's expiry on by the time no request ran (no pings went)."""
        idle = 0.0 if self._idle_from is None else now - self._idle_from
        for server in self._servers.values():
            if server.expires == -math.inf:  # connected outside a running loop
                server.ping_at = now
                server.expires = now + self.server_ttl
            else:
                server.expires += idle

    def _drain(self, now: float, pending: _Pending | None) -> None:
        while True:
            msg = self._router.try_recv()
            if msg is None:
                return
            self._from_server(msg, now, pending)

    def _from_server(self, msg: Message, now: float, pending: _Pending | None) -> None:
        server = self._servers.get(msg[0])
        content = msg[1:]
        if server is None or not content:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed reply from server %s: %s",
                peer(msg[0]),
                "unknown server or empty message",
                extra={
                    "peer": peer(msg[0]),
                    "reason": "unknown server or empty message",
                    "counter": "malformed",
                },
            )
            return
        if not server.alive:
            server.alive = True
            self._actives.append(server)
            logger.info(
                "Freelance server %s is live",
                server.endpoint,
                extra={"endpoint": server.endpoint, "peer": peer(server.identity)},
            )
        server.ping_at = now + self.ping_interval
        server.expires = now + self.server_ttl
        if content == [PONG]:
            self.stats.pongs += 1
        elif len(content) < 2:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed reply from server %s: %s",
                server.endpoint,
                "one frame, not PONG",
                extra={
                    "peer": peer(msg[0]),
                    "reason": "one frame, not PONG",
                    "counter": "malformed",
                },
            )
        elif pending is not None and content[0] == pending.ccf:
            if pending.reply is not None:
                self.stats.late += 1  # a second answer, read in the same drain
            elif server.identity in pending.asked:
                pending.reply = content[1:]
            else:  # FLP servers answer only what they were sent: no answer, a forgery
                self.stats.malformed += 1
                limited(
                    logger,
                    logging.WARNING,
                    "malformed",
                    "malformed reply from server %s: %s",
                    server.endpoint,
                    "an answer to a request it was not sent",
                    extra={
                        "peer": peer(msg[0]),
                        "reason": "an answer to a request it was not sent",
                        "counter": "malformed",
                    },
                )
        elif content[0].isdigit() and len(content[0]) <= 20:
            self.stats.late += 1
        else:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed reply from server %s: %s",
                server.endpoint,
                "no sequence frame",
                extra={"peer": peer(msg[0]), "reason": "no sequence frame", "counter": "malformed"},
            )

    def _expire(self, now: float) -> None:
        for server in list(self._actives):
            if now >= server.expires:
                server.alive = False
                self._actives.remove(server)
                self.stats.deaths += 1
                logger.warning(
                    "Freelance server %s silent for %g s: taken as dead",
                    server.endpoint,
                    self.server_ttl,
                    extra={"endpoint": server.endpoint, "counter": "deaths"},
                )

    def _dispatch(self, pending: _Pending) -> None:
        """Send the request to the first live server it has not been sent to, unless the
        server it was sent to is still live.
        """
        live = [s.identity for s in self._actives]
        if pending.waiting_on in live:
            return
        if pending.waiting_on is not None and all(i in pending.sent_to for i in live):
            # Each live server had it and later went silent, then came back: again.
            pending.sent_to.difference_update(live)
        for server in self._actives:
            if server.identity in pending.sent_to:
                continue
            if self._send([server.identity, pending.ccf, *pending.body]):
                if pending.waiting_on is not None:
                    self.stats.failovers += 1
                    logger.info(
                        "request %s switches to Freelance server %s",
                        pending.ccf.decode(),
                        server.endpoint,
                        extra={"endpoint": server.endpoint, "counter": "failovers"},
                    )
                pending.sent_to.add(server.identity)
                pending.asked.add(server.identity)
                pending.waiting_on = server.identity
                self.stats.sends += 1
                return
            self.stats.unroutable += 1  # no connection yet: the next live one gets it

    def _ping(self, now: float) -> None:
        for server in self._servers.values():
            if now >= server.ping_at:
                if self._send([server.identity, PING]):
                    self.stats.pings += 1
                    server.ping_at = now + self.ping_interval
                else:  # no connection yet: look again soon
                    server.ping_at = now + min(self.ping_interval, CONNECT_RETRY)

    def _send(self, frames: list[Frame]) -> bool:
        try:
            self._router.try_send(frames)
        except (HostUnreachableError, WouldBlock):
            return False
        return True

    def _wake_at(self, pending: _Pending) -> float:
        wake = pending.deadline
        for server in self._servers.values():
            wake = min(wake, server.ping_at)
        for server in self._actives:
            wake = min(wake, server.expires)
        return wake

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("Freelance client is closed")

    def close(self) -> None:
        """Close the socket; later requests raise ClosedError. Idempotent."""
        self._closed = True
        self._router.close()


@dataclass(slots=True)
class FreelanceServerStats:
    """Counters of a :class:`FreelanceServer`.

    Attributes:
        served: Requests answered.
        pings: PINGs answered with PONG.
        malformed: Messages that are no FLP command (one frame other than PING, or no
            frame after the routing id): dropped.
        over_limit: Requests larger than ``max_message_bytes``, dropped.
        handler_errors: Requests whose handler raised or returned something that is not
            a message, dropped (FLP has no error reply: the client's timeout, or its
            failover to another server, deals with them).
        dropped: Replies and PONGs that could not be sent (the client gone, or its pipe
            full).
        shutdown_dropped: Requests a graceful stop (:meth:`FreelanceServer.shutdown`)
            left unanswered: the one whose handler was still running at its deadline.
    """

    served: int = 0
    pings: int = 0
    malformed: int = 0
    over_limit: int = 0
    handler_errors: int = 0
    dropped: int = 0
    shutdown_dropped: int = 0


class FreelanceServer(Closeable):
    """A Freelance (10/FLP) server: a ROUTER bound with its public endpoint as identity.

    Contract: every PING is answered with PONG, and every request ``[ccf, *body]`` with
    ``[ccf, *handler(body)]``, one at a time, in the order they came (the Guide's
    ``flserver3`` is such an echo server, with the reply ``[ccf, b"OK"]``). Nothing a
    client sends ends the loop: bad input is counted and dropped. A slow handler delays
    the PONGs queued behind it; a client takes a server silent for its ``server_ttl``
    for dead.

    The socket is bound on construction and closed by :meth:`close` (the hard stop).
    ``await server.shutdown(timeout)`` is the graceful one: nothing more is read (no
    PONG either, so clients soon take the server for dead and go to the next one), the
    request being handled gets ``timeout`` seconds (default 5) to be answered, then its
    handler is cancelled and it gets no reply (FLP has none for errors;
    ``stats.shutdown_dropped``), and the socket is closed with its ``linger``.

    Args:
        network: Where the socket comes from.
        bind: The endpoint to bind (a fixed port: the identity must be known before).
        handler: Makes the reply body of each request body (plain or async).
        endpoint: The public endpoint clients connect to, which is the socket's
            routing id (default: ``bind``; give it when binding ``tcp://*:5555`` that
            clients reach as ``tcp://host:5555``).
        options: Options of the ROUTER socket (its ``routing_id`` is set to
            ``endpoint``).
        max_message_bytes: Largest request accepted, all frames (None: no limit).

    Raises:
        ValueError: ``endpoint`` is not a valid routing id (1 to 255 bytes, not
            starting with a zero byte), ``max_message_bytes`` is not None or an int
            >= 1, or ``options`` has an unlimited (0) HWM.
    """

    def __init__(
        self,
        network: Network,
        *,
        bind: str,
        handler: Handler,
        endpoint: str | None = None,
        options: SocketOptions | None = None,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.endpoint = bind if endpoint is None else endpoint
        self.handler = handler
        self.max_message_bytes = check_message_limit(max_message_bytes)
        opts = bounded_options(options, self.max_message_bytes).replace(
            routing_id=self.endpoint.encode()
        )
        check_finite_hwm(opts, "FreelanceServer", "sndhwm", "rcvhwm")
        self.stats = FreelanceServerStats()
        self._graceful = GracefulStop()
        self.socket: Router = network.router(bind=bind, options=opts)

    async def run(self, *, max_requests: int | None = None) -> int:
        """Serve until :meth:`close`, :meth:`shutdown` (or ``max_requests`` replies);
        return replies sent. Returns at once after a :meth:`shutdown`.
        """
        served_before = self.stats.served
        graceful = self._graceful
        if graceful.requested:
            return 0
        graceful.started()
        try:
            while max_requests is None or self.stats.served - served_before < max_requests:
                msg = await graceful.recv(self.socket)
                if msg is None:
                    break
                await self._handle(msg)
            if graceful.requested:
                self.close()
        except ClosedError:
            pass
        finally:
            graceful.finished()
        return self.stats.served - served_before

    async def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Stop gracefully (see the class docstring) and close the socket; a server
        that is not running is closed at once. Idempotent.

        Returns:
            True if no request in flight was left unanswered at the deadline.

        Raises:
            ValueError: ``timeout`` is not from 0 to 3600 seconds.
        """
        return await stop_then_close(self._graceful, timeout, self.close)

    async def _handle(self, msg: Message) -> None:
        client, content = msg[0], msg[1:]
        if content == [PING]:
            if self._send([client, PONG]):
                self.stats.pings += 1
            return
        if len(content) < 2:
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed request from client %s: %s",
                peer(client),
                "not PING, no sequence frame and body",
                extra={
                    "peer": peer(client),
                    "reason": "not PING, no sequence frame and body",
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
                "request from client %s of %d bytes over max_message_bytes (%d): dropped",
                peer(client),
                message_bytes(msg),
                self.max_message_bytes,
                extra={"peer": peer(client), "reason": "too large", "counter": "over_limit"},
            )
            return
        try:
            reply = await self._graceful.bounded(
                reply_or_none(self.handler, content[1:], log=logger)
            )
        except DrainTimeout:
            self.stats.shutdown_dropped += 1
            return
        if reply is None:
            self.stats.handler_errors += 1
            return
        if self._send([client, content[0], *reply]):
            self.stats.served += 1

    def _send(self, frames: Sequence[Frame]) -> bool:
        try:
            self.socket.try_send(frames)
        except (HostUnreachableError, WouldBlock):
            self.stats.dropped += 1
            limited(
                logger,
                logging.WARNING,
                "dropped",
                "reply to client %s could not be sent (gone or at its HWM)",
                peer(frames[0]),
                extra={"peer": peer(frames[0]), "counter": "dropped"},
            )
            return False
        return True

    def close(self) -> None:
        """Close the socket; a running :meth:`run` returns. Idempotent."""
        self.socket.close()
