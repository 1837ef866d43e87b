"""The trading components keep their contracts on every backend: bad input is counted,
never fatal; timeouts are typed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from conftest import System

from transportkit import Network, ProtocolError, Timeout
from transportkit.trading import (
    MALFORMED_ORDER,
    SIDE_BUY,
    MarketData,
    MarketDataPublisher,
    MarketDataSubscriber,
    Order,
    OrderProducer,
    PairChannel,
    RiskBook,
    RiskClient,
    RiskLimits,
    encode_market_data,
    run_order_worker,
    serve_risk,
    topic_for,
)

LIMITS = RiskLimits(capital=1e6)


def buy(order_id: str) -> Order:
    return Order(id=order_id, symbol="AAPL", side=SIDE_BUY, quantity=1, price=10.0)


def test_risk_server_answers_malformed_requests_and_keeps_serving(system: System) -> None:
    endpoint = system.endpoint()

    async def body(nets: Sequence[Network]) -> None:
        with nets[0].worker() as worker, nets[1].requester() as requester:
            requester.connect(worker.bind(endpoint))
            server = asyncio.create_task(serve_risk(worker, RiskBook(LIMITS), max_requests=4))
            for bad in ([b"\xff\xff"], [buy("x").SerializeToString(), b"extra"]):
                reply = await requester.request(bad, timeout=2)
                assert len(reply) == 1
                assert b"malformed order" in reply[0]
            client = RiskClient(requester)
            assert (await client.validate(buy("o1"), timeout=2)).approved
            result = await client.validate(Order(id="o2"), timeout=2)
            assert not result.approved and result.reason.startswith("invalid order")
            stats = await server
            assert (stats.requests, stats.malformed, stats.approved, stats.rejected) == (4, 2, 1, 3)

    system.run(body, ["risk", "trader"])


def test_risk_server_stops_when_told(system: System) -> None:
    endpoint = system.endpoint()

    async def body(nets: Sequence[Network]) -> None:
        with nets[0].worker(bind=endpoint) as worker:
            stop = asyncio.Event()
            server = asyncio.create_task(serve_risk(worker, RiskBook(LIMITS), stop=stop))
            await asyncio.sleep(0.01)
            stop.set()
            stats = await server
            assert stats.requests == 0

    system.run(body, ["risk"])


def test_risk_client_times_out_without_a_server(system: System) -> None:
    endpoint = system.endpoint()

    async def body(nets: Sequence[Network]) -> None:
        with nets[0].worker() as worker, nets[1].requester() as requester:
            requester.connect(worker.bind(endpoint))
            with pytest.raises(Timeout):
                await RiskClient(requester).validate(buy("o1"), timeout=0.05)

    system.run(body, ["risk", "trader"])


def test_malformed_order_reason_constant() -> None:
    assert MALFORMED_ORDER == "malformed order"


def test_subscriber_skips_and_counts_malformed_updates(system: System) -> None:
    endpoint = system.endpoint()

    async def body(nets: Sequence[Network]) -> None:
        with nets[0].publisher() as pub, nets[1].subscriber(topics=[b"MARKET."]) as sub:
            sub.connect(pub.bind(endpoint))
            subscriber = MarketDataSubscriber(sub)
            assert subscriber.try_receive() is None
            with pytest.raises(Timeout):
                await subscriber.receive(timeout=0.01)
            publisher = MarketDataPublisher(pub, nets[0].time_ns)
            while subscriber.try_receive() is None:  # slow joiner: until one arrives
                await publisher.publish(MarketData(symbol="SYNC"))
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            while subscriber.try_receive() is not None:
                pass
            received = subscriber.received
            await pub.send([b"MARKET.AAPL", b"short"])
            await pub.send([topic_for("AAPL"), b"\0" * 8, b"\xff\xff"])
            stamp = await publisher.publish(MarketData(symbol="AAPL", sequence=9))
            update = await subscriber.receive(timeout=2)
            assert (update.symbol, update.timestamp_ns, update.data.sequence) == ("AAPL", stamp, 9)
            assert subscriber.malformed == 2
            assert subscriber.received == received + 1

    system.run(body, ["exchange", "trader"])


def test_order_worker_skips_malformed_messages(system: System) -> None:
    endpoint = system.endpoint()

    async def body(nets: Sequence[Network]) -> None:
        with nets[0].pusher() as push, nets[1].puller() as pull:
            pull.connect(push.bind(endpoint))
            handled: list[str] = []

            async def handle(order: Order) -> None:
                handled.append(order.id)

            worker = asyncio.create_task(run_order_worker(pull, "w", handle, max_orders=2))
            producer = OrderProducer(push)
            await producer.send_order(buy("a"))
            await push.send([b"\xff\xff"])
            await push.send([b"x", b"y"])
            await producer.send_order(buy("b"))
            stats = await worker
            assert (stats.processed, stats.malformed, stats.order_ids) == (2, 2, ["a", "b"])
            assert handled == ["a", "b"] and producer.sent == 2

    system.run(body, ["producer", "worker"])


def test_pair_channel_refuses_non_utf8_and_multipart(system: System) -> None:
    endpoint = system.endpoint()

    async def body(nets: Sequence[Network]) -> None:
        with nets[0].pair() as a, nets[1].pair() as b:
            b.connect(a.bind(endpoint))
            channel = PairChannel(b)
            await a.send([b"\xff"])
            with pytest.raises(ProtocolError, match="UTF-8"):
                await channel.receive(timeout=2)
            await a.send([b"a", b"b"])
            with pytest.raises(ProtocolError, match="single frame"):
                await channel.receive(timeout=2)
            await PairChannel(a).send("STATUS")
            assert await channel.receive(timeout=2) == "STATUS"

    system.run(body, ["gateway", "strategy"])


def test_encode_rejects_bad_symbols_before_sending() -> None:
    with pytest.raises(ValueError, match="symbol"):
        encode_market_data(MarketData(symbol=""), 0)
