"""Conflation and the last-value cache, on every backend and under simulated faults."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextlib import ExitStack

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from transportkit import FrameError, Message, Publisher, StateError, Timeout
from transportkit.patterns.conflation import (
    ConflatingSubscriber,
    LastValueCache,
    LastValueSubscriber,
    conflated_subscriber,
)
from transportkit.sim_backend import (
    Constant,
    FaultSchedule,
    Partition,
    Repair,
    Simulation,
    schedule_faults,
)
from transportkit.testing import free_tcp_endpoint, open_harness, sync_subscribers
from transportkit.testing.strategies import fault_schedules
from transportkit.trading import MarketData, decode_market_data, encode_market_data

SYMBOLS = ["AAPL", "MSFT", "GOOG", "TSLA", "IBM"]


def update(symbol: str, sequence: int, timestamp_ns: int = 0) -> list[bytes]:
    return encode_market_data(
        MarketData(symbol=symbol, last=100.0 + sequence, sequence=sequence), timestamp_ns
    )


def symbol_key(message: Message) -> bytes:
    return decode_market_data(message).symbol.encode()


def sequences(latest: Mapping[bytes, Message]) -> dict[str, int]:
    decoded = [decode_market_data(m) for m in latest.values()]
    return {u.symbol: u.data.sequence for u in decoded}


def last_per_symbol(burst: list[tuple[int, int]]) -> dict[str, int]:
    return {SYMBOLS[symbol]: seq for seq, (symbol, _) in enumerate(burst)}


# -- ConflatingSubscriber ----------------------------------------------------------------


def test_conflating_subscriber_keeps_the_latest_update_per_symbol(backend: str) -> None:
    with open_harness(backend) as h:

        async def body() -> None:
            with ExitStack() as stack:
                pub = stack.enter_context(h.network("pub").publisher(bind=h.endpoint()))
                assert pub.last_endpoint is not None
                sub = stack.enter_context(
                    h.network("sub").subscriber(connect=pub.last_endpoint, topics=[b"MARKET."])
                )
                await sync_subscribers(pub, [sub])
                conflating = ConflatingSubscriber(sub, key=symbol_key)
                for seq in range(30):
                    await pub.send(update(SYMBOLS[seq % 3], seq))
                await asyncio.sleep(h.settle)  # a busy consumer
                batches = []
                while conflating.received < 30:
                    batch = await conflating.wait_latest(timeout=5.0)
                    assert batch, f"[{h.name}] only {conflating.received} of 30 arrived"
                    batches.append(batch)
                assert sequences(conflating.latest) == {"AAPL": 27, "MSFT": 28, "GOOG": 29}
                assert (
                    sequences(batches[-1]).items() <= {"AAPL": 27, "MSFT": 28, "GOOG": 29}.items()
                )
                returned = sum(len(b) for b in batches)
                assert conflating.superseded == conflating.received - returned
                if h.virtual_time:
                    assert len(batches) == 1 and conflating.superseded == 27

        h.run(body(), timeout=20)


def test_conflating_subscriber_counts_and_skips_malformed_messages() -> None:
    with open_harness("sim") as h:

        async def body() -> None:
            net = h.network()
            with (
                net.publisher(bind="inproc://md") as pub,
                net.subscriber(connect="inproc://md") as sub,
            ):
                conflating = ConflatingSubscriber(sub, key=symbol_key)
                await pub.send([b"MARKET.AAPL", b"short"])
                await pub.send(update("AAPL", 1))
                assert sequences(await conflating.wait_latest(1.0)) == {"AAPL": 1}
                assert (conflating.malformed, conflating.received) == (1, 1)

        h.run(body())


@settings(max_examples=25, deadline=None)
@given(
    burst=st.lists(
        st.tuples(st.integers(0, len(SYMBOLS) - 1), st.integers(0, 3)), min_size=1, max_size=300
    ),
    nap=st.floats(0.0, 5.0),
    seed=st.integers(0, 2**16),
)
def test_a_sleeping_conflating_subscriber_never_loses_a_final_value(
    burst: list[tuple[int, int]], nap: float, seed: int
) -> None:
    sim = Simulation(seed, latency=Constant(0.001))
    pub_node, sub_node = sim.node("pub"), sim.node("sub")

    async def main() -> dict[str, int]:
        with (
            pub_node.publisher(bind="tcp://*:7300") as pub,
            sub_node.subscriber(connect="tcp://pub:7300", topics=[b"MARKET."]) as sub,
        ):
            await sync_subscribers(pub, [sub])
            conflating = ConflatingSubscriber(sub, key=symbol_key)

            async def publish() -> None:
                for seq, (symbol, pause_ms) in enumerate(burst):
                    await pub.send(update(SYMBOLS[symbol], seq))
                    if pause_ms:
                        await asyncio.sleep(pause_ms / 1000)

            publishing = asyncio.ensure_future(publish())
            await asyncio.sleep(nap)  # the subscriber is busy elsewhere
            await publishing
            while conflating.received < len(burst):
                assert await conflating.wait_latest(timeout=1.0)
            return sequences(conflating.latest)

    assert sim.run(main(), timeout=60) == last_per_symbol(burst)


# -- conflated_subscriber (ZMQ_CONFLATE) -------------------------------------------------


async def _await_first(pub: Publisher, topic: bytes, sub_recv: Callable[[], object]) -> None:
    """Publish probes on ``topic`` until the conflated subscriber gets one."""
    for _ in range(500):
        await pub.send([topic + b"-probe"])
        await asyncio.sleep(0.01)
        if sub_recv() is not None:
            return
    raise AssertionError("the conflated subscriber never joined")


def test_conflated_subscriber_holds_only_the_newest_message_of_its_topic(backend: str) -> None:
    with open_harness(backend) as h:

        async def body() -> None:
            with ExitStack() as stack:
                pub = stack.enter_context(h.network("pub").publisher(bind=h.endpoint()))
                assert pub.last_endpoint is not None
                sub = stack.enter_context(
                    conflated_subscriber(h.network("sub"), connect=pub.last_endpoint, topic=b"PX")
                )
                assert sub.socket.options.conflate
                assert sub.socket.subscriptions == (b"PX",)
                await _await_first(pub, b"PX", sub.try_recv)
                for i in range(50):
                    await pub.send([b"PX:%d" % i])
                    await pub.send([b"OTHER:%d" % i])
                await asyncio.sleep(h.settle)
                assert await sub.recv(timeout=5.0) == b"PX:49"
                assert sub.try_recv() is None
                assert sub.last == b"PX:49"

        h.run(body(), timeout=20)


def test_conflated_subscriber_refuses_a_second_subscription(backend: str) -> None:
    with open_harness(backend) as h:
        net = h.network()
        # Not inproc: libzmq 4.3.5 aborts in zmq_ctx_term (ctx.cpp:789) when a conflating
        # SUB's inproc connect never met a bind (zeromq/libzmq#4544).
        with conflated_subscriber(net, connect=free_tcp_endpoint(), topic=b"A") as sub:
            with pytest.raises(StateError, match="conflates a conflating SUB's subscription"):
                sub.subscribe(b"B")
            assert sub.socket.subscriptions == (b"A",)


def test_conflated_subscriber_refuses_a_text_topic(backend: str) -> None:
    with open_harness(backend) as h, pytest.raises(FrameError, match="bytes"):
        conflated_subscriber(h.network(), connect=h.endpoint(), topic="A")  # type: ignore[arg-type]


def test_conflated_subscriber_never_hands_out_a_multipart_message(backend: str) -> None:
    """A conflating queue keeps one frame (libzmq, and the simulator modelling it): of a
    multipart message only the last survives, fails the ``PX`` filter and is dropped."""
    with open_harness(backend) as h:

        async def body() -> None:
            with ExitStack() as stack:
                pub = stack.enter_context(h.network("pub").publisher(bind=h.endpoint()))
                assert pub.last_endpoint is not None
                sub = stack.enter_context(
                    conflated_subscriber(h.network("sub"), connect=pub.last_endpoint, topic=b"PX")
                )
                await _await_first(pub, b"PX", sub.try_recv)
                await pub.send([b"PX", b"1.25"])
                await asyncio.sleep(h.settle)
                assert sub.try_recv() is None
                await pub.send([b"PX=1.50"])
                assert await sub.recv(timeout=5.0) == b"PX=1.50"

        h.run(body(), timeout=20)


# -- LastValueCache ----------------------------------------------------------------------


async def _prime(pub: Publisher, cache: LastValueCache) -> None:
    """Publish until the cache's upstream subscription is in place."""
    for _ in range(1000):
        await pub.send(update("ZZZ", 0))
        await asyncio.sleep(0.005)
        if cache.forwarded:
            return
    raise AssertionError("the cache never heard the publisher")


