"""Clone (ZeroMQ RFC 13/CHP, Guide chapter 5): a key-value map shared from one server.

The server owns a map of byte keys to byte values (for market data, a last-value cache
of ``MARKET.<symbol>`` -> serialized ``MarketData``; the pattern itself is generic over
bytes). Every change gets the next sequence number and is published; a client
subscribes first, then asks for a snapshot of the map, and from then on applies the
published changes strictly in sequence order. A sequence jump means it missed a change
(high-water-mark drops, a broken connection), so it takes a new snapshot; silence
longer than its timeout means the server is gone, so it reconnects and does the same.

Wire format (CHP): a key-value message is five frames
``[key][sequence][uuid][properties][body]``, the sequence an unsigned 64-bit integer in
network byte order, the properties ``name=value`` lines each ending in a newline, an
empty body meaning "delete the key".

- Updates go out on the PUB socket, frame 0 (the key) being the topic.
- A snapshot request to the ROUTER is ``[ICANHAZ?][subtree]``; the answer is one
  key-value message per key under ``subtree`` followed by
  ``[KTHXBAI][sequence][server id][count=N][subtree]``, where ``sequence`` is the
  sequence number the snapshot reflects.
- ``[HUGZ][sequence][server id][][]`` is published every ``heartbeat`` seconds, so
  clients can tell a quiet server from a dead one, and notice trailing losses.

Two additions stay within the frame layout: KTHXBAI and HUGZ carry the server's
instance id in their uuid frame (a restarted server starts its sequence again, and
clients must be able to tell), and KTHXBAI's ``count`` property lets a client check
that no snapshot message was lost.

Parsing is exact: a sequence frame of 8 bytes, properties that are UTF-8 lines each
``name=value`` and each ending in a newline, no name twice; a message that is not CHP
(or a reserved key where it does not belong) is counted as malformed and ignored, on
the server and the client alike.

Bounds (see :mod:`transportkit.patterns._limits`). The server serves snapshots side by
side, each in its own task, so a client that reads slowly or not at all never delays
another's; at most ``max_snapshots`` are in progress and ``max_pending_snapshots`` wait,
one per client, and a request past that is refused and counted (the client retries
after its timeout). Requests are at most ``max_message_bytes`` (default 1 MiB, also the
ROUTER's ``maxmsgsize``) with a subtree of at most ``max_subtree_bytes``. The client
holds at most ``max_keys`` keys and ``max_state_bytes`` bytes: a server whose map is
larger cannot be followed, which the client counts and retries after ``timeout``
seconds. The map itself is what the application :meth:`~CloneServer.set`: it takes no
updates from the network (the Guide's collector socket is not implemented).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import math
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from transportkit._closing import Service
from transportkit._errors import ClosedError, ProtocolError, Timeout
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._socket import Dealer, Message, Subscriber
from transportkit._timeouts import wait_for
from transportkit.patterns._limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    bounded_options,
    check_bound,
    check_finite_hwm,
    check_message_limit,
    too_large,
)
from transportkit.patterns._serving import SnapshotSender

__all__ = [
    "DEFAULT_CLIENT_MAX_KEYS",
    "DEFAULT_CLIENT_MAX_STATE_BYTES",
    "DEFAULT_MAX_PENDING_SNAPSHOTS",
    "DEFAULT_MAX_PROPERTIES_BYTES",
    "DEFAULT_MAX_SNAPSHOTS",
    "DEFAULT_MAX_SUBTREE_BYTES",
    "HUGZ",
    "ICANHAZ",
    "KTHXBAI",
    "CloneClient",
    "CloneClientStats",
    "CloneEvent",
    "CloneServer",
    "CloneServerStats",
    "KVMsg",
]

ICANHAZ: Final = b"ICANHAZ?"
"""Frame 0 of a snapshot request."""
KTHXBAI: Final = b"KTHXBAI"
"""Key of the message that ends a snapshot."""
HUGZ: Final = b"HUGZ"
"""Key of the server's heartbeat."""

