"""Conflation and last-value caching: keep the newest value per topic, drop the rest.

Three tools, from the seed's ``ConflatingSubscriber`` and the Guide's chapter 5:

- :class:`ConflatingSubscriber` conflates in the application: it reads an ordinary
  multipart SUB stream (the seed's ``[topic][timestamp][data]``) and keeps the latest
  message per key. It works for any message shape and loses nothing it was given.
- :func:`conflated_subscriber` makes a libzmq ``ZMQ_CONFLATE`` SUB the one way it works:
  a single subscription set before connecting, single-frame messages only. The socket
  itself keeps only the newest message, so a slow reader costs no memory at all.
- :class:`LastValueCache` and :class:`LastValueSubscriber` give a late joiner the current
  value of every topic at once, then the live stream, without a gap or a duplicate.

Why the last-value cache is built this way:
    The Guide's ``lvcache`` is an XSUB/XPUB proxy that re-publishes a topic's cached
    value when XPUB reports a new subscription to it. transportkit's interfaces have no
    XPUB (subscriptions are invisible to a publisher), so the cache answers snapshot
    requests instead, the way the Guide's Clone pattern does: a ROUTER serves
    ``[b"LVC?", prefix, token]`` with one ``[b"LVC", topic, *frames]`` per cached topic
    matching ``prefix`` and a final ``[b"LVC.", prefix, token]``. At the same instant it
    publishes ``[LVC_SYNC_TOPIC, token]`` on its downstream PUB. Because one task serves
    both sockets and a PUB pipe is FIFO, that marker is the exact cut in the update
    stream: live updates before it are already in the snapshot, updates after it are
    newer. The subscriber discards what precedes its marker, so it needs no sequence
    numbers and the data messages pass through unchanged (plain SUBs can use the cache's
    PUB too). If the marker does not arrive, the subscription had not yet reached the
    cache (the slow joiner) and the subscriber asks again.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Final

from transportkit._closing import Closeable
from transportkit._errors import (
    ClosedError,
    FrameError,
    ProtocolError,
    StateError,
    Timeout,
)
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._poll import poll
from transportkit._socket import Dealer, Message, Publisher, Router, Subscriber

__all__ = [
    "LVC_SYNC_TOPIC",
    "SNAPSHOT_END",
    "SNAPSHOT_REQUEST",
    "SNAPSHOT_VALUE",
    "ConflatedSubscriber",
    "ConflatingSubscriber",
    "LastValueCache",
    "LastValueSubscriber",
    "conflated_subscriber",
    "topic_key",
]

SNAPSHOT_REQUEST: Final = b"LVC?"
"""Frame 0 of a snapshot request ``[b"LVC?", prefix, token]``."""

SNAPSHOT_VALUE: Final = b"LVC"
"""Frame 0 of one cached value in a snapshot reply ``[b"LVC", topic, *frames]``."""

SNAPSHOT_END: Final = b"LVC."
"""Frame 0 of the end of a snapshot reply ``[b"LVC.", prefix, token]``."""

LVC_SYNC_TOPIC: Final = b"\x00transportkit.lvc.sync"
"""Topic of the cut-point marker ``[LVC_SYNC_TOPIC, token]`` on the cache's PUB."""


def topic_key(message: Message) -> bytes:
    """The default conflation key: the topic (frame 0), e.g. ``b"MARKET.AAPL"``."""
    return message[0]


