"""The sim's XPUB/XSUB model in virtual time: latency, stats, traces, determinism.

What both backends share is in ``tests/core/test_xpub.py``; these are the things only
virtual time can pin down exactly (when a subscription arrives, what was counted).
"""

from __future__ import annotations

import asyncio

import pytest

from transportkit import SocketOptions, XPublisher
from transportkit.sim_backend import Constant, Simulation, Uniform

LINK = 0.001  # one link delay, seconds


def make_sim(seed: int = 1) -> Simulation:
    return Simulation(seed=seed, latency=Constant(LINK))


def test_a_subscription_reaches_the_xpub_one_link_delay_after_the_connection() -> None:
    sim = make_sim()
    pub_node, sub_node = sim.node("pub"), sim.node("sub")

    async def main() -> list[tuple[float, list[bytes]]]:
        got = []
        with (
            pub_node.xpublisher(bind="tcp://pub:5556") as pub,
            sub_node.subscriber(connect="tcp://pub:5556", topics=[b"A"]) as sub,
        ):
            msg = await pub.recv(timeout=1)
            got.append((sim.now, msg))
            start = sim.now
            sub.subscribe(b"B")  # connected now: one link delay
            msg = await pub.recv(timeout=1)
            got.append((sim.now - start, msg))
        return got

    (t1, m1), (t2, m2) = sim.run(main())
    assert m1 == [b"\x01A"] and t1 == pytest.approx(2 * LINK)  # connect, then subscribe
    assert m2 == [b"\x01B"] and t2 == pytest.approx(LINK)


def test_an_xsub_subscription_and_its_data_travel_in_order() -> None:
    sim = make_sim()
    pub_node, xsub_node = sim.node("pub"), sim.node("xsub")

    async def main() -> list[tuple[float, list[bytes]]]:
        got = []
        with (
            pub_node.xpublisher(bind="tcp://pub:5556") as pub,
            xsub_node.xsubscriber(connect="tcp://pub:5556", topics=[b"A"]) as xsub,
        ):
            await asyncio.sleep(0.01)
            start = sim.now
            xsub.subscribe(b"B")
            await xsub.send([b"data"])
            xsub.unsubscribe(b"B")
            for _ in range(4):
                msg = await pub.recv(timeout=1)
                got.append((sim.now - start, msg))
        return got

    got = sim.run(main())
    assert [m for _, m in got] == [[b"\x01A"], [b"\x01B"], [b"data"], [b"\x00B"]]
    assert [t for t, _ in got[1:]] == pytest.approx([LINK] * 3)


def test_subscription_messages_count_in_the_stats_and_the_trace() -> None:
    sim = make_sim()
    node = sim.node("n")

    async def main() -> tuple[int, int, int, int | None]:
        with (
            node.xpublisher(bind="inproc://x") as pub,
            node.xsubscriber(connect="inproc://x") as xs,
        ):
            xs.subscribe(b"A")
            xs.subscribe(b"A")
            await xs.send([b"up"])
            xs.unsubscribe(b"A")
            xs.unsubscribe(b"A")
            xs.unsubscribe(b"A")  # nothing left: not sent, still a send
            await asyncio.sleep(0.01)
            received = 0
            while pub.try_recv() is not None:
                received += 1
            return xs.stats.sent, received, pub.stats.received, pub.stats.dropped

    sent, received, counted, dropped = sim.run(main())
    assert (sent, received, counted, dropped) == (6, 3, 3, 0)  # \x01A, data, \x00A
    kinds = [(e.kind, e.subject, e.detail) for e in sim.trace.events]
    assert ("subscribe", "n/xpub0", "b'A'") in kinds
    assert ("unsubscribe", "n/xpub0", "b'A'") in kinds
    assert ("unsubscribe-unknown", "n/xsub1", "b'A'") in kinds


def test_a_pub_discards_an_xsubs_data_and_counts_it() -> None:
    sim = make_sim()
    node = sim.node("n")

    async def main() -> tuple[int | None, list[bytes]]:
        with node.publisher(bind="inproc://p") as pub, node.xsubscriber(connect="inproc://p") as xs:
            xs.subscribe(b"")
            await xs.send([b"ignored"])
            await pub.send([b"t", b"1"])
            return pub.stats.dropped, await xs.recv(timeout=1)

    assert sim.run(main()) == (1, [b"t", b"1"])


