"""Scale sanity: long runs keep exact books."""

from __future__ import annotations

import asyncio

from transportkit import SocketOptions, Subscriber
from transportkit.sim_backend import Simulation, Uniform

TOPICS = (b"AAPL", b"MSFT", b"GOOG", b"AMZN")
SUBSCRIPTIONS = ((b"AAPL",), (b"MSFT", b"GOOG"), (b"",), (b"A",))


def test_100k_message_pubsub_run_counts_add_up() -> None:
    messages = 100_000
    sim = Simulation(seed=5, latency=Uniform(20e-6, 200e-6), record_trace=False)
    # The kernel's smallest tcp buffers (about 6.9 kB, some 600 of these messages) on
    # top of the HWMs, so that the slow consumers fall behind within the run.
    options = SocketOptions(sndhwm=200, rcvhwm=200, sndbuf=0, rcvbuf=0)

    async def consume(sub: Subscriber, pause_every: int) -> None:
        n = 0
        while True:
            await sub.recv()
            n += 1
            if n % pause_every == 0:
                await asyncio.sleep(0.002)

    async def main() -> tuple[int, int, int]:
        pub = sim.node("md").publisher(bind="tcp://*:5556", options=options)
        subs = []
        for i, topics in enumerate(SUBSCRIPTIONS):
            node = sim.node(f"trader{i}")
            sub = node.subscriber(connect="tcp://md:5556", topics=topics, options=options)
            node.spawn(consume(sub, pause_every=50 * (i + 1)))
            subs.append(sub)
        await asyncio.sleep(0.1)
        for i in range(messages):
            await pub.send([TOPICS[i % len(TOPICS)], b"%d" % i])
            if i % 100 == 99:
                await asyncio.sleep(0.0005)
        await asyncio.sleep(10)
        delivered = sum(s.stats.received for s in subs)
        dropped = (pub.stats.dropped or 0) + sum(s.stats.dropped or 0 for s in subs)
        return pub.stats.sent, delivered, dropped

    sent, delivered, dropped = sim.run(main())
    matching = sum(
        any(topic.startswith(prefix) for prefix in prefixes)
        for topic in TOPICS
        for prefixes in SUBSCRIPTIONS
    )
    assert sent == messages
    assert delivered + dropped == messages * matching // len(TOPICS)
    assert dropped > 0  # the slow consumers did fall behind
    assert delivered > dropped
    assert not sim.trace.events
    assert sim.trace.counts["send"] == messages
