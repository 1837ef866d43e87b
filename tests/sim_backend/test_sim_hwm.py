"""High-water marks per socket kind (libzmq 4.3's rules, docs/simulator.md).

inproc's path capacity is exactly SNDHWM + RCVHWM. ipc and tcp add the kernel's socket
buffers (``sim_backend/_kernel.py``, tested against real libzmq in
``test_sim_kernel_buffers.py``): here tcp runs with the kernel's smallest buffers and
messages of about 7 KB, so that exactly one message fits past the receiver's RCVHWM,
and the counts below are what libzmq gives for them: SNDHWM + RCVHWM + 1, less what the
sender's pipe has not yet been told it lost (libzmq's reader reports every ``lwm``
messages, ``(hwm + 1) // 2`` for these HWMs).
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit import (
    HostUnreachableError,
    Network,
    Sender,
    SocketOptions,
    Timeout,
    WouldBlock,
)
from transportkit.sim_backend import Constant, Simulation

from .conftest import VIRTUAL_LIMIT

L = 0.001
TRANSPORTS = ["inproc", "tcp"]


PAD = b"\0" * 7000
"""Pads a tcp message past the kernel's smallest buffers (4,608 bytes of send buffer
and 2,304 of receive buffer: 6,912 bytes): one such message fits (tcp queues a write
while its memory is not used up), a second does not."""


def _opts(transport: str, **values: object) -> SocketOptions:
    """Options with the kernel's smallest socket buffers on tcp."""
    if transport == "tcp":
        values.update(sndbuf=0, rcvbuf=0)
    return SocketOptions(**values)  # type: ignore[arg-type]


def _pad(transport: str) -> bytes:
    return PAD if transport == "tcp" else b""


def _path_capacity(transport: str, sndhwm: int, rcvhwm: int) -> int:
    """Messages a zero-time burst leaves on the path (both HWMs positive)."""
    if transport == "inproc":
        return sndhwm + rcvhwm
    past = rcvhwm + 1  # the receiver's pipe, and one message in the kernel's buffers
    lwm = (sndhwm + 1) // 2
    return past + sndhwm - past % lwm


def _endpoints(transport: str) -> tuple[str, str]:
    if transport == "inproc":
        return "inproc://hwm", "inproc://hwm"
    return "tcp://*:7100", "tcp://localhost:7100"


def _pub_sub_counts(
    transport: str, sndhwm: int, rcvhwm: int, count: int
) -> tuple[list[int], int | None, int]:
    sim = Simulation(latency=Constant(L))
    node = sim.node("n")
    bind, connect = _endpoints(transport)

    async def main() -> tuple[list[int], int | None, int]:
        pub = node.publisher(bind=bind, options=_opts(transport, sndhwm=sndhwm))
        sub = node.subscriber(connect=connect, options=_opts(transport, rcvhwm=rcvhwm))
        await asyncio.sleep(0.1)
        pad = _pad(transport)
        for i in range(count):
            await pub.send([b"t", i.to_bytes(4, "big") + pad])
        await asyncio.sleep(0.1)
        got = []
        while (msg := sub.try_recv()) is not None:
            got.append(int.from_bytes(msg[1][:4], "big"))
            await asyncio.sleep(0.01)  # let the queue refill from the publisher
        return got, pub.stats.dropped, pub.stats.sent

    return sim.run(main(), timeout=VIRTUAL_LIMIT)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_pub_drops_the_newest_beyond_the_path_capacity_and_counts(transport: str) -> None:
    got, dropped, sent = _pub_sub_counts(transport, 5, 4, 20)
    # tcp: 4 + 1 in the kernel, then the PUB sees 5 % 3 = 2 of its 5 slots still taken
    kept = {"inproc": 9, "tcp": 8}[transport]
    assert got == list(range(kept))
    assert dropped == 20 - kept
    assert sent == 20


@settings(max_examples=25, deadline=None)
@given(
    transport=st.sampled_from(TRANSPORTS),
    sndhwm=st.integers(1, 20),
    rcvhwm=st.integers(1, 20),
    count=st.integers(1, 60),
)
def test_pub_path_capacity_is_the_two_hwms_plus_the_kernels_buffers(
    transport: str, sndhwm: int, rcvhwm: int, count: int
) -> None:
    got, dropped, _ = _pub_sub_counts(transport, sndhwm, rcvhwm, count)
    kept = min(count, _path_capacity(transport, sndhwm, rcvhwm))
    assert got == list(range(kept))
    assert dropped == count - kept


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hwm_zero_is_unlimited(transport: str) -> None:
    got, dropped, _ = _pub_sub_counts(transport, 0, 0, 3000)
    assert got == list(range(3000))
    assert dropped == 0


