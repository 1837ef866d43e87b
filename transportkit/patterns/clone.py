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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import math
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from transportkit._closing import Service
from transportkit._errors import (
    ClosedError,
    HostUnreachableError,
    ProtocolError,
    Timeout,
    WouldBlock,
)
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._socket import Dealer, Subscriber

__all__ = [
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
        """Parse the five frames of a key-value message.

        Raises:
            ProtocolError: Not five frames, a sequence frame that is not 8 bytes, or
                properties that are not UTF-8 ``name=value`` lines.
        """
        if len(frames) != 5:
            raise ProtocolError(f"a CHP key-value message has 5 frames, got {len(frames)}")
        key, seq, uuid, props, body = frames
        if len(seq) != _SEQUENCE.size:
            raise ProtocolError(f"CHP sequence frame must be 8 bytes, got {len(seq)}")
        properties: dict[str, str] = {}
        try:
            text = bytes(props).decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"CHP properties are not UTF-8: {props[:40]!r}") from exc
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()  # the terminator of the last line
        for line in lines:
            name, sep, value = line.partition("=")
            if not sep or not name:
                raise ProtocolError(f"CHP property line {line!r} is not name=value")
            properties[name] = value
        (sequence,) = _SEQUENCE.unpack(seq)
        return cls(bytes(key), sequence, bytes(uuid), properties, bytes(body))


@dataclass(slots=True)
class CloneServerStats:
    """Counters of a :class:`CloneServer`.

    Attributes:
        updates: Changes published.
        heartbeats: HUGZ published.
        snapshots: Snapshots sent completely.
        snapshot_failures: Snapshots abandoned (the client vanished, or stayed at its
            high-water mark past the send timeout).
        bad_requests: Malformed snapshot requests ignored.
    """

    updates: int = 0
    heartbeats: int = 0
    snapshots: int = 0
    snapshot_failures: int = 0
    bad_requests: int = 0


