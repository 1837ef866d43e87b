"""Graceful shutdown of the servers, in process: ``await server.shutdown(timeout)`` (or
``stop.shutdown`` for the function servers) stops accepting, finishes or fails what is in
flight within the bound, closes the sockets, and makes ``run()`` return.

Each test runs in virtual time (deterministic, milliseconds of wall time); one runs on
real zmq sockets."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit import Message, ServiceUnavailableError, SocketOptions, Timeout
from transportkit.patterns import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    BinaryStarServer,
    ClonePairServer,
    CloneServer,
    FreelanceServer,
    GracefulStop,
    LastValueCache,
    LoadBalancingBroker,
    MajordomoBroker,
    MajordomoClient,
    MajordomoWorker,
    ParanoidPirateQueue,
    ParanoidPirateWorker,
    Titanic,
    TitanicClient,
    run_load_balancing_worker,
    serve_lazy_pirate,
)
from transportkit.patterns._shutdown import check_shutdown_timeout
from transportkit.patterns.clone._kvmsg import ICANHAZ, KTHXBAI
from transportkit.patterns.conflation import SNAPSHOT_END, SNAPSHOT_REQUEST, SNAPSHOT_VALUE
from transportkit.patterns.lazy_pirate import ServeStats
from transportkit.sim_backend import Constant, Simulation
from transportkit.trading import RiskBook, RiskLimits, serve_risk
from transportkit.zmq_backend import ZmqNetwork

LINK = Constant(0.001)
T = TypeVar("T")


def _run(sim: Simulation, main: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run ``main`` in ``sim``, then close it (the servers left running are cancelled)."""
    with sim:
        return sim.run(main, timeout=timeout)


# -- the contract ---------------------------------------------------------------------


def test_the_default_timeout_is_bounded_and_out_of_range_timeouts_are_refused() -> None:
    assert DEFAULT_SHUTDOWN_TIMEOUT == 5.0
    assert check_shutdown_timeout(0) == 0.0
    for bad in (-1, math.inf, math.nan, 3601, True, "5"):
        with pytest.raises(ValueError, match="shutdown timeout"):
            check_shutdown_timeout(bad)


def test_shutdown_of_a_stop_no_loop_watches_returns_at_once() -> None:
    sim = Simulation(seed=1)

    async def main() -> tuple[bool, float]:
        stop = GracefulStop()
        return await stop.shutdown(2.0), sim.now

    assert _run(sim, main()) == (True, 0.0)


# -- Lazy Pirate / risk server (REP) --------------------------------------------------


def _lazy_pirate_world(
    delay: float,
) -> tuple[Simulation, ServeStats, GracefulStop, list[str]]:
    sim = Simulation(seed=3, latency=LINK)
    stats, stop, seen = ServeStats(), GracefulStop(), []

    async def slow(request: Message) -> list[bytes]:
        seen.append(request[0].decode())
        await asyncio.sleep(delay)
        return [b"ok:" + request[0]]

    async def server() -> None:
        with sim.node("risk").worker(bind="tcp://*:5555") as rep:
            await serve_lazy_pirate(rep, slow, stats=stats, stop=stop)
            seen.append(f"returned at {sim.now:.3f}")

    sim.node("risk").spawn(server())
    return sim, stats, stop, seen


async def _request(sim: Simulation, body: bytes, timeout: float) -> Message | None:
    with sim.node("desk").requester(connect="tcp://risk:5555") as req:
        await req.send([body])
        try:
            return await req.recv(timeout=timeout)
        except Timeout:
            return None


