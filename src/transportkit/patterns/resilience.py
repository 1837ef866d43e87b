"""Subscriber resilience: heartbeats, silence-driven reconnects and the Suicidal Snail.

Market-data resilience (a subscriber that reconnects, heartbeats on the data's PUB) and
the Guide's chapter 5:

- :class:`HeartbeatPublisher` sends ``[topic, timestamp]`` (default topic
  ``b"HEARTBEAT"``) every ``interval`` on the PUB that carries the data, so that a quiet
  market and a dead publisher can be told apart.
- :class:`HeartbeatMonitor` says whether a publisher is alive: it was heard (data or
  heartbeat) within ``timeout``.
- :class:`ResilientSubscriber` hides heartbeats from the application and closes and
  reopens its SUB when the publisher has been silent for longer than ``silence``.
- :class:`StampedPublisher` and :class:`SuicidalSubscriber` are the Suicidal Snail: the
  publisher stamps each message with its clock, and a subscriber that falls further
  behind than ``max_delay`` stops loudly with :class:`~transportkit.StaleDataError`
  instead of trading on stale prices.

Timestamps are frame 1 of ``[topic, timestamp, *data]``, an unsigned 64-bit
little-endian count of nanoseconds from :meth:`~transportkit.Network.time_ns`, as in the
market-data example (virtual time in a simulation). A heartbeat is exactly
``[topic, timestamp]``; anything else on the heartbeat topic is counted as malformed and
is never handed to the application as data.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Final

from transportkit._closing import Closeable
from transportkit._errors import (
    BrokenPeerError,
    ClosedError,
    ProtocolError,
    StaleDataError,
    Timeout,
)
from transportkit._log import limited
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._socket import Frame, Message, Publisher, Subscriber, as_endpoints

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_HEARTBEAT_TOPIC",
    "HeartbeatMonitor",
    "HeartbeatPublisher",
    "ResilientSubscriber",
    "StampedPublisher",
    "SuicidalSubscriber",
    "decode_timestamp",
    "encode_timestamp",
]

DEFAULT_HEARTBEAT_TOPIC: Final = b"HEARTBEAT"
"""The default heartbeat topic (frame 0 of every heartbeat)."""

_TIMESTAMP: Final = struct.Struct("<Q")


def encode_timestamp(timestamp_ns: int) -> bytes:
    """The 8-byte little-endian frame of ``timestamp_ns``.

    Raises:
        ValueError: ``timestamp_ns`` does not fit in 64 unsigned bits.
    """
    if not 0 <= timestamp_ns < 2**64:
        raise ValueError(f"timestamp_ns must fit in 64 unsigned bits, got {timestamp_ns}")
    return _TIMESTAMP.pack(timestamp_ns)


def decode_timestamp(message: Message) -> int:
    """The timestamp (frame 1) of ``[topic, timestamp, *data]``, in nanoseconds.

    Raises:
        ProtocolError: The message has no frame 1, or it is not 8 bytes.
    """
    if len(message) < 2 or len(message[1]) != _TIMESTAMP.size:
        got = f"{len(message[1])} bytes" if len(message) >= 2 else "no frame 1"
        topic = message[0] if message else b""
        raise ProtocolError(
            f"expected [topic, 8-byte timestamp, ...] on topic {topic!r:.40}, got {got}"
        )
    (value,) = _TIMESTAMP.unpack(message[1])
    return int(value)


class HeartbeatPublisher:
    """Publishes ``[topic, timestamp]`` every ``interval`` seconds on a PUB.

    Share the PUB with the data (the subscriber's liveness then covers the very
    connection the data uses), or give it its own.

    Attributes:
        publisher: The PUB socket (not closed here).
        interval: Seconds between heartbeats.
        topic: Frame 0 of every heartbeat.
        sent: Heartbeats sent.
    """

    def __init__(
        self,
        publisher: Publisher,
        clock: Callable[[], int],
        *,
        interval: float = 1.0,
        topic: bytes = DEFAULT_HEARTBEAT_TOPIC,
    ) -> None:
        """Beat on ``publisher``, stamping with ``clock`` (pass ``network.time_ns``).

        Raises:
            ValueError: ``interval`` is not a positive finite number.
        """
        if not (isinstance(interval, (int, float)) and 0 < interval < math.inf):
            raise ValueError(f"interval must be positive seconds, got {interval!r}")
        self.publisher: Final = publisher
        self.interval: Final = float(interval)
        self.topic: Final = topic
        self._clock = clock
        self.sent = 0

    async def beat(self) -> None:
        """Send one heartbeat now (a PUB never waits).

        Raises:
            ClosedError: The socket is closed.
        """
        await self.publisher.send([self.topic, encode_timestamp(self._clock())])
        self.sent += 1

    async def run(self) -> None:
        """Beat at once and then every ``interval`` until cancelled or the socket closes."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        try:
            while True:
                await self.beat()
                next_beat += self.interval
                await asyncio.sleep(max(0.0, next_beat - loop.time()))
        except ClosedError:
            return


