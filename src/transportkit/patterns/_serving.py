"""Helpers of the server patterns: snapshots sent to many ROUTER peers side by side,
none of them ever waited on by the loop that serves the rest (Clone, the last-value
cache),.

A snapshot is a sequence of messages to one peer. Each one in progress is a task that
sends with ``try_send`` on a ``router_mandatory`` ROUTER: when the peer is at its
high-water mark the task alone pauses (1 ms, doubling to 32 ms) and tries again, so a
good client on a slow link receives a snapshot of any size at the pace it reads, while
a client that stops reading for ``stall_timeout`` seconds, or goes away, costs its
snapshot and nothing else. At most ``max_active`` snapshots are in progress and
``max_pending`` wait for a place; a peer has at most one of either; what comes past
those bounds is refused (the server counts it, the client retries after its timeout).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from transportkit._errors import BrokenPeerError, ClosedError, WouldBlock
from transportkit._socket import Router

__all__ = ["SnapshotSender", "Starter"]

Starter = Callable[[], Iterable[Sequence[bytes]]]
"""Called when a snapshot starts; returns its messages (without the routing id)."""

_FIRST_PAUSE: Final = 0.001
_MAX_PAUSE: Final = 0.032
_SLICE: Final = 64
"""Messages a snapshot sends before it lets the other tasks run."""


class SnapshotSender:
    """Sends snapshots on ``router`` concurrently, within bounds.

    Args:
        router: A ROUTER with ``router_mandatory`` set (so that a full or vanished peer
            is reported instead of the messages being dropped silently).
        max_active: Snapshots in progress at once.
        max_pending: Snapshots waiting for a place once ``max_active`` are in progress.
        stall_timeout: Seconds one message may wait on a peer at its high-water mark
            before the snapshot is abandoned.
        on_done: Called with True for every snapshot sent whole, False for every one
            abandoned (the peer vanished or stalled); not for those cut by
            :meth:`aclose`.
    """

    def __init__(
        self,
        router: Router,
        *,
        max_active: int,
        max_pending: int,
        stall_timeout: float,
        on_done: Callable[[bool], None],
    ) -> None:
        self._router = router
        self.max_active = max_active
        self.max_pending = max_pending
        self.stall_timeout = stall_timeout
        self._on_done = on_done
        self._active: dict[bytes, asyncio.Task[None]] = {}
        self._pending: deque[tuple[bytes, Starter]] = deque()
        self._pending_ids: set[bytes] = set()
        self._stopping = False

    @property
    def active(self) -> int:
        """Snapshots in progress."""
        return len(self._active)

    @property
    def pending(self) -> int:
        """Snapshots waiting for a place."""
        return len(self._pending)

    def submit(self, identity: bytes, start: Starter) -> bool:
        """Start a snapshot to ``identity`` now, or queue it; False if refused.

        ``start`` is called (synchronously, with nothing else running in between) when
        the snapshot starts: at once if fewer than ``max_active`` are in progress, else
        when one ends. Refused: ``identity`` already has one in progress or waiting, or
        ``max_active`` are in progress and ``max_pending`` waiting.

        Raises:
            ClosedError: The router is closed (from ``start``'s own sends, if any).
        """
        if identity in self._active or identity in self._pending_ids:
            return False
        if len(self._active) < self.max_active:
            self._start(identity, start)
            return True
        if len(self._pending) < self.max_pending:
            self._pending.append((identity, start))
            self._pending_ids.add(identity)
            return True
        return False

    def _start(self, identity: bytes, start: Starter) -> None:
        messages = start()
        loop = asyncio.get_running_loop()
        self._active[identity] = loop.create_task(self._run(identity, messages))

    def _start_pending(self) -> None:
        while self._pending and len(self._active) < self.max_active and not self._stopping:
            identity, start = self._pending.popleft()
            self._pending_ids.discard(identity)
            try:
                self._start(identity, start)
            except ClosedError:
                return

    async def _run(self, identity: bytes, messages: Iterable[Sequence[bytes]]) -> None:
        outcome: bool | None = None
        try:
            outcome = await self._send(identity, messages)
        except ClosedError:
            pass
        finally:
            del self._active[identity]
            self._start_pending()
        if outcome is not None:
            self._on_done(outcome)

    async def _send(self, identity: bytes, messages: Iterable[Sequence[bytes]]) -> bool:
        loop = asyncio.get_running_loop()
        router = self._router
        for sent, message in enumerate(messages, start=1):
            frames = [identity, *message]
            pause = _FIRST_PAUSE
            deadline: float | None = None
            while True:
                try:
                    router.try_send(frames)
                    break
                except WouldBlock:
                    now = loop.time()
                    if deadline is None:
                        deadline = now + self.stall_timeout
                    elif now >= deadline:
                        return False
                    await asyncio.sleep(min(pause, deadline - now))
                    pause = min(2 * pause, _MAX_PAUSE)
                except BrokenPeerError:  # HostUnreachableError: the peer has gone
                    return False
            if sent % _SLICE == 0:
                await asyncio.sleep(0)
        return True

    async def drain(self, timeout: float) -> int:
        """Let the snapshots in progress, and those waiting, go on for at most
        ``timeout`` seconds (the loop's clock), then abandon what is left
        (:meth:`aclose`). Return how many snapshots were abandoned (0: all ended).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while self._active:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(
                list(self._active.values()),
                timeout=remaining,
                return_when=asyncio.FIRST_COMPLETED,
            )
        left = len(self._active) + len(self._pending)
        await self.aclose()
        return left

    async def aclose(self) -> None:
        """Abandon every snapshot in progress or waiting; wait until they have stopped."""
        self._stopping = True
        try:
            self._pending.clear()
            self._pending_ids.clear()
            tasks = list(self._active.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._stopping = False
