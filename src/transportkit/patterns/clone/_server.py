"""The CHP server: the map, its publisher, snapshots, the collector and TTL expiry."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from transportkit._closing import Service
from transportkit._errors import ClosedError, ProtocolError
from transportkit._kinds import SocketKind
from transportkit._log import limited, peer
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._socket import Message, Receiver
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
from transportkit.patterns.clone._kvmsg import (
    HUGZ,
    ICANHAZ,
    KTHXBAI,
    TTL,
    KVMsg,
    format_ttl,
    is_data_key,
    parse_ttl,
)

DEFAULT_MAX_SNAPSHOTS: Final = 16
"""Snapshots a :class:`CloneServer` sends at once by default."""
DEFAULT_MAX_PENDING_SNAPSHOTS: Final = 256
"""Snapshot requests a :class:`CloneServer` keeps waiting by default (a restart herd)."""
DEFAULT_MAX_SUBTREE_BYTES: Final = 1024
"""The longest subtree a :class:`CloneServer` accepts in a request by default."""
DEFAULT_MAX_PROPERTIES_BYTES: Final = 4096
"""The largest properties frame accepted by default (client and collector)."""
DEFAULT_SERVER_MAX_KEYS: Final = 1_000_000
"""Keys the collector may bring a :class:`CloneServer`'s map to, by default."""
DEFAULT_MAX_TTL: Final = 86_400.0
"""The longest ``ttl`` (seconds) a :class:`CloneServer` accepts by default (a day)."""

COLLECTOR_KINDS: Final = (SocketKind.SUB, SocketKind.PULL)
"""The socket kinds a :class:`CloneServer`'s collector may be: SUB (12/CHP, the
default, for clients that publish on a PUB) or PULL (the Guide's Clone model 5,
``clonesrv5``, for clients that send on a PUSH)."""


def _check_kind(kind: SocketKind, allowed: tuple[SocketKind, ...], what: str) -> SocketKind:
    """``kind`` if it is one of ``allowed``, else ValueError naming ``what``."""
    if not isinstance(kind, SocketKind) or kind not in allowed:
        names = " or ".join(f"SocketKind.{k.name}" for k in allowed)
        raise ValueError(f"{what} collector_kind must be {names}, got {kind!r}")
    return kind


@dataclass(slots=True)
class CloneServerStats:
    """Counters of a :class:`CloneServer`.

    Attributes:
        updates: Changes published (from :meth:`CloneServer.set`, the collector, and
            TTL expiries).
        collected: Updates taken from the collector and published.
        expired: Ephemeral values deleted because their TTL ran out.
        heartbeats: HUGZ published.
        snapshots: Snapshots sent completely.
        snapshot_failures: Snapshots abandoned (the client vanished, or stayed at its
            high-water mark past the snapshot timeout).
        bad_requests: Malformed snapshot requests ignored.
        bad_updates: Malformed collector updates ignored (not CHP, a reserved or empty
            key, a ``ttl`` that is not a finite number >= 0).
        malformed: Messages that followed no protocol, dropped: ``bad_requests`` plus
            ``bad_updates``.
        over_limit: Messages refused by a bound: larger than ``max_message_bytes``, a
            subtree longer than ``max_subtree_bytes``, a properties frame larger than
            ``max_properties_bytes``, a ``ttl`` past ``max_ttl``, a new key past
            ``max_keys``, a full pending list (in a pair), or ``snapshots_refused``.
        snapshots_refused: Snapshot requests refused because ``max_snapshots`` were in
            progress and ``max_pending_snapshots`` waiting, or because the client
            already had one in progress or waiting.
        refused: Snapshot requests ignored because the server may not serve (in a
            Binary Star pair: it is not active).
        shutdown_dropped: Snapshots a graceful stop (:meth:`CloneServer.shutdown`)
            cut because its deadline passed (in progress or waiting).
    """

    updates: int = 0
    collected: int = 0
    expired: int = 0
    heartbeats: int = 0
    snapshots: int = 0
    snapshot_failures: int = 0
    bad_requests: int = 0
    bad_updates: int = 0
    malformed: int = 0
    over_limit: int = 0
    snapshots_refused: int = 0
    refused: int = 0
    shutdown_dropped: int = 0


