"""A receive that delivers its next message inline (without waiting) changes nothing.

``SimSocket.recv`` delivers the message at the head of the event heap itself when
waiting would only let the loop deliver it and wake the receiver. Each program here
runs twice, with that shortcut and with every receive forced to wait, and the two runs
must agree on everything observable: the trace (hash and events) and what the tasks saw,
when, and in which order. Each program also checks that the shortcut was taken (so the
comparison is not vacuous) or, where it must not be, that it was not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from transportkit import SocketOptions
from transportkit._timeouts import wait_for
from transportkit.sim_backend import Constant, LatencyModel, Simulation, Uniform, _sockets

Program = Callable[[Simulation, list[tuple[float, str]]], Coroutine[Any, Any, None]]
UNLIMITED = SocketOptions(sndhwm=0, rcvhwm=0)


def _run(
    program: Program, latency: LatencyModel, *, inline: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, list[Any], list[tuple[float, str]], int]:
    taken = [0]
    real = _sockets._arrives_next

    def counted(loop: asyncio.AbstractEventLoop, sock: Any) -> Any:
        if not inline:
            return False
        delivered = real(loop, sock)
        taken[0] += delivered is not False
        return delivered

    with monkeypatch.context() as patch:
        patch.setattr(_sockets, "_arrives_next", counted)
        sim = Simulation(seed=11, latency=latency)
        log: list[tuple[float, str]] = []
        sim.run(program(sim, log), timeout=60)
        events = [tuple(e) for e in sim.trace.events]
        return sim.trace.hash, events, log, taken[0]


def _same_both_ways(
    program: Program, latency: LatencyModel, monkeypatch: pytest.MonkeyPatch
) -> int:
    """Assert both runs agree; return how many messages were delivered inline."""
    fast = _run(program, latency, inline=True, monkeypatch=monkeypatch)
    slow = _run(program, latency, inline=False, monkeypatch=monkeypatch)
    assert slow[3] == 0
    assert fast[2] == slow[2]  # what the tasks saw, when, in order
    assert fast[1] == slow[1]  # every trace event
    assert fast[0] == slow[0]
    return fast[3]


def _now() -> float:
    return asyncio.get_running_loop().time()


async def _forwarder(sim: Simulation, log: list[tuple[float, str]]) -> None:
    """Bursts to a SUB that forwards each message on a PUSH, and a ticker whose timers
    fall on arrival times (constant latency): the receiver acts between receives, and
    timers are due at the instants of arrivals.
    """
    a, b, c = sim.node("a"), sim.node("b"), sim.node("c")
    pub = a.publisher(bind="tcp://a:1", options=UNLIMITED)
    sub = b.subscriber(connect="tcp://a:1", options=UNLIMITED)
    push = b.pusher(connect="tcp://c:2", options=UNLIMITED)
    pull = c.puller(bind="tcp://c:2", options=UNLIMITED)
    await asyncio.sleep(0.01)

    async def forward() -> None:
        while True:
            msg = await sub.recv()
            log.append((_now(), f"fwd {msg[1].decode()}"))
            await push.send([msg[1]])

    async def ticker() -> None:
        for i in range(40):
            await asyncio.sleep(0.0005)
            log.append((_now(), f"tick {i}"))

    async def sink() -> None:
        while True:
            msg = await pull.recv()
            log.append((_now(), f"sink {msg[0].decode()}"))

    tasks = [asyncio.ensure_future(t()) for t in (forward, ticker, sink)]
    for burst in range(8):
        for i in range(10):
            await pub.send([b"T", f"{burst}.{i}".encode()])
        await asyncio.sleep(0.0025)
    await asyncio.sleep(0.02)
    for task in tasks:
        task.cancel()


async def _two_readers(sim: Simulation, log: list[tuple[float, str]]) -> None:
    """Two tasks receive from one PULL, a third polls it: other waiters on the socket."""
    a, b = sim.node("a"), sim.node("b")
    push = a.pusher(bind="tcp://a:1", options=UNLIMITED)
    pull = b.puller(connect="tcp://a:1", options=UNLIMITED)
    await asyncio.sleep(0.01)

    async def reader(name: str) -> None:
        while True:
            msg = await pull.recv()
            log.append((_now(), f"{name} {msg[0].decode()}"))
            if name == "r1":
                await asyncio.sleep(0)

    async def poller() -> None:
        for _ in range(30):
            ready = await pull.poll(0.0001)
            log.append((_now(), f"poll {ready}"))

    tasks = [asyncio.ensure_future(reader("r1")), asyncio.ensure_future(reader("r2"))]
    tasks.append(asyncio.ensure_future(poller()))
    for burst in range(6):
        for i in range(12):
            await push.send([f"{burst}.{i}".encode()])
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    for task in tasks:
        task.cancel()


async def _timeouts_and_cancels(sim: Simulation, log: list[tuple[float, str]]) -> None:
    """Receives under wait_for deadlines that expire between arrivals, a reader that
    cancels itself before receiving, and a hold of the link that keeps messages back.
    """
    a, b = sim.node("a"), sim.node("b")
    push = a.pusher(bind="tcp://a:1", options=UNLIMITED)
    pull = b.puller(connect="tcp://a:1", options=UNLIMITED)
    await asyncio.sleep(0.01)

    async def deadlines() -> None:
        for _ in range(60):
            try:
                msg = await wait_for(pull.recv(), 0.00005)
                log.append((_now(), f"got {msg[0].decode()}"))
            except TimeoutError:
                log.append((_now(), "deadline"))

    async def self_cancel() -> None:
        await asyncio.sleep(0.0021)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        try:
            msg = await pull.recv()
            log.append((_now(), f"cancelled reader got {msg[0].decode()}"))
        except asyncio.CancelledError:
            log.append((_now(), "cancelled reader cancelled"))

    tasks = [asyncio.ensure_future(deadlines()), asyncio.ensure_future(self_cancel())]
    for burst in range(6):
        if burst == 3:
            sim.hold("a", "b")
        if burst == 4:
            sim.release("a", "b")
        for i in range(8):
            await push.send([f"{burst}.{i}".encode()])
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    for task in tasks:
        task.cancel()


async def _self_cancelling_reader(sim: Simulation, log: list[tuple[float, str]]) -> None:
    """The only reader of a PULL cancels itself in the middle of a burst: its next
    receive must raise the cancellation, not return the message already due.
    """
    a, b = sim.node("a"), sim.node("b")
    push = a.pusher(bind="tcp://a:1", options=UNLIMITED)
    pull = b.puller(connect="tcp://a:1", options=UNLIMITED)
    await asyncio.sleep(0.01)

    async def reader() -> None:
        count = 0
        while True:
            try:
                msg = await pull.recv()
                count += 1
                log.append((_now(), f"got {msg[0].decode()}"))
                if count % 5 == 3:
                    task = asyncio.current_task()
                    assert task is not None
                    task.cancel()
            except asyncio.CancelledError:
                log.append((_now(), "cancelled"))

    task = asyncio.ensure_future(reader())
    for burst in range(4):
        for i in range(10):
            await push.send([f"{burst}.{i}".encode()])
        await asyncio.sleep(0.002)
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()


async def _small_hwm(sim: Simulation, log: list[tuple[float, str]]) -> None:
    """Bursts bigger than the HWMs: messages wait in the sender's queue and the kernel's
    buffers, and every receive moves the next ones on (pipe notifications, pumping).
    """
    a, b = sim.node("a"), sim.node("b")
    small = SocketOptions(sndhwm=4, rcvhwm=3)
    push = a.pusher(bind="tcp://a:1", options=small)
    pull = b.puller(connect="tcp://a:1", options=small)
    await asyncio.sleep(0.01)

    async def reader() -> None:
        while True:
            msg = await pull.recv()
            log.append((_now(), f"got {msg[0].decode()}"))

    task = asyncio.ensure_future(reader())
    for burst in range(3):
        for i in range(40):
            await push.send([f"{burst}.{i}".encode() * 20_000])
            log.append((_now(), f"sent {burst}.{i}"))
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.01)
    task.cancel()


@pytest.mark.parametrize("latency", [Constant(0.0005), Uniform(40e-6, 60e-6)], ids=str)
@pytest.mark.parametrize(
    "program",
    [_forwarder, _two_readers, _timeouts_and_cancels, _self_cancelling_reader, _small_hwm],
    ids=lambda p: p.__name__,
)
def test_inline_delivery_changes_nothing_observable(
    program: Program, latency: LatencyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline = _same_both_ways(program, latency, monkeypatch)
    if program in (_forwarder, _self_cancelling_reader, _small_hwm):
        assert inline > 0  # the shortcut was exercised


def test_a_reading_subscriber_takes_most_messages_inline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bench's PUB/SUB shape: bursts to one reader, nothing else to run."""

    async def bursts(sim: Simulation, log: list[tuple[float, str]]) -> None:
        pub = sim.node("a").publisher(bind="tcp://a:1", options=UNLIMITED)
        sub = sim.node("b").subscriber(connect="tcp://a:1", options=UNLIMITED)
        await asyncio.sleep(0.001)

        async def publish() -> None:
            for _ in range(5):
                for i in range(100):
                    await pub.send([b"T", str(i).encode()])
                await asyncio.sleep(0.001)

        task = asyncio.ensure_future(publish())
        for _ in range(500):
            msg = await sub.recv()
        log.append((_now(), msg[1].decode()))
        await task

    inline = _same_both_ways(bursts, Uniform(40e-6, 60e-6), monkeypatch)
    assert inline >= 490  # all but the first of each burst
