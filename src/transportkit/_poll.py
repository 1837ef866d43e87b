"""Waiting on several sockets at once (the portable ``zmq_poll``)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Sequence
from typing import TypeVar

__all__ = ["poll"]

from transportkit._socket import Receiver

R = TypeVar("R", bound=Receiver)


async def poll(sockets: Sequence[R], timeout: float = math.inf) -> list[R]:
    """Wait until at least one of ``sockets`` has a message waiting; take nothing.

    Brokers use it to serve a front end and a back end from one task, as the Guide's
    ``zmq_poll`` loops do.

    Args:
        sockets: The receivers to watch, in priority order.
        timeout: Seconds to wait (0 checks without waiting; ``math.inf`` for ever).

    Returns:
        The sockets with a message waiting, in the order given; empty after a timeout.

    Raises:
        ClosedError: One of the sockets is (or became, while waiting) closed.
    """
    ready = [sock for sock in sockets if await sock.poll(0)]
    if ready or timeout <= 0 or not sockets:
        return ready
    waits = [asyncio.ensure_future(sock.poll(timeout)) for sock in sockets]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    except GeneratorExit:
        # The coroutine is being closed while it waits, not cancelled: its task was
        # dropped with its loop (a simulation or a loop garbage collected, or ended,
        # with this task still pending). Nothing can be awaited any more, and a
        # coroutine that awaits here makes Python report "coroutine ignored
        # GeneratorExit" (and a caller's ``finally`` never runs): cancel and leave.
        for wait in waits:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                wait.cancel()
        raise
    except BaseException:
        await _cancel(waits)
        raise
    await _cancel(waits)
    for wait in waits:
        if wait.done() and not wait.cancelled() and wait.exception() is not None:
            raise wait.exception()  # type: ignore[misc]
    return [sock for sock in sockets if await sock.poll(0)]


async def _cancel(waits: Sequence[asyncio.Future[bool]]) -> None:
    """Cancel ``waits`` and wait for them to end (their errors are read, not raised)."""
    for wait in waits:
        wait.cancel()
    await asyncio.gather(*waits, return_exceptions=True)