def test_lazy_pirate_answers_the_request_in_flight_and_reads_no_new_one() -> None:
    sim, stats, stop, seen = _lazy_pirate_world(delay=1.0)

    async def main() -> tuple[Message | None, Message | None, bool, float]:
        first = asyncio.ensure_future(_request(sim, b"a", 5.0))
        await asyncio.sleep(0.5)  # the handler is busy with "a"
        stopping = asyncio.ensure_future(stop.shutdown(5.0))
        late = asyncio.ensure_future(_request(sim, b"b", 3.0))
        clean = await stopping
        stopped_at = sim.now
        return await first, await late, clean, stopped_at

    first, late, clean, stopped_at = _run(sim, main(), timeout=60)
    assert first == [b"ok:a"]
    assert late is None  # never read
    assert clean
    assert seen == ["a", f"returned at {stopped_at:.3f}"]  # no "b"
    assert 1.0 < stopped_at < 1.01  # once "a" was answered, well before the deadline
    assert stats.served == 1 and stats.shutdown_dropped == 0


def test_lazy_pirate_past_the_deadline_fails_the_request_with_the_error_reply() -> None:
    sim, stats, stop, _ = _lazy_pirate_world(delay=60.0)

    async def main() -> tuple[Message | None, bool, float]:
        first = asyncio.ensure_future(_request(sim, b"a", 10.0))
        await asyncio.sleep(0.5)
        clean = await stop.shutdown(0.25)
        stopped_at = sim.now
        return await first, clean, stopped_at

    first, clean, stopped_at = _run(sim, main(), timeout=60)
    assert first == [b""]  # EMPTY_ANSWER
    assert not clean
    assert stopped_at == pytest.approx(0.75)
    assert stats.shutdown_dropped == 1 and stats.served == 0


def test_risk_server_stops_gracefully_with_a_graceful_stop() -> None:
    sim = Simulation(seed=4, latency=LINK)
    stop = GracefulStop()
    book = RiskBook(RiskLimits(capital=1_000_000))
    returned: list[float] = []

    async def server() -> None:
        with sim.node("risk").worker(bind="tcp://*:5555") as rep:
            await serve_risk(rep, book, stop=stop)
            returned.append(sim.now)

    sim.node("risk").spawn(server())

    async def main() -> bool:
        await asyncio.sleep(1.0)
        return await stop.shutdown(1.0)

    assert _run(sim, main(), timeout=10)
    assert returned == [1.0]
    assert not stop.running


# -- Majordomo ------------------------------------------------------------------------


def test_majordomo_forwards_the_reply_in_flight_drops_new_requests_and_disconnects() -> None:
    sim = Simulation(seed=5, latency=LINK)
    broker = MajordomoBroker(sim.node("broker"), "tcp://*:5555")
    sim.node("broker").spawn(broker.run())
    endpoint = "tcp://broker:5555"
    worker = MajordomoWorker(sim.node("w"), endpoint, b"risk")

    async def slow(request: Message) -> list[bytes]:
        await asyncio.sleep(2.0)
        return [b"done:" + request[0]]

    sim.node("w").spawn(worker.serve(slow))

    async def main() -> tuple[Message, bool, bool, float]:
        await asyncio.sleep(0.5)
        first = MajordomoClient(sim.node("c1"), endpoint, timeout=10.0, attempts=1)
        second = MajordomoClient(sim.node("c2"), endpoint, timeout=1.0, attempts=1)
        in_flight = asyncio.ensure_future(first.request(b"risk", [b"a"]))
        await asyncio.sleep(0.5)
        stopping = asyncio.ensure_future(broker.shutdown(5.0))
        try:
            await second.request(b"risk", [b"b"])
            refused = False
        except ServiceUnavailableError:
            refused = True
        clean = await stopping
        stopped_at = sim.now
        reply = await in_flight
        await asyncio.sleep(0.1)  # the DISCONNECT reaches the worker
        return reply, refused, clean, stopped_at

    reply, refused, clean, stopped_at = _run(sim, main(), timeout=60)
    assert reply == [b"done:a"]
    assert refused and clean
    assert 2.5 < stopped_at < 2.6  # when the reply came back, not at the deadline
    assert broker.stats.shutdown_dropped == 1  # "b"
    assert broker.stats.replies == 1
    assert worker.stats.disconnects >= 1


