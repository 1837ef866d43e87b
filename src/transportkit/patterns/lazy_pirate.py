"""Lazy Pirate: reliable request/reply from the client side (ZeroMQ Guide, chapter 4).

The client sends a request on a REQ socket and waits ``timeout`` seconds for the reply.
If none comes it closes the socket (a REQ that got no reply is stuck in its lockstep, and
its queue may hold the lost request), opens a fresh one and sends again, up to
``attempts`` sends in all (the first included); then it gives up with
:class:`~transportkit.ServiceUnavailableError`.

Two wire formats (:class:`LazyPirateWire`), chosen with the ``wire`` keyword of
:class:`LazyPirateClient` and :func:`serve_lazy_pirate`:

``LazyPirateWire.PLAIN`` (the default, the Guide's)
    The request is the caller's frames, unchanged, and the reply is taken as it comes::

        request: [*body]                  reply: [*reply body]

    This is what the Guide's ``lpclient`` and ``lpserver`` exchange, and it works with
    any REP server (``transportkit.trading``'s one-frame risk server, a plain echo). It
    needs no sequence frame to be correct: the client closes its REQ socket after every attempt
    that got no reply (a timeout, a broken connection, a cancelled call) and sends the
    retry on a new socket, with a new connection, so a reply to an earlier attempt has
    nowhere to arrive; and a REQ socket takes exactly one reply per request. The socket
    is kept only after an answered request.

``LazyPirateWire.SEQUENCED`` (transportkit's opt-in envelope)
    Every request carries its number as its first frame, ASCII decimal from 1, and the
    server echoes it as the first frame of the reply (:func:`sequenced` does that for
    any handler)::

        request: [sequence, *body]        reply: [sequence, *reply body]

    For servers that want to see duplicates (a retried request carries the same
    number). A reply whose first frame is not the request's number is not taken for
    the answer (counted in :attr:`LazyPirateStats.mismatched`; the attempt is retried).

Both ends must use the same format. A mismatch ends in a clear error, never a hang: a
sequenced client of a plain server gets replies without its sequence frame, retries,
and fails with a ServiceUnavailableError that says so; a sequenced server given a
request whose first frame is not a sequence number counts it as ``malformed`` and
answers :data:`NOT_AN_ANSWER`; a plain server hands a sequenced client's frames to its
handler as they are.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import math
import warnings
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

from transportkit._closing import Closeable
from transportkit._errors import (
    BrokenPeerError,
    ClosedError,
    FrameError,
    ServiceUnavailableError,
)
from transportkit._keywords import RETRIES_COUNTED_ATTEMPTS, renamed
from transportkit._log import limited
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._socket import Frame, Message, Requester, Worker, check_frames
from transportkit._timeouts import wait_for
from transportkit.patterns._limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    check_message_limit,
    message_bytes,
    too_large,
)
from transportkit.patterns._shutdown import DrainTimeout, GracefulStop

logger = logging.getLogger(__name__)

__all__ = [
    "EMPTY_ANSWER",
    "NOT_AN_ANSWER",
    "REQUEST_ATTEMPTS",
    "REQUEST_TIMEOUT",
    "WIRE_DEFAULT",
    "Handler",
    "LazyPirateClient",
    "LazyPirateStats",
    "LazyPirateWire",
    "MalformedRequest",
    "ServeStats",
    "call_handler",
    "empty_answer",
    "not_an_answer",
    "reply_or_none",
    "sequenced",
    "serve_lazy_pirate",
    "serve_requests",
]

REQUEST_TIMEOUT = 2.5
"""Seconds the Guide's ``lpclient`` waits for each reply."""

REQUEST_ATTEMPTS = 3
"""Sends of one request, the first included, before the Guide's ``lpclient`` abandons
it (the Guide calls this ``REQUEST_RETRIES``, but it counts every send: three sends, two
of them retries)."""


def __getattr__(name: str) -> object:
    """``REQUEST_RETRIES``, the old name of :data:`REQUEST_ATTEMPTS`, still reads (with a
    DeprecationWarning that names the new one) until the next minor release.
    """
    if name == "REQUEST_RETRIES":
        warnings.warn(
            "transportkit.patterns.lazy_pirate.REQUEST_RETRIES is now REQUEST_ATTEMPTS "
            "(sends of a request, the first included, as it always counted)",
            DeprecationWarning,
            stacklevel=2,
        )
        return REQUEST_ATTEMPTS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Handler: TypeAlias = Callable[[Message], Sequence[Frame] | Awaitable[Sequence[Frame]]]
