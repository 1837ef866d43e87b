"""Linger on close, node close, and monitor events."""

from __future__ import annotations

import asyncio

import pytest

from transportkit import ClosedError, Monitor, MonitorEvent, SocketOptions, Timeout
from transportkit.sim_backend import Constant, Simulation

from .conftest import VIRTUAL_LIMIT

L = 0.001


async def _drain(sock, timeout: float = 0.5) -> list[list[bytes]]:  # type: ignore[no-untyped-def]
    got = []
    while True:
        try:
            got.append(await sock.recv(timeout=timeout))
        except Timeout:
            return got


def _names(mon: Monitor) -> list[str]:
    names = []
    while (event := mon.try_recv()) is not None:
        names.append(event.name)
    return names


# -- linger --------------------------------------------------------------------------


def test_close_with_linger_zero_discards_queued_messages_and_counts_them() -> None:
    sim = Simulation(latency=Constant(L))
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[int | None, list[list[bytes]]]:
        push = a.pusher(connect="tcp://b:7800", options=SocketOptions(linger=0))
        for i in range(5):
            await push.send([b"%d" % i])
        push.close()
        pull = b.puller(bind="tcp://*:7800")
        return push.stats.dropped, await _drain(pull, timeout=1)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == (5, [])


def test_linger_delivers_queued_messages_to_a_peer_that_connects_during_linger() -> None:
    sim = Simulation(latency=Constant(L))
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[list[list[bytes]], int | None]:
        push = a.pusher(
            connect="tcp://b:7801", options=SocketOptions(linger=2000, reconnect_ivl=100)
        )
        for i in range(5):
            await push.send([b"%d" % i])
        push.close()
        await asyncio.sleep(0.5)
        pull = b.puller(bind="tcp://*:7801")
        return await _drain(pull, timeout=1), push.stats.dropped

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == ([[b"%d" % i] for i in range(5)], 0)


def test_inproc_linger_delivers_to_a_binder_that_appears_during_linger() -> None:
    sim = Simulation()
    node = sim.node("n")

    async def main() -> list[list[bytes]]:
        push = node.pusher(connect="inproc://late", options=SocketOptions(linger=1000))
        await push.send([b"x"])
        push.close()
        await asyncio.sleep(0.5)
        pull = node.puller(bind="inproc://late")
        return await _drain(pull, timeout=1)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == [[b"x"]]


def test_linger_expiry_discards_what_is_still_queued_and_counts_it() -> None:
    sim = Simulation(latency=Constant(L))
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[int | None, list[list[bytes]]]:
        push = a.pusher(connect="tcp://b:7802", options=SocketOptions(linger=300))
        for i in range(5):
            await push.send([b"%d" % i])
        push.close()
        await asyncio.sleep(0.5)
        pull = b.puller(bind="tcp://*:7802")
        return push.stats.dropped, await _drain(pull, timeout=1)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == (5, [])


def test_linger_lets_a_slow_receiver_drain_the_senders_queue() -> None:
    sim = Simulation(latency=Constant(L))
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[list[list[bytes]], int | None, bool]:
        pull = b.puller(bind="tcp://*:7803", options=SocketOptions(rcvhwm=1))
        push = a.pusher(connect="tcp://b:7803", options=SocketOptions(linger=5000))
        await asyncio.sleep(0.1)
        for i in range(5):
            await push.send([b"%d" % i])
        push.close()
        assert push.closed
        got = []
        for _ in range(5):
            await asyncio.sleep(0.5)
            got.append(await pull.recv(timeout=1))
        return got, push.stats.dropped, push.destroyed  # type: ignore[attr-defined]

    got, dropped, destroyed = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert got == [[b"%d" % i] for i in range(5)]
    assert dropped == 0
    assert destroyed


def test_using_a_closed_socket_raises_closed_error() -> None:
    sim = Simulation()
    node = sim.node("n")

    async def main() -> None:
        push = node.pusher(bind="tcp://*:7804", options=SocketOptions(linger=1000))
        push.close()
        push.close()  # idempotent
        with pytest.raises(ClosedError, match="closed"):
            await push.send([b"x"])
        with pytest.raises(ClosedError):
            push.connect("tcp://n:1")

    sim.run(main(), timeout=VIRTUAL_LIMIT)