def test_pub_never_blocks_and_keeps_sending_to_subscribers_with_room() -> None:
    sim = Simulation(latency=Constant(L))
    node = sim.node("n")

    async def main() -> tuple[int, int, int | None]:
        pub = node.publisher(bind="inproc://feed", options=SocketOptions(sndhwm=1))
        slow = node.subscriber(connect="inproc://feed", options=SocketOptions(rcvhwm=1))
        fast = node.subscriber(connect="inproc://feed", options=SocketOptions(rcvhwm=1))
        received_fast = 0
        for i in range(100):
            await pub.send([b"t", b"%d" % i])
            if fast.try_recv() is not None:
                received_fast += 1
        received_slow = 0
        while slow.try_recv() is not None:
            received_slow += 1
        return received_fast, received_slow, pub.stats.dropped

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == (100, 2, 98)


def _blocking_pair(
    net: Network, kind: str, transport: str, options: SocketOptions
) -> tuple[Sender, object]:
    bind, connect = _endpoints(transport)
    if transport == "tcp":
        options = options.replace(sndbuf=0, rcvbuf=0)
    if kind == "push":
        receiver = net.puller(bind=bind, options=options)
        return net.pusher(connect=connect, options=options), receiver
    if kind == "dealer":
        receiver = net.dealer(bind=bind, options=options)
        return net.dealer(connect=connect, options=options), receiver
    receiver = net.pair(bind=bind, options=options)
    return net.pair(connect=connect, options=options), receiver


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("kind", ["push", "dealer", "pair"])
def test_blocking_kinds_block_at_hwm_then_time_out_or_would_block(
    kind: str, transport: str
) -> None:
    sim = Simulation(latency=Constant(L))
    node = sim.node("n")
    options = SocketOptions(sndhwm=2, rcvhwm=3, sndtimeo=250)
    pad = _pad(transport)

    async def main() -> tuple[int, float]:
        sender, _receiver = _blocking_pair(node, kind, transport, options)
        await asyncio.sleep(0.1)
        accepted = 0
        while True:
            try:
                sender.try_send([b"%d" % accepted + pad])
            except WouldBlock:
                break
            accepted += 1
        start = sim.now
        with pytest.raises(Timeout, match="send timed out"):
            await sender.send([b"blocked"])
        return accepted, sim.now - start

    accepted, waited = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert accepted == _path_capacity(transport, 2, 3)  # inproc 5, tcp 6
    assert waited == pytest.approx(0.25)


@pytest.mark.parametrize("kind", ["push", "dealer", "pair"])
def test_a_blocked_send_resumes_when_the_receiver_reads(kind: str) -> None:
    sim = Simulation(latency=Constant(L))
    node = sim.node("n")
    options = SocketOptions(sndhwm=1, rcvhwm=1)

    async def main() -> tuple[float, list[list[bytes]]]:
        sender, receiver = _blocking_pair(node, kind, "tcp", options)
        await asyncio.sleep(0.1)
        for i in range(3):  # the two pipes and the kernel's (smallest) buffers
            await sender.send([b"%d" % i + PAD])

        async def read_later() -> list[list[bytes]]:
            await asyncio.sleep(5)
            return [await receiver.recv(timeout=1) for _ in range(4)]  # type: ignore[attr-defined]

        reader = asyncio.create_task(read_later())
        start = sim.now
        await sender.send([b"3" + PAD])
        unblocked_after = sim.now - start
        return unblocked_after, await reader

    unblocked_after, got = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert unblocked_after == pytest.approx(5, abs=0.01)
    assert got == [[b"%d" % i + PAD] for i in range(4)]


def test_push_with_no_peer_blocks_until_sndtimeo() -> None:
    sim = Simulation()
    node = sim.node("n")

    async def main() -> float:
        push = node.pusher(bind="tcp://*:7200", options=SocketOptions(sndtimeo=1500))
        with pytest.raises(WouldBlock):
            push.try_send([b"x"])
        with pytest.raises(Timeout):
            await push.send([b"x"])
        return sim.now

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == pytest.approx(1.5)


