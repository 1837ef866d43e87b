"""Conflation and last-value caching: keep the newest value per topic, drop the rest.

Three tools, an application-level ``ConflatingSubscriber`` and the Guide's chapter 5:

- :class:`ConflatingSubscriber` conflates in the application: it reads an ordinary
  multipart SUB stream (the market-data example's ``[topic][timestamp][data]``) and keeps the latest
  message per key. It works for any message shape and loses nothing it was given.
- :func:`conflated_subscriber` makes a libzmq ``ZMQ_CONFLATE`` SUB the one way it works:
  a single subscription set before connecting, single-frame messages only. The socket
  itself keeps only the newest message, so a slow reader costs no memory at all.
- :class:`LastValueCache` gives a late joiner (a plain SUB) the current value of every
  topic it subscribes to, then the live stream; with its opt-in snapshot ROUTER,
  :class:`LastValueSubscriber` gets them at once, without a gap or a repeat.

How the last-value cache works:
    As the Guide's ``lvcache``: :class:`LastValueCache` subscribes upstream, forwards
    every update on an XPUB, and when the XPUB reports a subscription (with
    ``xpub_verbose``, every subscriber's) it sends the cached values of the topics that
    subscription matches. A plain SUB needs nothing else: it connects, subscribes, and
    receives the current values and then the live stream. Because an XPUB cannot
    address one subscriber, every subscriber of a replayed topic receives the replay
    (the Guide's caveat): a repeat of the newest value, never an older one (see
    :class:`LastValueCache`).

    For a subscriber that must know when it has every current value, and see no
    repeat, the cache can also answer snapshot requests on a ROUTER (``snapshots=``,
    opt-in), the way the Guide's Clone pattern does: it serves
    ``[b"LVC?", prefix, token]`` with one ``[b"LVC", topic, *frames]`` per cached topic
    matching ``prefix`` and a final ``[b"LVC.", prefix, token]``. At the instant it
    takes the snapshot (the cached values, by reference) it publishes
    ``[LVC_SYNC_TOPIC, token]`` on its XPUB, with no update forwarded in between.
    Because a pipe is FIFO, that marker is the exact cut in the update stream: live
    updates before it are already in the snapshot, updates after it are newer, however
    long the snapshot then takes to reach its subscriber (snapshots are sent by their
    own tasks, so that forwarding never waits for one). :class:`LastValueSubscriber`
    discards what precedes its marker, and after it drops a message equal to the one
    it holds for that topic (a replay for another subscriber), so it needs no sequence
    numbers and the data messages pass through unchanged. If the marker does not
    arrive, the subscription had not yet reached the cache (the slow joiner) and the
    subscriber asks again.

What the cache holds, and for whom, is bounded: see :class:`LastValueCache`.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
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
from transportkit._log import limited
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._poll import poll
from transportkit._socket import Dealer, Message, Receiver, Router, Subscriber, XPublisher
from transportkit.patterns._limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    bounded_options,
    check_bound,
    check_finite_hwm,
    check_message_limit,
    message_bytes,
    too_large,
)
from transportkit.patterns._serving import SnapshotSender
from transportkit.patterns._shutdown import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    GracefulStop,
    stop_then_close,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LVC_MAX_CACHE_BYTES",
    "DEFAULT_LVC_MAX_PENDING_REPLAYS",
    "DEFAULT_LVC_MAX_PENDING_SNAPSHOTS",
    "DEFAULT_LVC_MAX_PREFIX_BYTES",
    "DEFAULT_LVC_MAX_REPLAY_TOPICS",
    "DEFAULT_LVC_MAX_SNAPSHOTS",
    "DEFAULT_LVC_MAX_TOKEN_BYTES",
    "DEFAULT_LVC_MAX_TOPICS",
    "DEFAULT_LVC_REPLAY_BUDGET",
    "DEFAULT_LVC_SNAPSHOT_HWM",
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
    """Keeps the latest message per key from an ordinary SUB stream.

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
            except ProtocolError as exc:
                self.malformed += 1
                limited(
                    logger,
                    logging.WARNING,
                    "malformed",
                    "malformed update, no conflation key: %s",
                    exc,
                    extra={"reason": str(exc), "counter": "malformed"},
                )
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


