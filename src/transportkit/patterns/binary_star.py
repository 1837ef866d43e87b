"""Binary Star (Guide chapter 4): a primary and a backup server, one of them active.

Two servers offer the same request/reply service. Each publishes its state to the
other every ``heartbeat`` seconds (PUB/SUB) and runs the Guide's finite state machine:

====================  ===============================================================
state                 events that change it
====================  ===============================================================
PRIMARY (starting)    peer BACKUP -> ACTIVE; peer ACTIVE -> PASSIVE; a client request
                      once the peer was silent for 2 x heartbeat -> ACTIVE
BACKUP (starting)     peer ACTIVE -> PASSIVE; client requests are refused
ACTIVE                peer ACTIVE is fatal (split brain): the server stops
PASSIVE               peer PRIMARY or BACKUP (it restarted) -> ACTIVE; peer PASSIVE is
                      fatal; a client request once the peer was silent for
                      2 x heartbeat -> ACTIVE (failover), before that it is refused
====================  ===============================================================

Only an ACTIVE server answers clients; a refused request gets no reply, and the
:class:`BinaryStarClient` (Lazy Pirate style) times out and tries the other server.
Failover needs both the peer's silence *and* a client's request at the passive server:
the client's vote keeps a passive server whose link to the primary broke, while
clients still reach the primary, from going active too.

What it assumes, as the Guide says: the two servers' link is at least as reliable as
the clients' links to them (same rack, say). A partition between the servers while
clients see both, or requests delayed past the client timeout while the servers cannot
hear each other, can still make both active; the fatal-error check then stops the old
active server as soon as the peers hear each other again.

Wire format: each state message is one frame, the state's number in ASCII decimal
(``b"1"`` PRIMARY, ``b"2"`` BACKUP, ``b"3"`` ACTIVE, ``b"4"`` PASSIVE). Those four frames
are the only states: anything else (``b" 3"``, ``b"+3"``, ``b"03"``, two frames) is
counted as malformed and ignored, so a garbled message can never pass for ACTIVE and
stop an active server. Clients speak plain REQ/REP to the servers' ROUTER front ends.

Bounds (see :mod:`transportkit.patterns._limits`): a client request larger than
``max_message_bytes`` (default 1 MiB, also the front end's ``maxmsgsize``) is dropped
and counted; a handler that raises or returns something that is not a message is
counted and its request dropped (the client times out and fails over or retries); the
server goes on in every case.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from transportkit._closing import Closeable, Service
from transportkit._errors import (
    BrokenPeerError,
    ClosedError,
    ProtocolError,
    ServiceUnavailableError,
    Timeout,
    WouldBlock,
)
from transportkit._keywords import renamed
from transportkit._log import limited, peer
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._poll import poll
from transportkit._socket import Frame, Message, Receiver, Requester, Router, check_frames
from transportkit.patterns._limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    bounded_options,
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

logger = logging.getLogger(__name__)

__all__ = [
    "BStarEvent",
    "BStarState",
    "BinaryStarClient",
    "BinaryStarClientStats",
    "BinaryStarServer",
    "BinaryStarServerStats",
    "Handler",
    "SplitBrainError",
    "transition",
]

Handler: TypeAlias = Callable[[Message], Awaitable[Sequence[Frame]] | Sequence[Frame]]
"""A request handler: request frames in, reply frames out (sync or async)."""


class BStarState(enum.IntEnum):
    """The states of a Binary Star server (numbered as on the wire)."""

    PRIMARY = 1
    BACKUP = 2
    ACTIVE = 3
    PASSIVE = 4


class BStarEvent(enum.IntEnum):
    """What a Binary Star server reacts to: the peer's state, or a client request."""

    PEER_PRIMARY = 1
    PEER_BACKUP = 2
    PEER_ACTIVE = 3
    PEER_PASSIVE = 4
    CLIENT_REQUEST = 5