"""Turns a request's body frames into the reply's frames (plain or ``async`` function)."""


class LazyPirateWire(enum.Enum):
    """The wire format of a Lazy Pirate client and server (see the module docstring)."""

    PLAIN = "plain"
    """The caller's frames, unchanged, both ways (the Guide's ``lpclient``/``lpserver``)."""

    SEQUENCED = "sequenced"
    """A sequence-number frame first, echoed by the server (transportkit's opt-in)."""


def _check_wire(wire: object) -> LazyPirateWire:
    if not isinstance(wire, LazyPirateWire):
        raise ValueError(f"wire must be a LazyPirateWire, got {wire!r}")
    return wire


_MAX_SEQUENCE_DIGITS: Final = 20
"""The longest sequence frame a sequenced server accepts (2**64 has 20 digits)."""


class MalformedRequest(FrameError):
    """A request that does not follow the wire format (counted as ``malformed``)."""


def _is_sequence_frame(frame: Frame) -> bool:
    data = bytes(frame)
    return 0 < len(data) <= _MAX_SEQUENCE_DIGITS and data.isdigit()


async def call_handler(
    handler: Handler, body: Message, *, empty_ok: bool = False
) -> Sequence[Frame]:
    """Run ``handler`` on ``body`` (awaiting it if it is async) and check its reply.

    Args:
        handler: The request handler.
        body: What it is given.
        empty_ok: An empty sequence is a valid reply (the caller adds frames of its own
            around it, as :func:`sequenced` adds the sequence frame).

    Raises:
        FrameError: The handler returned something that is not a message.
        Exception: Whatever the handler raises.
    """
    result = handler(body)
    if inspect.isawaitable(result):
        result = await result
    if empty_ok and _is_empty_sequence(result):
        return []
    return check_frames(result)


def _is_empty_sequence(value: object) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, (bytes, bytearray, memoryview, str))
        and len(value) == 0
    )


async def reply_or_none(
    handler: Handler, body: Message, *, log: logging.Logger | None = None
) -> Sequence[Frame] | None:
    """:func:`call_handler`, with None where the handler failed.

    For server loops, which must outlive any one request: a handler that raises (any
    ``Exception``; cancellation still propagates) or returns something that is not a
    message gives None, for the caller to count as a handler error and go on. The
    failure is logged with its traceback at ERROR on ``log`` (default: this module's
    logger), rate-limited (:func:`transportkit._log.limited`, key ``"handler"``).
    """
    try:
        return await call_handler(handler, body)
    except Exception:
        limited(
            logger if log is None else log,
            logging.ERROR,
            "handler",
            "request handler failed: the request gets no reply",
            exc_info=True,
            extra={"counter": "handler_errors"},
        )
        return None


def sequenced(handler: Handler) -> Handler:
    """Wrap a body handler for :attr:`LazyPirateWire.SEQUENCED`.

    The wrapped handler receives ``[sequence, *body]``, calls ``handler(body)`` and
    returns ``[sequence, *reply]``, so the client can match the reply to its request.
    A request of one frame has an empty body (``handler([])``), and an empty reply
    body is valid too (the reply is then the sequence frame alone).

    The wrapped handler raises :class:`MalformedRequest` (a FrameError) for a request
    whose first frame is not a sequence number (1 to 20 ASCII digits): a plain client's
    request, never handed to ``handler``. Do not wrap handlers of plain servers.
    """

    async def with_sequence(request: Message) -> Sequence[Frame]:
        if not _is_sequence_frame(request[0]):
            raise MalformedRequest(
                f"the first frame of a sequenced Lazy Pirate request must be its sequence "
                f"number in ASCII decimal, got {bytes(request[0])[:32]!r}: is the client "
                "using LazyPirateWire.PLAIN?"
            )
        reply = await call_handler(handler, request[1:], empty_ok=True)
        return [request[0], *reply]

    return with_sequence