def test_a_crash_kills_a_lingering_socket_and_its_queue() -> None:
    sim = Simulation(latency=Constant(L))
    a, b = sim.node("a"), sim.node("b")

    async def main() -> tuple[int | None, list[list[bytes]]]:
        push = a.pusher(connect="tcp://b:7805", options=SocketOptions(linger=-1))
        for i in range(3):
            await push.send([b"%d" % i])
        push.close()
        sim.crash("a")
        pull = b.puller(bind="tcp://*:7805")
        return push.stats.dropped, await _drain(pull, timeout=1)

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == (3, [])


def test_node_close_closes_all_its_sockets() -> None:
    sim = Simulation()
    node = sim.node("n")

    async def main() -> None:
        socks = [
            node.publisher(bind="tcp://*:7806"),
            node.subscriber(connect="tcp://n:7806"),
            node.puller(bind="inproc://x"),
            node.requester(connect="inproc://y"),
        ]
        waiting = asyncio.create_task(socks[2].recv())  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)
        node.close()
        assert all(s.closed for s in socks)
        with pytest.raises(ClosedError):
            await waiting
        with pytest.raises(ClosedError):
            node.pusher()

    sim.run(main(), timeout=VIRTUAL_LIMIT)


# -- monitors ------------------------------------------------------------------------


def test_monitor_events_of_bind_connect_accept_crash_and_retry() -> None:
    sim = Simulation(latency=Constant(0.01))
    server, client = sim.node("srv"), sim.node("cli")

    async def main() -> tuple[list[tuple[float, MonitorEvent]], list[tuple[float, MonitorEvent]]]:
        bound: list[tuple[float, MonitorEvent]] = []
        connecting: list[tuple[float, MonitorEvent]] = []

        async def record(mon: Monitor, into: list[tuple[float, MonitorEvent]]) -> None:
            async for event in mon:
                into.append((sim.now, event))

        pull = server.puller()
        asyncio.create_task(record(pull.monitor(), bound))  # noqa: RUF006
        push = client.pusher(options=SocketOptions(reconnect_ivl=100))
        asyncio.create_task(record(push.monitor(), connecting))  # noqa: RUF006
        await asyncio.sleep(0)
        pull.bind("tcp://*:7900")
        push.connect("tcp://srv:7900")
        await asyncio.sleep(1)
        sim.crash("srv")
        await asyncio.sleep(0.35)
        return bound, connecting

    bound, connecting = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert [(t, e.name, e.endpoint) for t, e in bound] == [
        (0.0, "LISTENING", "tcp://*:7900"),
        (pytest.approx(0.01), "ACCEPTED", "tcp://srv:7900"),
        (pytest.approx(0.01), "HANDSHAKE_SUCCEEDED", "tcp://srv:7900"),
    ]
    assert [(t, e.name) for t, e in connecting] == [
        (0.0, "CONNECT_DELAYED"),
        (pytest.approx(0.01), "CONNECTED"),
        (pytest.approx(0.01), "HANDSHAKE_SUCCEEDED"),
        (pytest.approx(1.01), "DISCONNECTED"),
        (pytest.approx(1.01), "CONNECT_RETRIED"),
        (pytest.approx(1.11), "CONNECT_RETRIED"),
        (pytest.approx(1.21), "CONNECT_RETRIED"),
        (pytest.approx(1.31), "CONNECT_RETRIED"),
    ]
    assert all(e.endpoint == "tcp://srv:7900" for _, e in connecting)


def test_monitor_recv_times_out_and_close_ends_iteration() -> None:
    sim = Simulation()
    node = sim.node("n")

    async def main() -> float:
        pull = node.puller()
        mon = pull.monitor()
        with pytest.raises(Timeout):
            await mon.recv(timeout=2)
        mon.close()
        with pytest.raises(ClosedError):
            await mon.recv()
        return sim.now

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == pytest.approx(2)
