"""Virtual time, deadlock detection and refusal of real-world operations."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import zmq
import zmq.asyncio

from transportkit import SimulationDeadlock, SimulationError, Timeout
from transportkit.sim_backend import Constant, Node, Simulation

from .conftest import TCP


@pytest.fixture
def sim() -> Simulation:
    return Simulation(seed=0)


def test_sleep_advances_virtual_clock_by_exactly_the_duration(sim: Simulation) -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        before = loop.time()
        await asyncio.sleep(600)
        return loop.time() - before

    assert sim.run(main()) == pytest.approx(600)
    assert sim.now == pytest.approx(600)


def test_wait_for_times_out_in_virtual_time(sim: Simulation) -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(100), timeout=2.5)

    sim.run(main())
    assert sim.now == pytest.approx(2.5)


def test_gather_of_sleeps_finishes_at_the_longest(sim: Simulation) -> None:
    async def nap(seconds: float) -> float:
        await asyncio.sleep(seconds)
        return asyncio.get_running_loop().time()

    async def main() -> list[float]:
        return await asyncio.gather(nap(3), nap(1), nap(2))

    assert sim.run(main()) == pytest.approx([3, 1, 2])
    assert sim.now == pytest.approx(3)


def test_queue_tasks_and_event_cooperate_in_virtual_time(sim: Simulation) -> None:
    async def main() -> list[tuple[float, int]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=2)
        done = asyncio.Event()
        got: list[tuple[float, int]] = []

        async def producer() -> None:
            for i in range(5):
                await asyncio.sleep(1)
                await queue.put(i)
            done.set()

        async def consumer() -> None:
            while True:
                item = await queue.get()
                got.append((loop.time(), item))

        task = asyncio.create_task(consumer())
        asyncio.create_task(producer())  # noqa: RUF006
        await done.wait()
        await asyncio.sleep(0)
        task.cancel()
        return got

    assert sim.run(main()) == [(pytest.approx(i + 1), i) for i in range(5)]


def test_ten_minute_outage_scenario_runs_in_virtual_time() -> None:
    sim = Simulation(seed=1, latency=Constant(0.001))
    pub_node, sub_node = sim.node("exchange"), sim.node("trader")

    async def main() -> tuple[int, int]:
        pub = pub_node.publisher(bind=TCP)
        assert pub.last_endpoint is not None
        sub = sub_node.subscriber(connect=pub.last_endpoint)
        await asyncio.sleep(0.1)
        before = 0
        for i in range(10):
            await pub.send([b"tick", str(i).encode()])
            await sub.recv(timeout=1)
            before += 1
        sim.partition("exchange", "trader")
        await asyncio.sleep(600)
        sim.repair("exchange", "trader")
        await pub.send([b"tick", b"after"])
        assert await sub.recv(timeout=1) == [b"tick", b"after"]
        return before, 1

    assert sim.run(main()) == (10, 1)
    assert sim.now > 600.1
    assert sim.now < 601


def test_recv_nothing_will_satisfy_raises_deadlock_not_hang(sim: Simulation) -> None:
    node = sim.node("n")

    async def main() -> None:
        pull = node.puller(bind=TCP)
        await pull.recv()

    with pytest.raises(SimulationDeadlock, match="deadlock"):
        sim.run(main())


def test_run_timeout_raises_transport_timeout_at_that_virtual_time(sim: Simulation) -> None:
    async def main() -> None:
        while True:
            await asyncio.sleep(1)

    with pytest.raises(Timeout):
        sim.run(main(), timeout=5)
    assert sim.now == pytest.approx(5)


def _in_sim(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    Simulation(seed=0).run(body())


def test_run_in_executor_is_refused_with_a_clear_error() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().run_in_executor(None, print, "x")

    with pytest.raises(SimulationError, match=r"run_in_executor.*not available inside"):
        _in_sim(main)


def test_to_thread_is_refused() -> None:
    async def main() -> None:
        await asyncio.to_thread(print, "x")

    with pytest.raises(SimulationError, match="not available inside a simulation"):
        _in_sim(main)


def test_getaddrinfo_is_refused() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().getaddrinfo("localhost", 80)

    with pytest.raises(SimulationError, match="getaddrinfo"):
        _in_sim(main)


def test_real_pyzmq_asyncio_socket_recv_is_refused() -> None:
    async def main() -> None:
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind("inproc://real")
            await sock.recv()
        finally:
            sock.close()
            ctx.term()

    with pytest.raises(SimulationError, match="add_reader"):
        _in_sim(main)


def test_create_subprocess_exec_is_refused() -> None:
    async def main() -> None:
        await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")

    with pytest.raises(SimulationError, match="subprocess"):
        _in_sim(main)


def test_pending_reconnect_retries_do_not_hide_a_deadlock() -> None:
    """A receive on a SUB whose publisher will never exist is a deadlock, even though
    the SUB keeps retrying its connection."""
    sim = Simulation()
    node = sim.node("a")

    async def main() -> None:
        sub = node.subscriber(connect="tcp://nowhere:9999")
        await sub.recv()

    with pytest.raises(SimulationDeadlock):
        sim.run(main())
    assert sim.now < 1.0


def test_a_second_run_does_not_restart_node_mains() -> None:
    sim = Simulation()
    starts = []

    async def server(node: Node) -> None:
        starts.append(sim.now)
        with node.worker(bind="tcp://*:1") as rep:
            while True:
                await rep.send(await rep.recv())

    sim.node("s", main=server)
    client = sim.node("c")

    async def ask() -> list[bytes]:
        with client.requester(connect="tcp://s:1") as req:
            return await req.request([b"x"])

    assert sim.run(ask()) == [b"x"]
    sim.run(asyncio.sleep(1.0))
    assert len(starts) == 1
    sim.crash("s")
    sim.restart("s")
    sim.run(asyncio.sleep(1.0))
    assert len(starts) == 2


def test_timers_never_fire_before_their_virtual_time() -> None:
    """asyncio runs timers up to its clock resolution early; in virtual time a timer
    woken before its time sees a clock short of its deadline (the root of deadline
    loops that spin without the clock moving). Every timer here runs at its time."""
    sim = Simulation()
    node = sim.node("a")

    async def main() -> list[tuple[float, float]]:
        loop = asyncio.get_running_loop()
        early: list[tuple[float, float]] = []

        def check(when: float) -> None:
            if loop.time() < when:
                early.append((when, loop.time()))

        for k in range(200):
            await asyncio.sleep(1.0 + k * 0.1234567)
            now = loop.time()
            for offset in (2e-10, 5e-10, 9e-10):  # inside asyncio's 1 ns resolution
                loop.call_at(now + offset, check, now + offset)
        await asyncio.sleep(1.0)
        sub = node.subscriber(connect="inproc://nothing")
        deadline = loop.time() + 3e-10
        spins = 0
        while loop.time() < deadline:
            spins += 1
            with contextlib.suppress(Timeout):
                await sub.recv(timeout=deadline - loop.time())
            assert spins < 10, "a deadline loop spun at a fixed virtual time"
        return early

    assert sim.run(main(), timeout=1e6) == []
