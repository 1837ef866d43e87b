"""Lazy Pirate: reliable request/reply from the client side (ZeroMQ Guide, chapter 4).

The client sends a request on a REQ socket and waits ``timeout`` seconds for the reply.
If none comes it closes the socket (a REQ that got no reply is stuck in its lockstep, and
its queue may hold the lost request), opens a fresh one and sends again, up to
``retries`` attempts; then it gives up with :class:`~transportkit.ServiceUnavailableError`.

Every request carries a sequence number as its first frame, and the server echoes it as
the first frame of the reply (:func:`sequenced` does that for any handler), so a reply is
only ever taken as the answer to the request it belongs to. The wire format is::

    request: [sequence, *body]        reply: [sequence, *reply body]

where ``sequence`` is the request's number as ASCII decimal (what the Guide's
``lpclient`` sends).
"""

from __future__ import annotations

import asyncio
import inspect
import math
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

__all__ = [
    "NOT_AN_ANSWER",
    "REQUEST_RETRIES",
    "REQUEST_TIMEOUT",
    "Handler",
    "LazyPirateClient",
    "LazyPirateStats",
    "ServeStats",
    "call_handler",
    "not_an_answer",
    "reply_or_none",
    "sequenced",
    "serve_lazy_pirate",
    "serve_requests",
]

REQUEST_TIMEOUT = 2.5
"""Seconds the Guide's ``lpclient`` waits for each reply."""

REQUEST_RETRIES = 3
"""Attempts the Guide's ``lpclient`` makes before abandoning a request."""

Handler: TypeAlias = Callable[[Message], Sequence[Frame] | Awaitable[Sequence[Frame]]]
"""Turns a request's body frames into the reply's frames (plain or ``async`` function)."""


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


async def reply_or_none(handler: Handler, body: Message) -> Sequence[Frame] | None:
    """:func:`call_handler`, with None where the handler failed.

    For server loops, which must outlive any one request: a handler that raises (any
    ``Exception``; cancellation still propagates) or returns something that is not a
    message gives None, for the caller to count as a handler error and go on.
    """
    try:
        return await call_handler(handler, body)
    except Exception:
        return None


def sequenced(handler: Handler) -> Handler:
    """Wrap a body handler for the Lazy Pirate wire format.

    The wrapped handler receives ``[sequence, *body]``, calls ``handler(body)`` and
    returns ``[sequence, *reply]``, so the client can match the reply to its request.
    A request of one frame has an empty body (``handler([])``), and an empty reply
    body is valid too (the reply is then the sequence frame alone).
    """

    async def with_sequence(request: Message) -> Sequence[Frame]:
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
    """

    served: int = 0
    handler_errors: int = 0
    over_limit: int = 0


ErrorReply: TypeAlias = Callable[[Message, Exception], Sequence[Frame]]
"""Turns a request that got no reply of the handler's, and why, into the reply to send."""

NOT_AN_ANSWER: Final = b"0"
"""The sequence frame of the reply :func:`serve_lazy_pirate` gives a request it could not
answer: no request carries it (sequence numbers start at 1), so no Lazy Pirate client,
ours or the Guide's ``lpclient``, takes it for the answer; the client retries, then
fails with :class:`~transportkit.ServiceUnavailableError`."""


def not_an_answer(request: Message, error: Exception) -> Sequence[Frame]:
    """The Lazy Pirate reply to a request that could not be answered (see
    :data:`NOT_AN_ANSWER`).
    """
    return [NOT_AN_ANSWER]


async def serve_requests(
    socket: Worker,
    handler: Handler,
    *,
    max_requests: int | None = None,
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
    on_error: ErrorReply | None = None,
    stats: ServeStats | None = None,
) -> int:
    """Answer requests on a bound or connected REP socket until it closes.

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


async def _answer(
    handler: Handler, request: Message, limit: int | None, counters: ServeStats
) -> Sequence[Frame]:
    """The handler's reply to ``request``, counted; raise (counted) where there is none."""
    if too_large(request, limit):
        counters.over_limit += 1
        raise FrameError(
            f"a request of {message_bytes(request)} bytes is over max_message_bytes ({limit})"
        )
    try:
        reply = await call_handler(handler, request)
    except Exception:
        counters.handler_errors += 1
        raise
    counters.served += 1
    return reply


