"""Every socket kind carries messages over inproc, ipc and tcp, in order and whole."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from transportkit import Publisher, SocketOptions, Subscriber, Timeout
from transportkit.zmq_backend import (
    ZmqDealer,
    ZmqNetwork,
    ZmqPair,
    ZmqPublisher,
    ZmqPuller,
    ZmqPusher,
    ZmqRequester,
    ZmqRouter,
    ZmqSubscriber,
    ZmqWorker,
)

# Every test here runs with the C accelerator (if built) and with pure pyzmq calls.
pytestmark = pytest.mark.usefixtures("message_impl")

EndpointFor = Callable[[str], str]
Run = Callable[..., Any]


async def until_subscribed(pub: Publisher, sub: Subscriber, topic: bytes = b"") -> None:
    """Publish probes until one arrives (the slow joiner), then drain them."""
    while True:
        await pub.send([topic + b"probe"])
        try:
            await sub.recv(timeout=0.02)
        except Timeout:
            continue
        while sub.try_recv() is not None:
            pass
        return


def test_push_pull_round_trip(
    run: Run, net: ZmqNetwork, transport: str, endpoint_for: EndpointFor
) -> None:
    async def body() -> None:
        pull = net.puller(bind=endpoint_for(transport))
        assert pull.last_endpoint is not None
        push = net.pusher(connect=pull.last_endpoint)
        assert isinstance(pull, ZmqPuller) and isinstance(push, ZmqPusher)
        for i in range(100):
            await push.send([b"order", str(i).encode()])
        got = [await pull.recv(timeout=5) for _ in range(100)]
        assert got == [[b"order", str(i).encode()] for i in range(100)]
        assert push.stats.sent == 100 and pull.stats.received == 100
        assert pull.stats.dropped is None

    run(body())


def test_pub_sub_round_trip_with_topic_filter(
    run: Run, net: ZmqNetwork, transport: str, endpoint_for: EndpointFor
) -> None:
    async def body() -> None:
        pub = net.publisher(bind=endpoint_for(transport))
        assert pub.last_endpoint is not None
        sub = net.subscriber(connect=pub.last_endpoint, topics=[b"AAPL"])
        assert isinstance(pub, ZmqPublisher) and isinstance(sub, ZmqSubscriber)
        assert sub.subscriptions == (b"AAPL",)
        await until_subscribed(pub, sub, b"AAPL")
        await pub.publish(b"MSFT", b"1", b"x")
        await pub.publish(b"AAPL", b"2", b"y")
        assert await sub.recv(timeout=5) == [b"AAPL", b"2", b"y"]
        assert sub.try_recv() is None

    run(body())


def test_req_rep_round_trip(
    run: Run, net: ZmqNetwork, transport: str, endpoint_for: EndpointFor
) -> None:
    async def body() -> None:
        rep = net.worker(bind=endpoint_for(transport))
        assert rep.last_endpoint is not None
        req = net.requester(connect=rep.last_endpoint)
        assert isinstance(req, ZmqRequester) and isinstance(rep, ZmqWorker)
        for i in range(5):
            await req.send([b"risk?", bytes([i])])
            request = await rep.recv(timeout=5)
            await rep.send([b"ok", *request[1:]])
            assert await req.recv(timeout=5) == [b"ok", bytes([i])]

    run(body())


def test_request_helper_returns_the_reply(
    run: Run, net: ZmqNetwork, endpoint_for: EndpointFor
) -> None:
    async def body() -> None:
        rep = net.worker(bind=endpoint_for("inproc"))
        assert rep.last_endpoint is not None
        req = net.requester(connect=rep.last_endpoint)

        async def serve() -> None:
            frames = await rep.recv()
            await rep.send([b"re:" + frames[0]])

        server = asyncio.create_task(serve())
        assert await req.request([b"ping"], timeout=5) == [b"re:ping"]
        await server

    run(body())


def test_pair_round_trip_both_ways(
    run: Run, net: ZmqNetwork, transport: str, endpoint_for: EndpointFor
) -> None:
    async def body() -> None:
        a = net.pair(bind=endpoint_for(transport))
        assert a.last_endpoint is not None
        b = net.pair(connect=a.last_endpoint)
        assert isinstance(a, ZmqPair)
        await a.send([b"ping"])
        assert await b.recv(timeout=5) == [b"ping"]
        await b.send([b"pong"])
        assert await a.recv(timeout=5) == [b"pong"]

    run(body())


def test_dealer_router_round_trip_with_routing_id(
    run: Run, net: ZmqNetwork, transport: str, endpoint_for: EndpointFor
) -> None:
    async def body() -> None:
        router = net.router(bind=endpoint_for(transport))
        assert router.last_endpoint is not None
        dealer = net.dealer(
            connect=router.last_endpoint, options=SocketOptions(routing_id=b"trader-1")
        )
        assert isinstance(router, ZmqRouter) and isinstance(dealer, ZmqDealer)
        await dealer.send([b"new-order"])
        assert await router.recv(timeout=5) == [b"trader-1", b"new-order"]
        await router.send([b"trader-1", b"ack"])
        assert await dealer.recv(timeout=5) == [b"ack"]

    run(body())


def test_dealer_to_rep_and_req_to_router(
    run: Run, net: ZmqNetwork, endpoint_for: EndpointFor
) -> None:
    async def body() -> None:
        rep = net.worker(bind=endpoint_for("inproc"))
        assert rep.last_endpoint is not None
        dealer = net.dealer(connect=rep.last_endpoint)
        await dealer.send([b"", b"q"])
        assert await rep.recv(timeout=5) == [b"q"]
        await rep.send([b"a"])
        assert await dealer.recv(timeout=5) == [b"", b"a"]

        router = net.router(bind=endpoint_for("inproc"))
        assert router.last_endpoint is not None
        req = net.requester(connect=router.last_endpoint)
        await req.send([b"q"])
        peer, empty, body_ = await router.recv(timeout=5)
        assert (empty, body_) == (b"", b"q")
        await router.send([peer, b"", b"a"])
        assert await req.recv(timeout=5) == [b"a"]

    run(body())


def test_bytearray_and_memoryview_frames_are_sent(
    run: Run, net: ZmqNetwork, endpoint_for: EndpointFor
) -> None:
    async def body() -> None:
        pull = net.puller(bind=endpoint_for("inproc"))
        assert pull.last_endpoint is not None
        push = net.pusher(connect=pull.last_endpoint)
        await push.send([bytearray(b"ab"), memoryview(b"cd")])
        assert await pull.recv(timeout=5) == [b"ab", b"cd"]

    run(body())


def test_async_iteration_ends_when_the_socket_closes(
    run: Run, net: ZmqNetwork, endpoint_for: EndpointFor
) -> None:

    async def body() -> None:
        pull = net.puller(bind=endpoint_for("inproc"))
        assert pull.last_endpoint is not None
        push = net.pusher(connect=pull.last_endpoint)
        for i in range(3):
            await push.send([bytes([i])])
        got = []
        async for message in pull:
            got.append(message)
            if len(got) == 3:
                pull.close()
        assert got == [[b"\x00"], [b"\x01"], [b"\x02"]]

    run(body())


def test_wildcard_tcp_bind_resolves_a_port(net: ZmqNetwork) -> None:
    pull = net.puller(bind="tcp://127.0.0.1:*")
    endpoint = pull.last_endpoint
    assert endpoint is not None and endpoint.startswith("tcp://127.0.0.1:")
    assert int(endpoint.rsplit(":", 1)[1]) > 0
