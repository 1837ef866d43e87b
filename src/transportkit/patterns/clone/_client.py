"""The CHP client: a local copy of a server's map, following one server of several."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from transportkit._closing import Service
from transportkit._errors import ClosedError, ProtocolError, StateError, Timeout, WouldBlock
from transportkit._kinds import SocketKind
from transportkit._log import limited
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._socket import Dealer, Message, Sender, Subscriber
from transportkit._timeouts import wait_for
from transportkit.patterns._limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    check_bound,
    check_message_limit,
    too_large,
)
from transportkit.patterns.clone._kvmsg import (
    HUGZ,
    ICANHAZ,
    KTHXBAI,
    TTL,
    KVMsg,
    format_ttl,
    is_data_key,
)
from transportkit.patterns.clone._server import DEFAULT_MAX_PROPERTIES_BYTES, _check_kind

DEFAULT_CLIENT_MAX_KEYS: Final = 1_000_000
"""Keys a :class:`CloneClient` holds at most by default."""
DEFAULT_CLIENT_MAX_STATE_BYTES: Final = 1 << 30
"""Bytes of keys, uuids, properties and bodies a :class:`CloneClient` holds by default."""
CLIENT_COLLECTOR_KINDS: Final = (SocketKind.PUB, SocketKind.PUSH)
"""The socket kinds a :class:`CloneClient` may send its updates on: PUB (12/CHP, the
default, to a SUB collector) or PUSH (the Guide's Clone model 5, to a PULL collector
such as ``clonesrv5``'s or :class:`CloneServer`'s with ``collector_kind=SocketKind.PULL``)."""

_clients = itertools.count()


@dataclass(frozen=True, slots=True)
class CloneEvent:
    """Something a :class:`CloneClient` did, for tests and logs.

    Attributes:
        kind: ``snapshot`` (``sequence`` is the snapshot's), ``apply`` and ``discard``
            (an update's sequence), ``gap`` (``sequence`` is the one received,
            ``expected`` the one due), ``timeout`` (silence past ``timeout``),
            ``stall`` (the server spoke again after a silence longer than two
            heartbeats), ``restart`` (the server's sequence went back: a new server
            instance), ``failover`` (``expected`` is the index of the server now
            followed), ``bad`` (a malformed message was ignored), ``over_limit`` (a
            message, or the server's map, was past a bound).
        sequence: See ``kind``.
        expected: For ``gap``, the sequence number that should have come next; for
            ``failover``, the server's index.
    """

    kind: str
    sequence: int = 0
    expected: int = 0


@dataclass(slots=True)
class CloneClientStats:
    """Counters of a :class:`CloneClient`.

    Attributes:
        snapshots: Snapshots received completely.
        resyncs: Snapshots taken after the first one (for any of the reasons below).
        updates: Updates applied.
        discarded: Updates ignored because the state already reflected them.
        gaps: Sequence jumps detected (each is followed by a resync).
        timeouts: Times the server was silent for longer than the timeout.
        stalls: Times the server spoke again after more than two heartbeats of
            silence (each is followed by a resync: it may have restarted).
        restarts: Times a restarted server was noticed: its sequence went back on the
            update stream, or a snapshot's was lower than the client's.
        failovers: Switches to the next server (with several servers).
        heartbeats: HUGZ received.
        sets: Updates sent to the servers' collectors by :meth:`CloneClient.set`.
        set_timeouts: Calls of :meth:`CloneClient.set` on a PUSH collector socket that
            raised :class:`~transportkit.Timeout` (a collector could not take the
            update within ``timeout``).
        unanswered_snapshots: Snapshot requests the server did not answer within
            ``timeout`` (each is also one of ``timeouts``; the Guide's ``clonesrv5``
            never answers one whose subtree is empty).
        bad_messages: Malformed messages ignored (and bad snapshots dropped).
        malformed: Messages that followed no protocol, dropped (here the same as
            ``bad_messages``).
        over_limit: Messages dropped for being larger than ``max_message_bytes`` or
            having a properties frame larger than ``max_properties_bytes``, and
            snapshots or updates refused because the map would pass ``max_keys`` or
            ``max_state_bytes``.
    """

    snapshots: int = 0
    resyncs: int = 0
    updates: int = 0
    discarded: int = 0
    gaps: int = 0
    timeouts: int = 0
    stalls: int = 0
    restarts: int = 0
    failovers: int = 0
    heartbeats: int = 0
    sets: int = 0
    set_timeouts: int = 0
    unanswered_snapshots: int = 0
    bad_messages: int = 0
    malformed: int = 0
    over_limit: int = 0


class _Resync(Exception):
    """The session must take a new snapshot.

    ``reopen`` also makes fresh sockets, after ``timeout`` seconds if ``pause`` (the
    server's map is past the client's bounds); ``silent``: the server said nothing for
    ``timeout`` seconds, so with several servers the next one is tried.
    """

    def __init__(self, reopen: bool, *, pause: bool = False, silent: bool = False) -> None:
        super().__init__()
        self.reopen = reopen
        self.pause = pause
        self.silent = silent


def _held_bytes(msg: KVMsg) -> int:
    """What a client holds for ``msg``: its key, uuid, properties and body."""
    props = sum(len(name) + len(value) + 2 for name, value in msg.properties.items())
    return len(msg.key) + len(msg.uuid) + props + len(msg.body)


class CloneClient(Service):
    """A CHP client: a local copy of the server's map (or of one subtree of it).

    Contract, when the whole map is followed (``subtree=b""``): the client applies
    updates strictly in sequence order, one after the other; updates at or below the
    sequence it holds are discarded (as CHP says); any jump in the sequence, including
    trailing losses revealed by a heartbeat that carries the server's sequence (the
    Guide's servers do, and :class:`CloneServer` with ``extensions``), is counted in
    ``stats.gaps`` and followed by a new snapshot. So once the network and the server
    behave for a few heartbeats, :attr:`state` equals the server's map.

    A restarted server is noticed only by what CHP allows, never by the uuid frame
    (CHP leaves it empty in KTHXBAI and HUGZ; the Guide's Python servers put a fresh
    random one in each): the sequence going back on the update stream (an update at or
    below one already seen on it, or a HUGZ with a non-zero sequence below it; and,
    once the messages queued before the snapshot are read and twice the snapshot's
    round trip has passed (at least 10 ms, at most two heartbeats), an update at or
    below the snapshot's sequence, or a HUGZ below it), a snapshot whose sequence is
    lower than the client's, or a silence: the
    server speaking again after more than two ``heartbeat`` intervals of silence makes
    the client take a new snapshot (``stats.stalls``), and a silence of ``timeout``
    seconds makes it reconnect, to the next server if it has several. (This replaces
    the client's earlier rule, a HUGZ uuid other than the snapshot's meaning a new
    server, which made every HUGZ of the Guide's servers a restart.) What it cannot
    see: a restart whose first updates arrive within that window after a snapshot and
    before any newer message, and whose sequences stay below the snapshot's, is taken
    for old updates (discarded) until the rule above applies; with CHP's HUGZ
    (sequence 0) a restarted server that publishes nothing is noticed only by the
    silence, if it lasted over two heartbeats; and, whatever the HUGZ, a restart
    within less than two heartbeats of silence whose updates were all sent before the
    client's SUB reconnected (a PUB drops what it sends before a subscriber joins),
    and whose sequence is back at the client's by then, shows nothing at all: the
    client keeps the old map until an update or a HUGZ shows a sequence out of order.

    With a narrower ``subtree`` the server's sequence numbers still count every key,
    so jumps are normal and are not treated as gaps: the client then applies any newer
    update (as the Guide's clone clients do) and relies on the other signals.

    With several servers (``backups``, the Guide's model 6 client), the client follows
    one at a time and moves to the next, in turn, when the current one is silent past
    ``timeout`` (its snapshot request unanswered, or no message on its update stream).

    Updates to the map: :meth:`set` sends a KVSET to every ``collector`` endpoint
    (CHP's PUB to the servers' collector SUB; with ``collector_kind=SocketKind.PUSH``,
    the Guide's model 5, a PUSH to each server's collector PULL); the value shows in
    :attr:`state` once the server has sequenced and published it.

    Servers that do not answer a snapshot request (the Guide's ``clonesrv5`` ignores
    one whose subtree is empty, which is what this client sends with ``subtree=b""``;
    CHP allows it) leave the client unsynced: each unanswered request counts in
    ``stats.unanswered_snapshots`` and ``stats.timeouts``, emits a ``timeout`` event,
    and is sent again on fresh sockets ``timeout`` seconds later, for as long as the
    client runs. Follow a non-empty ``subtree`` to use such a server. ``clonesrv5``
    sends no HUGZ either: an idle one looks dead after ``timeout`` seconds, so give
    the client a ``timeout`` longer than the server's quiet periods.

    Whatever the server sends, the client never raises out of :meth:`run` because of
    it: a message that is not CHP, a reserved key where it does not belong, a key
    outside ``subtree``, is counted (``stats.malformed``) and ignored. What it holds is
    bounded: a snapshot of more than ``max_keys`` messages or ``max_state_bytes`` bytes,
    or an update that would take the map past either, is refused (``stats.over_limit``);
    the client keeps its last map, unsynced, and asks for a new snapshot ``timeout``
    seconds later.

    Args:
        network: Where to make the sockets.
        snapshot: The (first) server's snapshot (ROUTER) endpoint.
        updates: The (first) server's update (PUB) endpoint.
        backups: More servers, as ``(snapshot, updates)`` endpoint pairs, tried in turn
            after the first (default: none).
        collector: The servers' collector endpoint(s), which :meth:`set` sends to
            (default None: :meth:`set` is refused).
        collector_kind: The socket kind :meth:`set` sends on: ``SocketKind.PUB`` (the
            default, 12/CHP, to a collector SUB: :class:`CloneServer`'s default) or
            ``SocketKind.PUSH`` (opt-in, the Guide's Clone model 5, to a collector
            PULL: ``clonesrv5``, or :class:`CloneServer` with
            ``collector_kind=SocketKind.PULL``). Both ends must agree. With PUSH, one
            socket per collector endpoint (a single PUSH would round-robin, and each
            server must see every update); see :meth:`set` for how each kind waits.
        subtree: Key prefix to follow (``b""``: the whole map).
        timeout: Seconds of silence after which the server is presumed dead; keep it
            several heartbeats long (the default suits the Guide's 1 s heartbeat). A
            snapshot request the DEALER cannot send within it (with ``immediate``, a
            snapshot endpoint nobody answers) counts as silence too.
        heartbeat: The servers' HUGZ interval in seconds (default the Guide's 1 s): a
            silence longer than twice this, once the server speaks again, makes the
            client take a new snapshot. With ``2 * heartbeat >= timeout`` only
            ``timeout`` applies.
        subscriber_options: Options of the SUB socket.
        snapshot_options: Options of the DEALER socket. Both connect, so neither is
            given a ``maxmsgsize`` (see :mod:`transportkit.patterns._limits`).
        publisher_options: Options of the collector PUB (or PUSH) socket(s).
        on_event: Called with a :class:`CloneEvent` for everything the client does.
        max_message_bytes: Largest message accepted from the server, all frames
            included (default 1 MiB; None: no limit).
        max_keys: Most keys held (default 1,000,000); also the most messages a
            snapshot may have.
        max_state_bytes: Most bytes of keys, uuids, properties and bodies held
            (default 1 GiB).
        max_properties_bytes: Largest properties frame accepted (default 4096).

    Raises:
        ValueError: ``timeout`` or ``heartbeat`` is not positive, a bound is not an
            int >= 1 (``max_message_bytes`` may be None), or ``collector_kind`` is
            neither PUB nor PUSH.
    """

    def __init__(
        self,
        network: Network,
        *,
        snapshot: str,
        updates: str,
        backups: Iterable[tuple[str, str]] = (),
        collector: str | Iterable[str] | None = None,
        collector_kind: SocketKind = SocketKind.PUB,
        subtree: bytes = b"",
        timeout: float = 5.0,
        heartbeat: float = 1.0,
        subscriber_options: SocketOptions | None = None,
        snapshot_options: SocketOptions | None = None,
        publisher_options: SocketOptions | None = None,
        on_event: Callable[[CloneEvent], None] | None = None,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
        max_keys: int = DEFAULT_CLIENT_MAX_KEYS,
        max_state_bytes: int = DEFAULT_CLIENT_MAX_STATE_BYTES,
        max_properties_bytes: int = DEFAULT_MAX_PROPERTIES_BYTES,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if not heartbeat > 0:
            raise ValueError(f"heartbeat must be > 0 seconds, got {heartbeat!r}")
        self.collector_kind = _check_kind(collector_kind, CLIENT_COLLECTOR_KINDS, "CloneClient")
        self.max_message_bytes = check_message_limit(max_message_bytes)
        self.max_keys = check_bound("max_keys", max_keys)
        self.max_state_bytes = check_bound("max_state_bytes", max_state_bytes)
        self.max_properties_bytes = check_bound("max_properties_bytes", max_properties_bytes)
        self._network = network
        self.servers: tuple[tuple[str, str], ...] = (
            (snapshot, updates),
            *((str(s), str(u)) for s, u in backups),
        )
        self._current = 0
        self.subtree = bytes(subtree)
        self.timeout = timeout
        self.heartbeat = heartbeat
        # Connecting sockets: no maxmsgsize (see patterns._limits), the check is here.
        self._sub_options = SocketOptions() if subscriber_options is None else subscriber_options
        self._dealer_options = SocketOptions() if snapshot_options is None else snapshot_options
        self._on_event = on_event
        # A pair's passive server following its peer: told of every message it takes,
        # and whether it came on the update stream (True) or in a snapshot (private).
        self._on_message: Callable[[KVMsg, bool], None] | None = None
        self.stats = CloneClientStats()
        self._messages: dict[bytes, KVMsg] = {}
        self._bytes = 0
        self._sequence = 0
        self._server_id: bytes | None = None
        self._synced = False
        self._restart_seen = False
        self._snapshot_rtt = 0.0
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._sockets: list[Subscriber | Dealer] = []
        self._nonce = f"{network.name}:{next(_clients)}:{network.time_ns()}"
        self._sets = itertools.count()
        self._senders: list[tuple[str, Sender]] = []
        if collector is None:
            pass
        elif self.collector_kind is SocketKind.PUSH:
            endpoints = [collector] if isinstance(collector, str) else list(collector)
            try:
                for endpoint in endpoints:
                    push = network.pusher(connect=endpoint, options=publisher_options)
                    self._senders.append((endpoint, push))
            except BaseException:
                for _, sock in self._senders:
                    sock.close()
                raise
        else:
            pub = network.publisher(connect=collector, options=publisher_options)
            self._senders.append((str(pub.last_endpoint), pub))
        self._has_collector = collector is not None

    @property
    def snapshot_endpoint(self) -> str:
        """The snapshot endpoint of the server followed now."""
        return self.servers[self._current][0]

    @property
    def updates_endpoint(self) -> str:
        """The update endpoint of the server followed now."""
        return self.servers[self._current][1]

    @property
    def server_index(self) -> int:
        """Which server is followed now: 0 is ``snapshot``/``updates``, then ``backups``."""
        return self._current

    @property
    def state(self) -> dict[bytes, bytes]:
        """A copy of the local map as key -> body."""
        return {key: msg.body for key, msg in self._messages.items()}

    @property
    def messages(self) -> dict[bytes, KVMsg]:
        """A copy of the local map as key -> latest message."""
        return dict(self._messages)

    @property
    def held_bytes(self) -> int:
        """Bytes of keys, uuids, properties and bodies in the local map."""
        return self._bytes

    @property
    def sequence(self) -> int:
        """The server sequence number the local map reflects."""
        return self._sequence

    @property
    def synced(self) -> bool:
        """Whether a snapshot was received and no resync is under way."""
        return self._synced

    @property
    def server_id(self) -> bytes | None:
        """The uuid frame of the last snapshot's KTHXBAI (None before one).

        Informational only: CHP leaves it empty, the Guide's servers fill it with a
        random value, :class:`CloneServer` with its ``instance_id``.
        """
        return self._server_id

    async def set(
        self,
        key: bytes,
        value: bytes,
        *,
        ttl: float | None = None,
        properties: Mapping[str, str] | None = None,
        uuid: bytes | None = None,
    ) -> bytes:
        """Send ``key`` -> ``value`` to the servers' collectors (a CHP KVSET).

        With ``collector_kind=SocketKind.PUB`` (the default) delivery is CHP's: a PUB
        never waits; it drops what it cannot send (before its connection to a
        collector is made, or at the collector's high-water mark) without telling.

        With ``collector_kind=SocketKind.PUSH`` the update is queued to each
        collector's PUSH socket in turn; nothing is dropped, so a copy waits while
        its socket cannot take it: up to ``sndhwm`` messages queue for a server that
        is not connected yet (delivered when it comes; lost if the client closes
        first), and past that, or at once with ``immediate``, the call waits for room.
        All the copies together wait at most ``timeout`` seconds (or less, per copy,
        with a ``sndtimeo`` in ``publisher_options``), then :class:`Timeout` is raised
        and counted (``stats.set_timeouts``): the collector named in it did not get
        the update, the copies queued before it stay queued. It never waits longer.

        Either way, to know an update landed, wait until ``messages[key].uuid`` is the
        returned uuid (:meth:`wait_for`).

        Args:
            key: The key (not empty, not reserved by CHP).
            value: The value; empty deletes the key.
            ttl: Seconds the server keeps the value before deleting it (the ``ttl``
                property); None: for ever.
            properties: More properties to send.
            uuid: The update's uuid (default: 16 bytes derived from this client's
                network name, its creation time and a counter).

        Returns:
            The update's uuid.

        Raises:
            StateError: The client has no ``collector``.
            ValueError: The key is empty or reserved, ``ttl`` is not a finite number
                >= 0, or a property cannot be encoded.
            Timeout: With PUSH only: a collector could not take the update within
                ``timeout`` seconds (no server connected with ``immediate``, or its
                queue full).
            ClosedError: The client is closed.
        """
        if not self._has_collector:
            raise StateError("this CloneClient has no collector endpoint to send to")
        key = bytes(key)
        if not is_data_key(key):
            raise ValueError(f"{key!r} cannot be a key (empty or reserved by CHP)")
        props = dict(properties or {})
        if ttl is not None:
            if not (math.isfinite(ttl) and ttl >= 0):
                raise ValueError(f"ttl must be a finite number >= 0, got {ttl!r}")
            props[TTL] = format_ttl(ttl) if ttl else "0"
        if uuid is None:
            seed = f"{self._nonce}:{next(self._sets)}".encode()
            uuid = hashlib.blake2b(seed, digest_size=16).digest()
        frames = KVMsg(key, 0, bytes(uuid), props, bytes(value)).encode()
        if self.collector_kind is SocketKind.PUSH:
            await self._push(frames)
        else:
            for _, pub in self._senders:
                await pub.send(frames)
        self.stats.sets += 1
        return bytes(uuid)

    async def _push(self, frames: list[bytes]) -> None:
        """Queue ``frames`` on every PUSH, all within ``timeout``; else Timeout."""
        waiting = ""
        try:
            async with asyncio.timeout(self.timeout):
                for endpoint, push in self._senders:
                    waiting = endpoint
                    try:
                        push.try_send(frames)
                    except WouldBlock:
                        await push.send(frames)
        except TimeoutError:  # transportkit's Timeout (``sndtimeo``) too
            self.stats.set_timeouts += 1
            limited(
                logger,
                logging.WARNING,
                "set_timeouts",
                "clone update not taken by the collector %s within %g s",
                waiting,
                self.timeout,
                extra={"endpoint": waiting, "counter": "set_timeouts"},
            )
            raise Timeout(
                f"clone update not taken by the PUSH to collector {waiting} within "
                f"{self.timeout} s (no server connected, or its queue full)"
            ) from None

    async def delete(self, key: bytes) -> bytes:
        """Delete ``key`` through the collectors; see :meth:`set`."""
        return await self.set(key, b"")

    async def wait_for(self, predicate: Callable[[CloneClient], bool], timeout: float) -> None:
        """Wait until ``predicate(self)`` holds (checked after every change).

        Raises:
            Timeout: It did not hold within ``timeout`` seconds.
        """

        async def watch() -> None:
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

        try:
            await wait_for(watch(), timeout)
        except TimeoutError as exc:
            raise Timeout(f"clone client condition not met within {timeout} s") from exc

    def start(self) -> None:
        """Start following the server in a background task. Idempotent."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        """Follow the servers until cancelled or closed: snapshot, updates, resyncs."""
        while not self._closing:
            sub = self._network.subscriber(
                connect=self.updates_endpoint,
                topics=(b"",) if not self.subtree else (self.subtree, HUGZ),
                options=self._sub_options,
            )
            dealer = self._network.dealer(
                connect=self.snapshot_endpoint, options=self._dealer_options
            )
            self._sockets = [sub, dealer]
            ended = _Resync(reopen=True)
            try:
                ended = await self._session(sub, dealer)
            except ClosedError:
                if self._closing:
                    return
                raise
            finally:
                sub.close()
                dealer.close()
                self._sockets = []
            self._synced = False
            if ended.silent and len(self.servers) > 1:
                self._current = (self._current + 1) % len(self.servers)
                self.stats.failovers += 1
                logger.warning(
                    "Clone server silent: switching to %s",
                    self.servers[self._current][0],
                    extra={"endpoint": self.servers[self._current][0], "counter": "failovers"},
                )
                self._emit(CloneEvent("failover", self._sequence, self._current))
            if ended.pause:
                await asyncio.sleep(self.timeout)

    async def _session(self, sub: Subscriber, dealer: Dealer) -> _Resync:
        """Snapshot and follow until fresh sockets are needed; says why."""
        # Subscribe first; a message (at worst a HUGZ) proves the subscription is live,
        # so nothing published after the snapshot can miss us.
        if not await sub.poll(self.timeout):
            self._silence()
            return _Resync(reopen=True, silent=True)
        while True:
            try:
                await self._take_snapshot(dealer)
                await self._follow(sub)
            except _Resync as resync:
                self._synced = False
                if resync.reopen:
                    return resync

    def _decode(self, frames: Message) -> KVMsg | None:
        """The CHP message ``frames`` is, or None (counted) if it is bad or too big."""
        if too_large(frames, self.max_message_bytes) or (
            len(frames) == 5 and len(frames[3]) > self.max_properties_bytes
        ):
            self._over_limit()
            return None
        try:
            return KVMsg.decode(frames)
        except ProtocolError:
            self._bad()
            return None

    def _is_data_key(self, key: bytes) -> bool:
        return is_data_key(key) and key.startswith(self.subtree)

    async def _take_snapshot(self, dealer: Dealer) -> None:
        # A DEALER waits to send while it has no pipe that takes the message: with
        # ``immediate`` before the connection is made (for ever, if the server is
        # gone), or at its HWM. That wait is silence too: bounded by ``timeout``.
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                await dealer.send([ICANHAZ, self.subtree])
        except TimeoutError:  # transportkit's Timeout (``sndtimeo``) too
            self._silence()
            raise _Resync(reopen=True, silent=True) from None
        asked = loop.time()
        answered = False
        received: dict[bytes, KVMsg] = {}
        count = size = 0
        while True:
            try:
                frames = await dealer.recv(timeout=self.timeout)
            except Timeout:
                if not answered:
                    self.stats.unanswered_snapshots += 1
                self._silence()
                raise _Resync(reopen=True, silent=True) from None
            answered = True
            msg = self._decode(frames)
            if msg is None:
                continue
            if msg.key == KTHXBAI:
                break
            if not self._is_data_key(msg.key):
                self._bad()
                continue
            old = received.get(msg.key)
            size += _held_bytes(msg) - (0 if old is None else _held_bytes(old))
            received[msg.key] = msg
            count += 1
            if count > self.max_keys or size > self.max_state_bytes:
                self._over_limit()
                raise _Resync(reopen=True, pause=True)
        if msg.body != self.subtree or (
            msg.properties.get("count", str(len(received))) != str(len(received))
        ):
            self._bad()
            raise _Resync(reopen=True)
        if self.stats.snapshots:
            self.stats.resyncs += 1
            logger.info(
                "Clone resnapshot from %s: %d keys at sequence %d",
                self.servers[self._current][0],
                len(received),
                msg.sequence,
                extra={"endpoint": self.servers[self._current][0], "counter": "resyncs"},
            )
            if msg.sequence < self._sequence and not self._restart_seen:
                self._restart(msg.sequence)  # a server whose sequence began again
        self._restart_seen = False
        self.stats.snapshots += 1
        self._messages = {k: m for k, m in received.items() if m.body}
        self._bytes = sum(_held_bytes(m) for m in self._messages.values())
        self._sequence = msg.sequence
        self._server_id = msg.uuid
        self._synced = True
        self._snapshot_rtt = loop.time() - asked
        if self._on_message is not None:
            for m in self._messages.values():
                self._on_message(m, False)
            self._on_message(msg, False)
        self._emit(CloneEvent("snapshot", msg.sequence))

    async def _next(self, sub: Subscriber) -> Message:
        """The next message on the update stream; a silence raises :class:`_Resync`.

        Silence past ``timeout``: reconnect (to the next server, with several). The
        server speaking again after more than two heartbeats of silence: it may have
        restarted in between, so take a new snapshot.
        """
        stall = 2 * self.heartbeat
        first = min(stall, self.timeout)
        try:
            return await sub.recv(timeout=first)
        except Timeout:
            if first >= self.timeout:
                self._silence()
                raise _Resync(reopen=True, silent=True) from None
        try:
            await sub.recv(timeout=self.timeout - first)
        except Timeout:
            self._silence()
            raise _Resync(reopen=True, silent=True) from None
        self.stats.stalls += 1
        logger.info(
            "Clone updates stalled at sequence %d: resnapshot",
            self._sequence,
            extra={"counter": "stalls"},
        )
        self._emit(CloneEvent("stall", self._sequence))
        raise _Resync(reopen=False)

    async def _follow(self, sub: Subscriber) -> None:
        loop = asyncio.get_running_loop()
        exact = not self.subtree
        last: int | None = None  # the highest sequence seen on the stream since the snapshot
        # Messages at or below the snapshot's sequence are old ones, published before
        # it, while the client reads what was queued before the snapshot and for twice
        # the snapshot's round trip after it (what was still on the way: at least 10 ms,
        # at most two heartbeats); past that they mean the server's sequence began again.
        window = min(max(2 * self._snapshot_rtt, 0.01), 2 * self.heartbeat, self.timeout)
        backlog_until = loop.time() + window
        drained = False
        while True:
            frames = sub.try_recv()
            if frames is None:
                drained = True
                frames = await self._next(sub)
            settled = drained and loop.time() >= backlog_until
            msg = self._decode(frames)
            if msg is None:
                continue
            if msg.key == HUGZ:
                if msg.properties or msg.body:
                    self._bad()
                    continue
                self.stats.heartbeats += 1
                if not msg.sequence:
                    continue  # CHP's HUGZ: a sign of life, no sequence
                if (last is not None and msg.sequence < last) or (
                    settled and msg.sequence < self._sequence
                ):
                    self._restart(msg.sequence)
                last = msg.sequence
                if exact and msg.sequence > self._sequence:
                    self._gap(msg.sequence)
                continue
            if not self._is_data_key(msg.key):
                self._bad()
                continue
            if (last is not None and msg.sequence <= last) or (
                settled and msg.sequence <= self._sequence
            ):
                self._restart(msg.sequence)
            last = msg.sequence
            if msg.sequence <= self._sequence:
                self.stats.discarded += 1
                self._emit(CloneEvent("discard", msg.sequence))
                continue
            if exact and msg.sequence != self._sequence + 1:
                self._gap(msg.sequence)
            self._apply(msg)

    def _apply(self, msg: KVMsg) -> None:
        old = self._messages.get(msg.key)
        size = self._bytes - (0 if old is None else _held_bytes(old))
        keys = len(self._messages) - (old is not None)
        if msg.body:
            size += _held_bytes(msg)
            keys += 1
        if keys > self.max_keys or size > self.max_state_bytes:
            self._over_limit()
            raise _Resync(reopen=True, pause=True)
        if msg.body:
            self._messages[msg.key] = msg
        else:
            self._messages.pop(msg.key, None)
        self._bytes = size
        self._sequence = msg.sequence
        self.stats.updates += 1
        if self._on_message is not None:
            self._on_message(msg, True)
        self._emit(CloneEvent("apply", msg.sequence))

    def _restart(self, received: int) -> None:
        """The server's sequence went back: it restarted. Resync on fresh sockets."""
        self.stats.restarts += 1
        logger.info(
            "Clone server restarted (sequence %d after %d): resnapshot",
            received,
            self._sequence,
            extra={"counter": "restarts"},
        )
        self._restart_seen = True
        self._emit(CloneEvent("restart", received, self._sequence))
        raise _Resync(reopen=True)

    def _gap(self, received: int) -> None:
        self.stats.gaps += 1
        logger.info(
            "Clone update gap (sequence %d, expected %d): resnapshot",
            received,
            self._sequence + 1,
            extra={"counter": "gaps"},
        )
        self._emit(CloneEvent("gap", received, self._sequence + 1))
        raise _Resync(reopen=False)

    def _silence(self) -> None:
        self.stats.timeouts += 1
        logger.warning(
            "Clone server %s silent for %g s: resnapshot",
            self.servers[self._current][0],
            self.timeout,
            extra={"endpoint": self.servers[self._current][0], "counter": "timeouts"},
        )
        self._emit(CloneEvent("timeout", self._sequence))

    def _bad(self) -> None:
        self.stats.bad_messages += 1
        self.stats.malformed += 1
        limited(
            logger,
            logging.WARNING,
            "malformed",
            "malformed message from the Clone server %s: %s",
            self.servers[self._current][0],
            "not a valid 12/CHP message here",
            extra={
                "endpoint": self.servers[self._current][0],
                "reason": "not a valid 12/CHP message here",
                "counter": "malformed",
            },
        )
        self._emit(CloneEvent("bad", self._sequence))

    def _over_limit(self) -> None:
        self.stats.over_limit += 1
        limited(
            logger,
            logging.WARNING,
            "over_limit",
            "Clone map over max_keys (%d) or max_state_bytes (%d): resnapshot after a pause",
            self.max_keys,
            self.max_state_bytes,
            extra={"reason": "map too large", "counter": "over_limit"},
        )
        self._emit(CloneEvent("over_limit", self._sequence))

    def _emit(self, event: CloneEvent) -> None:
        self._changed.set()
        if self._on_event is not None:
            self._on_event(event)

    async def close(self) -> None:
        """Stop following and close the sockets. Idempotent."""
        self._closing = True
        task, self._task = self._task, None
        for sock in self._sockets:
            sock.close()
        self._sockets = []
        for _, sender in self._senders:
            sender.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


logger = logging.getLogger(__name__)

__all__ = [
    "CLIENT_COLLECTOR_KINDS",
    "DEFAULT_CLIENT_MAX_KEYS",
    "DEFAULT_CLIENT_MAX_STATE_BYTES",
    "CloneClient",
    "CloneClientStats",
    "CloneEvent",
]
