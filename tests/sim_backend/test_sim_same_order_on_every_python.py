"""The simulated order of tasks is the same on Python 3.11, 3.12 and 3.13.

asyncio changed in 3.12 in two ways that reorder ready tasks: ``wait_for`` no longer
runs its awaitable in a new task, and ``gather`` takes arguments that are already done
at once instead of through the loop. Inside a simulation both behave as on 3.12 on every
interpreter (on 3.11 the run's guards redirect them), and transportkit's own code uses
:func:`transportkit._timeouts.wait_for`, which is 3.12's on every interpreter. The
golden scenario reports (``tests/scenarios/golden``), shared by all interpreters, check the
whole; these tests check each mechanism, and fail on 3.11 without it.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from transportkit._timeouts import wait_for
from transportkit.sim_backend import Simulation


async def _two_tasks(first_awaits: str) -> list[str]:
    """Task a awaits something that completes at once; task b yields once. Where does
    b's first step fall relative to a's?"""
    order: list[str] = []
    finished = asyncio.get_running_loop().create_future()
    finished.set_result(None)
    done_task = asyncio.ensure_future(asyncio.sleep(0))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert done_task.done()

    async def inner() -> str:
        order.append("a:inner")
        return "x"

    async def a() -> None:
        order.append("a:start")
        if first_awaits == "asyncio.wait_for":
            assert await asyncio.wait_for(inner(), 1.0) == "x"
        elif first_awaits == "transportkit wait_for":
            assert await wait_for(inner(), 1.0) == "x"
        elif first_awaits == "gather of done":
            assert await asyncio.gather(done_task, finished) == [None, None]
        elif first_awaits == "gather of done and new":
            await asyncio.gather(done_task, inner())
        order.append("a:end")

    async def b() -> None:
        order.append("b:start")
        await asyncio.sleep(0)
        order.append("b:end")

    await asyncio.gather(asyncio.ensure_future(a()), asyncio.ensure_future(b()))
    return order


# What Python 3.12 and 3.13 do (3.11 put b:start before a:inner or a:end).
EXPECTED = {
    "asyncio.wait_for": ["a:start", "a:inner", "a:end", "b:start", "b:end"],
    "transportkit wait_for": ["a:start", "a:inner", "a:end", "b:start", "b:end"],
    "gather of done": ["a:start", "a:end", "b:start", "b:end"],
    "gather of done and new": ["a:start", "b:start", "a:inner", "b:end", "a:end"],
}


@pytest.mark.parametrize("first_awaits", sorted(EXPECTED))
def test_tasks_resume_in_the_order_of_python_312_in_a_simulation(first_awaits: str) -> None:
    assert Simulation(seed=1).run(_two_tasks(first_awaits)) == EXPECTED[first_awaits]


def test_transportkit_wait_for_has_312_order_outside_a_simulation_too() -> None:
    assert asyncio.run(_two_tasks("transportkit wait_for")) == EXPECTED["transportkit wait_for"]


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.11's own asyncio, unchanged")
def test_outside_a_simulation_asyncio_is_left_as_it_is_on_311() -> None:
    """The redirection is for the simulation's thread: asyncio.run on 3.11 keeps 3.11's."""
    assert asyncio.run(_two_tasks("asyncio.wait_for")) != EXPECTED["asyncio.wait_for"]


def test_wait_for_times_out_in_virtual_time() -> None:
    async def main() -> float:
        with pytest.raises(TimeoutError):
            await wait_for(asyncio.sleep(10), 2.5)
        return asyncio.get_running_loop().time()

    assert Simulation().run(main()) == 2.5


def test_wait_for_with_no_time_left_never_starts_a_coroutine() -> None:
    started: list[bool] = []

    async def work() -> None:
        started.append(True)

    async def main() -> tuple[str, ...]:
        fut = asyncio.get_running_loop().create_future()
        fut.set_result("ready")
        got = await wait_for(fut, 0)  # done already: its result
        with pytest.raises(TimeoutError):
            await wait_for(work(), 0)
        return (got,)

    assert Simulation().run(main()) == ("ready",)
    assert started == []


def test_a_cancellation_is_never_taken_for_a_timeout_nor_lost() -> None:
    """3.11's wait_for can swallow a cancellation arriving as the awaitable finishes;
    this one lets the caller's cancellation through."""

    async def main() -> list[str]:
        outcomes: list[str] = []

        async def caller(timeout: float) -> None:
            try:
                await wait_for(asyncio.sleep(1.0), timeout)
                outcomes.append("finished")
            except asyncio.CancelledError:
                outcomes.append("cancelled")
                raise
            except TimeoutError:
                outcomes.append("timeout")

        for timeout in (5.0, 0.5, None):
            task = asyncio.ensure_future(caller(timeout))
            await asyncio.sleep(0.25)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        # The awaitable ends at the same virtual instant as the cancel is asked.
        task = asyncio.ensure_future(caller(5.0))
        loop = asyncio.get_running_loop()
        loop.call_at(loop.time() + 1.0, task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task
        return outcomes

    assert Simulation().run(main()) == ["cancelled"] * 4
