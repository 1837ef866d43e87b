"""Timeouts, cancellation and monitors of the asyncio sockets."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from transportkit import ClosedError, Monitor, MonitorEvent, SocketOptions, Timeout
from transportkit.zmq_backend import ZmqMonitor, ZmqNetwork

# Every test here runs with the C accelerator (if built) and with pure pyzmq calls.
pytestmark = pytest.mark.usefixtures("message_impl")

Run = Callable[..., Any]


def test_recv_timeout_none_uses_rcvtimeo(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        pull = net.puller(bind="inproc://rcvtimeo", options=SocketOptions(rcvtimeo=50))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Timeout, match="PULL socket"):
            await pull.recv()
        assert 0.04 <= loop.time() - started < 2

    run(body())


def test_recv_explicit_timeout_overrides_rcvtimeo(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        pull = net.puller(bind="inproc://explicit", options=SocketOptions(rcvtimeo=5000))
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Timeout):
            await pull.recv(timeout=0.05)
        assert loop.time() - started < 2
        with pytest.raises(Timeout):
            await pull.recv(timeout=0)

    run(body())


def test_recv_inf_waits_past_rcvtimeo(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        pull = net.puller(bind="inproc://forever", options=SocketOptions(rcvtimeo=20))
        push = net.pusher(connect="inproc://forever")
        waiting = asyncio.create_task(pull.recv(timeout=math.inf))
        await asyncio.sleep(0.15)
        assert not waiting.done()
        await push.send([b"late"])
        assert await waiting == [b"late"]

    run(body())


def test_cancelled_recv_loses_no_message(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        pull = net.puller(bind="inproc://cancel")
        push = net.pusher(connect="inproc://cancel")
        for i in range(20):
            waiting = asyncio.create_task(pull.recv())
            await asyncio.sleep(0)
            await push.send([str(i).encode()])
            # Cancel at once: the message arrived but the task may not have run yet.
            waiting.cancel()
            try:
                got = await waiting
            except asyncio.CancelledError:
                got = await pull.recv(timeout=5)
            assert got == [str(i).encode()]
        assert pull.try_recv() is None

    run(body())


def test_wait_for_timeout_on_recv_loses_no_message(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        pull = net.puller(bind="inproc://waitfor")
        push = net.pusher(connect="inproc://waitfor")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pull.recv(), 0.02)
        await push.send([b"kept"])
        assert await pull.recv(timeout=5) == [b"kept"]

    run(body())


def test_send_waits_at_the_hwm_until_the_peer_drains(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        options = SocketOptions(sndhwm=1, rcvhwm=1)
        pull = net.puller(bind="inproc://hwm", options=options)
        push = net.pusher(connect="inproc://hwm", options=options)
        sent = 0
        while True:
            try:
                push.try_send([b"x"])
            except Exception:
                break
            sent += 1
        blocked = asyncio.create_task(push.send([b"last"]))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        for _ in range(sent):
            await pull.recv(timeout=5)
        await asyncio.wait_for(blocked, 5)
        assert await pull.recv(timeout=5) == [b"last"]

    run(body())


def test_unsubscribe_and_counted_subscriptions(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        pub = net.publisher(bind="inproc://topics")
        sub = net.subscriber(connect="inproc://topics", topics=(b"A", b"A", b"B"))
        assert sub.subscriptions == (b"A", b"A", b"B")
        sub.unsubscribe(b"A")
        sub.unsubscribe(b"never")  # ignored, like libzmq
        assert len(sub.subscriptions) == 2
        assert sub.subscriptions == (b"A", b"B")
        await pub.send([b"A1"])
        assert await sub.recv(timeout=5) == [b"A1"]
        sub.unsubscribe(b"A")
        await asyncio.sleep(0.01)
        await pub.send([b"A2"])
        await pub.send([b"B1"])
        assert await sub.recv(timeout=5) == [b"B1"]

    run(body())


def _names(events: list[MonitorEvent]) -> set[str]:
    return {event.name for event in events}


async def _collect(monitor: Monitor, wanted: set[str]) -> list[MonitorEvent]:
    events: list[MonitorEvent] = []
    while not wanted <= _names(events):
        events.append(await monitor.recv(timeout=5))
    return events


def test_monitor_reports_listening_accepted_connected_handshake(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        server = net.router()
        server_events = server.monitor()
        endpoint = server.bind("tcp://127.0.0.1:*")
        client = net.dealer()
        client_events = client.monitor()
        client.connect(endpoint)
        seen_server = await _collect(server_events, {"LISTENING", "ACCEPTED"})
        seen_client = await _collect(client_events, {"CONNECTED", "HANDSHAKE_SUCCEEDED"})
        listening = next(e for e in seen_server if e.name == "LISTENING")
        assert listening.endpoint == endpoint
        assert all(e.endpoint == endpoint for e in seen_client)

        client.close()
        assert isinstance(client_events, ZmqMonitor) and client_events.closed
        assert "DISCONNECTED" in _names(await _collect(server_events, {"DISCONNECTED"}))

    run(body())


def test_monitor_iteration_ends_when_its_socket_closes(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        sock = net.pair()
        monitor = sock.monitor()
        sock.bind("inproc://mon-iter")

        async def drain() -> list[MonitorEvent]:
            return [event async for event in monitor]

        task = asyncio.create_task(drain())
        await asyncio.sleep(0.02)
        sock.close()
        assert isinstance(await task, list)
        with pytest.raises(ClosedError):
            monitor.try_recv()

    run(body())


def test_a_second_monitor_replaces_the_first(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        sock = net.pair()
        first = sock.monitor()
        second = sock.monitor()
        assert isinstance(first, ZmqMonitor) and isinstance(second, ZmqMonitor)
        assert first.closed and not second.closed
        sock.bind("tcp://127.0.0.1:*")
        assert (await second.recv(timeout=5)).name == "LISTENING"
        second.close()
        second.close()
        with pytest.raises(ClosedError):
            await second.recv(timeout=1)

    run(body())


def test_timed_waits_on_one_socket_each_end_at_their_own_deadline(
    run: Run, net: ZmqNetwork
) -> None:
    """One timer serves every timed wait of a socket: a later, longer wait must not
    delay an earlier, shorter one, nor be ended by it."""

    async def body() -> None:
        dealer = net.dealer(bind="inproc://two-deadlines")
        loop = asyncio.get_running_loop()
        started = loop.time()
        ended: dict[str, float] = {}

        async def wait(name: str, timeout: float) -> None:
            with pytest.raises(Timeout):
                await dealer.recv(timeout=timeout)
            ended[name] = loop.time() - started

        long_wait = asyncio.create_task(wait("long", 0.4))
        await asyncio.sleep(0.01)
        short_wait = asyncio.create_task(wait("short", 0.05))
        await asyncio.gather(long_wait, short_wait)
        assert 0.05 <= ended["short"] < 0.3
        assert 0.4 <= ended["long"] < 2

    run(body())


def test_a_timed_wait_still_gets_its_message(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        pull = net.puller(bind="inproc://timed-ok", options=SocketOptions(rcvtimeo=5000))
        push = net.pusher(connect="inproc://timed-ok")
        for i in range(200):  # many timed waits; each must see its message, not a timeout
            waiting = asyncio.create_task(pull.recv())
            await asyncio.sleep(0)
            await push.send([b"%d" % i])
            assert await waiting == [b"%d" % i]

    run(body())


def test_cancelling_a_timed_recv_cancels_the_task_not_a_timeout(run: Run, net: ZmqNetwork) -> None:
    async def body() -> None:
        pull = net.puller(bind="inproc://timed-cancel", options=SocketOptions(rcvtimeo=5000))
        waiting = asyncio.create_task(pull.recv())
        await asyncio.sleep(0.02)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        with pytest.raises(Timeout):  # the socket's timer still ends later waits
            await pull.recv(timeout=0.05)

    run(body())


def test_timed_receives_do_not_arm_a_timer_each(run: Run, net: ZmqNetwork) -> None:
    """The reason for the shared timer: 500 timed round trips leave at most a couple of
    timers scheduled on the loop (asyncio.wait_for would schedule and cancel 500)."""

    async def body() -> None:
        options = SocketOptions(rcvtimeo=30_000, sndtimeo=30_000)
        rep = net.worker(bind="inproc://timers", options=options)
        req = net.requester(connect="inproc://timers", options=options)
        loop: Any = asyncio.get_running_loop()

        async def echo() -> None:
            for _ in range(500):
                await rep.send(await rep.recv())

        server = asyncio.create_task(echo())
        before = len(loop._scheduled)
        for i in range(500):
            await req.send([b"%d" % i])
            assert await req.recv() == [b"%d" % i]
        await server
        assert len(loop._scheduled) - before <= 2

    run(body())


def test_a_socket_waits_with_a_deadline_on_a_second_event_loop(net: ZmqNetwork) -> None:
    """The socket's timer belongs to a loop; a wait on a new loop must get its own."""
    pull = net.puller(bind="inproc://two-loops", options=SocketOptions(rcvtimeo=60_000))

    async def timed_out(timeout: float) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(Timeout):
            await pull.recv(timeout=timeout)
        return loop.time() - started

    assert asyncio.run(asyncio.wait_for(timed_out(0.05), 5)) < 2
    assert asyncio.run(asyncio.wait_for(timed_out(0.05), 5)) < 2