class HeartbeatMonitor:
    """Whether a publisher is alive: it was heard within ``timeout`` seconds.

    Anything from the publisher counts as liveness, data or heartbeat, as ZMTP
    heartbeats do. Times are the running event loop's (virtual in a simulation).

    Attributes:
        timeout: Seconds of silence after which the publisher counts as dead.
        topic: The heartbeat topic (see :meth:`is_heartbeat`).
        last_heard: Loop time it was last heard (construction counts as heard).
        heartbeats: Heartbeats observed (exactly ``[topic, 8-byte timestamp]``).
        malformed: Other messages observed on the heartbeat topic (still liveness, as
            any traffic is, but neither heartbeats nor data).
    """

    def __init__(self, *, timeout: float = 3.0, topic: bytes = DEFAULT_HEARTBEAT_TOPIC) -> None:
        """Monitor with ``timeout`` (default: 3 missed beats of 1 s, the Guide's liveness).

        Must be made inside a running event loop.
        """
        if not (isinstance(timeout, (int, float)) and 0 < timeout < math.inf):
            raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
        self.timeout: Final = float(timeout)
        self.topic: Final = topic
        self._loop = asyncio.get_running_loop()
        self.last_heard = self._loop.time()
        self.heartbeats = 0
        self.malformed = 0

    def is_heartbeat(self, message: Message) -> bool:
        """Whether ``message`` is on the heartbeat topic (frame 0 equals it exactly).

        Such a message is never data; :meth:`observe` also checks its shape.
        """
        return bool(message) and message[0] == self.topic

    def observe(self, message: Message) -> bool:
        """Record that ``message`` was heard; return whether it was on the heartbeat topic.

        A message on the heartbeat topic counts in :attr:`heartbeats` when it is exactly
        ``[topic, 8-byte timestamp]`` and in :attr:`malformed` otherwise; either way it
        is not data (True is returned).
        """
        self.heard()
        if not self.is_heartbeat(message):
            return False
        if len(message) == 2 and len(message[1]) == _TIMESTAMP.size:
            self.heartbeats += 1
        else:
            self.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed heartbeat on topic %r: %s",
                self.topic,
                "not [topic, 8-byte timestamp]",
                extra={"reason": "not [topic, 8-byte timestamp]", "counter": "malformed"},
            )

        return True

    def heard(self) -> None:
        """Record liveness now."""
        self.last_heard = self._loop.time()

    @property
    def silence(self) -> float:
        """Seconds since the publisher was last heard."""
        return self._loop.time() - self.last_heard

    @property
    def alive(self) -> bool:
        """Whether the publisher was heard within ``timeout`` seconds."""
        return self.silence <= self.timeout

    @property
    def deadline(self) -> float:
        """Loop time at which the publisher will count as dead unless heard."""
        return self.last_heard + self.timeout


MessageHandler = Callable[[Message], Awaitable[None] | None]


