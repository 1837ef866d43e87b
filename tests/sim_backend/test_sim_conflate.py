"""Conflate: libzmq 4.3.5 also conflates a conflating SUB's subscription commands.

The expected outcomes are what libzmq 4.3.5 was observed to do, with a publisher sending
``A1``, ``B1``, ``C1`` (topics ``A``, ``B``, ``C``) after the setup, one at a time, the
subscriber reading after each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from transportkit import FrameError, SocketOptions, Subscriber
from transportkit.sim_backend import Constant, Simulation

from .conftest import VIRTUAL_LIMIT

CONFLATE = SocketOptions(conflate=True)


@dataclass(frozen=True)
class Case:
    transport: str
    before_connect: tuple[bytes, ...]
    after_connect: Callable[[Subscriber], None]
    expected: list[bytes]
    name: str


def _subscribe(*topics: bytes) -> Callable[[Subscriber], None]:
    def apply(sub: Subscriber) -> None:
        for topic in topics:
            sub.subscribe(topic)

    return apply


def _subscribe_then_unsubscribe(topic: bytes) -> Callable[[Subscriber], None]:
    def apply(sub: Subscriber) -> None:
        sub.subscribe(topic)
        sub.unsubscribe(topic)

    return apply


CASES = [
    Case("inproc", (b"A", b"B"), _subscribe(), [b"B1"], "inproc-A,B-before"),
    Case("inproc", (b"A",), _subscribe(b"B"), [b"B1"], "inproc-A-before-B-after"),
    Case("inproc", (b"",), _subscribe_then_unsubscribe(b"S"), [], "inproc-all-then-S-unS"),
    Case("tcp", (b"A", b"B"), _subscribe(), [b"B1"], "tcp-A,B-before"),
    Case("tcp", (b"A",), _subscribe(b"B"), [b"A1", b"B1"], "tcp-A-before-B-later"),
    Case(
        "tcp",
        (b"",),
        _subscribe_then_unsubscribe(b"S"),
        [b"A1", b"B1", b"C1"],
        "tcp-all-then-S-unS",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conflating_sub_reproduces_libzmq_435_subscription_conflation(case: Case) -> None:
    sim = Simulation(latency=Constant(0.001))
    node = sim.node("n")
    bind, connect = (
        ("inproc://md", "inproc://md")
        if case.transport == "inproc"
        else ("tcp://*:7700", "tcp://n:7700")
    )

    async def main() -> list[bytes]:
        pub = node.publisher(bind=bind)
        sub = node.subscriber(topics=case.before_connect, options=CONFLATE)
        sub.connect(connect)
        await asyncio.sleep(0.1)
        case.after_connect(sub)
        await asyncio.sleep(0.1)
        got = []
        for topic in (b"A", b"B", b"C"):
            await pub.send([topic + b"1"])
            await asyncio.sleep(0.05)
            while (msg := sub.try_recv()) is not None:
                got.extend(msg)
        return got

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == case.expected


def test_conflating_sub_keeps_only_the_last_message() -> None:
    sim = Simulation(latency=Constant(0.001))
    node = sim.node("n")

    async def main() -> tuple[list[list[bytes]], int | None]:
        pub = node.publisher(bind="tcp://*:7701")
        sub = node.subscriber(connect="tcp://n:7701", options=CONFLATE)
        await asyncio.sleep(0.1)
        for i in range(50):
            await pub.send([b"px%d" % i])
        await asyncio.sleep(0.1)
        got = []
        while (msg := sub.try_recv()) is not None:
            got.append(msg)
        return got, pub.stats.dropped

    got, dropped = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert got == [[b"px49"]]
    assert dropped == 0  # a conflating receiver always has room


def test_conflating_push_pull_delivers_the_latest_value() -> None:
    sim = Simulation(latency=Constant(0.001))
    node = sim.node("n")

    async def main() -> list[bytes]:
        pull = node.puller(bind="tcp://*:7702", options=CONFLATE)
        push = node.pusher(connect="tcp://n:7702", options=CONFLATE)
        for i in range(10):
            await push.send([b"%d" % i])  # queued before the connection is up
        await asyncio.sleep(0.1)
        return await pull.recv(timeout=0)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == [b"9"]


def test_conflate_refuses_multipart_messages() -> None:
    sim = Simulation()
    node = sim.node("n")

    async def main() -> None:
        pub = node.publisher(bind="tcp://*:7703", options=CONFLATE)
        with pytest.raises(FrameError, match="conflate"):
            await pub.send([b"topic", b"data"])

    sim.run(main(), timeout=VIRTUAL_LIMIT)


def test_a_conflating_sub_keeps_only_the_last_frame_of_a_multipart_message() -> None:
    """libzmq 4.3.5, measured: with a b"" subscription a conflating SUB receives just
    the last frame; with a topic subscription the message is dropped, because that
    last frame fails the filter."""
    sim = Simulation()
    node = sim.node("n")

    async def main() -> tuple[list[bytes] | None, list[bytes] | None]:
        opts = SocketOptions(conflate=True)
        with node.publisher(bind="inproc://md") as pub:
            everything = node.subscriber(connect="inproc://md", topics=[b""], options=opts)
            topical = node.subscriber(connect="inproc://md", topics=[b"topic"], options=opts)
            await pub.send([b"topic", b"data1", b"data2"])
            return everything.try_recv(), topical.try_recv()

    assert sim.run(main()) == ([b"data2"], None)
