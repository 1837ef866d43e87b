"""Lazy, Simple and Paranoid Pirate against peers written as the ZeroMQ Guide writes them.

The Guide-side peers (``_guide_peers``) are raw pyzmq, in threads; transportkit's side
runs on a real asyncio loop (or as its example program, in a child process). All on tcp
over 127.0.0.1 with ports the system picks, every wait bounded.
"""

from __future__ import annotations

import asyncio
import threading

from _guide_peers import (
    LRU_READY,
    PeerThread,
    QueueRecord,
    ServerRecord,
    lpclient,
    lpserver,
    ppqueue,
    rep_echo,
    spqueue,
    spworker,
)
from _pirate_helpers import cancel, example, run_real

from transportkit import Message, SocketOptions
from transportkit.patterns.lazy_pirate import (
    LazyPirateClient,
    ServeStats,
    serve_lazy_pirate,
)
from transportkit.patterns.load_balancing import (
    LoadBalancingBroker,
    LoadBalancingWorkerStats,
    run_load_balancing_worker,
)
from transportkit.testing import ChildProcess
from transportkit.zmq_backend import ZmqNetwork

OPTS = SocketOptions(linger=0)


def _wait(event: threading.Event) -> None:
    assert event.wait(5.0), "the Guide peer did not bind"


def echo(request: Message) -> Message:
    return request


def test_the_guides_lpclient_is_served_by_serve_lazy_pirate() -> None:
    stats = ServeStats()
    seen: list[Message] = []

    def recording_echo(request: Message) -> Message:
        seen.append(request)
        return request

    async def main() -> None:
        with ZmqNetwork(name="lpserver") as net, net.worker(bind="tcp://127.0.0.1:*") as rep:
            endpoint = rep.last_endpoint
            assert endpoint is not None
            server = asyncio.ensure_future(serve_lazy_pirate(rep, recording_echo, stats=stats))
            try:
                result = await asyncio.to_thread(lpclient, endpoint, 5, timeout_ms=1000)
            finally:
                await cancel(server)
        # The handler is given the request as the Guide's lpserver gets it.
        assert seen == [[b"%d" % i] for i in range(5)]
        assert not result.abandoned
        assert result.malformed == []
        assert result.replies == [[b"%d" % i] for i in range(5)]

    run_real(main())
    assert (stats.served, stats.malformed, stats.handler_errors) == (5, 0, 0)


def test_the_lazy_pirate_client_works_against_the_guides_lpserver() -> None:
    record, ready = ServerRecord(), threading.Event()
    with PeerThread(lpserver(record, ready)):
        _wait(ready)

        async def main() -> list[Message]:
            with ZmqNetwork(name="client") as net:
                async with LazyPirateClient(
                    net, record.endpoint, timeout=1.0, attempts=2, options=OPTS
                ) as client:
                    return [await client.request([b"order %d" % i]) for i in range(3)]

        replies = run_real(main())
    assert record.failure is None
    assert replies == [[b"order 0"], [b"order 1"], [b"order 2"]]
    assert record.requests == replies


def test_the_lazy_pirate_client_sends_the_callers_frames_to_a_plain_rep_echo() -> None:
    record, ready = ServerRecord(), threading.Event()
    with PeerThread(rep_echo(record, ready)):
        _wait(ready)

        async def main() -> list[Message]:
            with ZmqNetwork(name="client") as net:
                async with LazyPirateClient(
                    net, record.endpoint, timeout=1.0, attempts=2, options=OPTS
                ) as client:
                    return [await client.request([b"AAPL", b"%d" % q]) for q in (100, 5000)]

        replies = run_real(main())
    assert replies == [[b"AAPL", b"100"], [b"AAPL", b"5000"]]
    assert record.requests == replies  # the server saw exactly the caller's frames


def test_the_ppworker_example_behind_the_guides_ppqueue_serves_the_guides_lpclient() -> None:
    record, ready = QueueRecord(), threading.Event()
    with PeerThread(ppqueue(record, ready, interval=0.1)):
        _wait(ready)
        argv = (*example("ppworker"), "--connect", record.backend, "--heartbeat-interval", "0.1")
        with ChildProcess(*argv):
            result = lpclient(record.frontend, 4, timeout_ms=2000)
    assert not result.abandoned
    assert result.malformed == []
    assert result.replies == [[b"%d" % i] for i in range(4)]
    assert record.invalid == []
    # The worker echoed the queue's [client, b"", request] exactly, as the Guide's does.
    assert [msg[1:] for msg in record.forwarded] == [[b"", b"%d" % i] for i in range(4)]


def test_our_worker_behind_the_guides_spqueue_says_ready_as_it_expects() -> None:
    record, ready = QueueRecord(), threading.Event()
    stats = LoadBalancingWorkerStats()
    with PeerThread(spqueue(record, ready)):
        _wait(ready)

        async def main() -> list[Message]:
            with ZmqNetwork(name="sp") as net:
                worker = asyncio.ensure_future(
                    run_load_balancing_worker(net, record.backend, echo, options=OPTS, stats=stats)
                )
                try:
                    async with LazyPirateClient(
                        net, record.frontend, timeout=1.0, attempts=3, options=OPTS
                    ) as client:
                        return [await client.request([b"%d" % i]) for i in range(3)]
                finally:
                    await cancel(worker)

        replies = run_real(main())
    assert replies == [[b"0"], [b"1"], [b"2"]]
    assert stats.served == 3
    # The Guide's spqueue forwards anything but b"\x01" to the front end as a reply.
    assert record.misrouted == []


def test_the_spworker_example_behind_the_guides_spqueue_serves_the_guides_lpclient() -> None:
    record, ready = QueueRecord(), threading.Event()
    with PeerThread(spqueue(record, ready)):
        _wait(ready)
        with ChildProcess(*example("spworker"), "--connect", record.backend, "--identity", "W1"):
            result = lpclient(record.frontend, 4, timeout_ms=2000)
    assert not result.abandoned
    assert result.malformed == []
    assert result.replies == [[b"%d" % i] for i in range(4)]
    assert record.workers_seen == {b"W1"}
    assert record.misrouted == []  # its READY was b"\x01", not forwarded as a reply


def test_the_guides_spworker_behind_our_broker_is_listed_and_serves() -> None:
    async def main() -> tuple[list[Message], int, int]:
        with (
            ZmqNetwork(name="broker") as net,
            LoadBalancingBroker(
                net, frontend="tcp://127.0.0.1:*", backend="tcp://127.0.0.1:*", options=OPTS
            ) as broker,
        ):
            task = asyncio.ensure_future(broker.run())
            try:
                with PeerThread(spworker(broker.backend_endpoint, b"0A1B-2C3D")):
                    async with LazyPirateClient(
                        net, broker.frontend_endpoint, timeout=1.0, attempts=2, options=OPTS
                    ) as client:
                        replies = [await client.request([b"%d" % i]) for i in range(3)]
            finally:
                await cancel(task)
            return replies, broker.stats.ready, broker.stats.malformed

    replies, ready, malformed = run_real(main())
    assert replies == [[b"0"], [b"1"], [b"2"]]
    assert (ready, malformed) == (1, 0)
    assert LRU_READY == b"\x01"
