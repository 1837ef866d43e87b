"""The receive loop step shared by the trading servers and workers.

It is :meth:`~transportkit.patterns.GracefulStop.recv` (poll, then take the message),
for loops whose ``stop`` may also be a plain :class:`asyncio.Event` or nothing.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from transportkit import ClosedError, Message, Receiver
from transportkit.patterns._shutdown import GracefulStop

__all__ = ["LoopStop"]


class LoopStop:
    """The stop one trading loop watches: a GracefulStop, an :class:`asyncio.Event`, or
    None (run until the socket is closed). Use it as a ``with`` block around the loop.

    An Event is watched by one task for the whole loop (started on entering the block,
    cancelled on leaving it), which requests the stop of a private GracefulStop when
    the event is set; the loop's receives are that GracefulStop's.
    """

    __slots__ = ("_event", "_watcher", "graceful")

    def __init__(self, stop: GracefulStop | asyncio.Event | None) -> None:
        self.graceful = stop if isinstance(stop, GracefulStop) else GracefulStop()
        """The GracefulStop whose :meth:`~GracefulStop.recv` the loop's receives use."""
        self._event = stop if isinstance(stop, asyncio.Event) else None
        self._watcher: asyncio.Task[None] | None = None

    def __enter__(self) -> LoopStop:
        if self._event is not None and not self._event.is_set():
            self._watcher = asyncio.ensure_future(self._watch(self._event))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Cancelled, not awaited: no await on the way out of a loop (a coroutine that
        # is closed must not await).
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def _watch(self, event: asyncio.Event) -> None:
        await event.wait()
        self.graceful.request()

    async def recv(self, sock: Receiver) -> Message | None:
        """The next message on ``sock``; None once the stop is requested (the event is
        set) or ``sock`` is closed.

        The wait ignores ``rcvtimeo``: a server waits for work until it is told to
        stop. A message still in the socket when the stop comes is left there (it was
        not accepted), as with any server shutdown.
        """
        if self._event is not None and self._event.is_set():
            return None
        try:
            return await self.graceful.recv(sock)
        except ClosedError:
            return None
