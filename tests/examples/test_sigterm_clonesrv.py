"""SIGTERM to the Clone server program: the snapshot in progress (to a client that reads
it slowly) is sent whole, a snapshot request after SIGTERM gets no answer, the process
exits 0."""

from __future__ import annotations

import asyncio

import pytest
from _sigterm_helpers import EXIT_BOUND, run_real, server, terminate

from transportkit import SocketOptions, Timeout
from transportkit.patterns.clone import KVMsg
from transportkit.patterns.clone._kvmsg import ICANHAZ, KTHXBAI
from transportkit.testing import free_tcp_endpoint
from transportkit.zmq_backend import ZmqNetwork, ZmqSocket

KEYS = 40
VALUE = b"v" * 900_000  # 36 MB in all: more than loopback's socket buffers hold
OPTIONS = SocketOptions(linger=0, rcvhwm=1)


async def _snapshot(sock: ZmqSocket, pace: float, timeout: float) -> list[bytes]:
    """Ask for a snapshot on ``sock`` and read it, one message every ``pace`` s."""
    await sock.send([ICANHAZ, b""])
    keys = []
    while True:
        try:
            msg = await sock.recv(timeout=timeout)
        except Timeout:
            return keys
        keys.append(msg[0])
        if msg[0] == KTHXBAI:
            return keys
        if pace:
            await asyncio.sleep(pace)


def _run(shutdown_timeout: str) -> tuple[list[bytes], list[bytes], int, list[str]]:
    snapshot, publisher, collector = (free_tcp_endpoint() for _ in range(3))
    with server(
        "clonesrv", "--snapshot", snapshot, "--publisher", publisher, "--collector",
        collector, "--count", "0", "--heartbeat", "0.2", "--snapshot-sndhwm", "1",
        "--shutdown-timeout", shutdown_timeout,
    ) as child:  # fmt: skip

        async def go() -> tuple[list[bytes], list[bytes]]:
            with ZmqNetwork(name="sigterm-clone") as net:
                with net.publisher(connect=collector, options=SocketOptions(linger=0)) as pub:
                    await asyncio.sleep(0.5)  # the collector's subscription arrives
                    for i in range(KEYS):
                        await pub.send(KVMsg(b"BIG.%02d" % i, 0, b"", {}, VALUE).encode())
                    for _ in range(50):  # until the server holds them all
                        with net.dealer(connect=snapshot, options=OPTIONS) as probe:
                            if len(await _snapshot(probe, 0.0, 5.0)) == KEYS + 1:
                                break
                        await asyncio.sleep(0.1)
                slow = net.dealer(connect=snapshot, options=OPTIONS)
                reading = asyncio.ensure_future(_snapshot(slow, 0.03, 1.5))
                await asyncio.sleep(0.3)  # the snapshot is in progress: we read slowly
                await asyncio.to_thread(terminate, child)
                late = net.dealer(connect=snapshot, options=OPTIONS)
                late_keys = await _snapshot(late, 0.0, 1.0)
                return await reading, late_keys

        keys, late_keys = run_real(go(), timeout=40.0)
        return keys, late_keys, child.wait(EXIT_BOUND), child.lines


def test_sigterm_finishes_the_snapshot_in_progress_and_exits_0() -> None:
    keys, late_keys, code, lines = _run("5")
    assert keys[-1] == KTHXBAI and len(keys) == KEYS + 1  # whole
    assert late_keys == []  # not answered
    assert code == 0
    assert "STOPPED clean" in lines


@pytest.mark.slow
def test_sigterm_with_no_time_to_drain_cuts_the_snapshot_and_still_exits_0() -> None:
    keys, late_keys, code, lines = _run("0")
    assert KTHXBAI not in keys  # so it was in progress when SIGTERM came
    assert late_keys == []
    assert code == 0
    assert "STOPPED dropped" in lines
