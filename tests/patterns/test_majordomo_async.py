"""The asynchronous Majordomo client (the Guide's mdcliapi2): exact frames, pipelining."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
import zmq
from _mdp_helpers import (
    GuideBroker,
    example_argv,
    real_endpoint,
    recv_frames,
    run_real,
    running_broker,
    serving_worker,
)

from transportkit import ClosedError, FrameError, Message, ProtocolError, Timeout
from transportkit.examples import mdclient2
from transportkit.patterns import AsyncMajordomoClient, MajordomoClient, MajordomoReply
from transportkit.sim_backend import Constant, Simulation
from transportkit.testing import ChildProcess, open_harness
from transportkit.zmq_backend import ZmqNetwork

BROKER = "tcp://broker:5555"


def echo(request: Message) -> list[bytes]:
    return list(request)


def test_the_client_sends_and_takes_exactly_the_spec_frames_over_a_dealer(
    tk_backend: str,
) -> None:
    with open_harness(tk_backend) as h:

        async def main() -> None:
            with h.network("broker").router() as router:
                ep = router.bind(h.bind_endpoint())
                async with AsyncMajordomoClient(h.network("client"), ep, timeout=0.5) as client:
                    await client.send(b"echo", [b"one"])
                    await client.send(b"quote", [b"AAPL", b""])
                    assert client.outstanding == 2
                    rid, *first = await recv_frames(router)
                    assert first == [b"", b"MDPC01", b"echo", b"one"]
                    assert (await recv_frames(router))[1:] == [
                        b"",
                        b"MDPC01",
                        b"quote",
                        b"AAPL",
                        b"",
                    ]
                    # Replies in the order the broker sends them, not the requests'.
                    await router.send([rid, b"", b"MDPC01", b"quote", b"187.5", b"x"])
                    await router.send([rid, b"", b"MDPC01", b"echo", b"one"])
                    assert await client.recv_reply() == MajordomoReply(b"quote", [b"187.5", b"x"])
                    assert await client.recv() == [b"one"]
                    assert client.outstanding == 0
                    # A reply that is not 7/MDP is refused, counted, and does not stick.
                    bad_replies = [
                        [b"MDPC01", b"echo", b"x"],
                        [b"", b"MDPC02", b"echo", b"x"],
                        [b"", b"MDPC01", b"echo"],
                        [b"", b"MDPC01", b"", b"x"],
                    ]
                    for bad in bad_replies:
                        await router.send([rid, *bad])
                        with pytest.raises(ProtocolError, match="7/MDP"):
                            await client.recv()
                    # Replies are taken only for requests outstanding: two more.
                    await client.send(b"echo", [b"two"])
                    await client.send(b"echo", [b"three"])
                    await router.send([rid, b"", b"MDPC01", b"echo", b""])
                    assert await client.recv() == [b""]
                    with pytest.raises(Timeout):
                        await client.recv(timeout=0.2)
                    with pytest.raises(ValueError, match="timeout"):
                        await client.recv(timeout=0)
                    await router.send([rid, b"", b"MDPC01", b"echo", b"late"])
                    assert await client.recv(timeout=math.inf) == [b"late"]
                    stats = client.stats
                    counts = (stats.sent, stats.replies, stats.malformed, stats.timeouts)
                    assert counts == (4, 4, 4, 1)
                    with pytest.raises(FrameError):
                        await client.send(b"echo", [])
                    with pytest.raises(FrameError):
                        await client.send(b"", [b"x"])
            with pytest.raises(ClosedError):
                await client.send(b"echo", [b"x"])

        h.run(main())


def test_reconnect_drops_the_replies_to_what_was_sent_before(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:

        async def main() -> None:
            with h.network("broker").router() as router:
                ep = router.bind(h.bind_endpoint())
                async with AsyncMajordomoClient(h.network("client"), ep, timeout=0.5) as client:
                    await client.send(b"echo", [b"old"])
                    old, *_ = await recv_frames(router)
                    client.reconnect()
                    assert client.outstanding == 0
                    await client.send(b"echo", [b"new"])
                    new, *frames = await recv_frames(router)
                    assert frames[-1] == b"new" and new != old
                    await router.send([old, b"", b"MDPC01", b"echo", b"old"])
                    await router.send([new, b"", b"MDPC01", b"echo", b"new"])
                    assert await client.recv() == [b"new"]
                    assert client.stats.reconnects == 1

        h.run(main())


def test_hundreds_of_requests_in_flight_through_our_broker_all_come_back(tk_backend: str) -> None:
    n = 300
    with open_harness(tk_backend) as h:

        async def main() -> None:
            bound = {"max_pending_per_client": n}
            async with running_broker(h.network("broker"), h.bind_endpoint(), **bound) as (
                broker,
                ep,
            ):
                async with (
                    serving_worker(h.network("w1"), ep, b"echo", echo),
                    serving_worker(h.network("w2"), ep, b"echo", echo),
                    AsyncMajordomoClient(h.network("client"), ep) as client,
                ):
                    for i in range(n):
                        await client.send(b"echo", [b"%d" % i])
                    replies = [await client.recv() for _ in range(n)]
                assert sorted(int(r[0]) for r in replies) == list(range(n))
                assert broker.stats.requests == broker.stats.replies == n
                assert broker.stats.over_limit == 0

        h.run(main(), timeout=30.0)


def test_past_the_brokers_per_client_bound_requests_are_dropped_and_recv_times_out() -> None:
    # transportkit's broker holds at most max_pending_per_client requests of one client
    # (default 100); 7/MDP has no error reply, so the rest are never answered.
    sim = Simulation(seed=2, latency=Constant(0.001))
    broker_node, worker_node, client_node = sim.node("broker"), sim.node("w"), sim.node("cli")

    async def main() -> None:
        async with (
            running_broker(broker_node, "tcp://*:5555") as (broker, _),
            serving_worker(worker_node, BROKER, b"echo", echo),
        ):
            await asyncio.sleep(1.0)
            async with AsyncMajordomoClient(client_node, BROKER, timeout=5.0) as client:
                for i in range(150):
                    await client.send(b"echo", [b"%d" % i])
                replies = [await client.recv() for _ in range(100)]
                with pytest.raises(Timeout):
                    await client.recv()
            assert [int(r[0]) for r in replies] == list(range(100))
            assert broker.stats.over_limit == 50
            assert client.stats.timeouts == 1 and client.outstanding == 50

    sim.run(main(), timeout=60.0)


def test_pipelining_takes_one_round_trip_where_the_synchronous_client_takes_n() -> None:
    # 5 ms each way between client and broker: 100 requests cost the synchronous
    # client 100 round trips (>= 1 s); in flight together, about one.
    n, one_way = 100, 0.005

    def elapsed(pipelined: bool) -> float:
        sim = Simulation(seed=4, latency=Constant(0.0001))
        broker_node, worker_node, client_node = sim.node("broker"), sim.node("w"), sim.node("cli")
        sim.set_latency("cli", "broker", Constant(one_way))

        async def main() -> float:
            async with (
                running_broker(broker_node, "tcp://*:5555"),
                serving_worker(worker_node, BROKER, b"echo", echo),
            ):
                await asyncio.sleep(1.0)
                start = sim.now
                if pipelined:
                    async with AsyncMajordomoClient(client_node, BROKER) as client:
                        for i in range(n):
                            await client.send(b"echo", [b"%d" % i])
                        replies = [await client.recv() for _ in range(n)]
                else:
                    async with MajordomoClient(client_node, BROKER) as sync:
                        replies = [await sync.request(b"echo", [b"%d" % i]) for i in range(n)]
                assert [int(r[0]) for r in replies] == list(range(n))
                return sim.now - start

        return sim.run(main(), timeout=60.0)

    sync_time, async_time = elapsed(False), elapsed(True)
    assert sync_time >= n * 2 * one_way
    assert async_time < 3 * 2 * one_way + 0.05
    assert sync_time / async_time > 10


def test_our_async_client_and_worker_against_the_guides_broker_on_tcp() -> None:
    n = 300

    async def main(endpoint: str) -> list[Message]:
        with ZmqNetwork() as net:
            async with (
                serving_worker(net, endpoint, b"echo", echo, heartbeat_interval=0.25),
                AsyncMajordomoClient(net, endpoint, timeout=5.0) as client,
            ):
                mmi = AsyncMajordomoClient(net, endpoint, timeout=0.5)
                for _ in range(40):  # until the worker's READY has reached the broker
                    await mmi.send(b"mmi.service", [b"echo"])
                    if await mmi.recv() == [b"200"]:
                        break
                    await asyncio.sleep(0.05)
                mmi.close()
                for i in range(n):
                    await client.send(b"echo", [b"%d" % i, b"tail"])
                return [await client.recv() for _ in range(n)]

    with GuideBroker() as broker:
        replies = run_real(main(broker.endpoint), timeout=30.0)
        requests = [r for r in broker.requests if r[1] == b"echo"]
    assert replies == [[b"%d" % i, b"tail"] for i in range(n)]
    assert requests == [[b"MDPC01", b"echo", b"%d" % i, b"tail"] for i in range(n)]


def _window_through_the_examples(endpoint: str, window: int) -> list[list[bytes]]:
    """Send ``window`` requests on the asynchronous client before reading any reply,
    through the example broker and worker, each in its own process; return the replies
    in the order they came.
    """

    async def main() -> list[list[bytes]]:
        with ZmqNetwork() as net:
            async with MajordomoClient(net, endpoint, timeout=10.0) as sync:
                await sync.request(b"echo", [b"warm"])  # the worker is registered
            async with AsyncMajordomoClient(net, endpoint) as client:
                for i in range(window):
                    await client.send(b"echo", [b"%d" % i])
                return [await client.recv(timeout=10.0) for _ in range(window)]

    with (
        ChildProcess(*example_argv("mdbroker"), "--bind", endpoint),
        ChildProcess(*example_argv("mdworker"), "--broker", endpoint, "--quiet"),
    ):
        return run_real(main(), timeout=120.0)


@pytest.mark.slow
def test_real_ipc_the_asynchronous_client_keeps_its_window_in_flight(tmp_path: Path) -> None:
    """What gives the asynchronous client its throughput (the synchronous one waits a
    round trip per request): the broker's per-client bound of 100 requests is in flight
    at once, and each comes back, in order. Its speed is the bench's to measure, not a
    test's (a timed comparison failed under load).
    """
    window = 100
    replies = _window_through_the_examples(real_endpoint("ipc", tmp_path), window)
    assert replies == [[b"%d" % i] for i in range(window)]


def _guide_mdclient2(endpoint: str, n: int, timeout: float = 10.0) -> int:
    """The Guide's mdclient2 with raw pyzmq: n requests sent, then replies read."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        for _ in range(n):
            sock.send_multipart([b"", b"MDPC01", b"echo", b"Hello world"])
        count = 0
        while count < n and sock.poll(int(timeout * 1000)):
            assert sock.recv_multipart() == [b"", b"MDPC01", b"echo", b"Hello world"]
            count += 1
        return count
    finally:
        sock.close()
        ctx.term()


def test_example_mdclient2_and_the_guides_mdclient2_through_the_example_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The Guide's client sends all its requests before it reads a reply: past the
    # default broker's 100 pending requests per client (see
    # test_past_the_brokers_per_client_bound_...), so the broker's bounds are raised.
    n = 500
    endpoint = real_endpoint("ipc", tmp_path)
    bounds = ("--max-pending-per-service", str(n), "--max-pending-per-client", str(n))
    timing = ("--heartbeat-interval", "0.2")
    with (
        ChildProcess(*example_argv("mdbroker"), "--bind", endpoint, *timing, *bounds),
        ChildProcess(*example_argv("mdworker"), "--broker", endpoint, *timing, "--quiet"),
    ):
        argv = ["--broker", endpoint, "--requests", "500", "--window", "50"]
        assert mdclient2.main(argv) == 0
        assert _guide_mdclient2(endpoint, n) == n
    assert capsys.readouterr().out.splitlines()[-1].startswith("500 requests/replies processed")
