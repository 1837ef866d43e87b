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
from typing import TypeAlias

from transportkit._closing import Closeable
from transportkit._errors import BrokenPeerError, ClosedError, ServiceUnavailableError
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._socket import Frame, Message, Requester, Worker, check_frames

__all__ = [
    "REQUEST_RETRIES",
    "REQUEST_TIMEOUT",
    "Handler",
    "LazyPirateClient",
    "LazyPirateStats",
    "call_handler",
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


async def call_handler(handler: Handler, body: Message) -> Sequence[Frame]:
    """Run ``handler`` on ``body`` (awaiting it if it is async) and check its reply.

    Raises:
        FrameError: The handler returned something that is not a message.
    """
    result = handler(body)
    if inspect.isawaitable(result):
        result = await result
    return check_frames(result)


def sequenced(handler: Handler) -> Handler:
    """Wrap a body handler for the Lazy Pirate wire format.

    The wrapped handler receives ``[sequence, *body]``, calls ``handler(body)`` and
    returns ``[sequence, *reply]``, so the client can match the reply to its request.
    A request of one frame has an empty body (``handler([])``).
    """

    async def with_sequence(request: Message) -> Sequence[Frame]:
        reply = await call_handler(handler, request[1:])
        return [request[0], *reply]

    return with_sequence


async def serve_requests(
    socket: Worker, handler: Handler, *, max_requests: int | None = None
) -> int:
    """Answer requests on a bound or connected REP socket until it closes.

    Each request's frames go to ``handler`` and its return value is sent back.

    Args:
        socket: The REP socket to serve on (the caller owns and closes it).
        handler: Makes the reply of each request.
        max_requests: Stop after this many replies (None: serve until closed).

    Returns:
        How many requests were answered.

    Raises:
        Whatever ``handler`` raises (the REP socket is then mid-request: close it).
    """
    served = 0
    while max_requests is None or served < max_requests:
        request = await socket.recv(timeout=math.inf)
        reply = await call_handler(handler, request)
        await socket.send(reply)
        served += 1
    return served


async def serve_lazy_pirate(
    socket: Worker, handler: Handler, *, max_requests: int | None = None
) -> int:
    """:func:`serve_requests` for Lazy Pirate clients: ``handler`` sees bodies only."""
    return await serve_requests(socket, sequenced(handler), max_requests=max_requests)


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
            reply = await asyncio.wait_for(sock.request(message), self.timeout)
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
