"""The socket interfaces trading code is written against.

Each interface is an abstract class whose docstrings are the contract every backend
honours; the conformance checks in :mod:`transportkit.testing` hold backends to it.

Messages are multipart: a message is a non-empty sequence of frames, each frame a
C-contiguous bytes-like object (``bytes``, ``bytearray``, ``memoryview``...; the exact
rules are :func:`check_frames`'s). Received messages are ``list[bytes]``. A message is
delivered whole or not at all.

Timeouts given to methods are in seconds (asyncio's unit); timeouts in
:class:`~transportkit.SocketOptions` are in milliseconds (libzmq's unit).
"""

from __future__ import annotations

import abc
import math
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Final, Protocol, TypeAlias, TypeVar

from transportkit._closing import Closeable
from transportkit._errors import ClosedError, FrameError, StateError
from transportkit._kinds import SocketKind
from transportkit._options import SocketOptions

__all__ = [
    "Dealer",
    "Frame",
    "Message",
    "Monitor",
    "MonitorEvent",
    "Pair",
    "Publisher",
    "Puller",
    "Pusher",
    "Receiver",
    "Requester",
    "Router",
    "Sender",
    "Socket",
    "SocketStats",
    "Subscriber",
    "Worker",
    "XPublisher",
    "XSubscriber",
    "check_frames",
    "check_manual",
    "check_xsub_message",
    "parse_subscription",
]

Frame: TypeAlias = bytes | bytearray | memoryview
"""A frame as accepted by ``send``: any C-contiguous buffer (see :func:`check_frames`)."""

Message: TypeAlias = list[bytes]
"""A received message: its frames, in order."""

_TEXT_HINT = "expected bytes (encode text explicitly, e.g. 'AAPL'.encode())"


def check_frames(frames: object) -> list[Frame]:
    """Validate an outgoing message; return its frames, or raise FrameError naming the fault.

    This is the one contract of every backend's ``send`` and ``try_send``: the zmq
    backend (its C accelerator and its pure-pyzmq fallback) and the sim apply these
    rules in this order, and refuse what they refuse with this function's message.

    - A message is a non-empty :class:`collections.abc.Sequence` of frames (a list
      or a tuple, usually). Anything else is refused, even if it can be iterated: a
      dict, a set, a generator. So is a single ``str`` or a single bytes-like object
      (wrap it in a list: ``send([frame])``). So is a Sequence whose ``len()`` does not
      match what iterating it gives. The message is iterated exactly once.
    - A frame is any object with the buffer protocol whose memory is C-contiguous:
      ``bytes``, ``bytearray``, a contiguous ``memoryview``, ``array.array``, a
      C-ordered numpy array... It is sent as that memory, byte for byte (for these
      objects, what ``bytes(frame)`` gives). A buffer that is not C-contiguous (a
      strided ``memoryview``, a Fortran-ordered numpy array) is refused rather than
      reordered: send ``bytes(frame)`` or ``numpy.ascontiguousarray(frame)``. A
      ``str`` is refused: encode it.

    Args:
        frames: The message to check.

    Returns:
        Its frames, as a list (``frames`` itself when it is a list).

    Raises:
        FrameError: ``frames`` is not a message, or frame ``i`` is not a frame (the
            message says which rule, and which frame).
    """
    kind = type(frames)
    items: list[Frame]
    if kind is list:
        items = frames  # type: ignore[assignment]
    elif kind is tuple:
        items = list(frames)  # type: ignore[call-overload]
    else:
        if isinstance(frames, str) or _is_buffer(frames):
            raise FrameError(
                f"a message is a sequence of frames, got a single {kind.__name__}; "
                "wrap it in a list: send([frame])"
            )
        if not isinstance(frames, Sequence):
            raise FrameError(
                f"a message is a sequence of frames (a list or a tuple), got {kind.__name__}"
            )
        declared = len(frames)
        items = list(frames)
        if len(items) != declared:
            raise FrameError(
                f"the message's len() is {declared} but iterating it gives "
                f"{len(items)} frames: a message must be a consistent Sequence"
            )
    if not items:
        raise FrameError("a message needs at least one frame, got an empty sequence")
    for i, frame in enumerate(items):
        if type(frame) is bytes or type(frame) is bytearray:
            continue
        problem = _frame_problem(frame)
        if problem is not None:
            raise FrameError(f"frame {i} {problem}")
    return items