_PEER_EVENTS = {str(int(state)).encode(): BStarEvent(int(state)) for state in BStarState}
"""The exact wire frame of each state, and the peer event it is."""


def _parse_state(frames: Sequence[bytes]) -> BStarEvent | None:
    """The peer event a state message reports, or None if it is not one.

    Exactly one frame, exactly ``b"1"``, ``b"2"``, ``b"3"`` or ``b"4"``: no sign, no
    padding, no leading zero, no other number.
    """
    if len(frames) != 1:
        return None
    return _PEER_EVENTS.get(bytes(frames[0]))


class SplitBrainError(ProtocolError):
    """Both servers are active (or both passive): the pair broke its own invariant."""


def transition(
    state: BStarState, event: BStarEvent, *, peer_expired: bool
) -> tuple[BStarState, bool]:
    """The Binary Star state machine: the next state, and whether a request is served.

    Args:
        state: The server's current state.
        event: What happened.
        peer_expired: Whether the peer has been silent for 2 x heartbeat.

    Returns:
        ``(next state, accepted)``; ``accepted`` is False only for a client request
        that must be refused (it says nothing about peer events).

    Raises:
        SplitBrainError: An ACTIVE server heard an ACTIVE peer, or a PASSIVE server a
            PASSIVE peer.
    """
    S, E = BStarState, BStarEvent
    if state is S.PRIMARY:
        if event is E.PEER_BACKUP:
            return S.ACTIVE, True
        if event is E.PEER_ACTIVE:
            return S.PASSIVE, True
        if event is E.CLIENT_REQUEST:
            # Serve only once the backup had time to say it is active (a failback).
            return (S.ACTIVE, True) if peer_expired else (S.PRIMARY, False)
    elif state is S.BACKUP:
        if event is E.PEER_ACTIVE:
            return S.PASSIVE, True
        if event is E.CLIENT_REQUEST:
            return S.BACKUP, False
    elif state is S.ACTIVE:
        if event is E.PEER_ACTIVE:
            raise SplitBrainError("fatal: dual active servers (split brain)")
    elif state is S.PASSIVE:
        if event in (E.PEER_PRIMARY, E.PEER_BACKUP):
            return S.ACTIVE, True
        if event is E.PEER_PASSIVE:
            raise SplitBrainError("fatal: dual passive servers (nobody serves)")
        if event is E.CLIENT_REQUEST:
            return (S.ACTIVE, True) if peer_expired else (S.PASSIVE, False)
    return state, True


@dataclass(slots=True)
class BinaryStarServerStats:
    """Counters of a :class:`BinaryStarServer`.

    Attributes:
        served: Client requests answered.
        refused: Client requests dropped because this server may not serve.
        bad_requests: Malformed client envelopes ignored.
        bad_states: Malformed state messages from the peer ignored (anything but one
            frame ``b"1"`` to ``b"4"``).
        heartbeats: State messages published.
        failovers: Times this server became ACTIVE after having been PASSIVE.
        malformed: Messages that followed no protocol, dropped: ``bad_requests`` plus
            ``bad_states``.
        over_limit: Client requests dropped for being larger than ``max_message_bytes``.
        handler_errors: Requests dropped because the handler raised or returned
            something that is not a message.
        unsent: Replies that could not be sent (the client had gone, or a
            ``router_mandatory`` front end had it at its high-water mark).
        shutdown_dropped: Requests a graceful stop (:meth:`BinaryStarServer.shutdown`)
            left unanswered: the one whose handler was still running at the deadline
            (it is cancelled).
    """

    served: int = 0
    refused: int = 0
    bad_requests: int = 0
    bad_states: int = 0
    heartbeats: int = 0
    failovers: int = 0
    malformed: int = 0
    over_limit: int = 0
    handler_errors: int = 0
    unsent: int = 0
    shutdown_dropped: int = 0


async def _echo(request: Message) -> Sequence[Frame]:
    return request