def test_majordomo_drops_what_is_pending_at_the_deadline() -> None:
    sim = Simulation(seed=6, latency=LINK)
    broker = MajordomoBroker(sim.node("broker"), "tcp://*:5555")
    sim.node("broker").spawn(broker.run())
    endpoint = "tcp://broker:5555"

    async def main() -> tuple[bool, float, int]:
        # No worker for the service: the request waits in its queue.
        client = MajordomoClient(sim.node("c"), endpoint, timeout=30.0, attempts=1)
        waiting = asyncio.ensure_future(client.request(b"nobody", [b"x"]))
        await asyncio.sleep(1.0)
        clean = await broker.shutdown(0.5)
        stopped_at = sim.now
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        return clean, stopped_at, broker.pending_requests

    clean, stopped_at, _ = _run(sim, main(), timeout=60)
    assert not clean
    assert stopped_at == pytest.approx(1.5, abs=0.01)
    assert broker.stats.shutdown_dropped == 1


def test_majordomo_shutdown_before_run_makes_run_return_at_once() -> None:
    sim = Simulation(seed=7)
    broker = MajordomoBroker(sim.node("broker"), "tcp://*:5555")

    async def main() -> bool:
        clean = await broker.shutdown()
        await broker.run()
        return clean

    assert _run(sim, main(), timeout=5)


def test_majordomo_shutdown_on_real_sockets() -> None:
    async def main() -> tuple[Message, bool]:
        with ZmqNetwork(name="shutdown-mdp") as net:
            broker = MajordomoBroker(net, "tcp://127.0.0.1:*", options=SocketOptions(linger=100))
            endpoint = broker.bind()
            running = asyncio.ensure_future(broker.run())
            worker = MajordomoWorker(net, endpoint, b"risk", options=SocketOptions(linger=0))

            async def slow(request: Message) -> list[bytes]:
                await asyncio.sleep(0.3)
                return request

            serving = asyncio.ensure_future(worker.serve(slow))
            client = MajordomoClient(
                net, endpoint, timeout=5.0, attempts=1, options=SocketOptions(linger=0)
            )
            try:
                in_flight = asyncio.ensure_future(client.request(b"risk", [b"a"]))
                while broker.stats.dispatched == 0:
                    await asyncio.sleep(0.01)
                clean = await broker.shutdown(2.0)
                await asyncio.wait_for(running, 2.0)
                return await asyncio.wait_for(in_flight, 2.0), clean
            finally:
                client.close()
                await worker.aclose()
                serving.cancel()
                await asyncio.gather(serving, running, return_exceptions=True)

    reply, clean = asyncio.run(asyncio.wait_for(main(), 15))
    assert reply == [b"a"]
    assert clean


# -- Clone ----------------------------------------------------------------------------


def _clone_world(sim: Simulation) -> CloneServer:
    return CloneServer(
        sim.node("srv"),
        publisher="tcp://*:5557",
        snapshot="tcp://*:5556",
        snapshot_options=SocketOptions(sndhwm=2, rcvhwm=2, linger=1000),
        heartbeat=0.5,
    )


async def _slow_snapshot(sim: Simulation, name: str, pace: float) -> list[bytes]:
    """Ask for a snapshot and read it one message every ``pace`` seconds; the keys."""
    with sim.node(name).dealer(connect="tcp://srv:5556", options=SocketOptions(rcvhwm=2)) as dealer:
        await dealer.send([ICANHAZ, b""])
        keys = []
        while True:
            try:
                msg = await dealer.recv(timeout=3.0)
            except Timeout:
                return keys
            keys.append(msg[0])
            if msg[0] == KTHXBAI:
                return keys
            await asyncio.sleep(pace)


