"""The last-value cache's replays: paced (a budget of messages per turn of its loop),
queued within a bound, shared by subscriptions to the same prefix, and matched by
bisection of the sorted topics. In virtual time, deterministic."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit import Message, Publisher, Subscriber
from transportkit.patterns.conflation import LastValueCache, _BoundedValues, _prefix_end
from transportkit.testing import Harness, open_harness

TOPICS = 300


async def _cache(
    h: Harness, **kwargs: object
) -> tuple[Publisher, LastValueCache, asyncio.Task[None]]:
    """A cache holding ``TOPICS`` topics ``T.000`` ... and nothing else."""
    pub = h.network("pub").publisher(bind=h.bind_endpoint())
    assert pub.last_endpoint is not None
    cache = LastValueCache(
        h.network("lvc"),
        upstream=pub.last_endpoint,
        downstream=h.bind_endpoint(),
        **kwargs,  # type: ignore[arg-type]
    )
    serving = asyncio.ensure_future(cache.run())
    while not cache.forwarded:  # the upstream subscription is in place
        await pub.send([b"T.000", b"0"])
        await asyncio.sleep(0.005)
    for i in range(TOPICS):
        await pub.send([b"T.%03d" % i, b"1"])
    while len(cache.values) < TOPICS:
        await asyncio.sleep(0.01)
    return pub, cache, serving


async def _close(pub: Publisher, cache: LastValueCache, serving: asyncio.Task[None]) -> None:
    cache.close()
    await asyncio.wait_for(serving, 5.0)
    pub.close()


def test_a_wide_replay_is_sent_a_budget_per_loop_turn_in_topic_order() -> None:
    """A subscription to every topic: the cache sends at most ``replay_budget`` of the
    cached values between two turns of the event loop (it used to send them all at
    once, up to 1000, holding the live stream back)."""
    with open_harness("sim") as h:

        async def body() -> tuple[Counter[int], list[Message], int]:
            pub, cache, serving = await _cache(h, replay_budget=40)
            downstream = cache.downstream.last_endpoint
            assert downstream is not None
            ticks = 0
            per_tick: Counter[int] = Counter()
            send = cache.downstream.try_send
            ticking: list[asyncio.Future[None]] = []

            async def ticker() -> None:  # one tick per turn of the loop while replaying
                nonlocal ticks
                while cache.replays_pending:
                    ticks += 1
                    await asyncio.sleep(0)

            def counted(frames: Message) -> None:
                if not ticking:  # the replay begins: count the loop's turns from now
                    ticking.append(asyncio.ensure_future(ticker()))
                per_tick[ticks] += 1
                send(frames)

            cache.downstream.try_send = counted  # type: ignore[method-assign]
            with h.network("wide").subscriber(connect=downstream, topics=[b"T."]) as wide:
                got = [await wide.recv(timeout=5.0) for _ in range(TOPICS)]
            await ticking[0]
            replayed = cache.replayed
            await _close(pub, cache, serving)
            return per_tick, got, replayed

        per_tick, got, replayed = h.run(body(), timeout=60)
    assert replayed == TOPICS
    assert got == [[b"T.%03d" % i, b"1"] for i in range(TOPICS)]
    assert max(per_tick.values()) <= 40
    assert len(per_tick) >= TOPICS // 40


def test_a_value_updated_during_its_replay_is_replayed_at_its_new_value() -> None:
    with open_harness("sim") as h:

        async def body() -> list[Message]:
            pub, cache, serving = await _cache(h, replay_budget=10)
            downstream = cache.downstream.last_endpoint
            assert downstream is not None
            send = cache.downstream.try_send

            def updating(frames: Message) -> None:
                send(frames)
                if frames[0] == b"T.000":  # the replay has begun: T.299 changes
                    cache._cache.put(b"T.299", [b"T.299", b"2"])

            cache.downstream.try_send = updating  # type: ignore[method-assign]
            with h.network("wide").subscriber(connect=downstream, topics=[b"T."]) as wide:
                got = [await wide.recv(timeout=5.0) for _ in range(TOPICS)]
            await _close(pub, cache, serving)
            return got

        got = h.run(body(), timeout=60)
    assert got[-1] == [b"T.299", b"2"]  # never the older value


def _inject(cache: LastValueCache, messages: list[Message]) -> None:
    """Make the cache's XPUB yield ``messages`` at its next read, in one batch (as when
    several subscriptions arrive at once), then what it really received."""
    queued = list(messages)
    real = cache.downstream.try_recv

    def try_recv() -> Message | None:
        return queued.pop(0) if queued else real()

    cache.downstream.try_recv = try_recv  # type: ignore[method-assign]


async def _count(sub: Subscriber, quiet: float = 0.5) -> list[bytes]:
    """The topics ``sub`` receives until it has been quiet for ``quiet`` seconds."""
    topics = []
    while await sub.poll(quiet):
        message = sub.try_recv()
        assert message is not None
        topics.append(message[0])
    return topics


def test_replays_beyond_max_pending_replays_are_refused_and_counted() -> None:
    with open_harness("sim") as h:

        async def body() -> tuple[list[bytes], int, int]:
            pub, cache, serving = await _cache(h, max_pending_replays=1)
            downstream = cache.downstream.last_endpoint
            assert downstream is not None
            with h.network("wide").subscriber(connect=downstream, topics=[b"T."]) as wide:
                assert len(await _count(wide)) == TOPICS  # its own replay
                over = cache.over_limit
                _inject(cache, [[b"\x01T.0"], [b"\x01T.1"]])  # no room for the second
                with h.network("y").subscriber(connect=downstream, topics=[b"NONE"]):
                    got = await _count(wide)  # its subscription makes the cache read
            refused, over = cache.replays_refused, cache.over_limit - over
            await _close(pub, cache, serving)
            return got, refused, over

        got, refused, over = h.run(body(), timeout=60)
    assert got == [b"T.%03d" % i for i in range(100)]  # one replay
    assert refused == 1
    assert over == 1


def test_subscriptions_to_a_prefix_waiting_for_its_replay_share_it() -> None:
    """Two subscriptions to the same prefix read in one batch (two subscribers joining
    at once): one replay, which the XPUB sends to every subscriber of those topics
    anyway, not the same values twice."""
    with open_harness("sim") as h:

        async def body() -> tuple[list[bytes], int]:
            pub, cache, serving = await _cache(h)
            downstream = cache.downstream.last_endpoint
            assert downstream is not None
            with h.network("x").subscriber(connect=downstream, topics=[b"T.1"]) as sub:
                assert len(await _count(sub)) == 100  # its own replay
                _inject(cache, [[b"\x01T.1"], [b"\x01T.1"]])
                with h.network("y").subscriber(connect=downstream, topics=[b"NONE"]):
                    got = await _count(sub)  # its subscription makes the cache read
            coalesced = cache.replays_coalesced
            await _close(pub, cache, serving)
            return got, coalesced

        got, coalesced = h.run(body(), timeout=60)
    assert got == [b"T.%03d" % i for i in range(100, 200)]
    assert coalesced == 1


def test_a_graceful_stop_counts_the_replays_it_leaves_unfinished() -> None:
    with open_harness("sim") as h:

        async def body() -> tuple[bool, int, int, int]:
            pub, cache, serving = await _cache(h, replay_budget=1)
            downstream = cache.downstream.last_endpoint
            assert downstream is not None
            send = cache.downstream.try_send
            stopping: list[asyncio.Future[bool]] = []

            def stop_at_first(frames: Message) -> None:
                send(frames)
                if not stopping:  # the replay has begun: stop the cache
                    stopping.append(asyncio.ensure_future(cache.shutdown(1.0)))

            cache.downstream.try_send = stop_at_first  # type: ignore[method-assign]
            with h.network("wide").subscriber(connect=downstream, topics=[b"T."]):
                while not stopping:
                    await asyncio.sleep(0.001)
                clean = await stopping[0]
            await asyncio.wait_for(serving, 5.0)
            pub.close()
            return clean, cache.shutdown_dropped, cache.replays_pending, cache.replayed

        clean, dropped, pending, replayed = h.run(body(), timeout=60)
    assert not clean
    assert dropped == 1
    assert pending == 0
    assert 1 <= replayed < TOPICS


# -- the sorted index ---------------------------------------------------------------------

_topics = st.lists(st.sampled_from([0x00, 0x61, 0xFE, 0xFF]), max_size=3).map(bytes)


@settings(max_examples=200, deadline=None)
@given(
    operations=st.lists(st.tuples(_topics, st.integers(0, 3)), max_size=40),
    prefix=_topics,
    after=st.none() | _topics,
)
def test_the_index_finds_what_a_scan_of_the_cache_finds(
    operations: list[tuple[bytes, int]], prefix: bytes, after: bytes | None
) -> None:
    """Puts that fit, puts that do not (the topic leaves), in any order, with spans
    asked between them: a bisection finds exactly the topics a scan finds."""
    values = _BoundedValues(max_topics=6, max_bytes=40, indexed=True)
    index = values.index
    assert index is not None
    scan: Callable[[], list[bytes]] = lambda: sorted(  # noqa: E731
        t for t in values.values if t.startswith(prefix) and (after is None or t > after)
    )
    for topic, size in operations:
        values.put(topic, [topic, b"x" * (size * 6)])
        keys, start, end = index.span(prefix, after)
        assert keys[start:end] == scan()
        assert keys == sorted(values.values)


def test_prefix_end_is_the_least_string_past_the_prefix() -> None:
    assert _prefix_end(b"") is None
    assert _prefix_end(b"\xff\xff") is None
    assert _prefix_end(b"T.") == b"T/"
    assert _prefix_end(b"a\xff") == b"b"
    assert _prefix_end(b"a\xfe\xff") == b"a\xff"
