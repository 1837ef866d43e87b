"""Market data over publish/subscribe (the market-data example).

Every update is the three-frame message ``[topic, timestamp, data]``: ``topic`` is
``b"MARKET.<symbol>"``, ``timestamp`` the publisher's clock in nanoseconds as an 8-byte
little-endian unsigned integer, ``data`` a serialized :class:`MarketData`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from transportkit import ProtocolError, Publisher, Subscriber
from transportkit._log import limited
from transportkit.trading._codec import parse
from transportkit.trading._pb.trading_pb2 import MarketData

logger = logging.getLogger(__name__)

__all__ = [
    "TOPIC_PREFIX",
    "MarketDataPublisher",
    "MarketDataSubscriber",
    "MarketDataUpdate",
    "decode_market_data",
    "encode_market_data",
    "topic_for",
]

TOPIC_PREFIX: Final = b"MARKET."
"""The prefix of every market-data topic; subscribe to it to receive every symbol."""

_TIMESTAMP: Final = struct.Struct("<Q")

_CACHED_SYMBOLS: Final = 4096
"""The most symbols whose topic (and back) is remembered: a feed's few symbols are
turned into topics, and topics back into symbols, once each, not once per update
(bounded, so a feed of ever new symbols costs no more memory than that)."""
_TOPICS: dict[str, bytes] = {}
_SYMBOLS: dict[bytes, str] = {}


def topic_for(symbol: str) -> bytes:
    """The topic frame of ``symbol``'s updates: ``b"MARKET." + symbol`` in UTF-8.

    Subscriptions match by prefix, so subscribing to ``topic_for("AAP")`` also receives
    ``AAPL``; filter on :attr:`MarketDataUpdate.symbol` when that matters.

    Raises:
        ValueError: ``symbol`` is empty or contains whitespace.
    """
    topic = _TOPICS.get(symbol) if type(symbol) is str else None
    if topic is not None:
        return topic
    if not symbol or any(c.isspace() for c in symbol):
        raise ValueError(f"a symbol must be non-empty and without whitespace, got {symbol!r}")
    topic = TOPIC_PREFIX + symbol.encode()
    if type(symbol) is str and len(_TOPICS) < _CACHED_SYMBOLS:
        _TOPICS[symbol] = topic
        if len(_SYMBOLS) < _CACHED_SYMBOLS:
            _SYMBOLS[topic] = symbol
    return topic


@dataclass(frozen=True, slots=True)
class MarketDataUpdate:
    """A received market-data update.

    Attributes:
        symbol: The symbol, from the topic frame.
        timestamp_ns: When the publisher sent it, in its network's nanoseconds.
        data: The decoded update.
    """

    symbol: str
    timestamp_ns: int
    data: MarketData


def encode_market_data(data: MarketData, timestamp_ns: int) -> list[bytes]:
    """Return the frames ``[topic, timestamp, data]`` of one update.

    Raises:
        ValueError: ``data.symbol`` is not a valid symbol (see :func:`topic_for`), or
            ``timestamp_ns`` does not fit in an unsigned 64-bit integer.
    """
    if not 0 <= timestamp_ns < 2**64:
        raise ValueError(f"timestamp_ns must fit in 64 unsigned bits, got {timestamp_ns}")
    return [topic_for(data.symbol), _TIMESTAMP.pack(timestamp_ns), data.SerializeToString()]


def decode_market_data(message: Sequence[bytes]) -> MarketDataUpdate:
    """Decode the frames of one update.

    Raises:
        ProtocolError: Not three frames, a topic outside ``MARKET.``, a timestamp that is
            not 8 bytes, a payload that does not decode, or a payload whose symbol is
            not the topic's.
    """
    if len(message) != 3:
        raise ProtocolError(
            f"market data must be 3 frames [topic, timestamp, data], got {len(message)}"
        )
    topic, stamp, payload = message
    symbol = _SYMBOLS.get(topic) if type(topic) is bytes else None
    if symbol is None:
        if not topic.startswith(TOPIC_PREFIX):
            raise ProtocolError(
                f"market data topic {topic!r:.60} does not start with {TOPIC_PREFIX!r}"
            )
        try:
            symbol = topic[len(TOPIC_PREFIX) :].decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"market data topic {topic!r:.60} is not UTF-8") from exc
        if type(topic) is bytes and len(_SYMBOLS) < _CACHED_SYMBOLS:
            _SYMBOLS[topic] = symbol
    if len(stamp) != _TIMESTAMP.size:
        raise ProtocolError(f"market data timestamp must be 8 bytes, got {len(stamp)}")
    try:
        data = MarketData.FromString(payload)
    except Exception:  # parse again, to raise the ProtocolError that says what is wrong
        data = parse(MarketData, payload, f"market data for {symbol!r}")
    if data.symbol != symbol:
        raise ProtocolError(f"market data for {data.symbol!r} arrived on topic {topic!r:.60}")
    (timestamp_ns,) = _TIMESTAMP.unpack(stamp)
    return MarketDataUpdate(symbol=symbol, timestamp_ns=timestamp_ns, data=data)


class MarketDataPublisher:
    """Publishes market-data updates on a PUB socket, stamped with a clock.

    Attributes:
        published: Updates handed to the socket (a PUB may still drop them at its HWM).
    """

    def __init__(self, publisher: Publisher, clock: Callable[[], int]) -> None:
        """Publish on ``publisher`` (not closed here), stamping with ``clock()``.

        Pass the network's ``time_ns`` as ``clock`` so that stamps are virtual time in a
        simulation.
        """
        self.publisher: Final = publisher
        self._clock = clock
        self.published = 0

    async def publish(self, data: MarketData) -> int:
        """Publish ``data`` on its symbol's topic; return the timestamp it was sent with.

        Never waits: a PUB drops at its high-water mark instead.

        Raises:
            ValueError: ``data.symbol`` is not a valid symbol.
            ClosedError: The socket is closed.
        """
        timestamp_ns = self._clock()
        await self.publisher.send(encode_market_data(data, timestamp_ns))
        self.published += 1
        return timestamp_ns


class MarketDataSubscriber:
    """Receives market-data updates from a SUB socket.

    Messages that are not valid updates (wrong frame count, foreign topic, bad payload)
    are skipped and counted in :attr:`malformed`; they never reach the caller and never
    end a receive early.

    Attributes:
        received: Valid updates returned to the caller.
        malformed: Messages skipped because they did not decode.
    """

    def __init__(self, subscriber: Subscriber) -> None:
        """Receive from ``subscriber`` (not closed here); subscribe it with
        :meth:`subscribe` or when making it (``topics=[topic_for("AAPL")]``).
        """
        self.subscriber: Final = subscriber
        self.received = 0
        self.malformed = 0

    def subscribe(self, symbol: str) -> None:
        """Start receiving ``symbol``'s updates (by topic prefix, see :func:`topic_for`)."""
        self.subscriber.subscribe(topic_for(symbol))

    async def receive(self, timeout: float | None = None) -> MarketDataUpdate:
        """Wait for the next valid update.

        Args:
            timeout: Seconds to wait in all (skipped messages do not restart it);
                ``math.inf`` waits for ever; None uses the socket's ``rcvtimeo``.

        Raises:
            Timeout: No valid update arrived in time.
            ClosedError: The socket is closed.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None or math.isinf(timeout) else loop.time() + timeout
        while True:
            remaining = timeout if deadline is None else max(0.0, deadline - loop.time())
            update = self._accept(await self.subscriber.recv(remaining))
            if update is not None:
                return update

    def try_receive(self) -> MarketDataUpdate | None:
        """Return the next valid update if one is waiting, else None, without waiting."""
        while (message := self.subscriber.try_recv()) is not None:
            update = self._accept(message)
            if update is not None:
                return update
        return None

    def _accept(self, message: Sequence[bytes]) -> MarketDataUpdate | None:
        try:
            update = decode_market_data(message)
        except ProtocolError as exc:
            self.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed market-data update: %s",
                exc,
                extra={"reason": str(exc), "counter": "malformed"},
            )
            return None
        self.received += 1
        return update