def test_clone_lets_the_snapshot_in_progress_finish_and_answers_no_new_request() -> None:
    sim = Simulation(seed=8, latency=LINK, kernel_buffers=False)
    server = _clone_world(sim)

    async def main() -> tuple[list[bytes], list[bytes], bool, float]:
        async with server:
            for i in range(40):
                await server.set(b"MARKET.%02d" % i, b"x")
            slow = asyncio.ensure_future(_slow_snapshot(sim, "slow", 0.05))
            await asyncio.sleep(0.5)
            assert server.snapshots_in_progress == 1
            stopping = asyncio.ensure_future(server.shutdown(5.0))
            await asyncio.sleep(0.1)
            late = asyncio.ensure_future(_slow_snapshot(sim, "late", 0.0))
            clean = await stopping
            stopped_at = sim.now
            return await slow, await late, clean, stopped_at

    keys, late, clean, stopped_at = _run(sim, main(), timeout=60)
    assert len(keys) == 41 and keys[-1] == KTHXBAI  # the whole snapshot
    assert late == []  # never answered
    assert clean
    # Once the last messages were in the pipes (the ROUTER's linger delivers them),
    # well before the deadline (5.5).
    assert 1.7 < stopped_at < 2.1
    assert server.stats.snapshots == 1 and server.stats.shutdown_dropped == 0


def test_clone_cuts_the_snapshot_at_the_deadline() -> None:
    sim = Simulation(seed=9, latency=LINK, kernel_buffers=False)
    server = _clone_world(sim)

    async def main() -> tuple[list[bytes], bool, float]:
        async with server:
            for i in range(40):
                await server.set(b"MARKET.%02d" % i, b"x")
            slow = asyncio.ensure_future(_slow_snapshot(sim, "slow", 0.05))
            await asyncio.sleep(0.5)
            clean = await server.shutdown(0.5)
            stopped_at = sim.now
            return await slow, clean, stopped_at

    keys, clean, stopped_at = _run(sim, main(), timeout=60)
    assert KTHXBAI not in keys and keys
    assert not clean
    assert stopped_at == pytest.approx(1.0, abs=0.01)
    assert server.stats.shutdown_dropped == 1


# -- Binary Star ----------------------------------------------------------------------


def _lone_primary(sim: Simulation, delay: float) -> BinaryStarServer:
    async def slow(request: Message) -> list[bytes]:
        await asyncio.sleep(delay)
        return [b"done:" + request[0]]

    return BinaryStarServer(
        sim.node("p"),
        primary=True,
        frontend="tcp://*:5001",
        state_pub="tcp://*:5003",
        state_sub="tcp://b:5004",  # no backup: the primary goes active on a request
        heartbeat=0.1,
        handler=slow,
    )


async def _bstar_request(sim: Simulation, name: str, body: bytes, timeout: float) -> Message | None:
    with sim.node(name).requester(connect="tcp://p:5001") as req:
        await req.send([body])
        try:
            return await req.recv(timeout=timeout)
        except Timeout:
            return None


def test_binary_star_answers_the_request_in_flight_and_reads_no_new_one() -> None:
    sim = Simulation(seed=10, latency=LINK)
    server = _lone_primary(sim, delay=1.0)

    async def main() -> tuple[Message | None, Message | None, bool, float]:
        async with server:
            await asyncio.sleep(0.5)  # the peer is presumed dead after 2 x heartbeat
            first = asyncio.ensure_future(_bstar_request(sim, "c1", b"a", 5.0))
            await asyncio.sleep(0.2)
            stopping = asyncio.ensure_future(server.shutdown(5.0))
            late = asyncio.ensure_future(_bstar_request(sim, "c2", b"b", 2.0))
            clean = await stopping
            stopped_at = sim.now
            return await first, await late, clean, stopped_at

    first, late, clean, stopped_at = _run(sim, main(), timeout=60)
    assert first == [b"done:a"]
    assert late is None
    assert clean
    assert 1.5 < stopped_at < 1.6
    assert server.stats.served == 1 and server.stats.shutdown_dropped == 0