_SEQUENCE: Final = struct.Struct("!Q")
_RESERVED: Final = frozenset({HUGZ, KTHXBAI, ICANHAZ})
_instances = itertools.count()


@dataclass(frozen=True, slots=True)
class KVMsg:
    """One key-value message of CHP.

    Attributes:
        key: The key (and the PUB topic); for market data ``MARKET.<symbol>``.
        sequence: The server's sequence number of this change (0 before it is set).
        uuid: An identifier of the change chosen by its author; may be empty.
        properties: Text properties (names without ``=`` or newlines, values without
            newlines).
        body: The value; empty means the key was deleted.
    """

    key: bytes
    sequence: int = 0
    uuid: bytes = b""
    properties: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def encode(self) -> list[bytes]:
        """The five frames of this message.

        Raises:
            ValueError: The sequence does not fit in 64 unsigned bits, or a property
                name or value cannot be encoded.
        """
        if not 0 <= self.sequence < 2**64:
            raise ValueError(f"sequence must fit in 64 unsigned bits, got {self.sequence}")
        lines = []
        for name, value in self.properties.items():
            if not name or "=" in name or "\n" in name or "\n" in value:
                raise ValueError(f"property {name!r}={value!r} cannot be encoded")
            lines.append(f"{name}={value}\n")
        return [
            bytes(self.key),
            _SEQUENCE.pack(self.sequence),
            bytes(self.uuid),
            "".join(lines).encode(),
            bytes(self.body),
        ]

    @classmethod
    def decode(cls, frames: Sequence[bytes]) -> KVMsg:
        """Parse the five frames of a key-value message, exactly.

        Raises:
            ProtocolError: Not five frames; a sequence frame that is not 8 bytes; or a
                properties frame that is not UTF-8, or not a series of ``name=value``
                lines with a non-empty name, each ending in a newline, no name twice.
        """
        if len(frames) != 5:
            raise ProtocolError(f"a CHP key-value message has 5 frames, got {len(frames)}")
        key, seq, uuid, props, body = frames
        if len(seq) != _SEQUENCE.size:
            raise ProtocolError(f"CHP sequence frame must be 8 bytes, got {len(seq)}")
        (sequence,) = _SEQUENCE.unpack(seq)
        return cls(bytes(key), sequence, bytes(uuid), _decode_properties(props), bytes(body))


def _decode_properties(frame: bytes) -> dict[str, str]:
    properties: dict[str, str] = {}
    if not frame:
        return properties
    if not frame.endswith(b"\n"):
        raise ProtocolError(f"CHP properties must end in a newline: {frame[-40:]!r}")
    try:
        text = bytes(frame).decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"CHP properties are not UTF-8: {frame[:40]!r}") from exc
    for line in text[:-1].split("\n"):
        name, sep, value = line.partition("=")
        if not sep or not name:
            raise ProtocolError(f"CHP property line {line[:40]!r} is not name=value")
        if name in properties:
            raise ProtocolError(f"CHP property {name[:40]!r} appears twice")
        properties[name] = value
    return properties


DEFAULT_MAX_SNAPSHOTS: Final = 16
"""Snapshots a :class:`CloneServer` sends at once by default."""
DEFAULT_MAX_PENDING_SNAPSHOTS: Final = 256
"""Snapshot requests a :class:`CloneServer` keeps waiting by default (a restart herd)."""
DEFAULT_MAX_SUBTREE_BYTES: Final = 1024
"""The longest subtree a :class:`CloneServer` accepts in a request by default."""