@dataclass(slots=True)
class ServeStats:
    """Counters of a :func:`serve_requests` loop.

    Attributes:
        served: Requests answered with the handler's reply.
        handler_errors: Requests whose handler raised or returned something that is not
            a message (answered with ``on_error``'s reply).
        over_limit: Requests larger than ``max_message_bytes``, never handed to the
            handler (answered with ``on_error``'s reply).
        malformed: Requests that do not follow the wire format (in
            :attr:`LazyPirateWire.SEQUENCED`, no sequence frame first), never handed
            to the handler (answered with ``on_error``'s reply).
        shutdown_dropped: Requests in flight when a graceful stop's deadline passed:
            their handler was cancelled and they got ``on_error``'s reply (or none,
            without ``on_error``).
    """

    served: int = 0
    handler_errors: int = 0
    over_limit: int = 0
    malformed: int = 0
    shutdown_dropped: int = 0


ErrorReply: TypeAlias = Callable[[Message, Exception], Sequence[Frame]]
"""Turns a request that got no reply of the handler's, and why, into the reply to send."""

NOT_AN_ANSWER: Final = b"0"
"""The sequence frame of the reply a :attr:`LazyPirateWire.SEQUENCED` server gives a
request it could not answer: no request of a sequenced client carries it (its sequence
numbers start at 1), so the client does not take it for the answer; it retries, then
fails with :class:`~transportkit.ServiceUnavailableError`. (The Guide's ``lpclient``
numbers from 0 and speaks the plain format: it is served by a plain server.)"""

EMPTY_ANSWER: Final = b""
"""The one frame of the reply a :attr:`LazyPirateWire.PLAIN` server gives a request it
could not answer. The plain format has no envelope to mark a reply as "not an answer",
so the client returns it to its caller as the reply; a handler whose replies are never
one empty frame lets the caller tell. Give ``on_error`` for an application's own error
reply (the risk handler never needs it: it answers every request)."""


def not_an_answer(request: Message, error: Exception) -> Sequence[Frame]:
    """The sequenced Lazy Pirate reply to a request that could not be answered (see
    :data:`NOT_AN_ANSWER`).
    """
    return [NOT_AN_ANSWER]


def empty_answer(request: Message, error: Exception) -> Sequence[Frame]:
    """The plain Lazy Pirate reply to a request that could not be answered (see
    :data:`EMPTY_ANSWER`).
    """
    return [EMPTY_ANSWER]


class _WireDefault(enum.Enum):
    ERROR_REPLY = "the wire format's error reply"


WIRE_DEFAULT: Final = _WireDefault.ERROR_REPLY
"""``on_error`` of :func:`serve_lazy_pirate` by default: :func:`empty_answer` in the
plain format, :func:`not_an_answer` in the sequenced one."""


async def serve_requests(
    socket: Worker,
    handler: Handler,
    *,
    max_requests: int | None = None,
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
    on_error: ErrorReply | None = None,
    stats: ServeStats | None = None,
    stop: GracefulStop | None = None,
) -> int:
    """Answer requests on a bound or connected REP socket until it closes (or ``stop``).

    Each request's frames go to ``handler`` and its return value is sent back. A REP
    socket must answer every request before it can take the next, and plain
    request/reply has no error reply of its own, so what a request the handler could
    not answer gets is the application's choice: give ``on_error`` to answer it (the
    loop then outlives any handler failure and any request over
    ``max_message_bytes``, each counted in ``stats``); without it such a request ends
    the loop.

    Args:
        socket: The REP socket to serve on (the caller owns and closes it; if it binds,
            give it ``maxmsgsize`` too: see
            :func:`~transportkit.patterns._limits.bounded_options`).
        handler: Makes the reply of each request.
        max_requests: Stop after this many replies (None: serve until closed).
        max_message_bytes: Largest request handed to the handler, all frames (None: no
            limit); a larger one goes to ``on_error`` with a FrameError.
        on_error: Makes the reply to a request whose handler raised (any
            ``Exception``) or returned something that is not a message, or that was
            too large.
        stats: Counters to update as the loop runs.
        stop: Stops the loop gracefully (see
            :mod:`~transportkit.patterns._shutdown`): once ``stop.shutdown(timeout)``
            is called no new request is read; the one being handled gets until the
            deadline, then its handler is cancelled and it gets ``on_error``'s reply
            (a :class:`~transportkit.patterns._shutdown.DrainTimeout`; without
            ``on_error`` it gets none), counted in ``stats.shutdown_dropped``; then
            the loop returns. The socket stays open (the caller closes it).

    Returns:
        How many requests were answered (error replies included).

    Raises:
        Exception: Without ``on_error``: whatever ``handler`` raises, or
            :class:`~transportkit.FrameError` for a reply that is not a message or a
            request over ``max_message_bytes``; and whatever ``on_error`` raises. The
            REP socket is then mid-request: close it.
        ValueError: ``max_message_bytes`` is not None or an int >= 1.
    """
    limit = check_message_limit(max_message_bytes)
    counters = ServeStats() if stats is None else stats
    if stop is not None:
        return await _serve_until_stopped(
            socket, handler, stop, max_requests, limit=limit, on_error=on_error, counters=counters
        )
    answered = 0
    while max_requests is None or answered < max_requests:
        request = await socket.recv(timeout=math.inf)
        try:
            reply = await _answer(handler, request, limit, counters)
        except Exception as exc:
            if on_error is None:
                raise
            reply = check_frames(on_error(request, exc))
        await socket.send(reply)
        answered += 1
    return answered


