"""Conflation and the last-value cache, on every backend and under simulated faults."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from contextlib import ExitStack

import pytest
import zmq
from hypothesis import example, given, settings
from hypothesis import strategies as st

from transportkit import Dealer, FrameError, Message, Publisher, SocketOptions, StateError, Timeout
from transportkit.patterns.conflation import (
    LVC_SYNC_TOPIC,
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
from transportkit.testing import (
    ChildProcess,
    Harness,
    free_tcp_endpoint,
    open_harness,
    sync_subscribers,
)
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


def test_conflating_subscriber_keeps_the_latest_update_per_symbol(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:

        async def body() -> None:
            with ExitStack() as stack:
                pub = stack.enter_context(h.network("pub").publisher(bind=h.bind_endpoint()))
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


def test_conflated_subscriber_holds_only_the_newest_message_of_its_topic(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:

        async def body() -> None:
            with ExitStack() as stack:
                pub = stack.enter_context(h.network("pub").publisher(bind=h.bind_endpoint()))
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


def test_conflated_subscriber_refuses_a_second_subscription(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:
        net = h.network()
        # Not inproc: libzmq 4.3.5 aborts in zmq_ctx_term (ctx.cpp:789) when a conflating
        # SUB's inproc connect never met a bind (zeromq/libzmq#4544).
        with conflated_subscriber(net, connect=free_tcp_endpoint(), topic=b"A") as sub:
            with pytest.raises(StateError, match="conflates a conflating SUB's subscription"):
                sub.subscribe(b"B")
            assert sub.socket.subscriptions == (b"A",)


def test_conflated_subscriber_refuses_a_text_topic(tk_backend: str) -> None:
    with open_harness(tk_backend) as h, pytest.raises(FrameError, match="bytes"):
        conflated_subscriber(h.network(), connect=h.bind_endpoint(), topic="A")  # type: ignore[arg-type]


def test_conflated_subscriber_never_hands_out_a_multipart_message(tk_backend: str) -> None:
    """A conflating queue keeps one frame (libzmq, and the simulator modelling it): of a
    multipart message only the last survives, fails the ``PX`` filter and is dropped."""
    with open_harness(tk_backend) as h:

        async def body() -> None:
            with ExitStack() as stack:
                pub = stack.enter_context(h.network("pub").publisher(bind=h.bind_endpoint()))
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
    tk_backend: str,
) -> None:
    with open_harness(tk_backend) as h:

        async def body() -> None:
            with ExitStack() as stack:
                pub = stack.enter_context(h.network("pub").publisher(bind=h.bind_endpoint()))
                assert pub.last_endpoint is not None
                cache = LastValueCache(
                    h.network("lvc"),
                    upstream=pub.last_endpoint,
                    downstream=h.bind_endpoint(),
                    snapshots=h.bind_endpoint(),
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


def test_lvc_subscriber_sync_times_out_when_its_request_cannot_even_be_sent(
    tk_backend: str,
) -> None:
    """With ``immediate`` the DEALER waits to send until its connection is made: for
    ever, when the cache is gone. sync() still raises Timeout within its timeout."""
    with open_harness(tk_backend) as h:

        async def body() -> float:
            gone = h.network("cache").router(bind=h.bind_endpoint())
            snapshots = gone.last_endpoint
            gone.close()
            assert snapshots
            late = LastValueSubscriber(
                h.network("late"),
                updates=snapshots,
                snapshots=snapshots,
                options=SocketOptions(immediate=True),
            )
            loop = asyncio.get_running_loop()
            start = loop.time()
            try:
                async with asyncio.timeout(5.0):  # the test's own bound
                    with pytest.raises(Timeout, match="snapshot"):
                        await late.sync(timeout=1.0, retry=0.25)
            finally:
                late.close()
            return loop.time() - start

        took = h.run(body(), timeout=20.0)
    assert took == pytest.approx(1.0, abs=0.5)


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


# -- the last-value cache's bounds ---------------------------------------------------------


class LvcRig:
    """A publisher, a last-value cache and room for subscribers, on the sim."""

    def __init__(self, *, latency: float = 1e-3, **cache_kwargs: object) -> None:
        # The HWMs alone decide: tcp's kernel buffers (megabytes on Linux) are off.
        self.sim = Simulation(3, latency=Constant(latency), kernel_buffers=False)
        self.pub_node, self.lvc_node = self.sim.node("pub"), self.sim.node("lvc")
        self.cache_kwargs = cache_kwargs

    async def start(self) -> tuple[Publisher, LastValueCache, asyncio.Future[None]]:
        pub = self.pub_node.publisher(bind="tcp://*:7800")
        cache = LastValueCache(
            self.lvc_node,
            upstream="tcp://pub:7800",
            downstream="tcp://*:7801",
            snapshots="tcp://*:7802",
            **self.cache_kwargs,  # type: ignore[arg-type]
        )
        serving = asyncio.ensure_future(cache.run())
        await _prime(pub, cache)
        return pub, cache, serving

    def subscriber(self, name: str, **kwargs: object) -> LastValueSubscriber:
        return LastValueSubscriber(
            self.sim.node(name),
            updates="tcp://lvc:7801",
            snapshots="tcp://lvc:7802",
            **kwargs,  # type: ignore[arg-type]
        )

    async def stuck_peer(self, name: str, request: list[bytes]) -> Dealer:
        dealer = self.sim.node(name).dealer(
            connect="tcp://lvc:7802", options=SocketOptions(rcvhwm=10)
        )
        await dealer.send(request)
        return dealer


async def _publish_topics(pub: Publisher, count: int, size: int = 10) -> None:
    for i in range(count):
        await pub.send([b"MARKET.%04d" % i, b"x" * size])


def test_lvc_snapshot_router_has_a_finite_hwm_and_refuses_unlimited_ones() -> None:
    sim = Simulation()
    node = sim.node("lvc")
    cache = LastValueCache(
        node, upstream="inproc://u", downstream="inproc://d", snapshots="inproc://s"
    )
    assert cache.snapshots.options.sndhwm == 1000 and cache.snapshots.options.router_mandatory
    assert cache.snapshots.options.maxmsgsize == 1 << 20
    assert cache.upstream.options.maxmsgsize == -1  # it connects: see patterns._limits
    cache.close()
    for options in (SocketOptions(sndhwm=0), SocketOptions(rcvhwm=0)):
        with pytest.raises(ValueError, match="unlimited"):
            LastValueCache(
                node,
                upstream="inproc://u",
                downstream="inproc://d2",
                snapshots="inproc://s2",
                options=options,
            )


def test_lvc_a_peer_that_never_reads_holds_one_bounded_snapshot_however_often_it_asks() -> None:
    rig = LvcRig(snapshot_hwm=10)

    async def main() -> None:
        pub, cache, serving = await rig.start()
        await _publish_topics(pub, 1000)
        await asyncio.sleep(0.05)
        dealer = await rig.stuck_peer("stuck", [b"LVC?", b"", b"t0"])
        for i in range(1, 300):
            await dealer.send([b"LVC?", b"", b"t%d" % i])
        await asyncio.sleep(0.1)
        # One snapshot in progress, blocked at the HWM; the other 299 refused. Before,
        # the ROUTER had sndhwm=0 and queued all 300 x 1001 messages.
        assert cache.snapshots_in_progress == 1
        assert cache.snapshots_refused == 299 == cache.over_limit
        await asyncio.sleep(5.5)
        assert cache.snapshot_failures == 1 and cache.snapshots_in_progress == 0
        cache.close()
        await serving

    rig.sim.run(main(), timeout=60)


def test_lvc_stuck_snapshots_never_delay_forwarding_or_another_subscriber() -> None:
    rig = LvcRig(snapshot_hwm=10)

    async def main() -> None:
        pub, cache, serving = await rig.start()
        await _publish_topics(pub, 500)
        await asyncio.sleep(0.05)
        for i in range(3):
            await rig.stuck_peer(f"stuck-{i}", [b"LVC?", b"", b"s%d" % i])
        await asyncio.sleep(0.05)
        assert cache.snapshots_in_progress == 3
        late = rig.subscriber("late", prefix=b"MARKET.")
        start = rig.sim.now
        snapshot = await late.sync(timeout=5.0)
        assert rig.sim.now - start < 0.1 and len(snapshot) == 501  # and MARKET.ZZZ
        await pub.send([b"MARKET.0001", b"new"])
        sent = rig.sim.now
        assert await late.recv(timeout=1.0) == [b"MARKET.0001", b"new"]
        assert rig.sim.now - sent < 0.01  # two link delays: nothing waited in the cache
        late.close()
        cache.close()
        await serving

    rig.sim.run(main(), timeout=60)


def test_lvc_long_tokens_and_prefixes_are_refused_and_never_republished() -> None:
    rig = LvcRig()

    async def main() -> None:
        _, cache, serving = await rig.start()
        with (
            rig.sim.node("watch").subscriber(
                connect="tcp://lvc:7801", topics=[LVC_SYNC_TOPIC]
            ) as watch,
            rig.sim.node("asker").dealer(connect="tcp://lvc:7802") as asker,
        ):
            await asyncio.sleep(0.05)
            await asker.send([b"LVC?", b"", b"t" * 257])  # over max_token_bytes (256)
            await asker.send([b"LVC?", b"M" * 257, b"t"])  # over max_prefix_bytes (256)
            await asyncio.sleep(0.1)
            assert watch.try_recv() is None and asker.try_recv() is None
            assert cache.over_limit == 2
            await asker.send([b"LVC?", b"", b"t" * 256])  # at the bound: served
            assert await watch.recv(timeout=1.0) == [LVC_SYNC_TOPIC, b"t" * 256]
        cache.close()
        await serving

    rig.sim.run(main(), timeout=60)


def test_lvc_caches_at_most_max_topics_and_max_cache_bytes_but_forwards_everything() -> None:
    rig = LvcRig(max_topics=100, max_cache_bytes=3000)

    async def main() -> None:
        pub, cache, serving = await rig.start()
        with rig.sim.node("live").subscriber(connect="tcp://lvc:7801") as live:
            await asyncio.sleep(0.05)
            assert live.try_recv() == cache.values[b"MARKET.ZZZ"]  # the replay on joining
            await _publish_topics(pub, 150)
            await asyncio.sleep(0.05)
            assert len(cache.values) == 100  # MARKET.ZZZ (from _prime) and 99 of the 150
            assert cache.uncached == 51 == cache.over_limit
            got = [live.try_recv() for _ in range(150)]
            assert all(m is not None for m in got) and live.try_recv() is None
            # A value that outgrows the byte bound leaves the cache: never a stale one.
            await pub.send([b"MARKET.0001", b"y" * 2000])
            await asyncio.sleep(0.05)
            assert b"MARKET.0001" not in cache.values
            assert cache.cached_bytes <= 3000
            assert await live.recv(timeout=1.0) == [b"MARKET.0001", b"y" * 2000]
        cache.close()
        await serving

    rig.sim.run(main(), timeout=60)


def test_lvc_drops_cut_markers_forged_upstream() -> None:
    rig = LvcRig()

    async def main() -> None:
        pub, cache, serving = await rig.start()
        with rig.sim.node("live").subscriber(connect="tcp://lvc:7801") as live:
            await asyncio.sleep(0.05)
            assert live.try_recv() == cache.values[b"MARKET.ZZZ"]  # the replay on joining
            await pub.send([LVC_SYNC_TOPIC, b"forged"])
            await pub.send([b"MARKET.OK", b"1"])
            assert await live.recv(timeout=1.0) == [b"MARKET.OK", b"1"]
            assert LVC_SYNC_TOPIC not in cache.values
            assert cache.malformed == 1
        cache.close()
        await serving

    rig.sim.run(main(), timeout=60)


def test_lvc_drops_oversized_updates_and_requests() -> None:
    rig = LvcRig(max_message_bytes=100, options=SocketOptions(maxmsgsize=100_000))

    async def main() -> None:
        pub, cache, serving = await rig.start()
        with (
            rig.sim.node("live").subscriber(connect="tcp://lvc:7801") as live,
            rig.sim.node("asker").dealer(connect="tcp://lvc:7802") as asker,
        ):
            await asyncio.sleep(0.05)
            assert live.try_recv() == cache.values[b"MARKET.ZZZ"]  # the replay on joining
            await pub.send([b"MARKET.BIG", b"x" * 200])
            await pub.send([b"MARKET.OK", b"1"])
            assert await live.recv(timeout=1.0) == [b"MARKET.OK", b"1"]
            assert live.try_recv() is None
            assert b"MARKET.BIG" not in cache.values
            await asker.send([b"LVC?", b"", b"t", b"x" * 200])
            await asyncio.sleep(0.05)
            assert asker.try_recv() is None
            assert (cache.malformed, cache.over_limit) == (0, 2)
        cache.close()
        await serving

    rig.sim.run(main(), timeout=60)


def test_lvc_subscriber_accepts_a_snapshot_slower_than_its_retry() -> None:
    # Each round trip (0.4 s) is longer than the retry: the subscriber used to drop
    # every answer as belonging to an abandoned request, and never synced.
    rig = LvcRig(latency=0.2)

    async def main() -> None:
        pub, cache, serving = await rig.start()
        await _publish_topics(pub, 20)
        await asyncio.sleep(0.5)
        late = rig.subscriber("late", prefix=b"MARKET.")
        snapshot = await late.sync(timeout=5.0, retry=0.1)
        assert len(snapshot) == 21  # and MARKET.ZZZ, from _prime
        await pub.send([b"MARKET.0003", b"new"])
        assert await late.recv(timeout=2.0) == [b"MARKET.0003", b"new"]
        late.close()
        cache.close()
        await serving

    rig.sim.run(main(), timeout=60)


def test_lvc_subscriber_ignores_whatever_a_broken_cache_sends() -> None:
    sim = Simulation(1, latency=Constant(1e-3))
    cache_node, sub_node = sim.node("lvc"), sim.node("late")

    async def main() -> LastValueSubscriber:
        with (
            cache_node.router(bind="tcp://*:7902") as router,
            cache_node.publisher(bind="tcp://*:7901") as pub,
        ):
            late = LastValueSubscriber(
                sub_node,
                updates="tcp://lvc:7901",
                snapshots="tcp://lvc:7902",
                prefix=b"MARKET.",
                max_topics=3,
            )

            async def serve() -> None:
                while True:
                    identity, _, prefix, token = await router.recv(timeout=math.inf)
                    for reply in (
                        [b"LVC", b"MARKET.A", b"1"],
                        [b"LVC", b"OTHER.B", b"2"],  # outside the prefix
                        [b"LVC", LVC_SYNC_TOPIC],  # the reserved topic
                        [b"LVC"],  # no topic
                        [b"WHAT?", b"x"],
                        [b"LVC.", b"MARKET."],  # an end without a token
                        [b"LVC.", b"MARKET.", b"not-mine"],
                        [b"LVC", b"MARKET.C", b"3"],
                    ):
                        await router.send([identity, *reply])
                    await router.send([identity, b"LVC.", prefix, token])
                    await pub.send([LVC_SYNC_TOPIC, token])

            serving = asyncio.ensure_future(serve())
            await asyncio.sleep(0.05)
            snapshot = await late.sync(timeout=2.0)
            # "not-mine" ended a snapshot of MARKET.A alone; only MARKET.C followed it.
            assert snapshot == {b"MARKET.C": [b"MARKET.C", b"3"]}
            assert late.malformed == 5
            for topic in (b"MARKET.C", b"MARKET.D", b"MARKET.E", b"MARKET.F"):
                await pub.send([topic, b"live"])
            await pub.send([LVC_SYNC_TOPIC + b"x", b"y"])  # no marker, and not MARKET.
            got = [await late.recv(timeout=1.0) for _ in range(4)]
            assert [m[0] for m in got] == [b"MARKET.C", b"MARKET.D", b"MARKET.E", b"MARKET.F"]
            with pytest.raises(Timeout):
                await late.recv(timeout=0.1)
            assert late.malformed == 6
            assert sorted(late.values) == [b"MARKET.C", b"MARKET.D", b"MARKET.E"]
            assert late.over_limit == 1  # MARKET.F: returned, not kept
            serving.cancel()
            late.close()
            return late

    sim.run(main(), timeout=30)


def test_lvc_subscriber_refuses_a_snapshot_past_its_bounds() -> None:
    rig = LvcRig()

    async def main() -> None:
        pub, cache, serving = await rig.start()
        await _publish_topics(pub, 10)
        await asyncio.sleep(0.05)
        late = rig.subscriber("late", prefix=b"MARKET.", max_topics=5)
        with pytest.raises(Timeout, match="bounds"):
            await late.sync(timeout=1.0, retry=0.3)
        assert late.over_limit >= 2
        roomy = rig.subscriber("roomy", prefix=b"MARKET.")
        assert len(await roomy.sync(timeout=1.0)) == 11  # and MARKET.ZZZ
        assert roomy.snapshots.options.maxmsgsize == -1  # it connects: see patterns._limits
        late.close()
        roomy.close()
        cache.close()
        await serving

    rig.sim.run(main(), timeout=60)


# -- the last-value cache on XPUB, as the Guide's lvcache ----------------------------------


async def _cache_with_values(
    h: Harness, **kwargs: object
) -> tuple[Publisher, LastValueCache, asyncio.Future[None]]:
    """A publisher and a cache (no snapshot ROUTER) holding MARKET.ZZZ and 40 updates:
    MSFT 36, GOOG 37, TSLA 38, IBM 39, AAPL 40."""
    pub = h.network("pub").publisher(bind=h.bind_endpoint())
    assert pub.last_endpoint is not None
    cache = LastValueCache(
        h.network("lvc"),
        upstream=pub.last_endpoint,
        downstream=h.bind_endpoint(),
        **kwargs,  # type: ignore[arg-type]
    )
    serving = asyncio.ensure_future(cache.run())
    await _prime(pub, cache)
    for seq in range(1, 41):
        await pub.send(update(SYMBOLS[seq % 5], seq))
    while sequences(cache.values).get("AAPL") != 40:
        await asyncio.sleep(0.01)
    return pub, cache, serving


async def _close(pub: Publisher, cache: LastValueCache, serving: asyncio.Future[None]) -> None:
    cache.close()
    await asyncio.wait_for(serving, 5.0)
    pub.close()


def test_lvc_sends_a_plain_sub_the_current_value_when_it_subscribes(tk_backend: str) -> None:
    """The Guide's lvcache client: a plain SUB connects, subscribes, and gets the cached
    value at once (before the rebuild on XPUB, a plain SUB got nothing until the topic's
    next update)."""
    with open_harness(tk_backend) as h:

        async def body() -> None:
            pub, cache, serving = await _cache_with_values(h)
            assert cache.snapshots is None
            downstream = cache.downstream.last_endpoint
            assert downstream is not None
            with h.network("late").subscriber(connect=downstream, topics=[b"MARKET.AAPL"]) as late:
                first = await late.recv(timeout=5.0)
                assert decode_market_data(first).data.sequence == 40  # the cached value
                await pub.send(update("AAPL", 41))
                live = await late.recv(timeout=5.0)
                assert decode_market_data(live).data.sequence == 41
            with h.network("wide").subscriber(connect=downstream, topics=[b"MARKET."]) as wide:
                got = [await wide.recv(timeout=5.0) for _ in range(6)]
                # Every topic under the prefix, in topic order, each its newest value.
                assert [m[0] for m in got] == sorted(cache.values)
                assert got == [cache.values[m[0]] for m in got]
            assert cache.subscriptions >= 2 and cache.replayed >= 7
            await _close(pub, cache, serving)

        h.run(body(), timeout=30)


def test_lvc_answers_every_subscriber_of_a_topic_not_only_the_first(tk_backend: str) -> None:
    """xpub_verbose: the second subscriber to a topic gets its replay too (a plain XPUB
    passes on only a topic's first subscription)."""
    with open_harness(tk_backend) as h:

        async def body() -> None:
            pub, cache, serving = await _cache_with_values(h)
            downstream = cache.downstream.last_endpoint
            assert downstream is not None
            with ExitStack() as stack:
                for name in ("first", "second", "third"):
                    sub = stack.enter_context(
                        h.network(name).subscriber(connect=downstream, topics=[b"MARKET.MSFT"])
                    )
                    message = await sub.recv(timeout=5.0)
                    assert decode_market_data(message).data.sequence == 36
            assert cache.subscriptions == 3
            await _close(pub, cache, serving)

        h.run(body(), timeout=30)


def test_lvc_replays_reach_every_subscriber_of_the_topic_as_a_repeat_never_stale() -> None:
    """The Guide's caveat: the replay goes out on the XPUB, so an existing subscriber
    of the topic receives it too, as a repeat of the newest value it already has."""
    with open_harness("sim") as h:

        async def body() -> None:
            pub, cache, serving = await _cache_with_values(h)
            downstream = cache.downstream.last_endpoint
            assert downstream is not None
            with h.network("old").subscriber(connect=downstream, topics=[b"MARKET.GOOG"]) as old:
                assert decode_market_data(await old.recv(timeout=5.0)).data.sequence == 37
                for seq in (41, 42):
                    await pub.send(update("GOOG", seq))
                seen = [decode_market_data(await old.recv(timeout=5.0)).data.sequence]
                seen.append(decode_market_data(await old.recv(timeout=5.0)).data.sequence)
                with h.network("new").subscriber(
                    connect=downstream, topics=[b"MARKET.GOOG"]
                ) as new:
                    assert decode_market_data(await new.recv(timeout=5.0)).data.sequence == 42
                    seen.append(decode_market_data(await old.recv(timeout=5.0)).data.sequence)
                assert seen == [41, 42, 42]  # the repeat is the newest value
            await _close(pub, cache, serving)

        h.run(body(), timeout=30)


def test_lvc_a_replay_is_bounded_by_max_replay_topics() -> None:
    with open_harness("sim") as h:

        async def body() -> None:
            pub, cache, serving = await _cache_with_values(h, max_replay_topics=3)
            downstream = cache.downstream.last_endpoint
            assert downstream is not None
            with h.network("wide").subscriber(connect=downstream, topics=[b"MARKET."]) as wide:
                got = [await wide.recv(timeout=5.0) for _ in range(3)]
                assert [m[0] for m in got] == sorted(cache.values)[:3]
                with pytest.raises(Timeout):
                    await wide.recv(timeout=0.5)
            assert cache.replays_truncated == 1 == cache.over_limit
            await _close(pub, cache, serving)

        h.run(body(), timeout=30)


def test_lvc_counts_what_is_not_a_subscription_on_its_xpub() -> None:
    with open_harness("sim") as h:

        async def body() -> None:
            pub, cache, serving = await _cache_with_values(h)
            downstream = cache.downstream.last_endpoint
            assert downstream is not None
            with h.network("x").xsubscriber(connect=downstream) as xsub:
                await xsub.send([b"hello"])  # data sent upstream, not a subscription
                await xsub.send([b"\x00MARKET.AAPL"])  # an unsubscription: counted, no reply
                await asyncio.sleep(0.1)
                assert xsub.try_recv() is None
            assert cache.malformed == 1
            await _close(pub, cache, serving)

        h.run(body(), timeout=30)


def test_lvc_subscriber_drops_the_repeats_other_subscribers_cause(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:

        async def body() -> None:
            pub, cache, serving = await _cache_with_values(h, snapshots=h.bind_endpoint())
            assert cache.snapshots is not None
            downstream = cache.downstream.last_endpoint
            late = LastValueSubscriber(
                h.network("late"),
                updates=downstream or "",
                snapshots=cache.snapshots.last_endpoint or "",
                prefix=b"MARKET.",
            )
            try:
                assert sequences(await late.sync(timeout=10.0))["AAPL"] == 40
                with h.network("plain").subscriber(
                    connect=downstream or "", topics=[b"MARKET."]
                ) as plain:
                    for _ in range(6):  # its replay: the repeats `late` must not return
                        await plain.recv(timeout=5.0)
                    await asyncio.sleep(h.settle)
                    await pub.send(update("IBM", 41))
                    live = await late.recv(timeout=5.0)
                    assert decode_market_data(live).data.sequence == 41
                assert late.repeats >= 6
            finally:
                late.close()
            await _close(pub, cache, serving)

        h.run(body(), timeout=30)


@pytest.mark.timeout(60)
def test_the_lvcache_example_serves_the_guides_raw_pyzmq_client() -> None:
    """The Guide's pathopub/pathosub pair around our lvcache process: a raw pyzmq SUB
    that subscribes after the values were published gets the cached one first."""
    ctx = zmq.Context()
    socks: list[zmq.Socket[bytes]] = []

    def sock(kind: int) -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = ctx.socket(kind)
        s.linger = 0
        s.rcvtimeo = s.sndtimeo = 5000
        socks.append(s)
        return s

    try:
        pub = sock(zmq.PUB)
        pub.bind("tcp://127.0.0.1:*")
        args = ("--upstream", pub.last_endpoint.decode(), "--downstream", "tcp://127.0.0.1:*")
        with ChildProcess("-m", "transportkit.examples.lvcache", *args) as child:
            assert child.ready_line is not None
            _, downstream, snapshots = child.ready_line.split()
            assert snapshots == "-"
            probe = sock(zmq.SUB)
            probe.subscribe(b"")
            probe.connect(downstream)
            for _ in range(100):  # until the cache's upstream subscription is in
                pub.send_multipart([b"0042", b"first"])
                if probe.poll(100):
                    break
            pub.send_multipart([b"0042", b"newest"])
            while probe.recv_multipart() != [b"0042", b"newest"]:
                pass
            late = sock(zmq.SUB)
            late.connect(downstream)
            late.subscribe(b"0042")  # pathosub subscribes to one random topic
            assert late.recv_multipart() == [b"0042", b"newest"]
    finally:
        for s in socks:
            s.close()
        ctx.term()