async def serve_lazy_pirate(
    socket: Worker,
    handler: Handler,
    *,
    max_requests: int | None = None,
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
    on_error: ErrorReply | None = not_an_answer,
    stats: ServeStats | None = None,
) -> int:
    """:func:`serve_requests` for Lazy Pirate clients: ``handler`` sees bodies only.

    Unlike :func:`serve_requests` it outlives every request by default: one whose
    handler fails, or that is over ``max_message_bytes``, gets :func:`not_an_answer`
    (counted in ``stats``), which the client does not take for the answer. ``on_error``
    gets the whole request (sequence frame first) and returns the whole reply: echo
    the sequence frame for the client to take it as the answer; None makes a failure
    end the loop.
    """
    return await serve_requests(
        socket,
        sequenced(handler),
        max_requests=max_requests,
        max_message_bytes=max_message_bytes,
        on_error=on_error,
        stats=stats,
    )


@dataclass(slots=True)
class LazyPirateStats:
    """Counters of a :class:`LazyPirateClient`.

    Attributes:
        requests: Calls of :meth:`LazyPirateClient.request`.
        replies: Requests answered (each request ends as a reply or a failure).
        retries: Resends after a timeout (attempts beyond each request's first).
        failures: Requests abandoned with ServiceUnavailableError.
        mismatched: Replies thrown away because their sequence number was not the
            request's (a late or foreign reply; it costs the attempt).
    """

    requests: int = 0
    replies: int = 0
    retries: int = 0
    failures: int = 0
    mismatched: int = 0


class LazyPirateClient(Closeable):
    """A request/reply client that survives a dead, slow or restarted server.

    Contract: every :meth:`request` ends in exactly one of two ways, within about
    ``timeout * retries`` seconds: the reply to *that* request, or
    :class:`~transportkit.ServiceUnavailableError`. It never hangs, never returns a reply
    meant for an earlier request, and never loses a request silently. The server may
    see a request more than once (after a lost reply); make requests idempotent.

    Requests from several tasks are served one at a time, in order.

    Args:
        network: Where the REQ sockets come from.
        endpoint: The server (or queue) to connect to.
        timeout: Seconds to wait for each attempt's reply (the Guide's 2.5 s).
        retries: Attempts per request before giving up (the Guide's 3: the request is
            sent at most three times).
        options: Options of the REQ sockets (default: transportkit's, linger 0).

    Raises:
        ValueError: ``timeout`` is not positive or ``retries`` is below 1.
    """

    def __init__(
        self,
        network: Network,
        endpoint: str,
        *,
        timeout: float = REQUEST_TIMEOUT,
        retries: int = REQUEST_RETRIES,
        options: SocketOptions | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 1:
            raise ValueError(f"retries must be an int >= 1, got {retries!r}")
        self.network = network
        self.endpoint = endpoint
        self.timeout = float(timeout)
        self.retries = retries
        self.options = SocketOptions() if options is None else options
        self.stats = LazyPirateStats()
        self._sequence = 0
        self._socket: Requester | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def sequence(self) -> int:
        """The sequence number of the latest request (0 before any)."""
        return self._sequence

    async def request(self, frames: Sequence[Frame]) -> Message:
        """Send ``frames`` and return the body of the matching reply.

        Raises:
            ServiceUnavailableError: No matching reply after ``retries`` attempts; the
                message names the endpoint and the attempts.
            FrameError: ``frames`` is not a non-empty sequence of bytes frames.
            ClosedError: The client (or its network) is closed.
        """
        body: list[Frame] = list(check_frames(frames))
        async with self._lock:
            self._check_open()
            self._sequence += 1
            self.stats.requests += 1
            seq = b"%d" % self._sequence
            for attempt in range(1, self.retries + 1):
                if attempt > 1:
                    self.stats.retries += 1
                reply = await self._attempt([seq, *body])
                if reply is not None:
                    self.stats.replies += 1
                    return reply
            self.stats.failures += 1
            raise ServiceUnavailableError(
                f"no reply from {self.endpoint} to request {self._sequence} after "
                f"{self.retries} attempt(s) of {self.timeout:g} s each"
            )

    async def _attempt(self, message: list[Frame]) -> Message | None:
        """Send once and wait; return the reply body, or None after closing the socket."""
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
        if reply and reply[0] == message[0]:
            return reply[1:]
        self.stats.mismatched += 1
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