async def _serve_until_stopped(
    socket: Worker,
    handler: Handler,
    stop: GracefulStop,
    max_requests: int | None,
    *,
    limit: int | None,
    on_error: ErrorReply | None,
    counters: ServeStats,
) -> int:
    """:func:`serve_requests`'s loop when it has a graceful ``stop``."""
    answered = 0
    stop.started()
    try:
        while max_requests is None or answered < max_requests:
            request = await stop.recv(socket)
            if request is None:
                break
            try:
                reply = await stop.bounded(_answer(handler, request, limit, counters))
            except DrainTimeout as exc:
                counters.shutdown_dropped += 1
                if on_error is None:
                    break
                reply = check_frames(on_error(request, exc))
            except Exception as exc:
                if on_error is None:
                    raise
                reply = check_frames(on_error(request, exc))
            try:
                await socket.send(reply)
            except ClosedError:
                break
            answered += 1
    finally:
        stop.finished()
    return answered


async def _answer(
    handler: Handler, request: Message, limit: int | None, counters: ServeStats
) -> Sequence[Frame]:
    """The handler's reply to ``request``, counted; raise (counted) where there is none."""
    if too_large(request, limit):
        counters.over_limit += 1
        limited(
            logger,
            logging.WARNING,
            "over_limit",
            "request of %d bytes over max_message_bytes (%s)",
            message_bytes(request),
            limit,
            extra={"reason": "too large", "counter": "over_limit"},
        )
        raise FrameError(
            f"a request of {message_bytes(request)} bytes is over max_message_bytes ({limit})"
        )
    try:
        reply = await call_handler(handler, request)
    except MalformedRequest as exc:
        counters.malformed += 1
        limited(
            logger,
            logging.WARNING,
            "malformed",
            "malformed request: %s",
            exc,
            extra={"reason": str(exc), "counter": "malformed"},
        )
        raise
    except Exception:
        counters.handler_errors += 1
        limited(
            logger,
            logging.ERROR,
            "handler",
            "request handler failed",
            exc_info=True,
            extra={"counter": "handler_errors"},
        )
        raise
    counters.served += 1
    return reply


