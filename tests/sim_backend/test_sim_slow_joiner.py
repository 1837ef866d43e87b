"""Slow joiner: exact on the sim with constant latency; absent over inproc."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit.sim_backend import Constant, Simulation

from .conftest import TCP, VIRTUAL_LIMIT

START = 1.0
STEP = 0.001


def _slow_joiner_run(latency: float) -> tuple[dict[str, float], list[tuple[int, float]]]:
    """Connect a SUB at START and publish every STEP (offset by half a step).

    Returns the times of the connect/subscribe trace events and (index, arrival time)
    of each delivery.
    """
    sim = Simulation(latency=Constant(latency))
    pub_node, sub_node = sim.node("pub"), sim.node("sub")
    count = round(4 * latency / STEP) + 10

    async def main() -> tuple[dict[str, float], list[tuple[int, float]]]:
        pub = pub_node.publisher(bind=TCP)
        assert pub.last_endpoint is not None
        await asyncio.sleep(START)
        sub = sub_node.subscriber()
        sub.connect(pub.last_endpoint)
        await asyncio.sleep(STEP / 2)
        for k in range(count):
            await pub.send([b"", k.to_bytes(4, "big")])
            await asyncio.sleep(STEP)
        await asyncio.sleep(1)
        times: dict[str, float] = {}
        for event in sim.trace.events:
            if event.kind in ("connected", "accepted", "subscribe"):
                times[event.kind] = event.time
        got = []
        delivered = iter(e.time for e in sim.trace.events if e.kind == "deliver")
        while (msg := sub.try_recv()) is not None:
            got.append((int.from_bytes(msg[1], "big"), next(delivered)))
        return times, got

    return sim.run(main(), timeout=VIRTUAL_LIMIT)


@settings(max_examples=10, deadline=None)
@given(latency=st.sampled_from([0.002, 0.005, 0.01, 0.0235, 0.05]))
def test_tcp_sub_attaches_after_one_delay_and_subscribes_after_two(latency: float) -> None:
    times, got = _slow_joiner_run(latency)
    assert times["connected"] == pytest.approx(START + latency)
    assert times["accepted"] == pytest.approx(START + latency)
    assert times["subscribe"] == pytest.approx(START + 2 * latency)
    subscribed_at = START + 2 * latency
    first = next(k for k in range(10_000) if START + STEP / 2 + k * STEP >= subscribed_at - 1e-9)
    indices = [k for k, _ in got]
    assert indices == list(range(first, indices[-1] + 1))
    assert indices[-1] == round(4 * latency / STEP) + 9
    for k, arrival in got:
        assert arrival == pytest.approx(START + STEP / 2 + k * STEP + latency)


def test_messages_published_before_the_subscription_arrives_are_not_delivered() -> None:
    _, got = _slow_joiner_run(0.01)
    # published at START + 0.5 ms ... START + 19.5 ms: before START + 2L = START + 20 ms
    assert got[0][0] == 20


@pytest.mark.parametrize("bind_first", [True, False], ids=["bind-first", "connect-first"])
def test_inproc_subscription_attaches_at_connect_with_no_slow_joiner(bind_first: bool) -> None:
    sim = Simulation(latency=Constant(0.5))
    node = sim.node("n")

    async def main() -> tuple[list[bytes], float]:
        if bind_first:
            pub = node.publisher(bind="inproc://feed")
            sub = node.subscriber(connect="inproc://feed")
        else:
            sub = node.subscriber(connect="inproc://feed")
            pub = node.publisher(bind="inproc://feed")
        await pub.send([b"t", b"first"])
        return await sub.recv(timeout=0), sim.now

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == ([b"t", b"first"], 0.0)


def test_inproc_subscribe_after_connect_applies_immediately() -> None:
    sim = Simulation(latency=Constant(0.5))
    node = sim.node("n")

    async def main() -> list[bytes]:
        pub = node.publisher(bind="inproc://feed")
        sub = node.subscriber(connect="inproc://feed", topics=())
        sub.subscribe(b"x")
        await pub.send([b"y", b"no"])
        await pub.send([b"x", b"yes"])
        return await sub.recv(timeout=0)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == [b"x", b"yes"]


def test_subscriptions_are_counted_twice_in_needs_twice_out() -> None:
    sim = Simulation(latency=Constant(0.001))
    node = sim.node("n")

    async def main() -> list[list[bytes]]:
        pub = node.publisher(bind="tcp://*:7010")
        sub = node.subscriber(connect="tcp://n:7010", topics=[b"x", b"x"])
        await asyncio.sleep(0.1)
        got = []
        for step in range(3):
            await pub.send([b"x", b"%d" % step])
            await asyncio.sleep(0.1)
            got.extend(iter(sub.try_recv, None))
            sub.unsubscribe(b"x")
            await asyncio.sleep(0.1)
        return got

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == [[b"x", b"0"], [b"x", b"1"]]