def _is_buffer(obj: object) -> bool:
    """Whether ``obj`` has the buffer protocol."""
    try:
        memoryview(obj).release()  # type: ignore[arg-type]
    except TypeError:
        return False
    except (ValueError, BufferError):  # it has one, but refused this request
        return True
    return True


def _frame_problem(frame: object) -> str | None:
    """Why ``frame`` is not a frame (completing "frame i ..."), or None if it is one."""
    if isinstance(frame, str):
        return f"is str {frame!r:.40}, {_TEXT_HINT}"
    try:
        view = memoryview(frame)  # type: ignore[arg-type]
    except TypeError:
        return f"is {type(frame).__name__} {frame!r:.40}, {_TEXT_HINT}"
    except (ValueError, BufferError) as exc:
        return f"is a {type(frame).__name__} whose buffer cannot be read ({exc})"
    with view:
        if not view.c_contiguous:
            return (
                f"is a {type(frame).__name__} whose memory is not C-contiguous (strided, or "
                "Fortran-ordered): a frame is sent as its memory, so send bytes(frame) or "
                "numpy.ascontiguousarray(frame)"
            )
    return None


@dataclass(slots=True)
class SocketStats:
    """Counters of one socket, updated as it works.

    Attributes:
        sent: Messages accepted by ``send`` (multipart counts once); on an XSUB its
            subscription messages too (``subscribe`` sends one). A SUB's
            subscriptions are socket options, not messages: not counted.
        received: Messages handed to the application by a receive; on an XPUB the
            subscription messages too.
        dropped: Messages this socket discarded (HWM on PUB/ROUTER, unroutable ROUTER
            sends, replies to vanished requesters, queues lost to disconnects), or None
            where the backend cannot know (libzmq does not report drops).
        truncated: Multipart messages of which this socket kept only the last frame:
            a conflating receiver's pipe holds one frame, so a peer that does not
            conflate and sends ``[a, b, c]`` delivers ``[c]`` (as libzmq does, with no
            error on either side). The message still counts once in ``received`` (and
            not at all if a SUB's filter then refuses that frame). None where the
            backend cannot know: on the zmq backend libzmq discards the frames inside
            the pipe and the receiver sees a single frame with no sign of the others.
    """

    sent: int = 0
    received: int = 0
    dropped: int | None = 0
    truncated: int | None = 0


@dataclass(frozen=True, slots=True)
class MonitorEvent:
    """A socket lifecycle event, named as libzmq names them (``CONNECTED``, ...).

    Attributes:
        name: ``CONNECTED``, ``CONNECT_DELAYED``, ``CONNECT_RETRIED``, ``LISTENING``,
            ``BIND_FAILED``, ``ACCEPTED``, ``ACCEPT_FAILED``, ``CLOSED``, ``CLOSE_FAILED``,
            ``DISCONNECTED``, ``MONITOR_STOPPED``, ``HANDSHAKE_FAILED_NO_DETAIL``,
            ``HANDSHAKE_SUCCEEDED``, ``HANDSHAKE_FAILED_PROTOCOL``, ``HANDSHAKE_FAILED_AUTH``.
        endpoint: The endpoint the event concerns.
        value: libzmq's event value (a file descriptor, an interval or an errno).
    """

    name: str
    endpoint: str
    value: int = 0


