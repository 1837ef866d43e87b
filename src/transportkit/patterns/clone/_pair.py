"""The Clone server pair (the Guide's model 6): two CHP servers under Binary Star."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from transportkit._closing import Service
from transportkit._errors import ClosedError, ProtocolError, WouldBlock
from transportkit._kinds import SocketKind
from transportkit._log import limited
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit.patterns._limits import DEFAULT_MAX_MESSAGE_BYTES, check_bound
from transportkit.patterns._shutdown import DEFAULT_SHUTDOWN_TIMEOUT, check_shutdown_timeout
from transportkit.patterns.binary_star import BinaryStarServer, BStarEvent, BStarState
from transportkit.patterns.clone._client import CloneClient
from transportkit.patterns.clone._kvmsg import KTHXBAI, KVMsg, parse_ttl
from transportkit.patterns.clone._server import DEFAULT_SERVER_MAX_KEYS, CloneServer

DEFAULT_MAX_PENDING_UPDATES: Final = 10_000
"""Collector updates a passive :class:`ClonePairServer` holds by default."""

_Match = bytes | tuple[bytes, bytes]


def _match_key(msg: KVMsg) -> _Match:
    """What identifies an update across the two servers: its uuid, else key and body."""
    return msg.uuid if msg.uuid else (msg.key, msg.body)


@dataclass(slots=True)
class ClonePairStats:
    """Counters of a :class:`ClonePairServer` (its CHP server has its own).

    Attributes:
        held: Collector updates put on the pending list while not active.
        matched: Pending updates dropped because the active peer published them.
        applied: Pending updates published on taking over.
        takeovers: Times this server became active with its peer's map.
        over_limit: Pending updates dropped because the list was full (the oldest
            goes).
    """

    held: int = 0
    matched: int = 0
    applied: int = 0
    takeovers: int = 0
    over_limit: int = 0


class ClonePairServer(Service):
    """One server of a Clone pair backed by Binary Star (the Guide's clonesrv6).

    Each of the two runs a :class:`CloneServer` (snapshot ROUTER, publisher, collector)
    and a :class:`~transportkit.patterns.BinaryStarServer` without front end: CHP's
    snapshot requests are its votes (:meth:`BinaryStarServer.vote`), so only the
    active server answers ICANHAZ, and a passive one whose peer has been silent for
    2 x ``bstar_heartbeat`` takes over on a client's request.

    While not active, the server follows its peer as a CHP client (snapshot, then
    updates, its sequence included) and keeps the collector updates clients send it on
    a pending list; each update the active peer publishes takes its copy off the list
    (matched by uuid, else by key and value). On taking over it adopts the map it
    followed (TTLs included, counted from when it received each value), then publishes
    what is left on the pending list with new sequence numbers, and serves. Clients
    (:class:`CloneClient` with ``backups`` and ``collector`` naming both servers) fail
    over to it when the old active server falls silent.

    A passive server sends HUGZ like the Guide's, so that a client that moved to it
    sends the snapshot request that is the failover vote; and it republishes, sequence
    numbers unchanged, each update it takes from the active peer (the Guide's passive
    server does not), so that a client still following it (the server restarted
    faster than the client noticed, and came back passive) stays correct: what it
    missed shows as a gap, its snapshot request is refused, and it fails over to the
    active server after its timeout. Split brain
    (:class:`~transportkit.patterns.binary_star.SplitBrainError`) stops the Binary Star
    task and the server stops serving snapshots.

    Args:
        network: Where to make the sockets.
        primary: True for the primary, False for the backup.
        publisher: This server's PUB endpoint(s).
        snapshot: This server's snapshot ROUTER endpoint(s).
        collector: This server's collector endpoint(s).
        collector_kind: The collector's socket kind, SUB (the default, 12/CHP) or
            PULL (see :class:`CloneServer`; clients then send with PUSH).
        state_pub: Endpoint(s) this server's Binary Star state is published on.
        state_sub: The peer's Binary Star state endpoint.
        peer_snapshot: The peer's snapshot endpoint (followed while passive).
        peer_publisher: The peer's PUB endpoint (followed while passive).
        heartbeat: Seconds between HUGZ (the Guide's 1 s).
        bstar_heartbeat: Seconds between Binary Star state messages (the Guide's 1 s).
        mirror_timeout: The follower's ``timeout`` (default 5 s).
        extensions: See :class:`CloneServer` (default False: CHP frames exactly).
        publisher_options: Options of the PUB socket.
        snapshot_options: Options of the snapshot ROUTER (see :class:`CloneServer`).
        collector_options: Options of the collector (see :class:`CloneServer`).
        state_pub_options: Options of the Binary Star state PUB (see
            :class:`~transportkit.patterns.binary_star.BinaryStarServer`).
        state_sub_options: Options of the Binary Star state SUB.
        mirror_options: Options of the follower's SUB and DEALER, which connect to
            the peer's publisher and snapshot sockets (a CURVE client of the peer).
        max_message_bytes: See :class:`CloneServer`.
        max_keys: See :class:`CloneServer` (bounds the collector's new keys).
        max_pending_updates: Longest pending list (default 10,000); past it the
            oldest entry is dropped and counted.

    Raises:
        ValueError: A duration is not positive, a bound is not an int >= 1, or
            ``collector_kind`` is neither SUB nor PULL.
        TransportError: Making a socket failed (nothing is left open).
    """

    def __init__(
        self,
        network: Network,
        *,
        primary: bool,
        publisher: str | Iterable[str],
        snapshot: str | Iterable[str],
        collector: str | Iterable[str],
        collector_kind: SocketKind = SocketKind.SUB,
        state_pub: str | Iterable[str],
        state_sub: str,
        peer_snapshot: str,
        peer_publisher: str,
        heartbeat: float = 1.0,
        bstar_heartbeat: float = 1.0,
        mirror_timeout: float = 5.0,
        extensions: bool = False,
        publisher_options: SocketOptions | None = None,
        max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
        max_keys: int = DEFAULT_SERVER_MAX_KEYS,
        max_pending_updates: int = DEFAULT_MAX_PENDING_UPDATES,
        snapshot_options: SocketOptions | None = None,
        collector_options: SocketOptions | None = None,
        state_pub_options: SocketOptions | None = None,
        state_sub_options: SocketOptions | None = None,
        mirror_options: SocketOptions | None = None,
    ) -> None:
        self.max_pending_updates = check_bound("max_pending_updates", max_pending_updates)
        self.stats = ClonePairStats()
        self._network = network
        self._mirror_args = (peer_snapshot, peer_publisher, mirror_timeout, heartbeat)
        self._mirror_options = mirror_options
        self._pending: OrderedDict[_Match, tuple[KVMsg, float | None]] = OrderedDict()
        self._published: OrderedDict[_Match, None] = OrderedDict()
        self._deadlines: dict[bytes, float] = {}
        self._mirror: CloneClient | None = None
        self._mirror_task: asyncio.Task[None] | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = asyncio.Event()
        self.server = CloneServer(
            network,
            publisher=publisher,
            snapshot=snapshot,
            collector=collector,
            collector_kind=collector_kind,
            heartbeat=heartbeat,
            extensions=extensions,
            publisher_options=publisher_options,
            snapshot_options=snapshot_options,
            collector_options=collector_options,
            max_message_bytes=max_message_bytes,
            max_keys=max_keys,
        )
        try:
            self.bstar = BinaryStarServer(
                network,
                primary=primary,
                frontend=None,
                state_pub=state_pub,
                state_sub=state_sub,
                heartbeat=bstar_heartbeat,
                on_state_change=self._state_changed,
                max_message_bytes=max_message_bytes,
                state_pub_options=state_pub_options,
                state_sub_options=state_sub_options,
            )
        except BaseException:
            self.server._router.close()
            self.server._publisher.close()
            if self.server._collector is not None:
                self.server._collector.close()
            raise
        self.server._active = False
        self.server._gate = self._vote
        self.server._hold = self._hold

    @property
    def state(self) -> BStarState:
        """The Binary Star state."""
        return self.bstar.state

    @property
    def active(self) -> bool:
        """Whether this server is the active one (serving snapshots, sequencing)."""
        return self.bstar.active and self.server._active

    @property
    def pending(self) -> list[KVMsg]:
        """A copy of the pending list, oldest first."""
        return [msg for msg, _ in self._pending.values()]

    async def _vote(self) -> bool:
        """A snapshot request: Binary Star's vote; after a split brain, never."""
        if self.bstar.fatal is not None:
            self.server._active = False  # the pair broke: stop sequencing too
            return False
        return await self.bstar.vote()

    def _hold(self, msg: KVMsg, ttl: float | None) -> None:
        """A collector update while not active: pending, unless the peer published it."""
        key = _match_key(msg)
        if key in self._published:
            del self._published[key]
            self.stats.matched += 1
            return
        self._pending[key] = (msg, ttl)
        self.stats.held += 1
        if len(self._pending) > self.max_pending_updates:
            self._pending.popitem(last=False)
            self.stats.over_limit += 1
            limited(
                logger,
                logging.WARNING,
                "over_limit",
                "passive Clone server: more than max_pending_updates (%d) held: the oldest dropped",
                self.max_pending_updates,
                extra={"reason": "max_pending_updates", "counter": "over_limit"},
            )

    def _mirrored(self, msg: KVMsg, live: bool) -> None:
        """A message the follower took from the active peer (``live``: an update)."""
        if self._mirror is None or msg.key == KTHXBAI:
            return
        if live:  # clients still following this server get the active one's updates
            with contextlib.suppress(WouldBlock, ClosedError):
                self.server._publisher.try_send(msg.encode())
        try:
            ttl = parse_ttl(msg.properties)
        except ProtocolError:
            ttl = None
        if msg.body and ttl is not None:
            self._deadlines[msg.key] = asyncio.get_running_loop().time() + ttl
        else:
            self._deadlines.pop(msg.key, None)
        key = _match_key(msg)
        if self._pending.pop(key, None) is not None:
            self.stats.matched += 1
        else:
            self._published[key] = None
            if len(self._published) > self.max_pending_updates:
                self._published.popitem(last=False)

    def _state_changed(self, old: BStarState, new: BStarState, event: BStarEvent) -> None:
        if new is BStarState.ACTIVE:
            self._take_over()
        elif new is BStarState.PASSIVE:
            self._follow_peer()

    def _follow_peer(self) -> None:
        if self._mirror is not None:
            return
        snapshot, updates, timeout, heartbeat = self._mirror_args
        self._deadlines.clear()
        mirror = CloneClient(
            self._network,
            snapshot=snapshot,
            updates=updates,
            timeout=timeout,
            heartbeat=heartbeat,
            subscriber_options=self._mirror_options,
            snapshot_options=self._mirror_options,
        )
        mirror._on_message = self._mirrored
        self._mirror = mirror
        self._mirror_task = asyncio.get_running_loop().create_task(mirror.run())

    def _take_over(self) -> None:
        mirror, self._mirror = self._mirror, None
        if mirror is not None:
            mirror._on_message = None
            if mirror.stats.snapshots:
                self.server._adopt(mirror.messages, mirror.sequence, self._deadlines)
                self.stats.takeovers += 1
                logger.warning(
                    "Clone pair failover: this server takes over with %d keys at sequence %d",
                    len(mirror.messages),
                    mirror.sequence,
                    extra={"counter": "takeovers"},
                )
            self._tasks.append(asyncio.get_running_loop().create_task(mirror.close()))
        self.server._active = True
        self._published.clear()
        if self._pending:
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_pending())

    async def _flush_pending(self) -> None:
        while self._pending:
            _, (msg, ttl) = self._pending.popitem(last=False)
            with contextlib.suppress(ClosedError):
                await self.server._publish(msg, ttl)
            self.stats.applied += 1

    def start(self) -> None:
        """Start the CHP server and Binary Star in background tasks. Idempotent."""
        self.bstar.start()  # first: its peer-expiry clock starts before any vote
        self.server.start()

    async def run(self) -> None:
        """Run until cancelled, closed or shut down."""
        self.start()
        await self._closed.wait()

    async def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Stop gracefully: the CHP server as :meth:`CloneServer.shutdown` does (its
        snapshots in progress get ``timeout`` seconds), then Binary Star and the
        follower; close every socket. Collector updates held on the pending list are
        not published (the active peer publishes its own). Idempotent.

        Returns:
            True if no snapshot was cut at the deadline.

        Raises:
            ValueError: ``timeout`` is not from 0 to 3600 seconds.
        """
        check_shutdown_timeout(timeout)
        clean = await self.server.shutdown(timeout)
        await self.close()
        return clean

    async def close(self) -> None:
        """Stop everything and close the sockets (the hard stop). Idempotent."""
        self._closed.set()
        mirror, self._mirror = self._mirror, None
        if mirror is not None:
            await mirror.close()
        for task in (self._mirror_task, self._flush_task, *self._tasks):
            if task is not None and not task.done():
                task.cancel()
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, ClosedError):
                    await task
        self._tasks = []
        await self.bstar.close()
        await self.server.close()


logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MAX_PENDING_UPDATES", "ClonePairServer", "ClonePairStats"]