class CloneServer(Service):
    """The CHP server: publishes every change of its map, serves snapshots, heartbeats.

    The sockets are bound by the constructor; :meth:`start` (or ``async with``) starts
    the snapshot service and the heartbeat. Changes made with :meth:`set` before that
    are kept and published all the same.

    Args:
        network: Where to make the sockets.
        publisher: Endpoint(s) the PUB socket binds for updates and heartbeats.
        snapshot: Endpoint(s) the ROUTER socket binds for snapshot requests.
        heartbeat: Seconds between HUGZ (the Guide's 1 s).
        snapshot_timeout: Seconds a snapshot may wait on a client at its high-water
            mark before the server gives up on that snapshot.
        publisher_options: Options of the PUB socket (a small ``sndhwm`` makes slow
            clients lose updates, which they detect as gaps).
        snapshot_options: Options of the ROUTER socket (``router_mandatory`` is forced
            on so that a snapshot is never silently truncated).
        instance_id: Identifies this run of the server to clients; by default derived
            from the network's name and clock, so a restart gets a new one.

    Raises:
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
    ) -> None:
        if not heartbeat > 0:
            raise ValueError(f"heartbeat must be > 0 seconds, got {heartbeat!r}")
        if not snapshot_timeout > 0:
            raise ValueError(f"snapshot_timeout must be > 0 seconds, got {snapshot_timeout!r}")
        self.heartbeat = heartbeat
        self.stats = CloneServerStats()
        self._state: dict[bytes, KVMsg] = {}
        self._sequence = 0
        self._task: asyncio.Task[None] | None = None
        if instance_id is None:
            seed = f"{network.name}:{network.time_ns()}:{next(_instances)}".encode()
            instance_id = hashlib.blake2b(seed, digest_size=8).digest()
        self.instance_id = instance_id
        router_options = (snapshot_options or SocketOptions()).replace(
            router_mandatory=True,
            sndtimeo=round(snapshot_timeout * 1000),
        )
        self._publisher = network.publisher(bind=publisher, options=publisher_options)
        try:
            self._router = network.router(bind=snapshot, options=router_options)
        except BaseException:
            self._publisher.close()
            raise
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

        Returns:
            The message as stored and published.

        Raises:
            ValueError: ``key`` is empty or is one of the protocol's reserved keys.
            ClosedError: The server is closed.
        """
        key = bytes(key)
        if not key or key in (HUGZ, KTHXBAI, ICANHAZ):
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

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            hugz = KVMsg(HUGZ, self._sequence, self.instance_id)
            await self._publisher.send(hugz.encode())
            self.stats.heartbeats += 1

    async def _serve_snapshots(self) -> None:
        router = self._router
        while True:
            request = await router.recv(timeout=math.inf)
            if len(request) != 3 or request[1] != ICANHAZ:
                self.stats.bad_requests += 1
                continue
            identity, subtree = request[0], request[2]
            entries = [msg for key, msg in self._state.items() if key.startswith(subtree)]
            count = {"count": str(len(entries))}
            end = KVMsg(KTHXBAI, self._sequence, self.instance_id, count, subtree)
            try:
                for msg in entries:
                    await router.send([identity, *msg.encode()])
                await router.send([identity, *end.encode()])
            except (HostUnreachableError, Timeout, WouldBlock):
                self.stats.snapshot_failures += 1
            else:
                self.stats.snapshots += 1

    async def close(self) -> None:
        """Stop the background task and close the sockets. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._router.close()
        self._publisher.close()


@dataclass(frozen=True, slots=True)
class CloneEvent:
    """Something a :class:`CloneClient` did, for tests and logs.

    Attributes:
        kind: ``snapshot`` (``sequence`` is the snapshot's), ``apply`` and ``discard``
            (an update's sequence), ``gap`` (``sequence`` is the one received,
            ``expected`` the one due), ``timeout`` (silence), ``restart`` (a new server
            instance was seen), ``bad`` (a malformed message was ignored).
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


class _Resync(Exception):
    """The session must take a new snapshot; ``reopen`` also makes fresh sockets."""

    def __init__(self, reopen: bool) -> None:
        super().__init__()
        self.reopen = reopen


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

    Args:
        network: Where to make the sockets.
        snapshot: The server's snapshot (ROUTER) endpoint.
        updates: The server's update (PUB) endpoint.
        subtree: Key prefix to follow (``b""``: the whole map).
        timeout: Seconds of silence after which the server is presumed dead; keep it
            several heartbeats long (the default suits the Guide's 1 s heartbeat).
        subscriber_options: Options of the SUB socket.
        snapshot_options: Options of the DEALER socket.
        on_event: Called with a :class:`CloneEvent` for everything the client does.
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
    ) -> None:
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self._network = network
        self.snapshot_endpoint = snapshot
        self.updates_endpoint = updates
        self.subtree = bytes(subtree)
        self.timeout = timeout
        self._sub_options = subscriber_options
        self._dealer_options = snapshot_options
        self._on_event = on_event
        self.stats = CloneClientStats()
        self._messages: dict[bytes, KVMsg] = {}
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
            await asyncio.wait_for(watch(), timeout)
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
            try:
                await self._session(sub, dealer)
            except ClosedError:
                if self._closing:
                    return
                raise
            finally:
                sub.close()
                dealer.close()
                self._sockets = []
            self._synced = False

    async def _session(self, sub: Subscriber, dealer: Dealer) -> None:
        # Subscribe first; a message (at worst a HUGZ) proves the subscription is live,
        # so nothing published after the snapshot can miss us.
        if not await sub.poll(self.timeout):
            self._silence()
            return
        while True:
            try:
                await self._take_snapshot(dealer)
                await self._follow(sub)
            except _Resync as resync:
                self._synced = False
                if resync.reopen:
                    return

    async def _take_snapshot(self, dealer: Dealer) -> None:
        await dealer.send([ICANHAZ, self.subtree])
        received: dict[bytes, KVMsg] = {}
        while True:
            try:
                frames = await dealer.recv(timeout=self.timeout)
            except Timeout:
                self._silence()
                raise _Resync(reopen=True) from None
            try:
                msg = KVMsg.decode(frames)
            except ProtocolError:
                self._bad()
                continue
            if msg.key != KTHXBAI:
                received[msg.key] = msg
                continue
            if msg.properties.get("count", str(len(received))) != str(len(received)):
                self._bad()
                raise _Resync(reopen=True)
            break
        if self.stats.snapshots:
            self.stats.resyncs += 1
        self.stats.snapshots += 1
        self._messages = {k: m for k, m in received.items() if m.body}
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
            try:
                msg = KVMsg.decode(frames)
            except ProtocolError:
                self._bad()
                continue
            if msg.key == HUGZ:
                self.stats.heartbeats += 1
                if msg.uuid != self._server_id:
                    self.stats.restarts += 1
                    self._emit(CloneEvent("restart", msg.sequence))
                    raise _Resync(reopen=True)
                if exact and msg.sequence > self._sequence:
                    self._gap(msg.sequence)
                continue
            if msg.sequence <= self._sequence:
                self.stats.discarded += 1
                self._emit(CloneEvent("discard", msg.sequence))
                continue
            if exact and msg.sequence != self._sequence + 1:
                self._gap(msg.sequence)
            self._apply(msg)

    def _apply(self, msg: KVMsg) -> None:
        if msg.body:
            self._messages[msg.key] = msg
        else:
            self._messages.pop(msg.key, None)
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
        self._emit(CloneEvent("bad", self._sequence))

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
