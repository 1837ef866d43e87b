"""``maxmsgsize`` behaves the same on both backends, as libzmq 4.3 does.

Measured on libzmq 4.3.5: the limit applies to each frame (a frame of exactly the
limit passes, a multipart message of small frames passes whatever its total), over
ipc and tcp but not inproc. A frame over it is not an error for the sender: its send
succeeds. The receiver drops the connection (a ZMTP protocol error) and both monitors
report DISCONNECTED, nothing else. A connecting sender reconnects; a connecting
receiver does not, and the binding sender then has no peer. Each test runs one
program on each backend and compares the outcome with the same expectation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from transportkit import Monitor, SocketOptions, Timeout, WouldBlock
from transportkit.testing import Harness

LIMIT = 100
QUIET = 0.5  # seconds (virtual on the sim) in which nothing more may happen


async def _events_until(monitor: Monitor, last: str, timeout: float = 5.0) -> list[str]:
    """Monitor event names up to and including the first ``last``."""
    names: list[str] = []
    while not names or names[-1] != last:
        names.append((await monitor.recv(timeout=timeout)).name)
    return names


async def _quiet(monitor: Monitor) -> list[str]:
    names: list[str] = []
    try:
        while True:
            names.append((await monitor.recv(timeout=QUIET)).name)
    except Timeout:
        return names


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_a_frame_over_the_limit_drops_the_connection_and_a_connecting_sender_reconnects(
    tk_harness: Harness, transport: str
) -> None:
    async def program() -> dict[str, Any]:
        rx_net, tx_net = tk_harness.network("rx"), tk_harness.network("tx")
        pull = rx_net.puller(options=SocketOptions(maxmsgsize=LIMIT))
        monitor = pull.monitor()
        endpoint = pull.bind(tk_harness.bind_endpoint(transport))
        push = tx_net.pusher(connect=endpoint, options=SocketOptions(reconnect_ivl=50))
        events = await _events_until(monitor, "HANDSHAKE_SUCCEEDED")
        await push.send([b"a" * LIMIT])  # exactly the limit
        await push.send([b"b" * 60, b"c" * 60])  # 120 bytes, but each frame fits
        got = [await pull.recv(timeout=5), await pull.recv(timeout=5)]
        await push.send([b"x" * (LIMIT + 1)])  # the send succeeds...
        events += await _events_until(monitor, "DISCONNECTED")  # ...the connection goes
        events += await _events_until(monitor, "HANDSHAKE_SUCCEEDED")  # the sender is back
        await push.send([b"after"])
        got.append(await pull.recv(timeout=5))
        return {
            "got": [[len(f) for f in m] if m != [b"after"] else m for m in got],
            "events": events + await _quiet(monitor),
            "dropped": pull.stats.dropped,
            "sent": push.stats.sent,
        }

    outcome = tk_harness.run(program(), timeout=20)
    assert outcome["got"] == [[LIMIT], [60, 60], [b"after"]]
    assert outcome["events"] == [
        "LISTENING",
        "ACCEPTED",
        "HANDSHAKE_SUCCEEDED",
        "DISCONNECTED",
        "ACCEPTED",
        "HANDSHAKE_SUCCEEDED",
    ]
    assert outcome["sent"] == 4
    # Only the sim can count the lost message; libzmq reports nothing but the
    # monitor's DISCONNECTED.
    assert outcome["dropped"] == (1 if tk_harness.exact_drops else None)


def test_a_connecting_receiver_does_not_reconnect_after_a_frame_over_the_limit(
    tk_harness: Harness,
) -> None:
    async def program() -> dict[str, Any]:
        rx_net, tx_net = tk_harness.network("rx"), tk_harness.network("tx")
        push = tx_net.pusher(bind=tk_harness.bind_endpoint("tcp"))
        assert push.last_endpoint is not None
        pull = rx_net.puller(options=SocketOptions(maxmsgsize=LIMIT, reconnect_ivl=50))
        monitor = pull.monitor()
        pull.connect(push.last_endpoint)
        events = await _events_until(monitor, "HANDSHAKE_SUCCEEDED")
        await push.send([b"small"])
        got = [await pull.recv(timeout=5)]
        await push.send([b"x" * (LIMIT + 1)])
        events += await _events_until(monitor, "DISCONNECTED")
        events += await _quiet(monitor)  # no CONNECT_RETRIED, no CONNECTED
        try:
            push.try_send([b"nobody"])
            peerless = False
        except WouldBlock:
            peerless = True
        return {"got": got, "events": events, "peerless": peerless}

    outcome = tk_harness.run(program(), timeout=20)
    assert outcome == {
        "got": [[b"small"]],
        "events": ["CONNECT_DELAYED", "CONNECTED", "HANDSHAKE_SUCCEEDED", "DISCONNECTED"],
        "peerless": True,
    }


def test_inproc_ignores_the_limit(tk_harness: Harness) -> None:
    async def program() -> list[list[int]]:
        net = tk_harness.network()
        pull = net.puller(
            bind=tk_harness.bind_endpoint("inproc"), options=SocketOptions(maxmsgsize=8)
        )
        assert pull.last_endpoint is not None
        push = net.pusher(connect=pull.last_endpoint)
        await asyncio.sleep(tk_harness.settle)
        await push.send([b"x" * 1000])
        await push.send([b"y"])
        return [[len(f) for f in await pull.recv(timeout=5)] for _ in range(2)]

    assert tk_harness.run(program(), timeout=20) == [[1000], [1]]
