"""Reconnect: retries every reconnect_ivl, doubling up to reconnect_ivl_max."""

from __future__ import annotations

import asyncio

import pytest

from transportkit import Monitor, MonitorEvent, SocketOptions
from transportkit.sim_backend import Constant, Simulation

from .conftest import VIRTUAL_LIMIT

ENDPOINT = "tcp://server:7001"
L = 0.001


def _retries(
    options: SocketOptions, *, bind_at: float | None, until: float
) -> list[tuple[float, MonitorEvent]]:
    """Connect a PUSH at t=0 to ENDPOINT; bind a PULL there at ``bind_at``.

    Returns every monitor event of the PUSH with its virtual time.
    """
    sim = Simulation(latency=Constant(L))
    client, server = sim.node("client"), sim.node("server")

    async def watch(events: list[tuple[float, MonitorEvent]], push_mon: Monitor) -> None:
        async for event in push_mon:
            events.append((sim.now, event))

    async def main() -> list[tuple[float, MonitorEvent]]:
        events: list[tuple[float, MonitorEvent]] = []
        push = client.pusher(options=options)
        task = asyncio.create_task(watch(events, push.monitor()))
        await asyncio.sleep(0)
        push.connect(ENDPOINT)
        if bind_at is not None:
            await asyncio.sleep(bind_at)
            server.puller(bind=ENDPOINT)
            await asyncio.sleep(until - bind_at)
        else:
            await asyncio.sleep(until)
        task.cancel()
        return events

    return sim.run(main(), timeout=VIRTUAL_LIMIT)


def test_connect_to_nothing_retries_every_reconnect_ivl() -> None:
    events = _retries(SocketOptions(reconnect_ivl=100), bind_at=None, until=1.0)
    retried = [(t, e.value) for t, e in events if e.name == "CONNECT_RETRIED"]
    assert events[0][1].name == "CONNECT_DELAYED"
    assert [v for _, v in retried] == [100] * 10
    assert [t for t, _ in retried] == pytest.approx([L + 0.1 * i for i in range(10)])


def test_retry_interval_doubles_up_to_reconnect_ivl_max() -> None:
    events = _retries(
        SocketOptions(reconnect_ivl=100, reconnect_ivl_max=800), bind_at=None, until=5.0
    )
    retried = [(t, e.value) for t, e in events if e.name == "CONNECT_RETRIED"]
    values = [v for _, v in retried]
    # attempts at L, L+0.1, L+0.3, L+0.7, L+1.5, ... L+4.7 < 5
    assert values == [100, 200, 400, 800, 800, 800, 800, 800, 800]
    expected_times = [L]
    for value in values[:-1]:
        expected_times.append(expected_times[-1] + value / 1000)
    assert [t for t, _ in retried] == pytest.approx(expected_times)


def test_connects_at_the_first_retry_after_the_binder_appears() -> None:
    events = _retries(
        SocketOptions(reconnect_ivl=100, reconnect_ivl_max=800), bind_at=0.35, until=2.0
    )
    names = [e.name for _, e in events]
    assert names == [
        "CONNECT_DELAYED",
        "CONNECT_RETRIED",
        "CONNECT_RETRIED",
        "CONNECT_RETRIED",
        "CONNECTED",
        "HANDSHAKE_SUCCEEDED",
    ]
    connected_at = next(t for t, e in events if e.name == "CONNECTED")
    # retries fire at L, L+0.1, L+0.3; the one at L+0.7 finds the binder.
    assert connected_at == pytest.approx(L + 0.7)


def test_backoff_resets_after_a_successful_connection() -> None:
    sim = Simulation(latency=Constant(L))
    client, server = sim.node("client"), sim.node("server")
    options = SocketOptions(reconnect_ivl=100, reconnect_ivl_max=1600)

    async def main() -> list[int]:
        push = client.pusher(options=options)
        mon = push.monitor()
        push.connect(ENDPOINT)
        await asyncio.sleep(0.5)  # retries 100, 200, 400; connects at L + 0.7
        pull = server.puller(bind=ENDPOINT)
        await asyncio.sleep(1.0)
        pull.close()
        await asyncio.sleep(0.5)
        values = []
        while (event := mon.try_recv()) is not None:
            if event.name == "CONNECT_RETRIED":
                values.append(event.value)
        return values

    values = sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert values[:3] == [100, 200, 400]
    after = values[3:]
    assert after[:3] == [100, 200, 400]


@pytest.mark.parametrize("ivl", [-1, 0])
def test_reconnect_ivl_minus_one_or_zero_never_retries(ivl: int) -> None:
    events = _retries(SocketOptions(reconnect_ivl=ivl), bind_at=0.5, until=2.0)
    assert [e.name for _, e in events] == ["CONNECT_DELAYED"]


def test_no_retry_after_a_dropped_connection_with_reconnect_ivl_minus_one() -> None:
    sim = Simulation(latency=Constant(L))
    client, server = sim.node("client"), sim.node("server")

    async def main() -> list[str]:
        push = client.pusher(options=SocketOptions(reconnect_ivl=-1))
        mon = push.monitor()
        server.puller(bind=ENDPOINT)
        push.connect(ENDPOINT)
        await asyncio.sleep(0.1)
        sim.drop_connection("client", "server")
        await asyncio.sleep(2)
        names = []
        while (event := mon.try_recv()) is not None:
            names.append(event.name)
        return names

    assert sim.run(main(), timeout=VIRTUAL_LIMIT) == [
        "CONNECT_DELAYED",
        "CONNECTED",
        "HANDSHAKE_SUCCEEDED",
        "DISCONNECTED",
    ]