async def serve_lazy_pirate(
    socket: Worker,
    handler: Handler,
    *,
    max_requests: int | None = None,
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
    on_error: ErrorReply | _WireDefault | None = WIRE_DEFAULT,
    stats: ServeStats | None = None,
    wire: LazyPirateWire = LazyPirateWire.PLAIN,
    stop: GracefulStop | None = None,
) -> int:
    """:func:`serve_requests` for Lazy Pirate clients, in either wire format.

    In :attr:`LazyPirateWire.PLAIN` (the default) ``handler`` gets each request as it
    came and its reply is sent as it is: the Guide's ``lpserver``, which serves the
    Guide's ``lpclient`` (its request, the sequence number as the only frame, is echoed
    by an echo handler). In :attr:`LazyPirateWire.SEQUENCED` ``handler`` sees the body
    after the sequence frame, which is echoed around its reply (:func:`sequenced`); a
    request without a sequence frame first is counted as ``malformed``.

    Unlike :func:`serve_requests` it outlives every request by default: one whose
    handler fails, that is over ``max_message_bytes``, or (sequenced) that is
    malformed, gets the wire format's error reply (counted in ``stats``):
    :func:`empty_answer` in the plain format, :func:`not_an_answer` in the sequenced
    one, which the client does not take for the answer. ``on_error`` gets the whole
    request (sequence frame first, if any) and returns the whole reply (echo the
    sequence frame for a sequenced client to take it as the answer); None makes a
    failure end the loop.

    ``stop`` makes it stop gracefully (``await stop.shutdown(timeout)``, default 5 s):
    no new request is read, the one being handled is answered, or at the deadline
    gets the wire format's error reply (``stats.shutdown_dropped``), and the function
    returns; see :func:`serve_requests`.

    Raises:
        ValueError: ``wire`` is not a LazyPirateWire; and see :func:`serve_requests`.
    """
    fmt = _check_wire(wire)
    if isinstance(on_error, _WireDefault):
        on_error = empty_answer if fmt is LazyPirateWire.PLAIN else not_an_answer
    return await serve_requests(
        socket,
        handler if fmt is LazyPirateWire.PLAIN else sequenced(handler),
        max_requests=max_requests,
        max_message_bytes=max_message_bytes,
        on_error=on_error,
        stats=stats,
        stop=stop,
    )


@dataclass(slots=True)
class LazyPirateStats:
    """Counters of a :class:`LazyPirateClient`.

    Attributes:
        requests: Calls of :meth:`LazyPirateClient.request`.
        replies: Requests answered (each request ends as a reply or a failure).
        retries: Resends after a timeout (attempts beyond each request's first).
        failures: Requests abandoned with ServiceUnavailableError.
        mismatched: In :attr:`LazyPirateWire.SEQUENCED`, replies thrown away because
            their first frame was not the request's sequence number (the server's
            :data:`NOT_AN_ANSWER`, or a server that does not use the sequenced
            format; it costs the attempt). Always 0 in the plain format.
    """

    requests: int = 0
    replies: int = 0
    retries: int = 0
    failures: int = 0
    mismatched: int = 0