DEFAULT_LVC_MAX_REPLAY_TOPICS: Final = 1000
"""Cached values a :class:`LastValueCache` sends for one subscription by default (the
default high-water mark: an XPUB drops what a subscriber's pipe cannot hold)."""
DEFAULT_LVC_SNAPSHOT_HWM: Final = 1000
"""The high-water mark of a :class:`LastValueCache`'s snapshot ROUTER by default."""
DEFAULT_LVC_MAX_SNAPSHOTS: Final = 16
"""Snapshots a :class:`LastValueCache` sends at once by default."""
DEFAULT_LVC_MAX_PENDING_SNAPSHOTS: Final = 256
"""Snapshot requests a :class:`LastValueCache` keeps waiting by default."""
DEFAULT_LVC_MAX_PREFIX_BYTES: Final = 256
"""The longest prefix a snapshot request may carry by default."""
DEFAULT_LVC_MAX_TOKEN_BYTES: Final = 256
"""The longest token a snapshot request may carry by default (it is republished to every
downstream subscriber in the cut marker)."""
DEFAULT_LVC_MAX_TOPICS: Final = 100_000
"""Topics a last-value cache, or a :class:`LastValueSubscriber`, holds by default."""
DEFAULT_LVC_MAX_CACHE_BYTES: Final = 1 << 28
"""Bytes of messages (all frames) a last-value cache, or a subscriber, holds by default."""

DEFAULT_LVC_REPLAY_BUDGET: Final = 256
"""Cached values a :class:`LastValueCache` replays per turn of its loop by default, all
replays together (the rest wait for the next turns, after the socket batches)."""
DEFAULT_LVC_MAX_PENDING_REPLAYS: Final = 1024
"""Replays a :class:`LastValueCache` keeps waiting by default."""

_BATCH: Final = 256
"""Messages the cache takes from one socket before it looks at the other."""


class _TopicIndex:
    """The topics of a dict, sorted, for prefix ranges by bisection.

    Kept lazily: a new topic is appended to ``fresh`` (O(1)); a removal only marks the
    index stale. :meth:`keys` merges ``fresh`` in (Timsort merges the two sorted runs
    in linear time) or, after a removal, rebuilds from the dict, and only when asked:
    a feed that keeps adding topics costs one merge per replay, and a replay with
    nothing new costs a bisection.
    """

    __slots__ = ("_fresh", "_keys", "_source", "_stale")

    def __init__(self, source: dict[bytes, Message]) -> None:
        self._source = source
        self._keys: list[bytes] = []
        self._fresh: list[bytes] = []
        self._stale = False

    def added(self, topic: bytes) -> None:
        self._fresh.append(topic)

    def removed(self) -> None:
        self._stale = True

    def keys(self) -> list[bytes]:
        """Every topic of the source, sorted."""
        if self._stale:
            self._keys = sorted(self._source)
            self._fresh.clear()
            self._stale = False
        elif self._fresh:
            self._keys.extend(self._fresh)
            self._keys.sort()
            self._fresh.clear()
        return self._keys

    def span(self, prefix: bytes, after: bytes | None = None) -> tuple[list[bytes], int, int]:
        """The sorted topics and the slice ``[start, end)`` of those that start with
        ``prefix`` (and come after ``after``, if given): two bisections.
        """
        keys = self.keys()
        start = bisect.bisect_left(keys, prefix)
        if after is not None:
            start = max(start, bisect.bisect_right(keys, after))
        bound = _prefix_end(prefix)
        end = len(keys) if bound is None else bisect.bisect_left(keys, bound, lo=start)
        return keys, start, max(start, end)


def _prefix_end(prefix: bytes) -> bytes | None:
    """The least bytes string greater than every string that starts with ``prefix``
    (None if there is none: ``prefix`` is empty or all 0xff bytes).
    """
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


class _Replay:
    """A subscription's replay in progress: where it is, how much it may still send."""

    __slots__ = ("after", "left", "prefix")

    def __init__(self, prefix: bytes, left: int) -> None:
        self.prefix = prefix
        self.after: bytes | None = None
        self.left = left


class _BoundedValues:
    """Newest message per topic, within a count and a byte bound.

    A message that does not fit is not kept, and the topic's older message is dropped
    with it: a view may lack a topic, never hold a stale value for it.
    """

    __slots__ = ("index", "max_bytes", "max_topics", "nbytes", "values")

    def __init__(self, max_topics: int, max_bytes: int, *, indexed: bool = False) -> None:
        self.max_topics = max_topics
        self.max_bytes = max_bytes
        self.values: dict[bytes, Message] = {}
        self.nbytes = 0
        self.index = _TopicIndex(self.values) if indexed else None

    def put(self, topic: bytes, message: Message) -> bool:
        """Keep ``message`` as ``topic``'s newest; False (topic dropped) if it does not fit."""
        old = self.values.get(topic)
        old_size = 0 if old is None else message_bytes(old)
        size = self.nbytes - old_size + message_bytes(message)
        if (old is None and len(self.values) >= self.max_topics) or size > self.max_bytes:
            if old is not None:
                del self.values[topic]
                self.nbytes -= old_size
                if self.index is not None:
                    self.index.removed()
            return False
        self.values[topic] = message
        self.nbytes = size
        if old is None and self.index is not None:
            self.index.added(topic)
        return True