class ConflatingSubscriber:
    """Keeps the latest message per key from an ordinary SUB stream (the seed's).

    The subscriber socket is not conflating: every message reaches the process and the
    newest one per key wins. So the final value of every key is never lost, whatever the
    message shape, at the price of reading the intermediate ones.

    Attributes:
        subscriber: The SUB socket read from (not closed here).
        received: Messages read from the socket and accepted.
        superseded: Accepted messages replaced by a newer one for the same key before a
            :meth:`receive_latest` returned them (the updates conflation saved).
        malformed: Messages skipped because ``key`` raised ProtocolError for them.
    """

    def __init__(
        self,
        subscriber: Subscriber,
        *,
        key: Callable[[Message], bytes] = topic_key,
    ) -> None:
        """Conflate ``subscriber``'s messages by ``key`` (default: the topic frame).

        Args:
            subscriber: A SUB socket, already subscribed and connected.
            key: Maps a message to its conflation key; raising
                :class:`~transportkit.ProtocolError` marks the message malformed.
        """
        self.subscriber: Final = subscriber
        self._key = key
        self._latest: dict[bytes, Message] = {}
        self.received = 0
        self.superseded = 0
        self.malformed = 0

    @property
    def latest(self) -> Mapping[bytes, Message]:
        """The newest message seen per key (a read-only live view)."""
        return MappingProxyType(self._latest)

    def receive_latest(self) -> dict[bytes, Message]:
        """Drain every waiting message without waiting; return the newest per key.

        Returns:
            The keys updated since the last call, each with its newest message, in the
            order the keys first appeared in this drain; empty if nothing was waiting.

        Raises:
            ClosedError: The socket is closed.
        """
        updates: dict[bytes, Message] = {}
        while (message := self.subscriber.try_recv()) is not None:
            try:
                key = self._key(message)
            except ProtocolError:
                self.malformed += 1
                continue
            self.received += 1
            if key in updates:
                self.superseded += 1
            updates[key] = message
        self._latest.update(updates)
        return updates

    async def wait_latest(self, timeout: float = math.inf) -> dict[bytes, Message]:
        """Wait up to ``timeout`` seconds for a message, then :meth:`receive_latest`.

        Returns:
            As :meth:`receive_latest`; empty if nothing arrived in time.
        """
        await self.subscriber.poll(timeout)
        return self.receive_latest()


class ConflatedSubscriber(Closeable):
    """A ``ZMQ_CONFLATE`` SUB made by :func:`conflated_subscriber`: only the newest
    message waits in it, whatever the publisher's rate.

    It accepts single-frame messages on one subscription. libzmq breaks both rules
    silently: it also conflates a conflating SUB's subscription commands, so all but the
    last of several subscriptions can be lost, and it keeps only the last frame of a
    multipart message (which then usually fails the topic filter). Here a second
    subscription is refused, and a multipart message that arrives is refused with
    :class:`~transportkit.FrameError` (detectable where the backend delivers it whole,
    as the simulator does; libzmq has already cut it to its last frame).

    Attributes:
        socket: The conflating SUB socket (closed by :meth:`close`).
        topic: The one subscription prefix.
        received: Messages returned.
        last: The newest message returned, or None.
    """

    def __init__(self, socket: Subscriber, topic: bytes) -> None:
        """Wrap ``socket``; use :func:`conflated_subscriber` to make one."""
        self.socket: Final = socket
        self.topic: Final = topic
        self.received = 0
        self.last: bytes | None = None

    def subscribe(self, prefix: bytes) -> None:
        """Refuse: a conflating SUB takes exactly one subscription, set before connect.

        Raises:
            StateError: Always; libzmq conflates subscription commands on a conflating
                SUB, so a second one can silently replace the first.
        """
        raise StateError(
            f"a conflating SUB takes exactly one subscription (it has {self.topic!r}); "
            f"refusing {prefix!r}: libzmq conflates a conflating SUB's subscription "
            "commands too, so all but the newest can be lost. Use one conflated "
            "subscriber per topic, or a ConflatingSubscriber for several topics"
        )

    async def recv(self, timeout: float | None = None) -> bytes:
        """Wait for the newest message and return its one frame.

        Args:
            timeout: As :meth:`~transportkit.Subscriber.recv`.

        Raises:
            FrameError: A multipart message arrived (the publisher must send single
                frames that start with the topic).
            Timeout: Nothing arrived in time.
            ClosedError: The socket is closed.
        """
        return self._accept(await self.socket.recv(timeout))

    def try_recv(self) -> bytes | None:
        """Return the newest message's frame if one is waiting, else None.

        Raises:
            FrameError: A multipart message arrived.
        """
        message = self.socket.try_recv()
        return None if message is None else self._accept(message)

    def _accept(self, message: Message) -> bytes:
        if len(message) != 1:
            raise FrameError(
                f"a conflating SUB received a {len(message)}-frame message: conflate "
                "handles single-frame messages only (libzmq would keep just the last "
                "frame); publish one frame that starts with the topic, e.g. "
                "topic + payload, or use ConflatingSubscriber for multipart streams"
            )
        self.received += 1
        self.last = message[0]
        return message[0]

    def close(self) -> None:
        """Close the socket. Idempotent."""
        self.socket.close()


