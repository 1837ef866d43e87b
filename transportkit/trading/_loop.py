"""The receive loop step shared by the trading servers and workers."""

from __future__ import annotations

import asyncio
import contextlib
import math

from transportkit import ClosedError, Message, Receiver

__all__ = ["recv_or_stop"]


async def recv_or_stop(sock: Receiver, stop: asyncio.Event | None) -> Message | None:
    """Wait for the next message on ``sock``; return None once ``stop`` is set or the
    socket is closed.

    The wait ignores ``rcvtimeo``: a server waits for work until it is told to stop. A
    message that arrives in the same instant as ``stop`` may be left unread in the
    socket, as with any server shutdown.
    """
    if stop is not None and stop.is_set():
        return None
    receive = asyncio.ensure_future(sock.recv(timeout=math.inf))
    if stop is None:
        try:
            return await receive
        except ClosedError:
            return None
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({receive, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (receive, stopped):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ClosedError):
                    await task
    if receive.cancelled():
        return None
    try:
        return receive.result()
    except ClosedError:
        return None