def test_binary_star_drops_the_request_whose_handler_outlives_the_deadline() -> None:
    sim = Simulation(seed=11, latency=LINK)
    server = _lone_primary(sim, delay=60.0)

    async def main() -> tuple[Message | None, bool, float]:
        async with server:
            await asyncio.sleep(0.5)
            first = asyncio.ensure_future(_bstar_request(sim, "c1", b"a", 3.0))
            await asyncio.sleep(0.2)
            clean = await server.shutdown(0.3)
            stopped_at = sim.now
            return await first, clean, stopped_at

    first, clean, stopped_at = _run(sim, main(), timeout=60)
    assert first is None
    assert not clean
    assert stopped_at == pytest.approx(1.0, abs=0.01)
    assert server.stats.shutdown_dropped == 1


# -- load-balancing broker (Simple Pirate queue) and Paranoid Pirate queue -------------


def _queue_world(
    kind: str, delay: float
) -> tuple[Simulation, LoadBalancingBroker | ParanoidPirateQueue]:
    sim = Simulation(seed=12, latency=LINK)
    node = sim.node("q")
    queue: LoadBalancingBroker | ParanoidPirateQueue
    if kind == "lb":
        queue = LoadBalancingBroker(node, frontend="tcp://*:5555", backend="tcp://*:5556")
    else:
        queue = ParanoidPirateQueue(
            node, frontend="tcp://*:5555", backend="tcp://*:5556", heartbeat_interval=0.2
        )
    node.spawn(queue.run())

    async def slow(request: Message) -> list[bytes]:
        await asyncio.sleep(delay)
        return [b"done:" + request[-1]]

    worker = sim.node("w")
    if kind == "lb":
        worker.spawn(run_load_balancing_worker(worker, "tcp://q:5556", slow))
    else:
        worker.spawn(
            ParanoidPirateWorker(worker, "tcp://q:5556", slow, heartbeat_interval=0.2).run()
        )
    return sim, queue


async def _queue_request(sim: Simulation, name: str, body: bytes, wait: float) -> Message | None:
    with sim.node(name).requester(connect="tcp://q:5555") as req:
        await req.send([body])
        try:
            return await req.recv(timeout=wait)
        except Timeout:
            return None


@pytest.mark.parametrize("kind", ["lb", "paranoid"])
def test_queues_forward_the_reply_in_flight_and_read_no_new_request(kind: str) -> None:
    sim, queue = _queue_world(kind, delay=1.0)

    async def main() -> tuple[Message | None, Message | None, bool, float]:
        await asyncio.sleep(0.5)  # the worker is ready
        first = asyncio.ensure_future(_queue_request(sim, "c1", b"a", 5.0))
        await asyncio.sleep(0.2)
        stopping = asyncio.ensure_future(queue.shutdown(5.0))
        late = asyncio.ensure_future(_queue_request(sim, "c2", b"b", 2.0))
        clean = await stopping
        stopped_at = sim.now
        return await first, await late, clean, stopped_at

    first, late, clean, stopped_at = _run(sim, main(), timeout=60)
    assert first == [b"done:a"]
    assert late is None
    assert clean
    assert 1.5 < stopped_at < 1.6  # when the reply came back
    assert queue.stats.requests == 1 and queue.stats.shutdown_dropped == 0


@pytest.mark.parametrize("kind", ["lb", "paranoid"])
def test_queues_count_what_a_worker_still_holds_at_the_deadline(kind: str) -> None:
    sim, queue = _queue_world(kind, delay=60.0)

    async def main() -> tuple[Message | None, bool, float]:
        await asyncio.sleep(0.5)
        first = asyncio.ensure_future(_queue_request(sim, "c1", b"a", 2.0))
        await asyncio.sleep(0.2)
        clean = await queue.shutdown(0.5)
        stopped_at = sim.now
        return await first, clean, stopped_at

    first, clean, stopped_at = _run(sim, main(), timeout=60)
    assert first is None
    assert not clean
    assert stopped_at == pytest.approx(1.2, abs=0.01)
    assert queue.stats.shutdown_dropped == 1


# -- Freelance ------------------------------------------------------------------------


