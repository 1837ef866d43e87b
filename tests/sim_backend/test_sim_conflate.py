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
from transportkit.testing import Harness

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
    subs: list[Subscriber] = []

    async def main() -> tuple[list[bytes] | None, list[bytes] | None]:
        opts = SocketOptions(conflate=True)
        with node.publisher(bind="inproc://md") as pub:
            everything = node.subscriber(connect="inproc://md", topics=[b""], options=opts)
            topical = node.subscriber(connect="inproc://md", topics=[b"topic"], options=opts)
            subs.extend([everything, topical])
            await pub.send([b"topic", b"data1", b"data2"])
            return everything.try_recv(), topical.try_recv()

    assert sim.run(main()) == ([b"data2"], None)
    # Both SUBs lost two frames; the one whose filter refused the last frame received
    # nothing, but its truncation is counted all the same.
    assert [sub.stats.truncated for sub in subs] == [1, 1]
    assert [sub.stats.received for sub in subs] == [1, 0]


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_a_plain_push_to_a_conflating_pull_keeps_the_last_frame_and_the_sim_counts_it(
    tk_harness: Harness, transport: str
) -> None:
    """Issue 11, point 10. A PUSH that does not conflate may send multipart messages;
    a conflating PULL's pipe holds one frame, so ``[a, b, c]`` arrives as ``[c]``, with
    no error on either side. Measured on libzmq 4.3.5 (the zmq run here is libzmq
    itself): ``[c]``, RCVMORE 0. The sim delivers the same and counts the truncation
    in the PULL's ``stats.truncated``; on zmq the receiver cannot see it (None)."""

    async def body() -> tuple[list[bytes], list[bytes], int | None, int]:
        pull = tk_harness.network("desk").puller(
            bind=tk_harness.bind_endpoint(transport), options=CONFLATE
        )
        assert pull.last_endpoint is not None
        push = tk_harness.network("feed").pusher(connect=pull.last_endpoint)
        await asyncio.sleep(tk_harness.settle)
        await push.send([b"a", b"b", b"c"])
        first = await pull.recv(timeout=5.0)
        await push.send([b"px-1"])  # single frames pass as they are
        second = await pull.recv(timeout=5.0)
        return first, second, pull.stats.truncated, pull.stats.received

    first, second, truncated, received = tk_harness.run(body(), timeout=30)
    assert (first, second, received) == ([b"c"], [b"px-1"], 2)
    assert truncated == (1 if tk_harness.name == "sim" else None)


def test_the_conflating_socket_itself_still_refuses_multipart_sends(tk_harness: Harness) -> None:
    async def body() -> None:
        push = tk_harness.network("feed").pusher(
            bind=tk_harness.bind_endpoint("tcp"), options=CONFLATE
        )
        with pytest.raises(FrameError, match="conflate"):
            await push.send([b"a", b"b"])

    tk_harness.run(body(), timeout=30)