class LazyPirateClient(Closeable):
    """A request/reply client that survives a dead, slow or restarted server.

    Contract: every :meth:`request` ends in exactly one of two ways, within about
    ``timeout * attempts`` seconds: the reply to *that* request, or
    :class:`~transportkit.ServiceUnavailableError`. It never hangs, never returns a reply
    meant for an earlier request, and never loses a request silently. The server may
    see a request more than once (after a lost reply); make requests idempotent.

    Every attempt that gets no reply (timeout, broken connection, cancellation) closes
    the REQ socket, and the next attempt opens a new one, as the Guide's ``lpclient``
    does: that, not a sequence frame, is what keeps a late reply from being taken for
    the answer to a later request, so the plain wire format (the default) is as safe as
    the sequenced one.

    Requests from several tasks are served one at a time, in order.

    Args:
        network: Where the REQ sockets come from.
        endpoint: The server (or queue) to connect to.
        timeout: Seconds to wait for each attempt's reply (the Guide's 2.5 s).
        attempts: Sends of each request before giving up, the first included (the
            Guide's 3: the request is sent at most three times, so at most two of
            them are retries). Formerly ``retries``, which counted the same thing:
            passing ``retries=`` raises a TypeError that says what to write.
        options: Options of the REQ sockets (default: transportkit's, linger 0).
        wire: :attr:`LazyPirateWire.PLAIN` (default: the frames as given, any REP
            server) or :attr:`LazyPirateWire.SEQUENCED` (a sequence frame first, for a
            :func:`serve_lazy_pirate` server of the same format).
        latency_observer: Called with the seconds (event-loop time: virtual in a
            simulation) from a request's first send to its reply, retries included,
            for each answered request; None (default) measures nothing. It must not
            raise. :class:`transportkit.metrics.LatencyHistogram` is one.

    Raises:
        ValueError: ``timeout`` is not positive, ``attempts`` is not an int >= 1, or
            ``wire`` is not a LazyPirateWire.
        TypeError: The removed keyword ``retries`` was given (use ``attempts``).
    """

    @renamed("retries", "attempts", RETRIES_COUNTED_ATTEMPTS)
    def __init__(
        self,
        network: Network,
        endpoint: str,
        *,
        timeout: float = REQUEST_TIMEOUT,
        attempts: int = REQUEST_ATTEMPTS,
        options: SocketOptions | None = None,
        wire: LazyPirateWire = LazyPirateWire.PLAIN,
        latency_observer: Callable[[float], object] | None = None,
    ) -> None:
        self.wire: Final = _check_wire(wire)
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts must be an int >= 1, got {attempts!r}")
        self.network = network
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.attempts = attempts
        """Sends of each request, the first included, before giving up."""
        self.options = SocketOptions() if options is None else options
        self.stats = LazyPirateStats()
        self.latency_observer = latency_observer
        self._sequence = 0
        self._socket: Requester | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def sequence(self) -> int:
        """The number of the latest request, from 1 (0 before any); in the sequenced
        format, the number its sequence frame carried.
        """
        return self._sequence

    async def request(self, frames: Sequence[Frame]) -> Message:
        """Send ``frames`` and return the reply (in the sequenced format, the body of
        the reply that carries the request's sequence frame).

        Raises:
            ServiceUnavailableError: No (matching) reply after ``attempts`` sends; the
                message names the endpoint and the attempts, and how many replies did
                not carry the sequence frame, if any did not.
            FrameError: ``frames`` is not a non-empty sequence of bytes frames.
            ClosedError: The client (or its network) is closed.
        """
        body: list[Frame] = list(check_frames(frames))
        async with self._lock:
            self._check_open()
            self._sequence += 1
            self.stats.requests += 1
            seq = b"%d" % self._sequence
            message = body if self.wire is LazyPirateWire.PLAIN else [seq, *body]
            mismatched = self.stats.mismatched
            observer = self.latency_observer
            started = asyncio.get_running_loop().time() if observer is not None else 0.0
            for attempt in range(1, self.attempts + 1):
                if attempt > 1:
                    self.stats.retries += 1
                    logger.info(
                        "no reply from %s to request %d in %g s: retrying (attempt %d of %d)",
                        self.endpoint,
                        self._sequence,
                        self.timeout,
                        attempt,
                        self.attempts,
                        extra={"endpoint": self.endpoint, "counter": "retries"},
                    )
                reply = await self._attempt(message)
                if reply is not None:
                    self.stats.replies += 1
                    if observer is not None:
                        observer(asyncio.get_running_loop().time() - started)
                    return reply
            self.stats.failures += 1
            logger.warning(
                "giving up on request %d to %s after %d attempt(s) of %g s",
                self._sequence,
                self.endpoint,
                self.attempts,
                self.timeout,
                extra={"endpoint": self.endpoint, "counter": "failures"},
            )
            mismatched = self.stats.mismatched - mismatched
            why = (
                f"; {mismatched} repl{'y' if mismatched == 1 else 'ies'} did not carry the "
                f"sequence frame {self._sequence} (the server's 'not an answer', or a "
                "server that does not use LazyPirateWire.SEQUENCED)"
                if mismatched
                else ""
            )
            raise ServiceUnavailableError(
                f"no reply from {self.endpoint} to request {self._sequence} after "
                f"{self.attempts} attempt(s) of {self.timeout:g} s each{why}"
            )

    async def _attempt(self, message: list[Frame]) -> Message | None:
        """Send once and wait; return the reply (body), or None after closing the socket."""
        sock = self._socket
        if sock is None:
            sock = self._socket = self.network.requester(
                connect=self.endpoint, options=self.options
            )
        try:
            reply = await wait_for(sock.request(message), self.timeout)
        except (TimeoutError, BrokenPeerError):
            self._drop_socket()
            return None
        except BaseException:
            self._drop_socket()
            raise
        if self.wire is LazyPirateWire.PLAIN:
            return reply
        if reply and reply[0] == message[0]:
            return reply[1:]
        self.stats.mismatched += 1
        limited(
            logger,
            logging.WARNING,
            "mismatched",
            "reply from %s without request %d's sequence frame: dropped",
            self.endpoint,
            self._sequence,
            extra={
                "endpoint": self.endpoint,
                "reason": "sequence mismatch",
                "counter": "mismatched",
            },
        )
        self._drop_socket()
        return None

    def _drop_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"Lazy Pirate client of {self.endpoint} is closed")

    def close(self) -> None:
        """Close the client's socket; later requests raise ClosedError. Idempotent."""
        self._closed = True
        self._drop_socket()