def _freelance_world(delay: float) -> tuple[Simulation, FreelanceServer]:
    sim = Simulation(seed=13, latency=LINK)

    async def slow(body: Message) -> list[bytes]:
        await asyncio.sleep(delay)
        return [b"done:" + body[0]]

    server = FreelanceServer(sim.node("fl"), bind="tcp://fl:5555", handler=slow)
    sim.node("fl").spawn(server.run())
    return sim, server


async def _freelance_request(
    sim: Simulation, name: str, body: bytes, wait: float
) -> Message | None:
    with sim.node(name).dealer(connect="tcp://fl:5555") as dealer:
        await dealer.send([b"1", body])
        try:
            return await dealer.recv(timeout=wait)
        except Timeout:
            return None


def test_freelance_answers_the_request_in_flight_and_reads_no_new_one() -> None:
    sim, server = _freelance_world(delay=1.0)

    async def main() -> tuple[Message | None, Message | None, bool, float]:
        first = asyncio.ensure_future(_freelance_request(sim, "c1", b"a", 5.0))
        await asyncio.sleep(0.2)
        stopping = asyncio.ensure_future(server.shutdown(5.0))
        late = asyncio.ensure_future(_freelance_request(sim, "c2", b"b", 2.0))
        clean = await stopping
        stopped_at = sim.now
        return await first, await late, clean, stopped_at

    first, late, clean, stopped_at = _run(sim, main(), timeout=60)
    assert first == [b"1", b"done:a"]
    assert late is None
    assert clean
    assert 1.0 < stopped_at < 1.1
    assert server.stats.served == 1 and server.socket.closed


def test_freelance_drops_the_request_whose_handler_outlives_the_deadline() -> None:
    sim, server = _freelance_world(delay=60.0)

    async def main() -> tuple[Message | None, bool, float]:
        first = asyncio.ensure_future(_freelance_request(sim, "c1", b"a", 2.0))
        await asyncio.sleep(0.2)
        clean = await server.shutdown(0.3)
        stopped_at = sim.now
        return await first, clean, stopped_at

    first, clean, stopped_at = _run(sim, main(), timeout=60)
    assert first is None and not clean
    assert stopped_at == pytest.approx(0.5, abs=0.01)
    assert server.stats.shutdown_dropped == 1


# -- Titanic --------------------------------------------------------------------------


def test_titanic_stores_the_reply_of_the_dispatch_in_flight_then_disconnects(
    tmp_path: Path,
) -> None:
    sim = Simulation(seed=14, latency=LINK)
    broker = MajordomoBroker(sim.node("broker"), "tcp://*:5555")
    sim.node("broker").spawn(broker.run())
    endpoint = "tcp://broker:5555"
    titanic = Titanic(sim.node("titanic"), endpoint, tmp_path)
    sim.node("titanic").spawn(titanic.run())

    async def slow(request: Message) -> list[bytes]:
        await asyncio.sleep(2.0)
        return [b"done:" + request[0]]

    sim.node("w").spawn(MajordomoWorker(sim.node("w"), endpoint, b"risk").serve(slow))

    async def main() -> tuple[bool, float, int, Message | None]:
        async with TitanicClient(sim.node("c"), endpoint) as client:
            await asyncio.sleep(1.0)
            request_uuid = await client.request(b"risk", [b"a"])
            while titanic.stats.dispatched == 0:
                await asyncio.sleep(0.01)
            clean = await titanic.shutdown(5.0)
            stopped_at = sim.now
            await asyncio.sleep(0.1)  # the DISCONNECTs reach the broker
            workers = broker.worker_count(b"titanic.request")
        again = Titanic(sim.node("titanic"), endpoint, tmp_path)  # a restart
        sim.node("titanic").spawn(again.run())
        async with TitanicClient(sim.node("c"), endpoint) as client:
            reply = await client.reply(request_uuid)
        again.stop()
        return clean, stopped_at, workers, reply

    clean, stopped_at, workers, reply = _run(sim, main(), timeout=60)
    assert clean
    assert 3.0 < stopped_at < 3.2  # once the slow reply was stored
    assert workers == 0
    assert reply == [b"done:a"]  # stored before the stop: the restart serves it
    assert titanic.stats.replies == 1 and titanic.stats.shutdown_dropped == 0