def test_a_pipes_subscriptions_are_a_set_at_the_publisher() -> None:
    """A SUB subscribed twice and unsubscribed twice gets nothing more: its one
    unsubscription removes the prefix from its pipe (a count there would leave one).
    """
    sim = make_sim()
    node = sim.node("n")

    async def main() -> None:
        with node.publisher(bind="inproc://p") as pub, node.subscriber(connect="inproc://p") as sub:
            sub.subscribe(b"A")
            sub.unsubscribe(b"")
            sub.unsubscribe(b"A")
            sub.unsubscribe(b"A")
            await pub.send([b"A", b"1"])

    sim.run(main())
    assert not [e for e in sim.trace.events if e.kind == "deliver"]


def test_unread_xpub_messages_are_counted_as_dropped_at_close() -> None:
    sim = make_sim()
    node = sim.node("n")

    async def main() -> XPublisher:
        pub = node.xpublisher(bind="inproc://x")
        with node.subscriber(connect="inproc://x", topics=[b"A", b"B"]):
            await asyncio.sleep(0.01)
        pub.close()
        return pub

    pub = sim.run(main())
    assert pub.stats.dropped == 2  # \x01A and \x01B arrived, never read
    assert pub.stats.received == 0


def test_nodrop_send_waits_until_the_subscriber_reads() -> None:
    sim = make_sim()
    node = sim.node("n")
    options = SocketOptions(sndhwm=2, rcvhwm=2, xpub_nodrop=True)

    async def main() -> tuple[float, float, int]:
        with node.xpublisher(bind="inproc://x", options=options) as pub:
            sub = node.subscriber(connect="inproc://x", options=SocketOptions(sndhwm=2, rcvhwm=2))
            with sub:
                await pub.recv(timeout=1)
                for i in range(4):
                    pub.try_send([b"m%d" % i])

                async def reader() -> None:
                    await asyncio.sleep(0.5)
                    await sub.recv(timeout=1)

                task = asyncio.create_task(reader())
                start = sim.now
                await pub.send([b"late"])  # waits for the reader
                waited = sim.now - start
                await task
                with pytest.raises(TimeoutError):  # full again: it would wait for ever
                    await asyncio.wait_for(pub.send([b"later"]), timeout=0.1)
                return waited, sim.now, pub.stats.dropped or 0

    waited, _, dropped = sim.run(main())
    assert waited == pytest.approx(0.5)
    assert dropped == 0


def test_the_same_seed_replays_an_xpub_run_exactly() -> None:
    def once(seed: int) -> str:
        sim = Simulation(seed=seed, latency=Uniform(1e-4, 1e-3))
        nodes = [sim.node(name) for name in ("src", "proxy", "a", "b")]

        async def main() -> None:
            src, proxy, a, b = nodes
            with (
                src.publisher(bind="tcp://src:1") as pub,
                proxy.xpublisher(
                    bind="tcp://proxy:2", options=SocketOptions(xpub_verboser=True)
                ) as front,
                proxy.xsubscriber(connect="tcp://src:1") as back,
            ):
                subs = [
                    a.subscriber(connect="tcp://proxy:2", topics=[b"A"]),
                    b.subscriber(connect="tcp://proxy:2", topics=[b"A", b"B"]),
                ]
                for _ in range(3):
                    await back.send(await front.recv(timeout=1))
                for i in range(50):
                    await pub.send([b"AB"[i % 2 : i % 2 + 1], b"%d" % i])
                    await asyncio.sleep(0.001)
                    while (msg := back.try_recv()) is not None:
                        await front.send(msg)
                subs[0].close()
                await back.send(await front.recv(timeout=1))
                subs[1].close()

        sim.run(main())
        return sim.trace.hash

    assert once(3) == once(3)
    assert once(3) != once(4)


def test_a_long_inproc_queue_drains_into_an_xpub_without_recursion() -> None:
    """An XSUB's inproc pipe filled before the bind drains at once into the XPUB,
    which reads as it receives: the nested pump stays one level deep (it recursed
    once per queued message: a RecursionError for these thousand).
    """
    sim = make_sim()
    node = sim.node("n")

    async def main() -> tuple[int, int | None]:
        xsub = node.xsubscriber(connect="inproc://q")
        for i in range(1000):  # SNDHWM: the pipe takes them all
            await xsub.send([b"d%d" % i])
        pub = node.xpublisher(bind="inproc://q")
        received = []
        while (msg := pub.try_recv()) is not None:
            received.append(msg)
        assert received == [[b"d%d" % i] for i in range(1000)]
        return len(received), xsub.stats.dropped

    assert sim.run(main()) == (1000, 0)