@dataclass(slots=True)
class CloneServerStats:
    """Counters of a :class:`CloneServer`.

    Attributes:
        updates: Changes published.
        heartbeats: HUGZ published.
        snapshots: Snapshots sent completely.
        snapshot_failures: Snapshots abandoned (the client vanished, or stayed at its
            high-water mark past the snapshot timeout).
        bad_requests: Malformed snapshot requests ignored.
        malformed: Messages that followed no protocol, dropped (here the same as
            ``bad_requests``).
        over_limit: Requests refused by a bound: larger than ``max_message_bytes``, a
            subtree longer than ``max_subtree_bytes``, or ``snapshots_refused``.
        snapshots_refused: Snapshot requests refused because ``max_snapshots`` were in
            progress and ``max_pending_snapshots`` waiting, or because the client
            already had one in progress or waiting.
    """

    updates: int = 0
    heartbeats: int = 0
    snapshots: int = 0
    snapshot_failures: int = 0
    bad_requests: int = 0
    malformed: int = 0
    over_limit: int = 0
    snapshots_refused: int = 0


class CloneServer(Service):
    """The CHP server: publishes every change of its map, serves snapshots, heartbeats.

    The sockets are bound by the constructor; :meth:`start` (or ``async with``) starts
    the snapshot service and the heartbeat. Changes made with :meth:`set` before that
    are kept and published all the same.

    Snapshots are sent side by side, each at its client's pace (see the module
    docstring): one that waits on a client never delays another client, the updates
    or the heartbeats. A snapshot is the map as it is when the snapshot starts.

    Args:
        network: Where to make the sockets.
        publisher: Endpoint(s) the PUB socket binds for updates and heartbeats.
        snapshot: Endpoint(s) the ROUTER socket binds for snapshot requests.
        heartbeat: Seconds between HUGZ (the Guide's 1 s).
        snapshot_timeout: Seconds a snapshot may wait on a client at its high-water
            mark (without the client reading anything) before the server gives up on
            that snapshot; a client that keeps reading gets the whole snapshot however
            long it takes.
        publisher_options: Options of the PUB socket (a small ``sndhwm`` makes slow
            clients lose updates, which they detect as gaps; 0 is refused).
        snapshot_options: Options of the ROUTER socket (``router_mandatory`` is forced
            on so that a snapshot is never silently truncated; ``maxmsgsize`` defaults
            to ``max_message_bytes``; a 0 ``sndhwm`` or ``rcvhwm`` is refused).
        instance_id: Identifies this run of the server to clients; by default derived
            from the network's name and clock, so a restart gets a new one.
        max_message_bytes: Largest snapshot request accepted, all frames included
            (default 1 MiB; None: no limit); larger ones are dropped and counted.
        max_snapshots: Snapshots in progress at once (default 16).
        max_pending_snapshots: Requests kept waiting, first come first served, while
            ``max_snapshots`` are in progress (default 256). Past both, a request is
            refused and counted; so is a second request from a client whose first is
            still in progress or waiting.
        max_subtree_bytes: Longest subtree a request may ask for (default 1024);
            longer ones are dropped and counted.

    Raises:
        ValueError: A duration is not positive, a bound is not an int >= 1 (for
            ``max_pending_snapshots``, >= 0; ``max_message_bytes`` may be None), or a
            high-water mark is 0.
        TransportError: Binding failed (nothing is left open).
    """

    def __init__(
        self,
        network: Network,
        *,
        publisher: str | Iterable[str],
        snapshot: str | Iterable[str],
        heartbeat: float = 1.0,
        snapshot_timeout: float = 5.0,
        publisher_options: SocketOptions | None = None,
        snapshot_options: SocketOptions | None = None,
        instance_id: bytes | None = None,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
        max_snapshots: int = DEFAULT_MAX_SNAPSHOTS,
        max_pending_snapshots: int = DEFAULT_MAX_PENDING_SNAPSHOTS,
        max_subtree_bytes: int = DEFAULT_MAX_SUBTREE_BYTES,
    ) -> None:
        if not heartbeat > 0:
            raise ValueError(f"heartbeat must be > 0 seconds, got {heartbeat!r}")
        if not snapshot_timeout > 0:
            raise ValueError(f"snapshot_timeout must be > 0 seconds, got {snapshot_timeout!r}")
        self.max_message_bytes = check_message_limit(max_message_bytes)
        self.max_subtree_bytes = check_bound("max_subtree_bytes", max_subtree_bytes)
        check_bound("max_snapshots", max_snapshots)
        check_bound("max_pending_snapshots", max_pending_snapshots, minimum=0)
        pub_options = publisher_options or SocketOptions()
        check_finite_hwm(pub_options, "CloneServer publisher", "sndhwm")
        router_options = bounded_options(snapshot_options, self.max_message_bytes).replace(
            router_mandatory=True
        )
        check_finite_hwm(router_options, "CloneServer snapshot ROUTER", "sndhwm", "rcvhwm")
        self.heartbeat = heartbeat
        self.snapshot_timeout = snapshot_timeout
        self.stats = CloneServerStats()
        self._state: dict[bytes, KVMsg] = {}
        self._sequence = 0
        self._task: asyncio.Task[None] | None = None
        if instance_id is None:
            seed = f"{network.name}:{network.time_ns()}:{next(_instances)}".encode()
            instance_id = hashlib.blake2b(seed, digest_size=8).digest()
        self.instance_id = instance_id
        self._publisher = network.publisher(bind=publisher, options=pub_options)
        try:
            self._router = network.router(bind=snapshot, options=router_options)
        except BaseException:
            self._publisher.close()
            raise
        self._snapshots = SnapshotSender(
            self._router,
            max_active=max_snapshots,
            max_pending=max_pending_snapshots,
            stall_timeout=snapshot_timeout,
            on_done=self._snapshot_done,
        )
        self.publisher_endpoint = self._publisher.last_endpoint
        self.snapshot_endpoint = self._router.last_endpoint

    @property
    def sequence(self) -> int:
        """The sequence number of the latest change (0 before any)."""
        return self._sequence

    @property
    def state(self) -> dict[bytes, KVMsg]:
        """A copy of the map: key -> its latest message (deleted keys are absent)."""
        return dict(self._state)

    @property
    def values(self) -> dict[bytes, bytes]:
        """A copy of the map as key -> body."""
        return {key: msg.body for key, msg in self._state.items()}

    @property
    def publisher_dropped(self) -> int | None:
        """Updates the PUB socket dropped at a client's HWM, where the backend knows."""
        return self._publisher.stats.dropped

    @property
    def snapshots_in_progress(self) -> int:
        """Snapshots being sent now."""
        return self._snapshots.active

    @property
    def snapshots_pending(self) -> int:
        """Snapshot requests waiting for one of the ``max_snapshots`` places."""
        return self._snapshots.pending

    async def set(
        self,
        key: bytes,
        body: bytes,
        *,
        properties: Mapping[str, str] | None = None,
        uuid: bytes = b"",
    ) -> KVMsg:
        """Store ``key`` -> ``body`` under the next sequence number and publish it.

        An empty ``body`` deletes the key (and is published, so clients delete it too).
        The map is the application's: nothing here bounds what it stores.

        Returns:
            The message as stored and published.

        Raises:
            ValueError: ``key`` is empty or is one of the protocol's reserved keys.
            ClosedError: The server is closed.
        """
        key = bytes(key)
        if not key or key in _RESERVED:
            raise ValueError(f"{key!r} cannot be a key (empty or reserved by CHP)")
        self._sequence += 1
        msg = KVMsg(key, self._sequence, bytes(uuid), dict(properties or {}), bytes(body))
        if msg.body:
            self._state[key] = msg
        else:
            self._state.pop(key, None)
        await self._publisher.send(msg.encode())
        self.stats.updates += 1
        return msg

    async def delete(self, key: bytes) -> KVMsg:
        """Delete ``key`` (publish an empty body); see :meth:`set`."""
        return await self.set(key, b"")

    def start(self) -> None:
        """Start serving snapshots and heartbeats in a background task. Idempotent."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        """Serve snapshots and publish heartbeats until cancelled or closed."""
        beats = asyncio.ensure_future(self._heartbeats())
        try:
            await self._serve_snapshots()
        except ClosedError:
            pass
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClosedError):
                await beats
            await self._snapshots.aclose()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            hugz = KVMsg(HUGZ, self._sequence, self.instance_id)
            await self._publisher.send(hugz.encode())
            self.stats.heartbeats += 1

    async def _serve_snapshots(self) -> None:
        router = self._router
        while True:
            self._request(await router.recv(timeout=math.inf))

    def _request(self, request: Message) -> None:
        stats = self.stats
        if too_large(request[1:], self.max_message_bytes):
            stats.over_limit += 1
            return
        if len(request) != 3 or request[1] != ICANHAZ:
            stats.bad_requests += 1
            stats.malformed += 1
            return
        identity, subtree = request[0], request[2]
        if len(subtree) > self.max_subtree_bytes:
            stats.over_limit += 1
            return
        if not self._snapshots.submit(identity, functools.partial(self._snapshot, subtree)):
            stats.snapshots_refused += 1
            stats.over_limit += 1

    def _snapshot(self, subtree: bytes) -> Iterator[list[bytes]]:
        """The messages of a snapshot of ``subtree``, as the map is now."""
        entries = [msg for key, msg in self._state.items() if key.startswith(subtree)]
        count = {"count": str(len(entries))}
        end = KVMsg(KTHXBAI, self._sequence, self.instance_id, count, subtree)
        return itertools.chain((msg.encode() for msg in entries), (end.encode(),))

    def _snapshot_done(self, complete: bool) -> None:
        if complete:
            self.stats.snapshots += 1
        else:
            self.stats.snapshot_failures += 1

    async def close(self) -> None:
        """Stop the background task and close the sockets. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._snapshots.aclose()
        self._router.close()
        self._publisher.close()