# -- last-value cache -----------------------------------------------------------------


@pytest.mark.parametrize(("timeout", "whole"), [(5.0, True), (0.3, False)])
def test_last_value_cache_drains_the_snapshot_in_progress_within_the_bound(
    timeout: float, whole: bool
) -> None:
    sim = Simulation(seed=15, latency=LINK, kernel_buffers=False)
    cache = LastValueCache(
        sim.node("lvc"),
        upstream="tcp://pub:5557",
        downstream="tcp://*:5558",
        snapshots="tcp://*:5559",
        snapshot_hwm=2,
        options=SocketOptions(linger=1000),
    )
    sim.node("lvc").spawn(cache.run())

    async def main() -> tuple[list[bytes], bool, float]:
        with sim.node("pub").publisher(bind="tcp://*:5557") as pub:
            await asyncio.sleep(0.5)  # the cache's subscription arrives
            for i in range(40):
                await pub.send([b"T.%02d" % i, b"x"])
            await asyncio.sleep(0.1)
        with sim.node("sub").dealer(
            connect="tcp://lvc:5559", options=SocketOptions(rcvhwm=2)
        ) as dealer:
            await dealer.send([SNAPSHOT_REQUEST, b"", b"t1"])
            stopping = None
            kinds = []
            while True:
                try:
                    msg = await dealer.recv(timeout=1.0)
                except Timeout:
                    break
                kinds.append(msg[0])
                if stopping is None:  # the snapshot is in progress: stop now
                    stopping = asyncio.ensure_future(cache.shutdown(timeout))
                if msg[0] == SNAPSHOT_END:
                    break
                await asyncio.sleep(0.05)
            assert stopping is not None
            clean = await stopping
            return kinds, clean, sim.now

    kinds, clean, _ = _run(sim, main(), timeout=60)
    assert clean is whole
    if whole:
        assert kinds.count(SNAPSHOT_VALUE) == 40 and kinds[-1] == SNAPSHOT_END
        assert cache.shutdown_dropped == 0
    else:
        assert SNAPSHOT_END not in kinds and cache.shutdown_dropped == 1
    assert cache.upstream.closed and cache.snapshots.closed


# -- Majordomo worker -----------------------------------------------------------------


def test_majordomo_worker_answers_the_request_it_holds_then_disconnects() -> None:
    sim = Simulation(seed=16, latency=LINK)
    broker = MajordomoBroker(sim.node("broker"), "tcp://*:5555")
    sim.node("broker").spawn(broker.run())
    endpoint = "tcp://broker:5555"
    worker = MajordomoWorker(sim.node("w"), endpoint, b"risk")

    async def slow(request: Message) -> list[bytes]:
        await asyncio.sleep(1.0)
        return [b"done:" + request[0]]

    serving = sim.node("w").spawn(worker.serve(slow))

    async def main() -> tuple[Message, bool, float, int]:
        await asyncio.sleep(0.5)
        client = MajordomoClient(sim.node("c"), endpoint, timeout=5.0, attempts=1)
        in_flight = asyncio.ensure_future(client.request(b"risk", [b"a"]))
        await asyncio.sleep(0.2)
        clean = await worker.shutdown(5.0)
        stopped_at = sim.now
        reply = await in_flight
        await asyncio.sleep(0.1)
        return reply, clean, stopped_at, broker.worker_count(b"risk")

    reply, clean, stopped_at, workers = _run(sim, main(), timeout=60)
    assert reply == [b"done:a"] and clean
    assert 1.5 < stopped_at < 1.6
    assert workers == 0  # its DISCONNECT arrived
    assert serving.done() and worker.closed