class LastValueCache(Closeable):
    """A last-value cache between a publisher and its subscribers (the Guide's lvcache).

    It subscribes upstream, keeps the newest message per topic, and forwards every
    message unchanged on its downstream XPUB. When a subscription arrives on the XPUB
    (``xpub_verbose`` is on, so every subscriber's subscription is seen, not only the
    first to a topic), it sends the cached value of every topic that subscription
    matches: a plain SUB, as the Guide's clients use, gets the current values as soon
    as it subscribes, then the live stream. Optionally (``snapshots=``) it also answers
    snapshot requests on a ROUTER for :class:`LastValueSubscriber` (the protocol is in
    the module docstring). Malformed input is counted and dropped; it never stops the
    cache.

    What a new subscription gets, and the Guide's caveat:

    - The cached values of every topic that starts with the subscribed prefix, in
      topic order (the Guide's lvcache answers only a topic it holds exactly; a
      subscription to ``b"MARKET."`` there gets nothing). Unsubscriptions change
      nothing.
    - They are sent on the XPUB, which cannot address one subscriber, so every
      subscriber whose subscriptions match a replayed topic receives it, not only the
      new one, as with the Guide's lvcache. What they receive is a repeat of the value
      they already have, never an older one: the replay is sent by the task that
      forwards, between two updates, and it is the newest value at that moment. A
      consumer that must not see repeats drops a message equal to the last it has for
      that topic (:class:`LastValueSubscriber` does), or uses the ``snapshots`` ROUTER,
      which answers one subscriber alone.
    - A replay is at most ``max_replay_topics`` messages (default 1000, the default
      HWM: the XPUB drops what a subscriber's pipe cannot hold, and every subscriber
      of those topics receives the replay); past that the rest are not sent and the
      subscription is counted in :attr:`replays_truncated`.
    - Replays are paced: all of them together send at most ``replay_budget`` messages
      (default 256) per turn of the cache's loop, after that turn's batches of
      updates, subscriptions and requests, so a subscription to a wide prefix never
      holds up the live stream for long. Each message is the topic's newest value when
      it is sent (a topic updated meanwhile is replayed at its new value, never an
      older one). Replays wait in order of subscription, at most
      ``max_pending_replays`` (default 1024); past that a subscription gets no replay
      and is counted in :attr:`replays_refused`. A subscription to a prefix whose
      replay has not started yet shares it (:attr:`replays_coalesced`: the XPUB sends
      it to both subscribers anyway). Matching costs two bisections of the sorted
      topics, not a scan of the cache.

    Bounds (see :mod:`transportkit.patterns._limits`):

    - Every message received, upstream, on the XPUB or on the ROUTER, is at most
      ``max_message_bytes`` (also the ``maxmsgsize`` of the sockets it binds; the SUB
      connects, so it gets none); larger ones are dropped and counted, and never
      forwarded.
    - The cache holds at most ``max_topics`` topics and ``max_cache_bytes`` bytes. An
      update that does not fit is still forwarded, but not cached, and its topic's
      older value is dropped from the cache (a late joiner then lacks the topic rather
      than getting a stale value); counted in :attr:`uncached`.
    - With ``snapshots``: snapshots are sent side by side, each in its own task at its
      subscriber's pace, from a ROUTER with a finite high-water mark
      (``snapshot_hwm``); a subscriber that reads slowly or not at all delays neither
      the others nor the forwarding, and is given up on after ``snapshot_timeout``
      seconds without progress. At most ``max_snapshots`` are in progress and
      ``max_pending_snapshots`` wait, one per subscriber; past that a request is
      refused and counted. A request's prefix and token are at most
      ``max_prefix_bytes`` and ``max_token_bytes``.

    Attributes:
        upstream: SUB connected to the publisher(s).
        downstream: XPUB the subscribers connect to (``xpub_verbose`` on).
        snapshots: ROUTER answering ``[b"LVC?", prefix, token]``, or None.
        forwarded: Updates received upstream and forwarded.
        subscriptions: Subscriptions seen on the XPUB (each answered by a replay).
        unsubscriptions: Unsubscriptions seen on the XPUB.
        replayed: Cached messages sent by replays.
        replays_truncated: Replays cut at ``max_replay_topics``.
        replays_refused: Subscriptions given no replay because
            ``max_pending_replays`` replays were waiting.
        replays_coalesced: Subscriptions served by a replay of the same prefix that
            was waiting to start.
        snapshots_served: Snapshots sent whole.
        snapshot_failures: Snapshots abandoned (the subscriber vanished, or stayed at
            its high-water mark for ``snapshot_timeout``).
        malformed: Messages that followed no protocol, dropped: requests that are not
            ``[b"LVC?", prefix, token]``, XPUB messages that are not subscriptions,
            and upstream messages on the reserved :data:`LVC_SYNC_TOPIC`.
        over_limit: Messages refused by a bound: too large, a prefix or token too
            long, ``snapshots_refused``, ``uncached``, ``replays_truncated``,
            ``replays_refused``.
        snapshots_refused: Requests refused because ``max_snapshots`` were in progress
            and ``max_pending_snapshots`` waiting, or the subscriber had one already.
        uncached: Updates forwarded but not cached (past ``max_topics`` or
            ``max_cache_bytes``).
        shutdown_dropped: Snapshots a graceful stop (:meth:`shutdown`) cut at its
            deadline (in progress or waiting), and replays it left unfinished.

    ``await cache.shutdown(timeout)`` stops it gracefully: nothing more is read or
    forwarded, the snapshots in progress or waiting get ``timeout`` seconds (default
    5) to finish, the rest are cut, replays not finished are dropped (both counted in
    ``shutdown_dropped``), and the sockets are closed with their ``linger``.
    :meth:`close` is the hard stop.
    """

    def __init__(
        self,
        network: Network,
        *,
        upstream: str | Iterable[str],
        downstream: str | Iterable[str],
        snapshots: str | Iterable[str] | None = None,
        topics: Iterable[bytes] = (b"",),
        options: SocketOptions | None = None,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
        max_replay_topics: int = DEFAULT_LVC_MAX_REPLAY_TOPICS,
        replay_budget: int = DEFAULT_LVC_REPLAY_BUDGET,
        max_pending_replays: int = DEFAULT_LVC_MAX_PENDING_REPLAYS,
        snapshot_hwm: int = DEFAULT_LVC_SNAPSHOT_HWM,
        snapshot_timeout: float = 5.0,
        max_snapshots: int = DEFAULT_LVC_MAX_SNAPSHOTS,
        max_pending_snapshots: int = DEFAULT_LVC_MAX_PENDING_SNAPSHOTS,
        max_prefix_bytes: int = DEFAULT_LVC_MAX_PREFIX_BYTES,
        max_token_bytes: int = DEFAULT_LVC_MAX_TOKEN_BYTES,
        max_topics: int = DEFAULT_LVC_MAX_TOPICS,
        max_cache_bytes: int = DEFAULT_LVC_MAX_CACHE_BYTES,
    ) -> None:
        """Bind ``downstream`` (and ``snapshots``), connect ``upstream``.

        Args:
            network: Makes the sockets.
            upstream: Publisher endpoint(s) to subscribe to.
            downstream: Endpoint(s) to bind the forwarding XPUB on.
            snapshots: Endpoint(s) to bind a snapshot ROUTER on, for
                :class:`LastValueSubscriber` (default None: no ROUTER).
            topics: Upstream subscription prefixes (default: everything).
            options: Options for every socket (``sndhwm`` and ``rcvhwm`` must not be
                0: peers fill them); the XPUB's ``xpub_verbose`` is forced on, the
                ROUTER's ``sndhwm`` is ``snapshot_hwm`` and its ``router_mandatory``
                is forced on, and ``maxmsgsize`` defaults to ``max_message_bytes`` on
                the XPUB and the ROUTER.
            max_message_bytes: Largest message accepted, all frames included (default
                1 MiB; None: no limit).
            max_replay_topics: Most cached messages sent for one subscription
                (default 1000).
            replay_budget: Most cached messages replayed per turn of the loop, all
                replays together (default 256).
            max_pending_replays: Most replays waiting or in progress (default 1024).
            snapshot_hwm: The ROUTER's ``sndhwm`` (default 1000).
            snapshot_timeout: Seconds a snapshot may wait on a subscriber at its
                high-water mark before it is abandoned (default 5).
            max_snapshots: Snapshots in progress at once (default 16).
            max_pending_snapshots: Requests kept waiting while ``max_snapshots`` are in
                progress (default 256).
            max_prefix_bytes: Longest prefix in a request (default 256).
            max_token_bytes: Longest token in a request (default 256).
            max_topics: Most topics cached (default 100,000).
            max_cache_bytes: Most bytes of messages cached (default 256 MiB).

        Raises:
            ValueError: A bound is not an int >= 1 (``max_pending_snapshots`` and
                ``max_pending_replays`` >= 0,
                ``max_message_bytes`` may be None), ``snapshot_timeout`` is not
                positive, or an HWM in ``options`` is 0.
            TransportError: Making a socket failed (nothing is left open).
        """
        opts = options or SocketOptions()
        check_finite_hwm(opts, "LastValueCache options", "sndhwm", "rcvhwm")
        if not snapshot_timeout > 0:
            raise ValueError(f"snapshot_timeout must be > 0 seconds, got {snapshot_timeout!r}")
        self.max_message_bytes = check_message_limit(max_message_bytes)
        self.max_replay_topics = check_bound("max_replay_topics", max_replay_topics)
        self.replay_budget = check_bound("replay_budget", replay_budget)
        self.max_pending_replays = check_bound(
            "max_pending_replays", max_pending_replays, minimum=0
        )
        check_bound("snapshot_hwm", snapshot_hwm)
        check_bound("max_snapshots", max_snapshots)
        check_bound("max_pending_snapshots", max_pending_snapshots, minimum=0)
        self.max_prefix_bytes = check_bound("max_prefix_bytes", max_prefix_bytes)
        self.max_token_bytes = check_bound("max_token_bytes", max_token_bytes)
        self._cache = _BoundedValues(
            check_bound("max_topics", max_topics),
            check_bound("max_cache_bytes", max_cache_bytes),
            indexed=True,
        )
        self._replays: deque[_Replay] = deque()
        self._unstarted: set[bytes] = set()  # prefixes of the replays not started yet
        self.forwarded = 0
        self.subscriptions = 0
        self.unsubscriptions = 0
        self.replayed = 0
        self.replays_truncated = 0
        self.replays_refused = 0
        self.replays_coalesced = 0
        self.snapshots_served = 0
        self.snapshot_failures = 0
        self.malformed = 0
        self.over_limit = 0
        self.snapshots_refused = 0
        self.uncached = 0
        self.shutdown_dropped = 0
        self._graceful = GracefulStop()
        receiving = bounded_options(opts, self.max_message_bytes)
        with ExitStack() as undo:
            self.downstream: Final[XPublisher] = network.xpublisher(
                bind=downstream, options=receiving.replace(xpub_verbose=True)
            )
            undo.callback(self.downstream.close)
            self.snapshots: Final[Router | None] = (
                None
                if snapshots is None
                else network.router(
                    bind=snapshots,
                    options=receiving.replace(sndhwm=snapshot_hwm, router_mandatory=True),
                )
            )
            if self.snapshots is not None:
                undo.callback(self.snapshots.close)
            self.upstream: Final[Subscriber] = network.subscriber(
                connect=upstream, topics=topics, options=opts
            )
            undo.pop_all()
        self._sender = (
            None
            if self.snapshots is None
            else SnapshotSender(
                self.snapshots,
                max_active=max_snapshots,
                max_pending=max_pending_snapshots,
                stall_timeout=snapshot_timeout,
                on_done=self._snapshot_done,
            )
        )

    @property
    def values(self) -> Mapping[bytes, Message]:
        """The cached newest message per topic (a read-only live view)."""
        return MappingProxyType(self._cache.values)

    @property
    def cached_bytes(self) -> int:
        """Bytes of the cached messages (all frames)."""
        return self._cache.nbytes

    @property
    def replays_pending(self) -> int:
        """Replays waiting or in progress."""
        return len(self._replays)

    @property
    def snapshots_in_progress(self) -> int:
        """Snapshots being sent now (0 without ``snapshots``)."""
        return 0 if self._sender is None else self._sender.active

    @property
    def snapshots_pending(self) -> int:
        """Snapshot requests waiting for one of the ``max_snapshots`` places."""
        return 0 if self._sender is None else self._sender.pending

    async def run(self) -> None:
        """Serve until a socket is closed (then return) or the task is cancelled.

        One task takes updates, subscriptions and requests, a bounded batch from each
        in turn, then sends at most ``replay_budget`` replayed values, and never waits
        on a subscriber; snapshots are sent by their own tasks.
        """
        graceful = self._graceful
        if graceful.requested:
            return
        graceful.started()
        watched: list[Receiver] = [self.upstream, self.downstream]
        if self.snapshots is not None:
            watched.append(self.snapshots)
        try:
            while True:
                replaying = bool(self._replays)
                ready = await graceful.interruptible(poll(watched, 0.0 if replaying else math.inf))
                if ready is None:  # a graceful stop
                    if self._replays:
                        self.shutdown_dropped += len(self._replays)
                        graceful.clean = False
                        self._replays.clear()
                        self._unstarted.clear()
                    if self._sender is not None:
                        cut = await self._sender.drain(graceful.remaining())
                        if cut:
                            self.shutdown_dropped += cut
                            graceful.clean = False
                    self.close()
                    return
                if self.upstream in ready:
                    self._forward()
                if self.downstream in ready:
                    self._serve_subscriptions()
                if self.snapshots is not None and self.snapshots in ready:
                    self._serve_requests()
                if self._replays:
                    self._serve_replays()
                await asyncio.sleep(0)  # let the snapshots progress under a busy feed
        except ClosedError:
            return
        finally:
            if self._sender is not None:
                await self._sender.aclose()
            graceful.finished()

    async def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Stop gracefully (see the class docstring) and close the sockets; a cache
        that is not running is closed at once. Idempotent.

        Returns:
            True if no snapshot was cut at the deadline.

        Raises:
            ValueError: ``timeout`` is not from 0 to 3600 seconds.
        """
        return await stop_then_close(self._graceful, timeout, self.close)

    def _forward(self) -> None:
        for _ in range(_BATCH):
            message = self.upstream.try_recv()
            if message is None:
                return
            if too_large(message, self.max_message_bytes):
                self.over_limit += 1
                continue
            topic = message[0]
            if topic.startswith(LVC_SYNC_TOPIC):
                self.malformed += 1  # only the cache may publish cut markers
                continue
            if not self._cache.put(topic, message):
                self.uncached += 1
                self.over_limit += 1
            self.downstream.try_send(message)  # an XPUB never waits
            self.forwarded += 1

    def _serve_subscriptions(self) -> None:
        for _ in range(_BATCH):
            message = self.downstream.try_recv()
            if message is None:
                return
            if too_large(message, self.max_message_bytes):
                self.over_limit += 1
            elif len(message) != 1 or not message[0] or message[0][0] not in (0, 1):
                self.malformed += 1  # not a subscription (RFC 29)
                limited(
                    logger,
                    logging.WARNING,
                    "malformed",
                    "last-value cache: a message on the XPUB that is no subscription",
                    extra={"reason": "not a subscription", "counter": "malformed"},
                )
            elif message[0][0] == 0:
                self.unsubscriptions += 1
            else:
                self.subscriptions += 1
                self._replay(message[0][1:])

    def _replay(self, prefix: bytes) -> None:
        """Queue the replay of every cached topic under ``prefix`` (see the class
        docstring); :meth:`_serve_replays` sends it.
        """
        if prefix in self._unstarted:
            self.replays_coalesced += 1
            return
        index = self._cache.index
        assert index is not None
        _, start, end = index.span(prefix)
        if start == end:
            return  # nothing cached under it
        if len(self._replays) >= self.max_pending_replays:
            self.replays_refused += 1
            self.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "last-value cache: %d replays waiting, no replay for a subscription to %r",
                len(self._replays),
                prefix[:64],
                extra={"reason": "max_pending_replays", "counter": "over_limit"},
            )
            return
        if end - start > self.max_replay_topics:
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "last-value cache: a subscription to %r matches %d topics, replaying %d",
                prefix[:64],
                end - start,
                self.max_replay_topics,
                extra={"reason": "max_replay_topics", "counter": "over_limit"},
            )
            self.replays_truncated += 1
            self.over_limit += 1
        self._replays.append(_Replay(prefix, self.max_replay_topics))
        self._unstarted.add(prefix)

    def _serve_replays(self) -> None:
        """Send up to ``replay_budget`` replayed values, oldest replay first, each the
        topic's newest value now.
        """
        index = self._cache.index
        assert index is not None
        cache = self._cache.values
        budget = self.replay_budget
        replays = self._replays
        while budget and replays:
            replay = replays[0]
            if replay.after is None:
                self._unstarted.discard(replay.prefix)
            keys, start, end = index.span(replay.prefix, replay.after)
            stop = min(end, start + budget, start + replay.left)
            for position in range(start, stop):
                topic = keys[position]
                self.downstream.try_send(cache[topic])  # an XPUB never waits
            sent = stop - start
            self.replayed += sent
            budget -= sent
            replay.left -= sent
            if sent:
                replay.after = keys[stop - 1]
            if stop >= end or replay.left <= 0:
                replays.popleft()

    def _serve_requests(self) -> None:
        assert self.snapshots is not None
        for _ in range(_BATCH):
            request = self.snapshots.try_recv()
            if request is None:
                return
            self._request(request)

    def _request(self, request: Message) -> None:
        assert self._sender is not None
        if too_large(request[1:], self.max_message_bytes):
            self.over_limit += 1
            return
        if len(request) != 4 or request[1] != SNAPSHOT_REQUEST:
            self.malformed += 1
            return
        identity, _, prefix, token = request
        if len(prefix) > self.max_prefix_bytes or len(token) > self.max_token_bytes:
            self.over_limit += 1
            return
        if not self._sender.submit(identity, functools.partial(self._snapshot, prefix, token)):
            self.snapshots_refused += 1
            self.over_limit += 1

    def _snapshot(self, prefix: bytes, token: bytes) -> Iterator[list[bytes]]:
        """The cut: the cached values under ``prefix`` now, and the marker, now."""
        cache = self._cache.values
        index = self._cache.index
        assert index is not None
        keys, start, end = index.span(prefix)
        entries = [cache[topic] for topic in keys[start:end]]
        self.downstream.try_send([LVC_SYNC_TOPIC, token])
        return itertools.chain(
            ([SNAPSHOT_VALUE, *message] for message in entries),
            ([SNAPSHOT_END, prefix, token],),
        )

    def _snapshot_done(self, complete: bool) -> None:
        if complete:
            self.snapshots_served += 1
        else:
            self.snapshot_failures += 1

    def close(self) -> None:
        """Close every socket (a running :meth:`run` then returns). Idempotent."""
        self.upstream.close()
        if self.snapshots is not None:
            self.snapshots.close()
        self.downstream.close()


_tokens = itertools.count(1)


class _Partial:
    """A snapshot being received: its values so far, within the subscriber's bounds."""

    __slots__ = ("spoiled", "values")

    def __init__(self, max_topics: int, max_bytes: int) -> None:
        self.values = _BoundedValues(max_topics, max_bytes)
        self.spoiled = False

    def reset(self) -> None:
        self.values = _BoundedValues(self.values.max_topics, self.values.max_bytes)
        self.spoiled = False