def conflated_subscriber(
    network: Network,
    *,
    connect: str | Iterable[str],
    topic: bytes = b"",
    options: SocketOptions | None = None,
) -> ConflatedSubscriber:
    """Make a conflating SUB the way libzmq needs it.

    The socket gets ``conflate=True``, its single subscription ``topic`` before it
    connects (so the one subscription command cannot be conflated away), and a wrapper
    that refuses further subscriptions and multipart messages.

    Args:
        network: Makes the socket.
        connect: The publisher endpoint(s).
        topic: The one subscription prefix (default: everything).
        options: Other socket options; ``conflate`` is forced on.

    Raises:
        FrameError: ``topic`` is not bytes.
        EndpointError: An endpoint is malformed.
    """
    if not isinstance(topic, bytes):
        raise FrameError(f"topic must be bytes, got {type(topic).__name__} {topic!r:.40}")
    opts = (options or SocketOptions()).replace(conflate=True)
    socket = network.subscriber(connect=connect, topics=[topic], options=opts)
    return ConflatedSubscriber(socket, topic)


class LastValueCache(Closeable):
    """A last-value cache between a publisher and its subscribers (the Guide's lvcache).

    It subscribes upstream, keeps the newest message per topic, forwards every message
    unchanged on its downstream PUB, and answers snapshot requests on a ROUTER (the
    protocol and the reasons are in the module docstring). Malformed requests are
    counted and ignored; they never stop the cache.

    Attributes:
        upstream: SUB connected to the publisher(s).
        downstream: PUB the subscribers connect to.
        snapshots: ROUTER answering ``[b"LVC?", prefix, token]``.
        forwarded: Updates received upstream and forwarded.
        snapshots_served: Snapshot requests answered.
        malformed: Requests ignored because they did not follow the protocol.
    """

    def __init__(
        self,
        network: Network,
        *,
        upstream: str | Iterable[str],
        downstream: str | Iterable[str],
        snapshots: str | Iterable[str],
        topics: Iterable[bytes] = (b"",),
        options: SocketOptions | None = None,
    ) -> None:
        """Bind ``downstream`` and ``snapshots``, connect ``upstream``.

        Args:
            network: Makes the sockets.
            upstream: Publisher endpoint(s) to subscribe to.
            downstream: Endpoint(s) to bind the forwarding PUB on.
            snapshots: Endpoint(s) to bind the snapshot ROUTER on.
            topics: Upstream subscription prefixes (default: everything).
            options: Options for all three sockets; the ROUTER's ``sndhwm`` is made
                unlimited so that a large snapshot is never cut.
        """
        opts = options or SocketOptions()
        self._cache: dict[bytes, Message] = {}
        self.forwarded = 0
        self.snapshots_served = 0
        self.malformed = 0
        self.downstream: Final[Publisher] = network.publisher(bind=downstream, options=opts)
        try:
            self.snapshots: Final[Router] = network.router(
                bind=snapshots, options=opts.replace(sndhwm=0)
            )
            try:
                self.upstream: Final[Subscriber] = network.subscriber(
                    connect=upstream, topics=topics, options=opts
                )
            except BaseException:
                self.snapshots.close()
                raise
        except BaseException:
            self.downstream.close()
            raise

    @property
    def values(self) -> Mapping[bytes, Message]:
        """The cached newest message per topic (a read-only live view)."""
        return MappingProxyType(self._cache)

    async def run(self) -> None:
        """Serve until a socket is closed (then return) or the task is cancelled."""
        try:
            while True:
                for sock in await poll([self.upstream, self.snapshots]):
                    if sock is self.upstream:
                        await self._forward()
                    else:
                        await self._serve_snapshot()
        except ClosedError:
            return

    async def _forward(self) -> None:
        while (message := self.upstream.try_recv()) is not None:
            self._cache[message[0]] = message
            self.forwarded += 1
            await self.downstream.send(message)

    async def _serve_snapshot(self) -> None:
        request = self.snapshots.try_recv()
        if request is None:
            return
        if len(request) != 4 or request[1] != SNAPSHOT_REQUEST:
            self.malformed += 1
            return
        identity, _, prefix, token = request
        for topic in sorted(t for t in self._cache if t.startswith(prefix)):
            await self.snapshots.send([identity, SNAPSHOT_VALUE, *self._cache[topic]])
        await self.snapshots.send([identity, SNAPSHOT_END, prefix, token])
        await self.downstream.send([LVC_SYNC_TOPIC, token])
        self.snapshots_served += 1

    def close(self) -> None:
        """Close the three sockets. Idempotent."""
        self.upstream.close()
        self.snapshots.close()
        self.downstream.close()


_tokens = itertools.count(1)