def test_lvc_gives_a_late_joiner_every_current_value_at_once_then_live_updates(
    backend: str,
) -> None:
    with open_harness(backend) as h:

        async def body() -> None:
            with ExitStack() as stack:
                pub = stack.enter_context(h.network("pub").publisher(bind=h.endpoint()))
                assert pub.last_endpoint is not None
                cache = LastValueCache(
                    h.network("lvc"),
                    upstream=pub.last_endpoint,
                    downstream=h.endpoint(),
                    snapshots=h.endpoint(),
                )
                stack.callback(cache.close)
                serving = asyncio.ensure_future(cache.run())
                await _prime(pub, cache)
                for seq in range(1, 41):
                    await pub.send(update(SYMBOLS[seq % 4], seq))
                while sequences(cache.values).get("AAPL") != 40:  # the last one published
                    await asyncio.sleep(0.01)
                late = LastValueSubscriber(
                    h.network("late"),
                    updates=cache.downstream.last_endpoint or "",
                    snapshots=cache.snapshots.last_endpoint or "",
                    prefix=b"MARKET.",
                )
                stack.callback(late.close)
                snapshot = await late.sync(timeout=10.0)
                assert sequences(snapshot) == {
                    "ZZZ": 0,
                    "MSFT": 37,
                    "GOOG": 38,
                    "TSLA": 39,
                    "AAPL": 40,
                }
                await pub.send(update("MSFT", 41))
                live = await late.recv(timeout=5.0)
                assert decode_market_data(live).data.sequence == 41
                assert sequences(late.values)["MSFT"] == 41
                assert cache.snapshots_served >= 1
                cache.close()
                await asyncio.wait_for(serving, 5.0)

        h.run(body(), timeout=30)