class ResilientSubscriber(Closeable):
    """A SUB that reconnects when its publisher falls silent.

    Receives with a ``recv_timeout`` (default 5 s); when nothing at all,
    heartbeats included, has been heard for ``silence`` seconds (default
    10 s), it closes its SUB and opens a fresh one, connected and subscribed as
    before, and counts it in :attr:`reconnects`. The reconnect happens exactly when
    the silence reaches the threshold, then again every ``silence`` seconds while the
    publisher stays quiet. Heartbeats are liveness only: the application never sees
    them, nor anything else on the heartbeat topic (counted in :attr:`malformed`), nor,
    when ``topics`` does not cover the heartbeat topic, a message that only the added
    heartbeat subscription let through (a topic that merely starts with it). A receive
    that reports a broken peer also reconnects.

    Attributes:
        monitor: The liveness record (its ``timeout`` is ``silence``).
        reconnects: Times the SUB was closed and reopened.
        received: Data messages returned to the application.
        socket: The current SUB (replaced on every reconnect).
    """

    def __init__(
        self,
        network: Network,
        *,
        connect: str | Iterable[str],
        topics: Iterable[bytes] = (b"",),
        silence: float = 10.0,
        recv_timeout: float = 5.0,
        heartbeat_topic: bytes = DEFAULT_HEARTBEAT_TOPIC,
        options: SocketOptions | None = None,
        on_reconnect: Callable[[float], None] | None = None,
    ) -> None:
        """Connect a SUB to ``connect`` subscribed to ``topics`` and the heartbeats.

        Must be made inside a running event loop.

        Args:
            network: Makes the sockets.
            connect: The publisher endpoint(s).
            topics: Data subscription prefixes (default: everything).
            silence: Seconds without hearing anything before reconnecting.
            recv_timeout: Seconds of one receive (the health-check period).
            heartbeat_topic: Topic of the publisher's heartbeats.
            options: SUB socket options.
            on_reconnect: Called with the silence (seconds) each time it reconnects.
        """
        if not (isinstance(recv_timeout, (int, float)) and recv_timeout > 0):
            raise ValueError(f"recv_timeout must be positive seconds, got {recv_timeout!r}")
        self._network = network
        self._endpoints = as_endpoints(connect)
        self._topics = list(topics)
        # Data topics to check each message against, when the heartbeat subscription
        # (a prefix) was added and could let in topics the caller did not ask for.
        self._data_topics: tuple[bytes, ...] | None = None
        if not any(heartbeat_topic.startswith(t) for t in self._topics):
            self._data_topics = tuple(self._topics)
            self._topics.append(heartbeat_topic)
        self._options = options
        self._recv_timeout = float(recv_timeout)
        self._on_reconnect = on_reconnect
        self._closed = False
        self.monitor: Final = HeartbeatMonitor(timeout=silence, topic=heartbeat_topic)
        self.reconnects = 0
        self.received = 0
        self._unsubscribed = 0
        self.socket: Subscriber = self._open()

    @property
    def malformed(self) -> int:
        """Messages dropped as following no protocol.

        Malformed heartbeats, and messages on a topic the caller did not subscribe to
        (see the class docstring).
        """
        return self.monitor.malformed + self._unsubscribed

    def _open(self) -> Subscriber:
        return self._network.subscriber(
            connect=self._endpoints, topics=self._topics, options=self._options
        )

    def _reconnect(self) -> None:
        silence = self.monitor.silence
        self.socket.close()
        self.socket = self._open()
        self.reconnects += 1
        logger.warning(
            "publisher at %s silent for %.3f s: resubscribed on a new socket",
            self._endpoints,
            silence,
            extra={"endpoint": str(self._endpoints), "counter": "reconnects"},
        )
        self.monitor.heard()  # the fresh socket gets a full period to hear something
        if self._on_reconnect is not None:
            self._on_reconnect(silence)

    async def recv(self) -> Message:
        """Wait for the next data message, reconnecting through silences.

        Raises:
            ClosedError: :meth:`close` was called.
        """
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise ClosedError("resilient subscriber is closed")
            wait = min(self._recv_timeout, self.monitor.deadline - loop.time())
            try:
                message = await self.socket.recv(timeout=max(0.0, wait))
            except Timeout:
                if loop.time() >= self.monitor.deadline:
                    self._reconnect()
                continue
            except BrokenPeerError:
                self._reconnect()
                continue
            except ClosedError:
                if self._closed:
                    raise
                self._reconnect()  # closed under us (a crashed simulated node)
                continue
            if self.monitor.observe(message):
                continue
            if self._data_topics is not None and not message[0].startswith(self._data_topics):
                self._unsubscribed += 1
                limited(
                    logger,
                    logging.WARNING,
                    "malformed",
                    "message on topic %r, which was not subscribed: dropped",
                    bytes(message[0][:32]),
                    extra={"reason": "topic not subscribed", "counter": "malformed"},
                )
                continue
            self.received += 1
            return message

    def __aiter__(self) -> AsyncIterator[Message]:
        """Iterate over data messages until :meth:`close`."""
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.recv()
            except ClosedError:
                return

    async def run(self, handler: MessageHandler) -> None:
        """Call ``handler`` (plain or async) with each data message until :meth:`close`."""
        async for message in self:
            result = handler(message)
            if result is not None:
                await result

    def close(self) -> None:
        """Close the SUB; a waiting :meth:`recv` raises ClosedError. Idempotent."""
        self._closed = True
        self.socket.close()