class CloneServer(Service):
    """The CHP server: publishes every change of its map, serves snapshots, heartbeats.

    The sockets are bound by the constructor; :meth:`start` (or ``async with``) starts
    the snapshot service, the heartbeat, the collector and TTL expiry. Changes made with
    :meth:`set` before that are kept and published all the same.

    Snapshots are sent side by side, each at its client's pace (see the package
    docstring): one that waits on a client never delays another client, the updates
    or the heartbeats. A snapshot is the map as it is when the snapshot starts.

    ``await server.shutdown(timeout)`` stops it gracefully: no new snapshot request is
    read (CHP has no refusal: a client asking now times out and moves to a backup),
    the collector is no longer read and the heartbeats stop; the snapshots in progress
    or waiting get ``timeout`` seconds (default 5) to finish, then those left are cut
    (``stats.shutdown_dropped``); the sockets are closed with their ``linger`` (give
    the publisher one, e.g. 1000 ms, for the last updates to leave over tcp).
    :meth:`close` is the hard stop.

    Wire format, exactly as 12/CHP has it unless ``extensions`` is set: KTHXBAI is
    ``[KTHXBAI][sequence][][][subtree]`` and HUGZ ``[HUGZ][0][][][]`` (an 8-byte zero
    sequence, empty uuid, properties and body). A snapshot's KVSYNC messages carry the
    value's uuid and properties as the Guide's servers send them, a ``ttl`` counting
    the seconds that remain.

    Args:
        network: Where to make the sockets.
        publisher: Endpoint(s) the PUB socket binds for updates and heartbeats.
        snapshot: Endpoint(s) the ROUTER socket binds for snapshot requests.
        collector: Endpoint(s) the collector socket binds (CHP's port P + 2), where
            clients send KVSET updates; None (the default): no collector, the map is
            only what the application :meth:`set`.
        collector_kind: The collector's socket kind: ``SocketKind.SUB`` (the default,
            12/CHP: clients publish on a PUB, :class:`CloneClient`'s default) or
            ``SocketKind.PULL`` (opt-in, the Guide's Clone model 5: its ``clonecli5``
            sends on a PUSH, as :class:`CloneClient` does with
            ``collector_kind=SocketKind.PUSH``). A PUB cannot talk to a PULL nor a
            PUSH to a SUB: both ends must agree. Either kind is bounded, validated and
            counted alike (``max_message_bytes`` as ``maxmsgsize``, ``rcvhwm``,
            ``stats.collected``, ``bad_updates``, ``over_limit``). With PULL a client
            at this collector's ``rcvhwm`` waits instead of losing the update, and the
            slow-joiner loss of a PUB does not happen.
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
        collector_options: Options of the collector (``maxmsgsize`` defaults to
            ``max_message_bytes``; a 0 ``rcvhwm`` is refused).
        instance_id: Opt-in transportkit extension: put these bytes in the uuid frame
            of KTHXBAI and HUGZ (CHP leaves it empty, which is the default, b"").
            Clients do not rely on it; :attr:`CloneClient.server_id` shows it.
        extensions: Opt-in transportkit extensions of the frames (default False: CHP
            exactly). When True, HUGZ carries the server's current sequence (as the
            Guide's servers send it; clients then notice losses at the tail of the
            stream, and a restarted server by its sequence going back, without
            waiting for another update) and KTHXBAI a ``count=N`` property (clients
            check that no snapshot message was lost).
        max_message_bytes: Largest snapshot request or collector update accepted, all
            frames included (default 1 MiB; None: no limit); larger ones are dropped
            and counted.
        max_snapshots: Snapshots in progress at once (default 16).
        max_pending_snapshots: Requests kept waiting, first come first served, while
            ``max_snapshots`` are in progress (default 256). Past both, a request is
            refused and counted; so is a second request from a client whose first is
            still in progress or waiting.
        max_subtree_bytes: Longest subtree a request may ask for (default 1024);
            longer ones are dropped and counted.
        max_keys: Most keys collector updates may bring the map to (default
            1,000,000): an update of a new key past it is refused and counted;
            :meth:`set` is the application's and is not bounded by it.
        max_properties_bytes: Largest properties frame of a collector update
            (default 4096).
        max_ttl: Longest ``ttl`` in seconds a collector update may carry (default a
            day); longer ones are refused and counted.

    Raises:
        ValueError: A duration is not positive, a bound is not an int >= 1 (for
            ``max_pending_snapshots``, >= 0; ``max_message_bytes`` may be None), a
            high-water mark is 0, or ``collector_kind`` is neither SUB nor PULL.
        TransportError: Binding failed (nothing is left open).
    """

    def __init__(
        self,
        network: Network,
        *,
        publisher: str | Iterable[str],
        snapshot: str | Iterable[str],
        collector: str | Iterable[str] | None = None,
        collector_kind: SocketKind = SocketKind.SUB,
        heartbeat: float = 1.0,
        snapshot_timeout: float = 5.0,
        publisher_options: SocketOptions | None = None,
        snapshot_options: SocketOptions | None = None,
        collector_options: SocketOptions | None = None,
        instance_id: bytes | None = None,
        extensions: bool = False,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
        max_snapshots: int = DEFAULT_MAX_SNAPSHOTS,
        max_pending_snapshots: int = DEFAULT_MAX_PENDING_SNAPSHOTS,
        max_subtree_bytes: int = DEFAULT_MAX_SUBTREE_BYTES,
        max_keys: int = DEFAULT_SERVER_MAX_KEYS,
        max_properties_bytes: int = DEFAULT_MAX_PROPERTIES_BYTES,
        max_ttl: float = DEFAULT_MAX_TTL,
    ) -> None:
        if not heartbeat > 0:
            raise ValueError(f"heartbeat must be > 0 seconds, got {heartbeat!r}")
        if not snapshot_timeout > 0:
            raise ValueError(f"snapshot_timeout must be > 0 seconds, got {snapshot_timeout!r}")
        if not (max_ttl > 0 and math.isfinite(max_ttl)):
            raise ValueError(f"max_ttl must be a finite number > 0, got {max_ttl!r}")
        self.collector_kind = _check_kind(collector_kind, COLLECTOR_KINDS, "CloneServer")
        self.max_message_bytes = check_message_limit(max_message_bytes)
        self.max_subtree_bytes = check_bound("max_subtree_bytes", max_subtree_bytes)
        self.max_keys = check_bound("max_keys", max_keys)
        self.max_properties_bytes = check_bound("max_properties_bytes", max_properties_bytes)
        self.max_ttl = float(max_ttl)
        check_bound("max_snapshots", max_snapshots)
        check_bound("max_pending_snapshots", max_pending_snapshots, minimum=0)
        pub_options = publisher_options or SocketOptions()
        check_finite_hwm(pub_options, "CloneServer publisher", "sndhwm")
        router_options = bounded_options(snapshot_options, self.max_message_bytes).replace(
            router_mandatory=True
        )
        check_finite_hwm(router_options, "CloneServer snapshot ROUTER", "sndhwm", "rcvhwm")
        sub_options = bounded_options(collector_options, self.max_message_bytes)
        check_finite_hwm(sub_options, "CloneServer collector", "rcvhwm")
        self.heartbeat = heartbeat
        self.snapshot_timeout = snapshot_timeout
        self.extensions = extensions
        self.instance_id = b"" if instance_id is None else bytes(instance_id)
        self.stats = CloneServerStats()
        self._state: dict[bytes, KVMsg] = {}
        self._deadlines: dict[bytes, float] = {}
        self._expiries: list[tuple[float, int, bytes]] = []
        self._ttl_changed = asyncio.Event()
        self._sequence = 0
        self._task: asyncio.Task[None] | None = None
        self._graceful = GracefulStop()
        # A Binary Star pair (ClonePairServer) sets these: whether this server may
        # serve, and where collector updates go while it may not.
        self._gate: Callable[[], Awaitable[bool]] | None = None
        self._hold: Callable[[KVMsg, float | None], None] | None = None
        self._active = True
        self._publisher = network.publisher(bind=publisher, options=pub_options)
        self._collector: Receiver | None = None
        try:
            self._router = network.router(bind=snapshot, options=router_options)
            if collector is not None:
                try:
                    if self.collector_kind is SocketKind.PULL:
                        self._collector = network.puller(bind=collector, options=sub_options)
                    else:
                        self._collector = network.subscriber(bind=collector, options=sub_options)
                except BaseException:
                    self._router.close()
                    raise
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
        self.collector_endpoint = None if self._collector is None else self._collector.last_endpoint

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
    def ephemeral(self) -> dict[bytes, float]:
        """Keys with a TTL -> when they expire (the event loop's clock)."""
        return dict(self._deadlines)

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
        ttl: float | None = None,
    ) -> KVMsg:
        """Store ``key`` -> ``body`` under the next sequence number and publish it.

        An empty ``body`` deletes the key (and is published, so clients delete it too).
        The map is the application's: nothing here bounds what it stores.

        Args:
            key: The key.
            body: The value (empty: delete).
            properties: Properties published with the value.
            uuid: The change's uuid frame.
            ttl: Seconds the value lives (the ``ttl`` property, which it sets): the
                server then deletes the key and publishes the deletion. None (and a
                ``ttl`` property of 0): for ever.

        Returns:
            The message as stored and published.

        Raises:
            ValueError: ``key`` is empty or is one of the protocol's reserved keys, or
                ``ttl`` (or a ``ttl`` property) is not a finite number >= 0.
            ClosedError: The server is closed.
        """
        key = bytes(key)
        if not is_data_key(key):
            raise ValueError(f"{key!r} cannot be a key (empty or reserved by CHP)")
        props = dict(properties or {})
        if ttl is not None:
            if not (math.isfinite(ttl) and ttl >= 0):
                raise ValueError(f"ttl must be a finite number >= 0, got {ttl!r}")
            props[TTL] = format_ttl(ttl) if ttl else "0"
        try:
            seconds = parse_ttl(props)
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None
        return await self._publish(KVMsg(key, 0, bytes(uuid), props, bytes(body)), seconds)

    async def delete(self, key: bytes) -> KVMsg:
        """Delete ``key`` (publish an empty body); see :meth:`set`."""
        return await self.set(key, b"")

    async def _publish(self, msg: KVMsg, ttl: float | None) -> KVMsg:
        """Give ``msg`` the next sequence number, store it and publish it."""
        self._sequence += 1
        msg = KVMsg(msg.key, self._sequence, msg.uuid, dict(msg.properties), msg.body)
        self._store(msg, ttl)
        await self._publisher.send(msg.encode())
        self.stats.updates += 1
        return msg

    def _store(self, msg: KVMsg, ttl: float | None) -> None:
        key = msg.key
        self._deadlines.pop(key, None)
        if msg.body:
            self._state[key] = msg
            if ttl is not None:
                deadline = asyncio.get_running_loop().time() + ttl
                self._deadlines[key] = deadline
                heapq.heappush(self._expiries, (deadline, msg.sequence, key))
                self._ttl_changed.set()
                if len(self._expiries) > 2 * len(self._deadlines) + 64:
                    self._compact_expiries()
        else:
            self._state.pop(key, None)

    def _compact_expiries(self) -> None:
        """Drop the heap entries of values overwritten since (bounds the heap)."""
        live = {(d, self._state[k].sequence, k) for k, d in self._deadlines.items()}
        self._expiries = [entry for entry in self._expiries if entry in live]
        heapq.heapify(self._expiries)

    def _adopt(
        self, messages: Mapping[bytes, KVMsg], sequence: int, deadlines: Mapping[bytes, float]
    ) -> None:
        """Take ``messages`` as the map (a pair's backup taking over)."""
        self._state = dict(messages)
        self._sequence = max(self._sequence, sequence)
        self._deadlines = {k: d for k, d in deadlines.items() if k in self._state}
        self._expiries = [(d, self._state[k].sequence, k) for k, d in self._deadlines.items()]
        heapq.heapify(self._expiries)
        self._ttl_changed.set()

    def start(self) -> None:
        """Start serving snapshots, heartbeats, the collector and TTL expiry. Idempotent."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        """Serve until cancelled, closed or shut down: snapshots, HUGZ, the collector,
        expiries. Returns at once after a :meth:`shutdown`.
        """
        graceful = self._graceful
        if graceful.requested:
            return
        graceful.started()
        helpers = [
            asyncio.ensure_future(self._heartbeats()),
            asyncio.ensure_future(self._expire()),
        ]
        if self._collector is not None:
            helpers.append(asyncio.ensure_future(self._collect(self._collector)))
        try:
            try:
                await self._serve_snapshots()
            except ClosedError:
                pass
            except GeneratorExit:  # dropped, never resumed (a simulation not closed)
                for helper in helpers:
                    helper.cancel()
                raise
            except BaseException:
                await self._stop(helpers)
                raise
            if graceful.requested:
                for helper in helpers:
                    helper.cancel()
                cut = await self._snapshots.drain(graceful.remaining())
                if cut:
                    self.stats.shutdown_dropped += cut
                    graceful.clean = False
                self._close_sockets()
            await self._stop(helpers)
        finally:
            graceful.finished()

    async def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Stop gracefully (see the class docstring) and close the sockets; a server
        that is not running is closed at once. Idempotent.

        Returns:
            True if no snapshot was cut at the deadline.

        Raises:
            ValueError: ``timeout`` is not from 0 to 3600 seconds.
        """
        return await stop_then_close(self._graceful, timeout, self.close)

    async def _stop(self, helpers: list[asyncio.Task[None]]) -> None:
        for helper in helpers:
            helper.cancel()
        for helper in helpers:
            with contextlib.suppress(asyncio.CancelledError, ClosedError):
                await helper
        await self._snapshots.aclose()

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            sequence = self._sequence if self.extensions else 0
            await self._publisher.send(KVMsg(HUGZ, sequence, self.instance_id).encode())
            self.stats.heartbeats += 1

    async def _expire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._ttl_changed.clear()
            while self._expiries and self._expiries[0][0] <= loop.time():
                _, sequence, key = heapq.heappop(self._expiries)
                msg = self._state.get(key)
                if not self._active or msg is None or msg.sequence != sequence:
                    continue  # overwritten or deleted since; a passive server waits
                self.stats.expired += 1
                await self._publish(KVMsg(key, 0, msg.uuid, {}, b""), None)
            wait = self._expiries[0][0] - loop.time() if self._expiries else math.inf
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wait == math.inf else max(wait, 0.0)):
                    await self._ttl_changed.wait()

    async def _collect(self, collector: Receiver) -> None:
        while True:
            frames = await collector.recv(timeout=math.inf)
            msg, ttl = self._check_update(frames)
            if msg is None:
                continue
            if not self._active:
                if self._hold is not None:
                    self._hold(msg, ttl)
                continue
            if msg.body and msg.key not in self._state and len(self._state) >= self.max_keys:
                self.stats.over_limit += 1
                limited(
                    logger,
                    logging.WARNING,
                    "over_limit",
                    "update of a new key refused: max_keys (%d) reached",
                    self.max_keys,
                    extra={"reason": "max_keys", "counter": "over_limit"},
                )
                continue
            await self._publish(msg, ttl)
            self.stats.collected += 1

    def _check_update(self, frames: Message) -> tuple[KVMsg | None, float | None]:
        """The KVSET ``frames`` is and its TTL, or (None, None), counted."""
        stats = self.stats
        if too_large(frames, self.max_message_bytes) or (
            len(frames) == 5 and len(frames[3]) > self.max_properties_bytes
        ):
            stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "update of %d bytes over max_message_bytes or max_properties_bytes: dropped",
                message_bytes(frames),
                extra={"reason": "too large", "counter": "over_limit"},
            )
            return None, None
        try:
            msg = KVMsg.decode(frames)
            ttl = parse_ttl(msg.properties)
        except ProtocolError:
            msg = None
        if msg is None or not is_data_key(msg.key):
            stats.bad_updates += 1
            stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed update on the collector: %s",
                "not a 12/CHP KVSET of a data key",
                extra={"reason": "not a 12/CHP KVSET of a data key", "counter": "malformed"},
            )
            return None, None
        if ttl is not None and ttl > self.max_ttl:
            stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "update with a ttl of %g s over max_ttl (%g s): dropped",
                ttl,
                self.max_ttl,
                extra={"reason": "ttl too long", "counter": "over_limit"},
            )
            return None, None
        return msg, ttl

    async def _serve_snapshots(self) -> None:
        router, graceful = self._router, self._graceful
        while True:
            request = await graceful.recv(router)
            if request is None:
                if router.closed:
                    raise ClosedError("the snapshot socket was closed")
                return
            await self._request(request)

    async def _request(self, request: Message) -> None:
        stats = self.stats
        if too_large(request[1:], self.max_message_bytes):
            stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "snapshot request from %s of %d bytes over max_message_bytes: dropped",
                peer(request[0]),
                message_bytes(request[1:]),
                extra={"peer": peer(request[0]), "reason": "too large", "counter": "over_limit"},
            )
            return
        if len(request) != 3 or request[1] != ICANHAZ:
            stats.bad_requests += 1
            stats.malformed += 1
            limited(
                logger,
                logging.WARNING,
                "malformed",
                "malformed snapshot request from %s: %s",
                peer(request[0]),
                "not ICANHAZ? and a subtree",
                extra={
                    "peer": peer(request[0]),
                    "reason": "not ICANHAZ? and a subtree",
                    "counter": "malformed",
                },
            )
            return
        identity, subtree = request[0], request[2]
        if len(subtree) > self.max_subtree_bytes:
            stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "snapshot request from %s: subtree of %d bytes over max_subtree_bytes",
                peer(identity),
                len(subtree),
                extra={
                    "peer": peer(identity),
                    "reason": "subtree too long",
                    "counter": "over_limit",
                },
            )
            return
        if self._gate is not None and not await self._gate():
            stats.refused += 1
            limited(
                logger,
                logging.INFO,
                "refused",
                "snapshot request from %s refused (not the active server)",
                peer(identity),
                extra={"peer": peer(identity), "counter": "refused"},
            )
            return
        if not self._snapshots.submit(identity, functools.partial(self._snapshot, subtree)):
            stats.snapshots_refused += 1
            stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "snapshot request from %s refused: too many snapshots in progress",
                peer(identity),
                extra={
                    "peer": peer(identity),
                    "reason": "snapshot queue full",
                    "counter": "over_limit",
                },
            )

    def _snapshot(self, subtree: bytes) -> Iterator[list[bytes]]:
        """The messages of a snapshot of ``subtree``, as the map is now."""
        now = asyncio.get_running_loop().time()
        entries = []
        for key, stored in self._state.items():
            if not key.startswith(subtree):
                continue
            deadline = self._deadlines.get(key)
            if deadline is not None:  # the seconds that remain, not those at the start
                props = {**stored.properties, TTL: format_ttl(deadline - now)}
                entries.append(KVMsg(key, stored.sequence, stored.uuid, props, stored.body))
            else:
                entries.append(stored)
        count = {"count": str(len(entries))} if self.extensions else {}
        end = KVMsg(KTHXBAI, self._sequence, self.instance_id, count, subtree)
        return itertools.chain((msg.encode() for msg in entries), (end.encode(),))

    def _snapshot_done(self, complete: bool) -> None:
        if complete:
            self.stats.snapshots += 1
        else:
            self.stats.snapshot_failures += 1
            limited(
                logger,
                logging.WARNING,
                "snapshot_failures",
                "a snapshot could not be sent in full (client gone, slow or at its HWM)",
                extra={"counter": "snapshot_failures"},
            )

    async def close(self) -> None:
        """Stop the background task and close the sockets. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._snapshots.aclose()
        self._close_sockets()

    def _close_sockets(self) -> None:
        self._router.close()
        self._publisher.close()
        if self._collector is not None:
            self._collector.close()


logger = logging.getLogger(__name__)

__all__ = [
    "COLLECTOR_KINDS",
    "DEFAULT_MAX_PENDING_SNAPSHOTS",
    "DEFAULT_MAX_PROPERTIES_BYTES",
    "DEFAULT_MAX_SNAPSHOTS",
    "DEFAULT_MAX_SUBTREE_BYTES",
    "DEFAULT_MAX_TTL",
    "DEFAULT_SERVER_MAX_KEYS",
    "CloneServer",
    "CloneServerStats",
]