class BinaryStarServer(Service):
    """One server of a Binary Star pair.

    The sockets are made by the constructor (front end and state publisher bound, state
    subscriber connected to the peer); :meth:`run` (or :meth:`start`, or ``async with``)
    runs the state machine and serves clients.

    ``await server.shutdown(timeout)`` stops it gracefully: no new request is read
    (Binary Star has no refusal: a client asking now times out and fails over to the
    peer, which takes over once this server has been silent for 2 x heartbeat); the
    request being handled gets ``timeout`` seconds (default 5) to be answered, then
    its handler is cancelled and it gets no reply (``stats.shutdown_dropped``); the
    sockets are closed with their ``linger`` (give the front end one, e.g. 1000 ms, for
    the last reply to leave over tcp). :meth:`close` is the hard stop.

    Args:
        network: Where to make the sockets.
        primary: True for the primary, False for the backup.
        frontend: Endpoint(s) the client-facing ROUTER binds; None: no front end, the
            application has its own voter socket and calls :meth:`vote` for each
            client request on it (the Clone server pair does, with CHP's snapshot
            ROUTER).
        state_pub: Endpoint(s) this server publishes its state on.
        state_sub: The peer's state endpoint (connected).
        handler: Turns a request into a reply (default: echo). If it raises
            (:class:`Exception`) or returns something that is not a non-empty sequence
            of bytes-like frames, the request is dropped and counted in
            ``stats.handler_errors``; the server goes on.
        heartbeat: Seconds between state messages (the Guide's 1 s); the peer is
            presumed dead after 2 x heartbeat of silence.
        on_state_change: Called as ``(old, new, event)`` on every change of state.
        options: Options of the front end ROUTER; its ``maxmsgsize`` defaults to
            ``max_message_bytes`` (which is also the state subscriber's); a 0
            ``sndhwm`` or ``rcvhwm`` is refused.
        max_message_bytes: Largest client request accepted, all frames included
            (default 1 MiB; None: no limit). Larger ones are dropped and counted in
            ``stats.over_limit``.
        state_pub_options: Options of the state PUB socket (default
            ``SocketOptions()``), e.g. ``curve_server=True`` and this server's keys.
        state_sub_options: Options of the state SUB socket (default
            ``SocketOptions()``), e.g. CURVE client keys with the peer's public key
            as ``curve_serverkey``.

    Raises:
        ValueError: ``heartbeat`` is not positive, ``max_message_bytes`` is not None
            or an int >= 1, or a high-water mark of the front end is 0.
        TransportError: Making a socket failed (nothing is left open).
    """

    def __init__(
        self,
        network: Network,
        *,
        primary: bool,
        frontend: str | Iterable[str] | None,
        state_pub: str | Iterable[str],
        state_sub: str,
        handler: Handler | None = None,
        heartbeat: float = 1.0,
        on_state_change: Callable[[BStarState, BStarState, BStarEvent], None] | None = None,
        options: SocketOptions | None = None,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
        state_pub_options: SocketOptions | None = None,
        state_sub_options: SocketOptions | None = None,
    ) -> None:
        if not heartbeat > 0:
            raise ValueError(f"heartbeat must be > 0 seconds, got {heartbeat!r}")
        self.max_message_bytes = check_message_limit(max_message_bytes)
        self.heartbeat = heartbeat
        self.state = BStarState.PRIMARY if primary else BStarState.BACKUP
        self.stats = BinaryStarServerStats()
        self.fatal: SplitBrainError | None = None
        self._handler: Handler = handler or _echo
        self._on_state_change = on_state_change
        self._task: asyncio.Task[None] | None = None
        self._graceful = GracefulStop()
        self._peer_expiry = -math.inf
        frontend_options = bounded_options(options, self.max_message_bytes)
        check_finite_hwm(frontend_options, "BinaryStarServer front end", "sndhwm", "rcvhwm")
        self._frontend = (
            None if frontend is None else network.router(bind=frontend, options=frontend_options)
        )
        try:
            self._state_pub = network.publisher(bind=state_pub, options=state_pub_options)
            try:
                self._state_sub = network.subscriber(connect=state_sub, options=state_sub_options)
            except BaseException:
                self._state_pub.close()
                raise
        except BaseException:
            if self._frontend is not None:
                self._frontend.close()
            raise
        self.frontend_endpoint = None if self._frontend is None else self._frontend.last_endpoint
        self.state_endpoint = self._state_pub.last_endpoint

    @property
    def active(self) -> bool:
        """Whether this server is ACTIVE (serving clients)."""
        return self.state is BStarState.ACTIVE

    def _close_sockets(self) -> None:
        for sock in (self._frontend, self._state_pub, self._state_sub):
            if sock is not None:
                sock.close()

    def start(self) -> None:
        """Run :meth:`run` in a background task. Idempotent.

        A :class:`SplitBrainError` ends the task normally: it is kept in :attr:`fatal`.
        """
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run_in_background())

    async def _run_in_background(self) -> None:
        with contextlib.suppress(SplitBrainError):  # kept in self.fatal
            await self.run()

    async def run(self) -> None:
        """Run the state machine and serve clients until cancelled or closed.

        Raises:
            SplitBrainError: The peer reported a state that is fatal in ours (also
                kept in :attr:`fatal`); the server stops serving.
        """
        graceful = self._graceful
        if graceful.requested:
            return
        loop = asyncio.get_running_loop()
        self._peer_expiry = loop.time() + 2 * self.heartbeat
        next_beat = loop.time()
        graceful.started()
        try:
            while not graceful.requested:
                now = loop.time()
                if now >= next_beat:
                    await self._publish_state()
                    next_beat = now + self.heartbeat
                sockets: list[Receiver] = [self._state_sub]
                if self._frontend is not None:
                    sockets.append(self._frontend)
                ready = await graceful.interruptible(poll(sockets, next_beat - now))
                if ready is None:
                    break
                if self._state_sub in ready:
                    await self._peer_message()
                if self._frontend is not None and self._frontend in ready:
                    await self._client_message(self._frontend)
            self._close_sockets()
        except ClosedError:
            return
        except SplitBrainError as exc:
            self.fatal = exc
            logger.error(
                "Binary Star %s: split brain, the server stops serving: %s",
                self.state.name,
                exc,
                extra={"reason": "split brain"},
            )
            raise
        finally:
            graceful.finished()

    async def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Stop gracefully (see the class docstring) and close the sockets; a server
        that is not running is closed at once. Idempotent.

        Returns:
            True if no request in flight was left unanswered at the deadline.

        Raises:
            ValueError: ``timeout`` is not from 0 to 3600 seconds.
        """
        return await stop_then_close(self._graceful, timeout, self.close)

    async def _publish_state(self) -> None:
        await self._state_pub.send([str(int(self.state)).encode()])
        self.stats.heartbeats += 1

    async def _peer_message(self) -> None:
        msg = self._state_sub.try_recv()
        if msg is None:
            return
        event = _parse_state(msg)
        if event is None:
            self.stats.bad_states += 1
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed state message from the peer at %s: %s",
                self._state_sub.last_endpoint,
                "not a Binary Star state",
                extra={"reason": "not a Binary Star state", "counter": "malformed"},
            )
            return
        self._peer_expiry = asyncio.get_running_loop().time() + 2 * self.heartbeat
        await self._fire(event)

    async def vote(self) -> bool:
        """A client request arrived on the application's own voter socket: may it be
        served? Runs the state machine (a passive server whose peer has been silent
        for 2 x heartbeat fails over here) and counts a refusal in ``stats.refused``.
        After a split brain (:attr:`fatal`) every request is refused.
        """
        accepted = self.fatal is None and await self._fire(BStarEvent.CLIENT_REQUEST)
        if not accepted:
            self.stats.refused += 1
            limited(
                logger,
                logging.INFO,
                "refused",
                "Binary Star %s: request refused (not the active server)",
                self.state.name,
                extra={"counter": "refused"},
            )
        return accepted

    async def _client_message(self, frontend: Router) -> None:
        msg = frontend.try_recv()
        if msg is None:
            return
        if too_large(msg[1:], self.max_message_bytes):
            self.stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "request from %s of %d bytes over max_message_bytes (%d): dropped",
                peer(msg[0]),
                message_bytes(msg[1:]),
                self.max_message_bytes,
                extra={"peer": peer(msg[0]), "reason": "too large", "counter": "over_limit"},
            )
            return
        if len(msg) < 3 or msg[1] != b"":
            self.stats.bad_requests += 1
            self.stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed request from %s: %s",
                peer(msg[0]),
                "no empty delimiter and body",
                extra={
                    "peer": peer(msg[0]),
                    "reason": "no empty delimiter and body",
                    "counter": "malformed",
                },
            )
            return
        if not await self._fire(BStarEvent.CLIENT_REQUEST):
            self.stats.refused += 1
            limited(
                logger,
                logging.INFO,
                "refused",
                "Binary Star %s: request from %s refused (not the active server)",
                self.state.name,
                peer(msg[0]),
                extra={"peer": peer(msg[0]), "counter": "refused"},
            )
            return
        try:
            reply = await self._graceful.bounded(self._call_handler(msg[2:]))
        except DrainTimeout:
            self.stats.shutdown_dropped += 1
            return
        if reply is None:
            self.stats.handler_errors += 1
            return
        try:
            # A ROUTER never waits (it drops at a peer's HWM) unless router_mandatory
            # is set; then a full or vanished client must not hold up the others.
            frontend.try_send([msg[0], b"", *reply])
        except (BrokenPeerError, WouldBlock):
            self.stats.unsent += 1
            limited(
                logger,
                logging.WARNING,
                "unsent",
                "reply to %s could not be sent (client gone or at its HWM)",
                peer(msg[0]),
                extra={"peer": peer(msg[0]), "counter": "unsent"},
            )
            return
        self.stats.served += 1

    async def _call_handler(self, request: Message) -> Sequence[Frame] | None:
        """The handler's reply, or None if it raised or returned a non-message."""
        try:
            reply = self._handler(request)
            if inspect.isawaitable(reply):
                reply = await reply
            return check_frames(reply)  # FrameError: not a message
        except Exception:  # an application bug must not end the server
            limited(
                logger,
                logging.ERROR,
                "handler",
                "request handler failed: the request gets no reply",
                exc_info=True,
                extra={"counter": "handler_errors"},
            )
            return None

    async def _fire(self, event: BStarEvent) -> bool:
        expired = asyncio.get_running_loop().time() >= self._peer_expiry
        old = self.state
        new, accepted = transition(old, event, peer_expired=expired)
        if new is not old:
            self.state = new
            if old is BStarState.PASSIVE and new is BStarState.ACTIVE:
                self.stats.failovers += 1
                logger.warning(
                    "Binary Star failover: PASSIVE -> ACTIVE on %s (peer silent for %g s)",
                    event.name,
                    2 * self.heartbeat,
                    extra={"reason": event.name, "counter": "failovers"},
                )
            else:
                logger.info(
                    "Binary Star state %s -> %s on %s",
                    old.name,
                    new.name,
                    event.name,
                    extra={"reason": event.name},
                )
            if self._on_state_change is not None:
                self._on_state_change(old, new, event)
            await self._publish_state()
        return accepted

    async def close(self) -> None:
        """Stop serving and close the sockets. Idempotent."""
        task, self._task = self._task, None
        self._close_sockets()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, SplitBrainError):
                await task


