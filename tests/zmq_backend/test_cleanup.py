"""Networks clean up after themselves: no leaked descriptors or threads, closing is
idempotent and never hangs, and the package exports what it says.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import zmq

import transportkit.zmq_backend as zmq_backend
from transportkit import ClosedError, Network, SocketKind, SocketOptions
from transportkit.zmq_backend import ZmqMonitor, ZmqNetwork

Run = Callable[..., Any]


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _exercise(network: ZmqNetwork, ipc_path: Path) -> None:
    pull = network.puller(bind="tcp://127.0.0.1:*")
    assert pull.last_endpoint is not None
    push = network.pusher(connect=pull.last_endpoint)
    monitor = pull.monitor()
    assert isinstance(monitor, ZmqMonitor)
    pub = network.publisher(bind="inproc://leak-feed")
    network.subscriber(connect="inproc://leak-feed")
    pair = network.pair(bind=f"ipc://{ipc_path}")
    network.pair(connect=f"ipc://{ipc_path}")
    rep = network.blocking(SocketKind.REP, bind="inproc://leak-rr")
    req = network.blocking(SocketKind.REQ, connect="inproc://leak-rr", thread_safe=True)
    await push.send([b"x"])
    assert await pull.recv(timeout=5) == [b"x"]
    await pub.send([b"t"])
    await pair.send([b"p"])
    req.send([b"q"])
    assert rep.recv(timeout=5) == [b"q"]
    assert not monitor.closed
    # A receive left waiting is ended by the network's close.
    waiting = asyncio.create_task(pull.recv())
    await asyncio.sleep(0)
    network.close()
    assert monitor.closed
    with pytest.raises(ClosedError):
        await waiting


def test_no_descriptor_or_thread_leaks_over_200_networks(ipc_dir: Path) -> None:
    ipc_path = ipc_dir / "leak.ipc"

    def cycle() -> None:
        network = ZmqNetwork()
        try:
            asyncio.run(asyncio.wait_for(_exercise(network, ipc_path), 10))
        finally:
            network.close()

    cycle()  # warm up lazily created process-wide resources
    # Earlier tests may leave garbage holding descriptors (an event loop's self-pipe,
    # freed when collected): collect it first, or it is freed mid-count.
    gc.collect()
    fds, threads = _open_fds(), threading.active_count()
    started = time.monotonic()
    for _ in range(200):
        cycle()
    elapsed = time.monotonic() - started
    gc.collect()
    assert _open_fds() == fds
    assert threading.active_count() == threads
    assert elapsed < 20


def test_network_close_is_idempotent_and_closes_every_socket() -> None:
    network = ZmqNetwork(name="desk")
    sockets = [
        network.pusher(bind="inproc://a"),
        network.puller(connect="inproc://a"),
        network.router(),
    ]
    blocking = network.blocking(SocketKind.DEALER, options=SocketOptions(linger=1000))
    network.close()
    network.close()
    assert network.closed
    assert all(sock.closed for sock in sockets)
    assert blocking.closed
    assert "closed" in repr(network)


def test_network_close_does_not_hang_on_unsent_messages() -> None:
    network = ZmqNetwork()
    push = network.blocking(SocketKind.PUSH, connect="tcp://127.0.0.1:9")
    for _ in range(10):
        push.try_send([b"never delivered"])
    started = time.monotonic()
    network.close()
    assert time.monotonic() - started < 2


def test_raw_sockets_made_from_the_network_context_do_not_hang_close() -> None:
    network = ZmqNetwork()
    raw = network.context.socket(zmq.PUSH)
    raw.connect("tcp://127.0.0.1:9")
    raw.send(b"x")
    started = time.monotonic()
    network.close()
    assert time.monotonic() - started < 2
    assert raw.closed


def test_closed_sockets_are_forgotten_by_the_network(net: ZmqNetwork) -> None:
    for _ in range(50):
        net.pusher().close()
        net.blocking(SocketKind.PULL).close()
    assert "0 sockets" in repr(net)


def test_network_is_a_network_with_wall_clock_time(net: ZmqNetwork) -> None:
    assert isinstance(net, Network)
    assert abs(net.time_ns() - time.time_ns()) < 1_000_000_000


def test_async_context_manager_closes_the_network(run: Run) -> None:
    async def body() -> ZmqNetwork:
        async with ZmqNetwork() as network:
            network.pair()
        return network

    assert run(body()).closed


def test_all_lists_the_public_api() -> None:
    assert sorted(zmq_backend.__all__) == zmq_backend.__all__
    for name in zmq_backend.__all__:
        assert hasattr(zmq_backend, name), name
    public = {
        name
        for name in dir(zmq_backend)
        if not name.startswith("_") and isinstance(getattr(zmq_backend, name), type)
    }
    assert public <= set(zmq_backend.__all__)