class StampedPublisher:
    """Publishes ``[topic, timestamp, *frames]``, stamped with ``clock()`` at sending.

    Attributes:
        publisher: The PUB socket (not closed here).
        published: Messages sent.
    """

    def __init__(self, publisher: Publisher, clock: Callable[[], int]) -> None:
        """Publish on ``publisher``; pass the network's ``time_ns`` as ``clock``."""
        self.publisher: Final = publisher
        self._clock = clock
        self.published = 0

    async def publish(self, topic: bytes, *frames: Frame) -> int:
        """Send ``[topic, now, *frames]``; return the timestamp used.

        Raises:
            ClosedError: The socket is closed.
        """
        now = self._clock()
        await self.publisher.send([topic, encode_timestamp(now), *frames])
        self.published += 1
        return now


class SuicidalSubscriber(Closeable):
    """The Guide's Suicidal Snail: a subscriber that kills itself when it lags.

    Every received message's publish time (frame 1) is compared with ``clock()``; if the
    message is more than ``max_delay`` seconds old the subscriber closes its socket and
    raises :class:`~transportkit.StaleDataError`, and keeps raising it. Stopping loudly is
    the point: a trading process that quietly works on old prices is worse than one
    that is down. Both clocks must be comparable (the same host's, or synchronised ones;
    in a simulation both are virtual time). Messages without a valid timestamp are
    skipped and counted in :attr:`malformed`.

    Attributes:
        subscriber: The SUB socket (closed when it dies, or by :meth:`close`).
        max_delay: Seconds a message may be old (the Guide: 1 s).
        received: Messages returned.
        max_lag: Largest lag seen, in seconds.
        dead: Whether it has died of staleness.
    """

    def __init__(
        self, subscriber: Subscriber, clock: Callable[[], int], *, max_delay: float = 1.0
    ) -> None:
        """Guard ``subscriber`` with ``clock`` (pass the network's ``time_ns``)."""
        if not (isinstance(max_delay, (int, float)) and 0 <= max_delay < math.inf):
            raise ValueError(f"max_delay must be non-negative seconds, got {max_delay!r}")
        self.subscriber: Final = subscriber
        self.max_delay: Final = float(max_delay)
        self._clock = clock
        self._max_delay_ns = round(max_delay * 1e9)
        self._death: StaleDataError | None = None
        self.received = 0
        self.malformed = 0
        self.max_lag = 0.0

    @property
    def dead(self) -> bool:
        """Whether it has died of staleness."""
        return self._death is not None

    async def recv(self, timeout: float | None = None) -> Message:
        """Wait for the next fresh message and return it.

        Raises:
            StaleDataError: The message was older than ``max_delay`` (the socket is now
                closed), or it died earlier.
            Timeout: Nothing arrived in time.
            ClosedError: The socket was closed.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None or math.isinf(timeout) else loop.time() + timeout
        while True:
            if self._death is not None:
                raise self._death
            remaining = timeout if deadline is None else max(0.0, deadline - loop.time())
            message = await self.subscriber.recv(remaining)
            if self._check(message):
                return message

    def try_recv(self) -> Message | None:
        """Return the next fresh message if one is waiting, else None.

        Raises:
            StaleDataError: As :meth:`recv`.
        """
        while True:
            if self._death is not None:
                raise self._death
            message = self.subscriber.try_recv()
            if message is None:
                return None
            if self._check(message):
                return message

    def _check(self, message: Message) -> bool:
        try:
            stamp = decode_timestamp(message)
        except ProtocolError as exc:
            self.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed timestamped message: %s",
                exc,
                extra={"reason": str(exc), "counter": "malformed"},
            )
            return False
        lag_ns = self._clock() - stamp
        lag = lag_ns / 1e9
        self.max_lag = max(self.max_lag, lag)
        if lag_ns > self._max_delay_ns:
            self._death = StaleDataError(
                f"subscriber is {lag:.6f} s behind its publisher on topic "
                f"{message[0]!r:.40}, more than max_delay {self.max_delay} s: stopping "
                "(the Suicidal Snail) rather than acting on stale data"
            )
            self.subscriber.close()
            logger.error("%s", self._death, extra={"reason": "stale data"})
            raise self._death
        self.received += 1
        return True

    def close(self) -> None:
        """Close the socket. Idempotent."""
        self.subscriber.close()