@dataclass(slots=True)
class BinaryStarClientStats:
    """Counters of a :class:`BinaryStarClient`.

    Attributes:
        requests: Calls to :meth:`BinaryStarClient.request`.
        replies: Replies received.
        timeouts: Attempts that got no reply in time.
        failovers: Switches to the other server.
    """

    requests: int = 0
    replies: int = 0
    timeouts: int = 0
    failovers: int = 0


class BinaryStarClient(Closeable):
    """A Lazy Pirate client of a Binary Star pair.

    Each attempt sends the request on a fresh REQ socket and waits ``timeout`` seconds;
    without a reply it closes the socket, switches to the other server, waits
    ``settle_delay`` (time for the pair to fail over) and sends again. A request is
    therefore delivered at least once: handlers should be idempotent.

    Args:
        network: Where to make the sockets.
        endpoints: The primary's and the backup's front ends, in that order.
        timeout: Seconds to wait for each reply (the Guide's 1 s).
        settle_delay: Seconds to wait after switching servers (the Guide's 2 s).
        attempts: Sends of each request before giving up, the first included (default
            4: each server twice). It replaces ``retries``, which counted the sends
            *after* the first (``retries=3`` was four sends), unlike every other
            client: passing ``retries=`` raises a TypeError that gives the
            ``attempts`` to write (one more).
        options: Options of the REQ sockets.

    Raises:
        ValueError: Not two endpoints, ``timeout`` not positive, ``settle_delay``
            negative, or ``attempts`` not an int >= 1.
        TypeError: The removed keyword ``retries`` was given (use ``attempts``).
    """

    @renamed(
        "retries",
        "attempts",
        "attempts counts every send, the first included, as on the other clients; "
        "retries counted the sends after the first",
        convert=lambda retries: retries + 1,
    )
    def __init__(
        self,
        network: Network,
        endpoints: tuple[str, str],
        *,
        timeout: float = 1.0,
        settle_delay: float = 2.0,
        attempts: int = 4,
        options: SocketOptions | None = None,
    ) -> None:
        if len(endpoints) != 2:
            raise ValueError(f"a Binary Star client needs two endpoints, got {endpoints!r}")
        if not timeout > 0 or settle_delay < 0:
            raise ValueError("timeout must be > 0 and settle_delay >= 0")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts must be an int >= 1, got {attempts!r}")
        self._network = network
        self.endpoints = (endpoints[0], endpoints[1])
        self.timeout = timeout
        self.settle_delay = settle_delay
        self.attempts = attempts
        """Sends of each request, the first included, before giving up."""
        self._options = options
        self.stats = BinaryStarClientStats()
        self._server = 0
        self._req: Requester | None = None

    @property
    def endpoint(self) -> str:
        """The endpoint requests currently go to."""
        return self.endpoints[self._server]

    async def request(self, frames: Sequence[Frame]) -> Message:
        """Send ``frames`` and return the reply, failing over as needed.

        Raises:
            ServiceUnavailableError: No reply after ``attempts`` sends.
            ClosedError: The client was closed.
        """
        self.stats.requests += 1
        for attempt in range(1, self.attempts + 1):
            if self._req is None:
                self._req = self._network.requester(connect=self.endpoint, options=self._options)
            try:
                reply = await self._req.request(frames, timeout=self.timeout)
            except Timeout:
                self.stats.timeouts += 1
                self._req.close()
                self._req = None
                if attempt == self.attempts:
                    logger.warning(
                        "giving up: no reply from either Binary Star server %s after %d attempts",
                        self.endpoints,
                        self.attempts,
                        extra={"endpoint": self.endpoint, "counter": "timeouts"},
                    )
                    break
                self._server ^= 1
                self.stats.failovers += 1
                logger.info(
                    "no reply in %g s: failing over to %s",
                    self.timeout,
                    self.endpoint,
                    extra={"endpoint": self.endpoint, "counter": "failovers"},
                )
                await asyncio.sleep(self.settle_delay)
                continue
            self.stats.replies += 1
            return reply
        raise ServiceUnavailableError(
            f"no reply from either Binary Star server {self.endpoints} "
            f"after {self.attempts} attempts"
        )

    def close(self) -> None:
        """Close the socket. Idempotent."""
        if self._req is not None:
            self._req.close()
            self._req = None