def test_lvc_subscriber_must_sync_before_receiving() -> None:
    with open_harness("sim") as h:

        async def body() -> None:
            late = LastValueSubscriber(
                h.network(), updates="tcp://nowhere:1", snapshots="tcp://nowhere:2"
            )
            with pytest.raises(StateError, match="sync"):
                await late.recv(timeout=0)
            with pytest.raises(Timeout, match="snapshot"):
                await late.sync(timeout=1.0, retry=0.25)
            assert late.resyncs >= 2
            late.close()

        h.run(body())


def test_lvc_ignores_malformed_snapshot_requests() -> None:
    with open_harness("sim") as h:

        async def body() -> None:
            net = h.network()
            cache = LastValueCache(
                net, upstream="inproc://up", downstream="inproc://down", snapshots="inproc://snap"
            )
            serving = asyncio.ensure_future(cache.run())
            with net.dealer(connect="inproc://snap") as dealer:
                await dealer.send([b"GIMME"])
                await dealer.send([b"LVC?", b"", b"t1"])
                assert await dealer.recv(timeout=1.0) == [b"LVC.", b"", b"t1"]
            assert cache.malformed == 1
            cache.close()
            await serving

        h.run(body())


@settings(max_examples=20, deadline=None)
@given(
    schedule=fault_schedules(
        ["pub", "lvc"], kinds=("partition",), horizon=4.0, max_outage=3.0, max_faults=3
    ),
    picks=st.lists(st.integers(0, len(SYMBOLS) - 1), min_size=1, max_size=150),
)
@example(
    schedule=[(0.5, Partition("pub", "lvc")), (5.0, Repair("pub", "lvc"))],
    picks=[0, 1, 2, 3, 4, 0, 1] * 10,
)
def test_lvc_late_joiner_matches_the_publisher_after_partitions_heal(
    schedule: FaultSchedule, picks: list[int]
) -> None:
    sim = Simulation(1, latency=Constant(0.001))
    pub_node, lvc_node, late_node = sim.node("pub"), sim.node("lvc"), sim.node("late")

    async def main() -> tuple[dict[str, int], dict[str, int]]:
        pub = pub_node.publisher(bind="tcp://*:7400")
        cache = LastValueCache(
            lvc_node, upstream="tcp://pub:7400", downstream="tcp://*:7401", snapshots="tcp://*:7402"
        )
        serving = asyncio.ensure_future(cache.run())
        await _prime(pub, cache)
        start = sim.now
        schedule_faults(sim, [(start + when, fault) for when, fault in schedule])
        published = {"ZZZ": 0}
        step = 7.5 / len(picks)  # spread the updates over the faults' window
        for seq, symbol in enumerate(picks, start=1):
            await pub.send(update(SYMBOLS[symbol], seq))
            published[SYMBOLS[symbol]] = seq
            await asyncio.sleep(step)
        await asyncio.sleep(max(0.0, start + 7.5 - sim.now) + 0.5)  # all repaired by now
        late = LastValueSubscriber(
            late_node, updates="tcp://lvc:7401", snapshots="tcp://lvc:7402", prefix=b"MARKET."
        )
        got = sequences(await late.sync(timeout=5.0))
        late.close()
        cache.close()
        await serving
        pub.close()
        return got, published

    got, published = sim.run(main(), timeout=60)
    assert got == published