def test_majordomo_worker_gives_the_request_back_at_the_deadline() -> None:
    sim = Simulation(seed=17, latency=LINK)
    broker = MajordomoBroker(sim.node("broker"), "tcp://*:5555")
    sim.node("broker").spawn(broker.run())
    endpoint = "tcp://broker:5555"
    stuck = MajordomoWorker(sim.node("w1"), endpoint, b"risk")

    async def never(request: Message) -> list[bytes]:
        await asyncio.sleep(3600)
        return request

    sim.node("w1").spawn(stuck.serve(never))

    async def main() -> tuple[Message, bool]:
        await asyncio.sleep(0.5)
        client = MajordomoClient(sim.node("c"), endpoint, timeout=10.0, attempts=1)
        in_flight = asyncio.ensure_future(client.request(b"risk", [b"a"]))
        await asyncio.sleep(0.2)
        helper = MajordomoWorker(sim.node("w2"), endpoint, b"risk")
        sim.node("w2").spawn(helper.serve(lambda request: [b"w2", *request]))
        clean = await stuck.shutdown(0.5)
        return await in_flight, clean

    reply, clean = _run(sim, main(), timeout=60)
    assert not clean
    assert reply == [b"w2", b"a"]  # the broker requeued it for the other worker
    assert stuck.stats.abandoned == 1 and stuck.stats.shutdown_dropped == 1
    assert broker.stats.requeued == 1


def test_a_clone_pair_server_shuts_down_and_its_run_returns() -> None:
    sim = Simulation(seed=18, latency=LINK)
    node = sim.node("a")
    pair = ClonePairServer(
        node,
        primary=True,
        publisher="tcp://*:7001",
        snapshot="tcp://*:7002",
        collector="tcp://*:7003",
        state_pub="tcp://*:7004",
        state_sub="tcp://b:7004",  # no backup: the primary serves alone
        peer_snapshot="tcp://b:7002",
        peer_publisher="tcp://b:7001",
        heartbeat=0.1,
        bstar_heartbeat=0.1,
    )
    running = node.spawn(pair.run())

    async def main() -> tuple[bool, float]:
        await asyncio.sleep(1.0)
        clean = await pair.shutdown(2.0)
        stopped_at = sim.now
        await asyncio.sleep(0)
        assert running.done()  # run() returned: it used to wait for ever
        return clean, stopped_at

    clean, stopped_at = _run(sim, main())
    assert clean and stopped_at == pytest.approx(1.0)
    assert all(sock.closed for sock in node.sockets) or not node.sockets


# -- the bound, whatever the handler's time ---------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    delay=st.floats(min_value=0.0, max_value=20.0),
    timeout=st.floats(min_value=0.0, max_value=10.0),
    stop_at=st.floats(min_value=0.0, max_value=2.0),
)
def test_a_lazy_pirate_stop_is_bounded_and_says_whether_the_request_was_answered(
    delay: float, timeout: float, stop_at: float
) -> None:
    sim, stats, stop, _ = _lazy_pirate_world(delay=delay)

    async def main() -> tuple[Message | None, bool, float, float]:
        first = asyncio.ensure_future(_request(sim, b"a", 30.0))
        await asyncio.sleep(stop_at)
        asked_at = sim.now
        clean = await stop.shutdown(timeout)
        stopped_at = sim.now
        return await first, clean, asked_at, stopped_at

    reply, clean, asked_at, stopped_at = _run(sim, main())
    assert stopped_at <= asked_at + timeout + 1e-6  # within the bound
    assert reply in ([b"ok:a"], [b""], None)
    if reply == [b"ok:a"]:
        assert clean and stats.shutdown_dropped == 0
    elif reply == [b""]:  # failed at the deadline with the error reply
        assert not clean and stats.shutdown_dropped == 1
    else:  # the stop came before the request was read: it was never accepted
        assert clean and stats.served == 0 and stats.shutdown_dropped == 0
