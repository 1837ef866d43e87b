"""``wait_for`` that schedules the same way on every supported Python.

:func:`asyncio.wait_for` changed in Python 3.12: on 3.11 it wraps the awaitable in a
new task and waits for that task through a done-callback, so the awaiting task gives up
its turn at once and comes back a few loop iterations later; on 3.12 and later it awaits
the awaitable in place under :func:`asyncio.timeout`. Both are correct, but the order of
ready tasks differs, and a simulation that used it gave a different trace on 3.11 than
on 3.12 and 3.13 (the first send of one client before, or after, the connect of the
next). 3.11's version can also swallow a cancellation that arrives as the awaitable
finishes. :func:`wait_for` here is 3.12's behaviour on every version, built on
:func:`asyncio.timeout` (the same on 3.11, 3.12 and 3.13): transportkit's own code uses it,
and inside a simulation on 3.11 ``asyncio.wait_for`` is this function (the sim's run
guards redirect it), so that code using it traces the same on every interpreter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """Await ``aw`` for at most ``timeout`` seconds (of the running loop's clock).

    The same contract as :func:`asyncio.wait_for` on Python 3.12+, on every version:
    ``aw`` runs in the calling task (no new task, unless ``timeout <= 0``), and a
    cancellation of the caller is never turned into a timeout or lost.

    Args:
        aw: A coroutine, task or future.
        timeout: Seconds; None waits for ever; 0 or less gives ``aw`` no time at all (a
            future already done still gives its result).

    Returns:
        What ``aw`` returned.

    Raises:
        TimeoutError: ``timeout`` passed first; ``aw`` was cancelled (and waited for).
        asyncio.CancelledError: The calling task was cancelled.
        Exception: Whatever ``aw`` raised.
    """
    if timeout is None:
        return await aw
    if timeout <= 0:
        fut = asyncio.ensure_future(aw)
        if fut.done():
            return fut.result()
        fut.cancel()
        await asyncio.wait([fut])  # a cancellation of the caller propagates from here
        try:
            return fut.result()
        except asyncio.CancelledError as exc:
            raise TimeoutError from exc
    async with asyncio.timeout(timeout):
        return await aw