class Monitor(abc.ABC):
    """A stream of a socket's :class:`MonitorEvent`; close it when done."""

    @abc.abstractmethod
    async def recv(self, timeout: float | None = None) -> MonitorEvent:
        """Wait for the next event; raise Timeout after ``timeout`` seconds."""

    @abc.abstractmethod
    def try_recv(self) -> MonitorEvent | None:
        """Return the next event if one is waiting, else None."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop monitoring. Idempotent."""

    def __aiter__(self) -> AsyncIterator[MonitorEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[MonitorEvent]:
        while True:
            try:
                yield await self.recv()
            except ClosedError:
                return


class Socket(Closeable):
    """What every socket can do: bind, connect, close, report.

    Sockets are made by a :class:`~transportkit.Network`, never constructed directly.
    A socket belongs to one task at a time; it is not thread-safe (see the zmq backend's
    thread-safe blocking socket for that).
    """

    kind: ClassVar[SocketKind]

    @property
    @abc.abstractmethod
    def options(self) -> SocketOptions:
        """The options the socket was made with."""

    @property
    @abc.abstractmethod
    def stats(self) -> SocketStats:
        """Live counters (the same object for the socket's whole life)."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once :meth:`close` was called (or the socket's node crashed, in a sim)."""

    @abc.abstractmethod
    def bind(self, endpoint: str) -> str:
        """Bind to ``endpoint`` and return it resolved (a wildcard tcp port made concrete).

        Raises:
            EndpointError: The endpoint is malformed or its transport unavailable.
            AddressInUseError: Another socket is bound there.
            ClosedError: The socket is closed.
        """

    @abc.abstractmethod
    def connect(self, endpoint: str) -> None:
        """Connect to ``endpoint``. Returns at once; the connection completes (and is
        retried every ``reconnect_ivl``) in the background, as in ZeroMQ.

        Raises:
            EndpointError: The endpoint is malformed or its transport unavailable.
            ClosedError: The socket is closed.
        """

    @abc.abstractmethod
    def disconnect(self, endpoint: str) -> None:
        """Drop the connection made by :meth:`connect` to ``endpoint``, and its queue."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the socket. Idempotent. Unsent messages survive for ``linger`` ms.

        Every later operation raises :class:`~transportkit.ClosedError`, and so does a
        receive that was waiting when the socket closed.
        """

    @abc.abstractmethod
    def monitor(self) -> Monitor:
        """Start a stream of this socket's lifecycle events."""

    @property
    @abc.abstractmethod
    def last_endpoint(self) -> str | None:
        """The endpoint most recently bound or connected, resolved; None before any."""

    def __repr__(self) -> str:
        state = "closed" if self.closed else (self.last_endpoint or "unattached")
        return f"<{type(self).__name__} {self.kind.value} {state}>"


class Sender(Socket):
    """A socket that sends."""

    @abc.abstractmethod
    async def send(self, frames: Sequence[Frame]) -> None:
        """Send one multipart message, whole or not at all.

        Waits while the socket is at its high-water mark if its kind blocks there
        (PUSH, DEALER, REQ, PAIR), up to ``sndtimeo``; a PUB never waits (it drops, and
        counts the drop where the backend can know).

        Args:
            frames: A non-empty Sequence (a list or a tuple) of C-contiguous bytes-like
                frames, each sent as its memory; not a dict, a set or a generator. The
                rules are those of :func:`check_frames`, checked before anything is
                sent.

        Raises:
            FrameError: ``frames`` breaks a rule of :func:`check_frames` (the same
                message on every backend), or is multipart on a ``conflate`` socket. A
                frame over the receiver's ``maxmsgsize`` is not refused here: the
                receiver drops the connection instead (see
                :attr:`~transportkit.SocketOptions.maxmsgsize`).
            Timeout: ``sndtimeo`` elapsed while the socket was at its HWM.
            StateError: A REQ sent twice without receiving, or a REP sent before receiving.
            HostUnreachableError: A ``router_mandatory`` ROUTER had no such peer.
            ClosedError: The socket is closed.
        """

    @abc.abstractmethod
    def try_send(self, frames: Sequence[Frame]) -> None:
        """Send without waiting; raise :class:`~transportkit.WouldBlock` if it would wait.

        Raises the same errors as :meth:`send`, with WouldBlock in place of Timeout.
        """


class Receiver(Socket):
    """A socket that receives."""

    @abc.abstractmethod
    async def recv(self, timeout: float | None = None) -> Message:
        """Wait for the next message and return its frames.

        Args:
            timeout: Seconds to wait; ``math.inf`` waits for ever; None uses the
                ``rcvtimeo`` option (whose -1 means for ever).

        Raises:
            Timeout: Nothing arrived in time.
            StateError: A REQ received before sending, or a REP received twice.
            ClosedError: The socket is (or became, while waiting) closed.
        """

    @abc.abstractmethod
    def try_recv(self) -> Message | None:
        """Return the next message if one is waiting, else None, without waiting."""

    @abc.abstractmethod
    async def poll(self, timeout: float = math.inf) -> bool:
        """Wait until a message is waiting, without taking it.

        Args:
            timeout: Seconds to wait (0 checks without waiting; ``math.inf`` for ever).

        Returns:
            True when a message is waiting, False when ``timeout`` passed first. A True
            can be followed by a ``try_recv`` that returns None when the socket discards
            what arrived (a REQ drops replies from peers it did not ask).

        Raises:
            ClosedError: The socket is (or became, while waiting) closed.
        """

    def __aiter__(self) -> AsyncIterator[Message]:
        """Iterate over received messages until the socket is closed."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.recv(timeout=math.inf)
            except ClosedError:
                return


class Publisher(Sender):
    """PUB: sends every message to each subscriber whose prefix matches frame 0.

    Never blocks: at a subscriber's HWM the message is dropped for that subscriber.
    Messages published before a subscription reaches the publisher are not delivered
    to that subscriber (the slow joiner).
    """

    kind = SocketKind.PUB

    async def publish(self, topic: bytes, *frames: Frame) -> None:
        """Send ``[topic, *frames]`` (market data's ``[topic][timestamp][data]`` shape)."""
        await self.send([topic, *frames])


class Subscriber(Receiver):
    """SUB: receives the messages whose frame 0 starts with one of its prefixes.

    Frame 0 of every received message is its topic. ``b""`` subscribes to everything.

    On the zmq backend a SUB that reconnects (its connection dropped) sends its
    subscriptions again only when it is next used: what is published before then is
    not sent to it. A receive waiting on it (a loop over ``recv``) resubscribes as
    soon as the reconnect happens (see :class:`XPublisher`); the sim resubscribes at
    once.
    """

    kind = SocketKind.SUB

    @abc.abstractmethod
    def subscribe(self, prefix: bytes) -> None:
        """Add a topic prefix (subscriptions are counted: twice in needs twice out)."""

    @abc.abstractmethod
    def unsubscribe(self, prefix: bytes) -> None:
        """Remove one subscription to ``prefix``."""

    @property
    @abc.abstractmethod
    def subscriptions(self) -> tuple[bytes, ...]:
        """The prefixes subscribed to, in the order they were added."""


SUBSCRIBE: Final = b"\x01"
r"""The first byte of a subscription message (RFC 29: ``b"\x01" + topic``)."""
UNSUBSCRIBE: Final = b"\x00"
r"""The first byte of an unsubscription message (RFC 29: ``b"\x00" + topic``)."""


def parse_subscription(message: Sequence[Frame]) -> tuple[bool, bytes] | None:
    """Read a message an XPUB received: ``(True, topic)`` for a subscription,
    ``(False, topic)`` for an unsubscription, None for anything else (a data message
    an XSUB sent upstream).

    A (un)subscription is one frame whose first byte is 1 (subscribe) or 0
    (unsubscribe), the topic prefix after it (RFC 29/PUBSUB, libzmq's XPUB).
    """
    if len(message) != 1:
        return None
    frame = bytes(message[0])
    if not frame or frame[0] > 1:
        return None
    return frame[0] == 1, frame[1:]


def check_xsub_message(frames: Sequence[Frame], where: str) -> tuple[bool, bytes] | None:
    """What an XSUB's outgoing message is; raise FrameError if it is ambiguous.

    Returns ``(True, topic)`` for a subscription, ``(False, topic)`` for an
    unsubscription, None for a data message (which goes upstream as it is).

    Raises:
        FrameError: A multipart message has a frame that starts with byte 0 or 1.
            libzmq 4.3 reads *every* such frame of an XSUB's message as an
            (un)subscription (it applies it and passes the rest on), so such a
            message would not arrive as it was sent: send each (un)subscription as
            a message of its own, and data whose frames do not start with 0 or 1.
    """
    if len(frames) == 1:
        return parse_subscription(frames)
    for i, frame in enumerate(frames):
        view = memoryview(frame)
        with view:
            head = bytes(view[:1])
        if head in (SUBSCRIBE, UNSUBSCRIBE):
            raise FrameError(
                f"{where}: frame {i} of a {len(frames)}-frame message starts with byte "
                f"{head[0]}: an XSUB reads every frame that starts with 0 or 1 as an "
                "(un)subscription (libzmq 4.3); send a subscription as a one-frame message"
            )
    return None


class XPublisher(Sender, Receiver):
    r"""XPUB: a PUB that receives its subscribers' subscriptions (RFC 29/PUBSUB).

    Sends as a :class:`Publisher` does: to each subscriber whose prefix matches frame
    0, dropping at a subscriber's HWM (unless ``xpub_nodrop``). Receives one-frame
    messages ``b"\x01" + topic`` (a subscription) and ``b"\x00" + topic`` (an
    unsubscription) and, from an XSUB, whatever data it sends upstream
    (:func:`parse_subscription` tells them apart). Without ``xpub_verbose`` a topic's
    subscription is received once, when its first subscriber subscribes, and its
    unsubscription once, when its last subscriber unsubscribes or goes away (a
    subscriber that disconnects or crashes unsubscribes from all its topics, as
    libzmq does when the connection ends). Received messages count in
    ``stats.received``.

    What it receives is held without bound, as libzmq holds it: read it.

    On the zmq backend libzmq changes an XPUB's connections in the socket's own
    thread, when the socket is used: a new subscriber is attached (and sent the
    welcome message) at the XPUB's next send, receive or poll, and a subscriber that
    went away is unsubscribed after two such rounds. Keep a receive waiting on it (a
    loop over ``recv``), as a forwarder does, and both happen as they arrive; the sim
    does both at once. The subscriber's side of a reconnect follows the same rule:
    when a connecting SUB or XSUB loses its connection, libzmq reconnects it in the
    background, but it resends its subscriptions only when its own thread next uses
    it (a receive, send or poll; a receive waiting on it does so at once). Until
    then the XPUB has the new connection and no subscription on it, and sends that
    subscriber nothing: keep a receive waiting on every SUB whose feed matters
    across a reconnect (a SUB that has once waited in asyncio is then also served
    by its event loop, but do not rely on that). The sim resubscribes at once.
    """

    kind = SocketKind.XPUB

    async def publish(self, topic: bytes, *frames: Frame) -> None:
        """Send ``[topic, *frames]``, as :meth:`Publisher.publish`."""
        await self.send([topic, *frames])

    @abc.abstractmethod
    def subscribe(self, prefix: bytes) -> None:
        """``xpub_manual`` only: send the subscriber whose (un)subscription message was
        received last the messages that start with ``prefix`` (libzmq's ZMQ_SUBSCRIBE
        on an XPUB). Does nothing if that subscriber has gone, or if none was
        received yet.

        Raises:
            StateError: The socket is not ``xpub_manual``.
            FrameError: ``prefix`` is not bytes.
            ClosedError: The socket is closed.
        """

    @abc.abstractmethod
    def unsubscribe(self, prefix: bytes) -> None:
        """``xpub_manual`` only: stop what :meth:`subscribe` started, for the subscriber
        whose (un)subscription message was received last.

        Raises:
            StateError: The socket is not ``xpub_manual``.
            FrameError: ``prefix`` is not bytes.
            ClosedError: The socket is closed.
        """


class XSubscriber(Sender, Receiver):
    r"""XSUB: a SUB whose subscriptions are messages it sends (RFC 29/PUBSUB).

    Sending ``[b"\x01" + topic]`` subscribes (to every publisher it is connected
    to, and to those it connects to later), ``[b"\x00" + topic]`` unsubscribes
    (counted: it goes upstream when the last subscription to ``topic`` is removed),
    and any other message goes upstream to every connected XPUB as data (a PUB
    discards it). Sends never block: at a publisher's HWM the message is dropped for
    that publisher, as libzmq does. Every send counts in ``stats.sent``.

    It receives every message its publishers send it, with no filtering of its own
    (the publishers filter by its subscriptions), including an XPUB's welcome
    message.
    """

    kind = SocketKind.XSUB

    def subscribe(self, prefix: bytes) -> None:
        r"""Send the subscription message ``b"\x01" + prefix`` (never waits).

        Raises:
            FrameError: ``prefix`` is not bytes.
            ClosedError: The socket is closed.
        """
        self.try_send([SUBSCRIBE + _topic(prefix)])

    def unsubscribe(self, prefix: bytes) -> None:
        r"""Send the unsubscription message ``b"\x00" + prefix`` (never waits).

        Raises:
            FrameError: ``prefix`` is not bytes.
            ClosedError: The socket is closed.
        """
        self.try_send([UNSUBSCRIBE + _topic(prefix)])

    @property
    @abc.abstractmethod
    def subscriptions(self) -> tuple[bytes, ...]:
        """The prefixes subscribed to (by :meth:`subscribe` or by subscription
        messages sent), in the order they were added; an unsubscription removes one.
        """


def check_manual(sock: Socket, action: str, prefix: object, where: str) -> bytes:
    """Raise unless ``sock`` is an open ``xpub_manual`` XPUB and ``prefix`` bytes."""
    topic = _topic(prefix)
    if sock.closed:
        raise ClosedError(f"{where}: cannot {action}: it is closed")
    if not sock.options.xpub_manual:
        raise StateError(
            f"{where}: an XPUB can {action} only with xpub_manual (without it, its "
            "subscribers' own subscriptions apply)"
        )
    return topic


def _topic(prefix: object) -> bytes:
    if not isinstance(prefix, bytes):
        raise FrameError(
            f"a topic prefix must be bytes, got {type(prefix).__name__} {prefix!r:.40}"
            " (encode text explicitly, e.g. b'AAPL' or 'AAPL'.encode())"
        )
    return prefix


class Requester(Sender, Receiver):
    """REQ: strict request/reply lockstep (send, recv, send, ...), round-robin to peers.

    The reply is taken only from the peer the request went to. Breaking the lockstep
    raises :class:`~transportkit.StateError` (unless ``req_relaxed``).
    """

    kind = SocketKind.REQ

    async def request(self, frames: Sequence[Frame], timeout: float | None = None) -> Message:
        """Send ``frames`` and wait for the reply (``timeout`` applies to the reply)."""
        await self.send(frames)
        return await self.recv(timeout)


class Worker(Sender, Receiver):
    """REP: the replying side; recv a request, then send its reply, then recv again.

    The reply goes to the peer the request came from; if that peer has gone, the reply
    is discarded (and counted as dropped).
    """

    kind = SocketKind.REP


class Pusher(Sender):
    """PUSH: round-robin to connected pullers; blocks (up to ``sndtimeo``) at the HWM."""

    kind = SocketKind.PUSH


class Puller(Receiver):
    """PULL: fair-queues messages from all pushers."""

    kind = SocketKind.PULL


class Pair(Sender, Receiver):
    """PAIR: exclusive two-way link with exactly one peer; blocks at the HWM."""

    kind = SocketKind.PAIR


class Dealer(Sender, Receiver):
    """DEALER: asynchronous round-robin out, fair-queue in; blocks at the HWM."""

    kind = SocketKind.DEALER


class Router(Sender, Receiver):
    """ROUTER: frame 0 of every message is the peer's routing id.

    Received messages start with the sender's routing id; sent messages are routed by
    their frame 0 (which is stripped). Unknown ids and peers at the HWM are dropped
    (and counted), or raise with ``router_mandatory``.
    """

    kind = SocketKind.ROUTER


class _Attachable(Protocol):
    def bind(self, endpoint: str) -> str: ...
    def connect(self, endpoint: str) -> None: ...
    def close(self) -> None: ...


_A = TypeVar("_A", bound=_Attachable)


def attach(sock: _A, bind: str | Iterable[str], connect: str | Iterable[str]) -> _A:
    """Bind ``sock`` to every ``bind`` endpoint, then connect it to every ``connect`` one;
    if any of that fails, close the socket before the error propagates (nothing leaks).
    """
    try:
        for endpoint in as_endpoints(bind):
            sock.bind(endpoint)
        for endpoint in as_endpoints(connect):
            sock.connect(endpoint)
    except BaseException:
        sock.close()
        raise
    return sock


def as_endpoints(value: str | Iterable[str]) -> tuple[str, ...]:
    """Normalise a ``bind=``/``connect=`` argument to a tuple of endpoint strings."""
    if isinstance(value, str):
        return (value,)
    return tuple(value)