class LastValueSubscriber(Closeable):
    """A late joiner's view of a :class:`LastValueCache` made with ``snapshots=``: every
    topic's current value at once (:meth:`sync`), then the live updates (:meth:`recv`),
    with no gap and no duplicate between the two, and no repeat of a value it holds.

    Whatever the cache sends, nothing raises because of it: a reply or update that
    follows no protocol (or a topic outside :attr:`prefix`) is counted in
    :attr:`malformed` and dropped. What it holds is bounded: messages of at most
    ``max_message_bytes``, at most ``max_topics`` topics and ``max_cache_bytes`` bytes
    in a snapshot (a larger one is not accepted, and :meth:`sync` keeps asking until its
    timeout) and in :attr:`values` (an update that does not fit is still returned by
    :meth:`recv`, but its topic leaves :attr:`values`); all counted in
    :attr:`over_limit`.

    Attributes:
        updates: SUB on the cache's downstream XPUB.
        snapshots: DEALER to the cache's ROUTER.
        prefix: The topics followed.
        resyncs: Snapshot requests repeated because the marker did not arrive (the
            subscription had not reached the cache yet, or the cache was away).
        received: Live updates returned by :meth:`recv`.
        repeats: Live messages dropped because they equal the message held for their
            topic: the cache's replays of current values to subscribers that joined
            after this one (the Guide's caveat: see :class:`LastValueCache`).
        malformed: Messages dropped as following no protocol.
        over_limit: Messages and snapshots refused by a bound.
    """

    def __init__(
        self,
        network: Network,
        *,
        updates: str | Iterable[str],
        snapshots: str | Iterable[str],
        prefix: bytes = b"",
        options: SocketOptions | None = None,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
        max_topics: int = DEFAULT_LVC_MAX_TOPICS,
        max_cache_bytes: int = DEFAULT_LVC_MAX_CACHE_BYTES,
    ) -> None:
        """Connect to a cache's downstream XPUB (``updates``) and ROUTER (``snapshots``).

        Args:
            network: Makes the sockets.
            updates: The cache's downstream endpoint(s).
            snapshots: The cache's snapshot endpoint(s).
            prefix: The topics to follow.
            options: Options of both sockets (they connect: no ``maxmsgsize`` is
                set, see :mod:`transportkit.patterns._limits`).
            max_message_bytes: Largest message accepted (default 1 MiB; None: no
                limit).
            max_topics: Most topics held (default 100,000).
            max_cache_bytes: Most bytes of messages held (default 256 MiB).

        Raises:
            ValueError: A bound is not an int >= 1 (``max_message_bytes`` may be None).
        """
        self.max_message_bytes = check_message_limit(max_message_bytes)
        self._max_topics = check_bound("max_topics", max_topics)
        self._max_bytes = check_bound("max_cache_bytes", max_cache_bytes)
        opts = SocketOptions() if options is None else options  # connects: no maxmsgsize
        self.prefix: Final = prefix
        self._network = network
        self._values = _BoundedValues(self._max_topics, self._max_bytes)
        self._synced = False
        self.resyncs = 0
        self.received = 0
        self.repeats = 0
        self.malformed = 0
        self.over_limit = 0
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
        return MappingProxyType(self._values.values)

    async def sync(self, timeout: float = 10.0, *, retry: float = 0.5) -> dict[bytes, Message]:
        """Fetch the current value of every topic under :attr:`prefix`.

        After it returns, :meth:`recv` yields exactly the updates newer than the
        snapshot. Call it again to resynchronise (after a cache restart, say). A
        snapshot that takes longer than ``retry`` to arrive is still accepted: every
        request of this call stays valid until one is answered.

        Args:
            timeout: Seconds to give up after.
            retry: Seconds to wait for a reply and for the cut marker before asking
                again (the Guide's slow joiner: the first request can beat the
                subscription to the cache), and before asking again after a request
                the DEALER could not send.

        Returns:
            The snapshot: topic to message ``[topic, *frames]``, topics sorted.

        Raises:
            Timeout: No complete snapshot and marker within ``timeout`` (also when
                every snapshot was past this subscriber's bounds: see
                :attr:`over_limit`).
            ClosedError: The subscriber is closed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        tokens: set[bytes] = set()
        partial = _Partial(self._max_topics, self._max_bytes)
        first = True
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Timeout(
                    f"no snapshot from the last-value cache within {timeout} s "
                    f"({self.resyncs} retries, {self.over_limit} over this subscriber's "
                    "bounds)"
                )
            if not first:
                self.resyncs += 1
            first = False
            token = b"%s/%d/%d" % (
                self._network.name.encode(),
                next(_tokens),
                self._network.time_ns(),
            )
            tokens.add(token)
            wait = min(retry, remaining)
            try:
                # The DEALER waits while no pipe takes the request (with ``immediate``
                # until the connection is made: for ever if the cache is gone; or at
                # its HWM): never past the deadline.
                async with asyncio.timeout(remaining):
                    await self.snapshots.send([SNAPSHOT_REQUEST, self.prefix, token])
            except TimeoutError:  # transportkit's Timeout (``sndtimeo``) too
                await asyncio.sleep(max(min(wait, deadline - loop.time()), 0.0))
                continue
            answered = await self._read_snapshot(tokens, partial, wait)
            if answered is None:
                continue
            answer, snapshot = answered
            if not await self._await_marker(answer, wait):
                continue
            self._values = snapshot
            self._synced = True
            return dict(snapshot.values)

    async def _read_snapshot(
        self, tokens: set[bytes], partial: _Partial, wait: float
    ) -> tuple[bytes, _BoundedValues] | None:
        loop = asyncio.get_running_loop()
        until = loop.time() + wait
        while True:
            try:
                reply = await self.snapshots.recv(timeout=max(0.0, until - loop.time()))
            except Timeout:
                return None
            if too_large(reply, self.max_message_bytes):
                self.over_limit += 1
                partial.spoiled = True  # a value may be missing
            elif reply[0] == SNAPSHOT_VALUE and len(reply) >= 2:
                topic = reply[1]
                if not topic.startswith(self.prefix) or topic.startswith(LVC_SYNC_TOPIC):
                    self.malformed += 1
                elif not partial.values.put(topic, reply[1:]):
                    self.over_limit += 1
                    partial.spoiled = True
            elif reply[0] == SNAPSHOT_END and len(reply) == 3:
                prefix, token = reply[1], reply[2]
                done = partial.values
                spoiled = partial.spoiled
                partial.reset()
                if token not in tokens:
                    continue  # the end of an earlier sync's request
                if prefix != self.prefix:
                    self.malformed += 1
                elif not spoiled:
                    return token, done
            else:
                self.malformed += 1

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
            topic = message[0]
            if topic == LVC_SYNC_TOPIC and len(message) == 2:
                continue  # another subscriber's marker (a b"" prefix matches it)
            if too_large(message, self.max_message_bytes):
                self.over_limit += 1
                continue
            if not topic.startswith(self.prefix) or topic.startswith(LVC_SYNC_TOPIC):
                self.malformed += 1
                continue
            if self._values.values.get(topic) == message:
                self.repeats += 1  # a replay of the value it holds (for another subscriber)
                continue
            if not self._values.put(topic, message):
                self.over_limit += 1
            self.received += 1
            return message

    def close(self) -> None:
        """Close both sockets. Idempotent."""
        self.updates.close()
        self.snapshots.close()
