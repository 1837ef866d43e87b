"""The proxy's graceful stop (``Proxy.shutdown``): nothing more is read, the held
messages are delivered within the bound or counted in ``shutdown_dropped``, the sockets
are closed, ``run()`` returns.

In virtual time (deterministic), then once on real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from transportkit import SocketOptions
from transportkit.patterns.proxy import Proxy, ProxyState, queue_device, streamer
from transportkit.sim_backend import Constant, Simulation
from transportkit.zmq_backend import ZmqNetwork

T = TypeVar("T")
OPTS = SocketOptions(linger=0)
LINK = Constant(0.001)
FRONT = "tcp://proxy:6000"
BACK = "tcp://proxy:6001"


def _run(sim: Simulation, main: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    with sim:
        return sim.run(main, timeout=timeout)


async def _until(condition: Any, step: float = 0.01) -> None:
    while not condition():
        await asyncio.sleep(step)


def _held_streamer(sim: Simulation) -> Proxy:
    """A streamer whose backend PUSH has no puller yet."""
    return streamer(
        sim.node("proxy"), frontend="tcp://*:6000", backend="tcp://*:6001", options=OPTS
    )


def test_the_held_message_is_delivered_and_nothing_new_is_read() -> None:
    sim = Simulation(seed=1, latency=LINK)
    proxy = _held_streamer(sim)

    async def main() -> tuple[bool, float, list[list[bytes]], bool]:
        running = asyncio.ensure_future(proxy.run())
        push = sim.node("feed").pusher(connect=FRONT, options=OPTS)
        for i in range(5):
            await push.send([b"%d" % i])
        await _until(lambda: proxy.stats.frontend_received == 1)  # 0 held, 1-4 queued
        await asyncio.sleep(0.1)
        assert proxy.stats.frontend_received == 1
        stopping = asyncio.ensure_future(proxy.shutdown(2.0))
        await asyncio.sleep(0.5)
        pull = sim.node("sink").puller(connect=BACK, options=OPTS)
        got = [await pull.recv(timeout=1.0)]
        clean = await stopping
        stopped_at = sim.now
        await asyncio.wait_for(running, 1.0)
        more = await pull.poll(0.5)  # 1-4 were never taken
        push.close()
        pull.close()
        return clean, stopped_at, got, more

    clean, stopped_at, got, more = _run(sim, main())
    assert clean
    assert got == [[b"0"]]
    assert not more
    assert stopped_at < 1.0  # it returned once the held message left, not at the deadline
    assert proxy.stats.frontend_received == 1
    assert proxy.stats.forwarded == 1
    assert proxy.stats.shutdown_dropped == 0
    assert proxy.stats.abandoned == 0
    assert proxy.state is ProxyState.TERMINATED
    assert proxy.frontend.closed and proxy.backend.closed


def test_a_message_still_held_at_the_deadline_is_counted_in_shutdown_dropped() -> None:
    sim = Simulation(seed=2, latency=LINK)
    proxy = _held_streamer(sim)

    async def main() -> tuple[bool, float, bool]:
        running = asyncio.ensure_future(proxy.run())
        push = sim.node("feed").pusher(connect=FRONT, options=OPTS)
        await push.send([b"never"])
        await _until(lambda: proxy.stats.frontend_received == 1)
        start = sim.now
        clean = await proxy.shutdown(0.75)
        elapsed = sim.now - start
        await asyncio.wait_for(running, 1.0)
        push.close()
        return clean, elapsed, running.done()

    clean, elapsed, done = _run(sim, main())
    assert not clean
    assert done
    assert elapsed == pytest.approx(0.75)
    assert proxy.stats.shutdown_dropped == 1
    assert proxy.stats.abandoned == 0  # counted once, as the graceful stop's
    assert proxy.frontend.closed and proxy.backend.closed


def test_a_paused_proxy_still_delivers_what_it_holds() -> None:
    sim = Simulation(seed=3, latency=LINK)
    proxy = _held_streamer(sim)

    async def main() -> tuple[bool, list[bytes]]:
        running = asyncio.ensure_future(proxy.run())
        push = sim.node("feed").pusher(connect=FRONT, options=OPTS)
        await push.send([b"held"])
        await _until(lambda: proxy.stats.frontend_received == 1)
        proxy.pause()
        stopping = asyncio.ensure_future(proxy.shutdown(2.0))
        pull = sim.node("sink").puller(connect=BACK, options=OPTS)
        got = await pull.recv(timeout=1.5)
        clean = await stopping
        await asyncio.wait_for(running, 1.0)
        push.close()
        pull.close()
        return clean, got

    assert _run(sim, main()) == (True, [b"held"])
    assert proxy.stats.shutdown_dropped == 0


def test_a_queue_device_drops_the_request_it_holds_for_no_worker_at_the_deadline() -> None:
    """A request waits at a backend DEALER with no worker (the ROUTER frontend never
    blocks, so replies are never held): the deadline drops it, counted."""
    sim = Simulation(seed=4, latency=LINK)
    proxy = queue_device(
        sim.node("proxy"), frontend="tcp://*:6000", backend="tcp://*:6001", options=OPTS
    )

    async def main() -> bool:
        running = asyncio.ensure_future(proxy.run())
        client = sim.node("client").dealer(connect=FRONT, options=OPTS)
        await client.send([b"", b"order"])
        await _until(lambda: proxy.stats.frontend_received > 0)
        clean = await proxy.shutdown(0.2)
        await asyncio.wait_for(running, 1.0)
        client.close()
        return clean

    assert not _run(sim, main())
    assert proxy.stats.shutdown_dropped == 1
    assert proxy.stats.forwarded == 0


def test_a_hard_stop_during_the_drain_abandons_the_held_message() -> None:
    sim = Simulation(seed=5, latency=LINK)
    proxy = _held_streamer(sim)

    async def main() -> tuple[bool, float]:
        running = asyncio.ensure_future(proxy.run())
        push = sim.node("feed").pusher(connect=FRONT, options=OPTS)
        await push.send([b"held"])
        await _until(lambda: proxy.stats.frontend_received == 1)
        stopping = asyncio.ensure_future(proxy.shutdown(5.0))
        await asyncio.sleep(0.3)
        proxy.stop()  # TERMINATE: the hard stop ends the drain at once
        clean = await stopping
        await asyncio.wait_for(running, 1.0)
        push.close()
        return clean, sim.now

    clean, now = _run(sim, main())
    assert clean  # nothing was dropped by the graceful stop itself...
    assert now < 1.0
    assert proxy.stats.abandoned == 1  # ...the hard stop abandoned it
    assert proxy.stats.shutdown_dropped == 0


def test_a_capture_stall_is_cut_at_the_deadline_and_the_message_still_goes() -> None:
    """A PUSH capture with no peer stalls the proxy (libzmq's blocking send, sndtimeo
    -1); a graceful stop waits for it only until its deadline."""
    sim = Simulation(seed=6, latency=LINK)
    node = sim.node("proxy")
    front = node.puller(bind="tcp://*:6000", options=OPTS)
    back = node.pusher(bind="tcp://*:6001", options=OPTS)
    capture = node.pusher(bind="tcp://*:6002", options=OPTS)  # nobody reads the copies
    proxy = Proxy(front, back, capture=capture)

    async def main() -> tuple[bool, float, list[bytes]]:
        running = asyncio.ensure_future(proxy.run())
        pull = sim.node("sink").puller(connect=BACK, options=OPTS)
        push = sim.node("feed").pusher(connect=FRONT, options=OPTS)
        await push.send([b"tick"])
        await _until(lambda: proxy.stats.frontend_received == 1)
        start = sim.now
        clean = await proxy.shutdown(0.5)
        elapsed = sim.now - start
        got = await pull.recv(timeout=1.0)
        await asyncio.wait_for(running, 1.0)
        push.close()
        pull.close()
        return clean, elapsed, got

    clean, elapsed, got = _run(sim, main())
    assert not clean
    assert elapsed == pytest.approx(0.5)
    assert got == [b"tick"]
    assert proxy.stats.capture_dropped == 1
    assert proxy.stats.forwarded == 1
    assert proxy.stats.shutdown_dropped == 0


def test_shutdown_before_run_closes_and_run_returns_at_once() -> None:
    sim = Simulation(seed=7)
    proxy = _held_streamer(sim)

    async def main() -> tuple[bool, float]:
        clean = await proxy.shutdown()
        await proxy.run()
        return clean, sim.now

    assert _run(sim, main(), timeout=5) == (True, 0.0)
    assert proxy.frontend.closed
    assert proxy.state is ProxyState.TERMINATED


def test_shutdown_is_idempotent_and_a_shorter_timeout_brings_the_deadline_forward() -> None:
    sim = Simulation(seed=8, latency=LINK)
    proxy = _held_streamer(sim)

    async def main() -> tuple[list[bool], float]:
        running = asyncio.ensure_future(proxy.run())
        push = sim.node("feed").pusher(connect=FRONT, options=OPTS)
        await push.send([b"never"])
        await _until(lambda: proxy.stats.frontend_received == 1)
        start = sim.now
        first = asyncio.ensure_future(proxy.shutdown(10.0))
        await asyncio.sleep(0.1)
        results = await asyncio.gather(first, proxy.shutdown(0.2))
        await asyncio.wait_for(running, 1.0)
        push.close()
        return list(results), sim.now - start

    results, elapsed = _run(sim, main())
    assert results == [False, False]
    assert elapsed == pytest.approx(0.3)
    assert proxy.stats.shutdown_dropped == 1


def test_bad_timeouts_are_refused() -> None:
    sim = Simulation(seed=9)
    proxy = _held_streamer(sim)

    async def main() -> None:
        for bad in (-1.0, 3601.0):
            with pytest.raises(ValueError, match="shutdown timeout"):
                await proxy.shutdown(bad)
        proxy.close()

    _run(sim, main(), timeout=5)


def test_shutdown_on_real_sockets_delivers_the_held_message() -> None:
    async def main() -> tuple[bool, list[bytes], bool]:
        with ZmqNetwork(name="proxy-shutdown") as net:
            proxy = streamer(
                net,
                frontend="tcp://127.0.0.1:*",
                backend="tcp://127.0.0.1:*",
                options=SocketOptions(linger=200),
            )
            front = str(proxy.frontend.last_endpoint)
            back = str(proxy.backend.last_endpoint)
            running = asyncio.ensure_future(proxy.run())
            push = net.pusher(connect=front, options=OPTS)
            pull = None
            try:
                await push.send([b"held"])
                async with asyncio.timeout(5.0):
                    await _until(lambda: proxy.stats.frontend_received == 1)
                stopping = asyncio.ensure_future(proxy.shutdown(3.0))
                await asyncio.sleep(0.1)
                pull = net.puller(connect=back, options=OPTS)
                got = await pull.recv(timeout=3.0)
                clean = await asyncio.wait_for(stopping, 5.0)
                await asyncio.wait_for(running, 2.0)
                return clean, got, proxy.backend.closed
            finally:
                push.close()
                if pull is not None:
                    pull.close()
                proxy.close()
                running.cancel()
                await asyncio.gather(running, return_exceptions=True)

    clean, got, closed = asyncio.run(asyncio.wait_for(main(), 15))
    assert clean
    assert got == [b"held"]
    assert closed