DEFAULT_CLIENT_MAX_KEYS: Final = 1_000_000
"""Keys a :class:`CloneClient` holds at most by default."""
DEFAULT_CLIENT_MAX_STATE_BYTES: Final = 1 << 30
"""Bytes of keys, uuids, properties and bodies a :class:`CloneClient` holds by default."""
DEFAULT_MAX_PROPERTIES_BYTES: Final = 4096
"""The largest properties frame a :class:`CloneClient` accepts by default."""


@dataclass(frozen=True, slots=True)
class CloneEvent:
    """Something a :class:`CloneClient` did, for tests and logs.

    Attributes:
        kind: ``snapshot`` (``sequence`` is the snapshot's), ``apply`` and ``discard``
            (an update's sequence), ``gap`` (``sequence`` is the one received,
            ``expected`` the one due), ``timeout`` (silence), ``restart`` (a new server
            instance was seen), ``bad`` (a malformed message was ignored),
            ``over_limit`` (a message, or the server's map, was past a bound).
        sequence: See ``kind``.
        expected: For ``gap``, the sequence number that should have come next.
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
        restarts: Times a new server instance was noticed.
        heartbeats: HUGZ received.
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
    restarts: int = 0
    heartbeats: int = 0
    bad_messages: int = 0
    malformed: int = 0
    over_limit: int = 0


class _Resync(Exception):
    """The session must take a new snapshot.

    ``reopen`` also makes fresh sockets, after ``timeout`` seconds if ``pause`` (the
    server's map is past the client's bounds).
    """

    def __init__(self, reopen: bool, *, pause: bool = False) -> None:
        super().__init__()
        self.reopen = reopen
        self.pause = pause


def _held_bytes(msg: KVMsg) -> int:
    """What a client holds for ``msg``: its key, uuid, properties and body."""
    props = sum(len(name) + len(value) + 2 for name, value in msg.properties.items())
    return len(msg.key) + len(msg.uuid) + props + len(msg.body)


class CloneClient(Service):
    """A CHP client: a local copy of the server's map (or of one subtree of it).

    Contract, when the whole map is followed (``subtree=b""``): the client applies
    updates strictly in sequence order, one after the other; updates at or below the
    sequence it holds are discarded; any jump in the sequence, including trailing losses
    revealed by a heartbeat, is counted in ``stats.gaps`` and followed by a new
    snapshot; server silence longer than ``timeout`` (no update, no HUGZ) or a new
    server instance makes it reconnect and take a new snapshot. So once the network
    and the server behave for a few heartbeats, :attr:`state` equals the server's map.

    With a narrower ``subtree`` the server's sequence numbers still count every key,
    so jumps are normal and are not treated as gaps: the client then applies any newer
    update (as the Guide's clone clients do) and relies on silence detection only.

    Whatever the server sends, the client never raises out of :meth:`run` because of
    it: a message that is not CHP, a reserved key where it does not belong, a key
    outside ``subtree``, is counted (``stats.malformed``) and ignored. What it holds is
    bounded: a snapshot of more than ``max_keys`` messages or ``max_state_bytes`` bytes,
    or an update that would take the map past either, is refused (``stats.over_limit``);
    the client keeps its last map, unsynced, and asks for a new snapshot ``timeout``
    seconds later.

    Args:
        network: Where to make the sockets.
        snapshot: The server's snapshot (ROUTER) endpoint.
        updates: The server's update (PUB) endpoint.
        subtree: Key prefix to follow (``b""``: the whole map).
        timeout: Seconds of silence after which the server is presumed dead; keep it
            several heartbeats long (the default suits the Guide's 1 s heartbeat). A
            snapshot request the DEALER cannot send within it (with ``immediate``, a
            snapshot endpoint nobody answers) counts as silence too.
        subscriber_options: Options of the SUB socket.
        snapshot_options: Options of the DEALER socket. Both connect, so neither is
            given a ``maxmsgsize`` (see :mod:`transportkit.patterns._limits`).
        on_event: Called with a :class:`CloneEvent` for everything the client does.
        max_message_bytes: Largest message accepted from the server, all frames
            included (default 1 MiB; None: no limit).
        max_keys: Most keys held (default 1,000,000); also the most messages a
            snapshot may have.
        max_state_bytes: Most bytes of keys, uuids, properties and bodies held
            (default 1 GiB).
        max_properties_bytes: Largest properties frame accepted (default 4096).

    Raises:
        ValueError: ``timeout`` is not positive, or a bound is not an int >= 1
            (``max_message_bytes`` may be None).
    """

    def __init__(
        self,
        network: Network,
        *,
        snapshot: str,
        updates: str,
        subtree: bytes = b"",
        timeout: float = 5.0,
        subscriber_options: SocketOptions | None = None,
        snapshot_options: SocketOptions | None = None,
        on_event: Callable[[CloneEvent], None] | None = None,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
        max_keys: int = DEFAULT_CLIENT_MAX_KEYS,
        max_state_bytes: int = DEFAULT_CLIENT_MAX_STATE_BYTES,
        max_properties_bytes: int = DEFAULT_MAX_PROPERTIES_BYTES,
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.max_message_bytes = check_message_limit(max_message_bytes)
        self.max_keys = check_bound("max_keys", max_keys)
        self.max_state_bytes = check_bound("max_state_bytes", max_state_bytes)
        self.max_properties_bytes = check_bound("max_properties_bytes", max_properties_bytes)
        self._network = network
        self.snapshot_endpoint = snapshot
        self.updates_endpoint = updates
        self.subtree = bytes(subtree)
        self.timeout = timeout
        # Connecting sockets: no maxmsgsize (see patterns._limits), the check is here.
        self._sub_options = SocketOptions() if subscriber_options is None else subscriber_options
        self._dealer_options = SocketOptions() if snapshot_options is None else snapshot_options
        self._on_event = on_event
        self.stats = CloneClientStats()
        self._messages: dict[bytes, KVMsg] = {}
        self._bytes = 0
        self._sequence = 0
        self._server_id: bytes | None = None
        self._synced = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._sockets: list[Subscriber | Dealer] = []

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
        """The instance id of the server the current snapshot came from."""
        return self._server_id

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
        """Follow the server until cancelled or closed: snapshot, updates, resyncs."""
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
            pause = False
            try:
                pause = await self._session(sub, dealer)
            except ClosedError:
                if self._closing:
                    return
                raise
            finally:
                sub.close()
                dealer.close()
                self._sockets = []
            self._synced = False
            if pause:
                await asyncio.sleep(self.timeout)

    async def _session(self, sub: Subscriber, dealer: Dealer) -> bool:
        """Snapshot and follow until fresh sockets are needed; True: wait first."""
        # Subscribe first; a message (at worst a HUGZ) proves the subscription is live,
        # so nothing published after the snapshot can miss us.
        if not await sub.poll(self.timeout):
            self._silence()
            return False
        while True:
            try:
                await self._take_snapshot(dealer)
                await self._follow(sub)
            except _Resync as resync:
                self._synced = False
                if resync.reopen:
                    return resync.pause

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
        return bool(key) and key not in _RESERVED and key.startswith(self.subtree)

    async def _take_snapshot(self, dealer: Dealer) -> None:
        # A DEALER waits to send while it has no pipe that takes the message: with
        # ``immediate`` before the connection is made (for ever, if the server is
        # gone), or at its HWM. That wait is silence too: bounded by ``timeout``.
        try:
            async with asyncio.timeout(self.timeout):
                await dealer.send([ICANHAZ, self.subtree])
        except TimeoutError:  # transportkit's Timeout (``sndtimeo``) too
            self._silence()
            raise _Resync(reopen=True) from None
        received: dict[bytes, KVMsg] = {}
        count = size = 0
        while True:
            try:
                frames = await dealer.recv(timeout=self.timeout)
            except Timeout:
                self._silence()
                raise _Resync(reopen=True) from None
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
        self.stats.snapshots += 1
        self._messages = {k: m for k, m in received.items() if m.body}
        self._bytes = sum(_held_bytes(m) for m in self._messages.values())
        self._sequence = msg.sequence
        self._server_id = msg.uuid
        self._synced = True
        self._emit(CloneEvent("snapshot", msg.sequence))

    async def _follow(self, sub: Subscriber) -> None:
        exact = not self.subtree
        while True:
            try:
                frames = await sub.recv(timeout=self.timeout)
            except Timeout:
                self._silence()
                raise _Resync(reopen=True) from None
            msg = self._decode(frames)
            if msg is None:
                continue
            if msg.key == HUGZ:
                if msg.properties or msg.body:
                    self._bad()
                    continue
                self.stats.heartbeats += 1
                if msg.uuid != self._server_id:
                    self.stats.restarts += 1
                    self._emit(CloneEvent("restart", msg.sequence))
                    raise _Resync(reopen=True)
                if exact and msg.sequence > self._sequence:
                    self._gap(msg.sequence)
                continue
            if not self._is_data_key(msg.key):
                self._bad()
                continue
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
        self._emit(CloneEvent("apply", msg.sequence))

    def _gap(self, received: int) -> None:
        self.stats.gaps += 1
        self._emit(CloneEvent("gap", received, self._sequence + 1))
        raise _Resync(reopen=False)

    def _silence(self) -> None:
        self.stats.timeouts += 1
        self._emit(CloneEvent("timeout", self._sequence))

    def _bad(self) -> None:
        self.stats.bad_messages += 1
        self.stats.malformed += 1
        self._emit(CloneEvent("bad", self._sequence))

    def _over_limit(self) -> None:
        self.stats.over_limit += 1
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
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