def test_req_blocks_at_hwm_then_times_out() -> None:
    sim = Simulation(latency=Constant(L))
    node = sim.node("n")
    options = _opts("tcp", sndhwm=1, rcvhwm=1, sndtimeo=300, req_relaxed=True)

    async def main() -> tuple[int, float]:
        node.worker(bind="tcp://*:7300", options=_opts("tcp", rcvhwm=1))
        req = node.requester(connect="tcp://n:7300", options=options)
        await asyncio.sleep(0.1)
        accepted = 0
        while True:
            try:
                req.try_send([b"q%d" % accepted + PAD])
            except WouldBlock:
                break
            accepted += 1
        start = sim.now
        with pytest.raises(Timeout):
            await req.send([b"blocked"])
        return accepted, sim.now - start

    accepted, waited = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert accepted == 3  # the two pipes and one request in the kernel's buffers
    assert waited == pytest.approx(0.3)


def test_req_with_immediate_and_no_connection_blocks_until_sndtimeo() -> None:
    sim = Simulation()
    node = sim.node("n")

    async def main() -> float:
        req = node.requester(
            connect="tcp://nobody:7301", options=SocketOptions(immediate=True, sndtimeo=200)
        )
        with pytest.raises(Timeout):
            await req.send([b"q"])
        return sim.now

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == pytest.approx(0.2)


def test_router_drops_at_hwm_and_counts() -> None:
    sim = Simulation(latency=Constant(L))
    node = sim.node("n")

    async def main() -> tuple[int | None, int]:
        router = node.router(bind="tcp://*:7400", options=_opts("tcp", sndhwm=2))
        dealer = node.dealer(
            connect="tcp://n:7400", options=_opts("tcp", routing_id=b"D", rcvhwm=2)
        )
        await asyncio.sleep(0.1)
        for i in range(10):
            await router.send([b"D", b"%d" % i + PAD])
        await asyncio.sleep(0.1)
        got = 0
        while dealer.try_recv() is not None:
            got += 1
            await asyncio.sleep(0.01)
        return router.stats.dropped, got

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == (5, 5)  # 2 + 2 + 1 in the kernel


def test_router_drops_unknown_ids_and_counts() -> None:
    sim = Simulation()
    node = sim.node("n")

    async def main() -> tuple[int | None, int]:
        router = node.router(bind="tcp://*:7401")
        await router.send([b"nobody", b"x"])
        router.try_send([b"nobody", b"y"])
        return router.stats.dropped, router.stats.sent

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == (2, 2)


def test_router_mandatory_raises_host_unreachable_for_unknown_ids() -> None:
    sim = Simulation()
    node = sim.node("n")

    async def main() -> int | None:
        router = node.router(bind="tcp://*:7402", options=SocketOptions(router_mandatory=True))
        with pytest.raises(HostUnreachableError, match="nobody"):
            await router.send([b"nobody", b"x"])
        with pytest.raises(HostUnreachableError):
            router.try_send([b"nobody", b"x"])
        return router.stats.dropped

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == 0


def test_router_mandatory_would_block_at_hwm() -> None:
    sim = Simulation(latency=Constant(L))
    node = sim.node("n")
    options = _opts("tcp", router_mandatory=True, sndhwm=2, sndtimeo=100)

    async def main() -> tuple[int, int | None]:
        router = node.router(bind="tcp://*:7403", options=options)
        node.dealer(connect="tcp://n:7403", options=_opts("tcp", routing_id=b"D", rcvhwm=2))
        await asyncio.sleep(0.1)
        accepted = 0
        while True:
            try:
                router.try_send([b"D", b"%d" % accepted + PAD])
            except WouldBlock:
                break
            accepted += 1
        with pytest.raises(Timeout):
            await router.send([b"D", b"blocked"])
        return accepted, router.stats.dropped

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == (5, 0)  # 2 + 2 + 1 in the kernel


def test_rep_reply_to_a_vanished_requester_is_dropped_and_counted() -> None:
    sim = Simulation(latency=Constant(L))
    server, client = sim.node("srv"), sim.node("cli")

    async def main() -> tuple[int | None, int]:
        rep = server.worker(bind="tcp://*:7500")
        mon = rep.monitor()
        req = client.requester(connect="tcp://srv:7500")
        await req.send([b"q"])
        assert await rep.recv(timeout=1) == [b"q"]
        sim.crash("cli")
        while (await mon.recv(timeout=1)).name != "DISCONNECTED":
            pass
        await rep.send([b"answer"])  # no error: the reply is discarded
        return rep.stats.dropped, rep.stats.sent

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == (1, 1)
