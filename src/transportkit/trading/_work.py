"""Simulated per-item work by the loop's clock, with timer overruns credited.

Shared by the risk handler's ``service_time`` and the scenario components'
``processing_us`` / ``service_us``.
"""

from __future__ import annotations

import asyncio
from typing import Final

__all__ = ["CREDIT_FLOOR", "MAX_CREDIT", "Work"]

MAX_CREDIT: Final = 0.001
"""Seconds: the most one sleep's overrun is credited to the next items (about a
real loop's timer granularity; a longer overrun is a stall of the machine, not
rounding, and is not made up)."""

CREDIT_FLOOR: Final = 1e-9
"""Seconds: an overrun shorter than this is float noise (the sim's clock), not time."""


class Work:
    """Work of ``seconds`` per item, spent by sleeping on the running loop's clock.

    ``asyncio.sleep`` of 200 us takes a millisecond or more on a real loop (its
    timers wake on millisecond ticks), which would make a 200 us service five times
    slower on real sockets than asked. What a sleep overran is credited to the next
    items (at most :data:`MAX_CREDIT`), so over many items the work rate is the one
    asked for: N items take about ``N * seconds`` (an item may then take less than
    ``seconds``, or no time at all). On the sim each sleep is exact and the sleeps are
    exactly ``seconds`` each, as a plain ``asyncio.sleep(seconds)`` would be.

    One object paces one sequence of items (one server loop); it is not meant to be
    shared by concurrent tasks.
    """

    __slots__ = ("credit", "seconds")

    def __init__(self, seconds: float) -> None:
        """Work of ``seconds`` (>= 0) per item; 0 costs nothing (no sleep at all)."""
        self.seconds = seconds
        self.credit = 0.0

    async def do(self) -> None:
        """Spend one item's work: sleep ``seconds`` less the credit (if any is owed)."""
        owed = self.seconds - self.credit
        if owed <= 0:
            self.credit = -owed
            return
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.sleep(owed)
        over = loop.time() - start - owed
        self.credit = min(over, MAX_CREDIT) if over > CREDIT_FLOOR else 0.0