class LastValueSubscriber(Closeable):
    """A late joiner's view of a :class:`LastValueCache`: every topic's current value
    at once (:meth:`sync`), then the live updates (:meth:`recv`), with no gap and no
    duplicate between the two.

    Attributes:
        updates: SUB on the cache's downstream PUB.
        snapshots: DEALER to the cache's ROUTER.
        prefix: The topics followed.
        resyncs: Snapshot requests repeated because the marker did not arrive (the
            subscription had not reached the cache yet, or the cache was away).
        received: Live updates returned by :meth:`recv`.
    """

    def __init__(
        self,
        network: Network,
        *,
        updates: str | Iterable[str],
        snapshots: str | Iterable[str],
        prefix: bytes = b"",
        options: SocketOptions | None = None,
    ) -> None:
        """Connect to a cache's downstream PUB (``updates``) and ROUTER (``snapshots``)."""
        opts = options or SocketOptions()
        self.prefix: Final = prefix
        self._network = network
        self._values: dict[bytes, Message] = {}
        self._synced = False
        self.resyncs = 0
        self.received = 0
        self.updates: Final[Subscriber] = network.subscriber(
            connect=updates, topics=[prefix, LVC_SYNC_TOPIC], options=opts
        )
        try:
            self.snapshots: Final[Dealer] = network.dealer(connect=snapshots, options=opts)
        except BaseException:
            self.updates.close()
            raise

    @property
    def values(self) -> Mapping[bytes, Message]:
        """The newest message known per topic (snapshot, then live updates)."""
        return MappingProxyType(self._values)

    async def sync(self, timeout: float = 10.0, *, retry: float = 0.5) -> dict[bytes, Message]:
        """Fetch the current value of every topic under :attr:`prefix`.

        After it returns, :meth:`recv` yields exactly the updates newer than the
        snapshot. Call it again to resynchronise (after a cache restart, say).

        Args:
            timeout: Seconds to give up after.
            retry: Seconds to wait for a reply and for the cut marker before asking
                again (the Guide's slow joiner: the first request can beat the
                subscription to the cache).

        Returns:
            The snapshot: topic to message ``[topic, *frames]``, topics sorted.

        Raises:
            Timeout: No complete snapshot and marker within ``timeout``.
            ClosedError: The subscriber is closed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        first = True
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Timeout(
                    f"no snapshot from the last-value cache within {timeout} s "
                    f"({self.resyncs} retries)"
                )
            if not first:
                self.resyncs += 1
            first = False
            token = b"%s/%d/%d" % (
                self._network.name.encode(),
                next(_tokens),
                self._network.time_ns(),
            )
            await self.snapshots.send([SNAPSHOT_REQUEST, self.prefix, token])
            wait = min(retry, remaining)
            snapshot = await self._read_snapshot(token, wait)
            if snapshot is None or not await self._await_marker(token, wait):
                continue
            self._values = snapshot
            self._synced = True
            return dict(snapshot)

    async def _read_snapshot(self, token: bytes, wait: float) -> dict[bytes, Message] | None:
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        snapshot: dict[bytes, Message] = {}
        while True:
            try:
                reply = await self.snapshots.recv(timeout=max(0.0, until - loop.time()))
            except Timeout:
                return None
            if reply[0] == SNAPSHOT_VALUE and len(reply) >= 2:
                snapshot[reply[1]] = reply[1:]
            elif reply[0] == SNAPSHOT_END and len(reply) == 3:
                if reply[2] == token:
                    return snapshot
                snapshot = {}  # the end of an older, abandoned request

    async def _await_marker(self, token: bytes, wait: float) -> bool:
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while True:
            try:
                message = await self.updates.recv(timeout=max(0.0, until - loop.time()))
            except Timeout:
                return False
            if message[0] == LVC_SYNC_TOPIC and message[1:] == [token]:
                return True

    async def recv(self, timeout: float | None = None) -> Message:
        """Wait for the next live update newer than the snapshot; return it.

        Raises:
            StateError: :meth:`sync` has not completed yet.
            Timeout: Nothing arrived in time (``timeout`` as for a socket's recv).
            ClosedError: The subscriber is closed.
        """
        if not self._synced:
            raise StateError("call sync() before recv(): the snapshot comes first")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None or math.isinf(timeout) else loop.time() + timeout
        while True:
            remaining = timeout if deadline is None else max(0.0, deadline - loop.time())
            message = await self.updates.recv(remaining)
            if message[0] == LVC_SYNC_TOPIC:
                continue  # another subscriber's marker (a b"" prefix matches it)
            self._values[message[0]] = message
            self.received += 1
            return message

    def close(self) -> None:
        """Close both sockets. Idempotent."""
        self.updates.close()
        self.snapshots.close()
