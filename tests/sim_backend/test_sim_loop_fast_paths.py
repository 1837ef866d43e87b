"""The event loop's fast paths keep asyncio's behaviour: timer order, cancellation,
debug mode, and the random walk's inlined choice."""

from __future__ import annotations

import asyncio
import heapq
import random
from typing import Any

from transportkit.sim_backend import RandomScheduler, Simulation


def _asyncio_heap_order(whens: list[float], cancelled: set[int]) -> list[int]:
    """The order asyncio's own timer heap (``TimerHandle`` objects ordered by
    ``__lt__``) runs timers pushed in this order: ties keep the heap's shape."""
    loop = asyncio.new_event_loop()
    try:
        heap: list[asyncio.TimerHandle] = []
        for index, when in enumerate(whens):
            heapq.heappush(heap, asyncio.TimerHandle(when, print, (index,), loop))
        order = []
        while heap:
            handle = heapq.heappop(heap)
            index = handle._args[0]
            if index not in cancelled:
                order.append(index)
        return order
    finally:
        loop.close()


def test_timers_set_for_the_same_instant_run_in_asyncio_heap_order() -> None:
    rng = random.Random(14)
    whens = [rng.choice((0.001, 0.002, 0.003)) for _ in range(300)]
    cancelled = set(rng.sample(range(300), 40))
    ran: list[int] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handles = [loop.call_at(when, ran.append, i) for i, when in enumerate(whens)]
        for i in sorted(cancelled):
            handles[i].cancel()
        await asyncio.sleep(0.01)

    sim = Simulation(1)
    sim.run(main())
    sim.close()
    # The last timer pushed is asyncio.sleep's (index 300, never recorded).
    expected = _asyncio_heap_order([*whens, 0.01], cancelled | {300})
    assert ran == expected
    # Not the order of a stable heap (ties by push order): the heap's shape matters.
    stable = sorted((i for i in range(300) if i not in cancelled), key=lambda i: (whens[i], i))
    assert ran != stable


def test_timer_handles_cancel_as_asyncio_does() -> None:
    seen: dict[str, Any] = {}

    async def main() -> None:
        loop: Any = asyncio.get_running_loop()
        fired: list[int] = []
        handle = loop.call_later(1.0, fired.append, 1)
        assert isinstance(handle, asyncio.TimerHandle)
        assert handle.when() == 1.0
        assert repr(handle).startswith("<TimerHandle when=1.0 ")
        before = loop._timer_cancelled_count
        handle.cancel()
        handle.cancel()  # a second cancel counts nothing
        seen["counted"] = loop._timer_cancelled_count - before
        seen["cancelled"] = handle.cancelled()
        late = loop.call_later(0.5, fired.append, 2)
        await asyncio.sleep(2.0)
        late.cancel()  # after it ran: not scheduled any more, nothing counted
        # (and the first, dropped from the heap when it came due, was counted out)
        seen["after_run"] = loop._timer_cancelled_count - before
        seen["fired"] = fired

    sim = Simulation(1)
    sim.run(main())
    sim.close()
    assert seen == {"counted": 1, "cancelled": True, "after_run": 0, "fired": [2]}


def test_debug_mode_runs_timers_and_callbacks_in_virtual_time() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        out: list[tuple[str, float]] = []
        loop.call_later(0.002, lambda: out.append(("later", loop.time())))
        loop.call_soon(lambda: out.append(("soon", loop.time())))
        await asyncio.sleep(0.005)
        out.append(("slept", loop.time()))
        loop.set_debug(False)
        return out

    sim = Simulation(1)
    assert sim.run(main()) == [("soon", 0.0), ("later", 0.002), ("slept", 0.005)]
    sim.close()


class _PlainRandom(RandomScheduler):
    """A subclass: the loop calls its ``choose`` instead of the inlined walk."""


async def _busy() -> list[int]:
    order: list[int] = []

    async def worker(i: int) -> None:
        for k in range(20):
            await asyncio.sleep(0 if k % 3 else 0.001)
            order.append(i)

    await asyncio.gather(*(worker(i) for i in range(6)))
    return order


def test_the_inlined_random_walk_chooses_as_random_scheduler_choose() -> None:
    for seed in range(5):
        for weight in (0.5, 1.0, 3.0):
            runs = []
            for scheduler in (
                RandomScheduler(fifo_weight=weight),
                _PlainRandom(fifo_weight=weight),
            ):
                sim = Simulation(seed, scheduler=scheduler)
                order = sim.run(_busy())
                runs.append((order, sim.schedule.choices, sim.schedule.steps, sim.trace.hash))
                sim.close()
            assert runs[0] == runs[1]
            assert runs[0][1]  # the walk did leave FIFO
