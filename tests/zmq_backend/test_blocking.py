"""Blocking sockets: round trips, timeouts, thread-safe sharing, and the
multi-threading strategies (section 7) on one shared network.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from transportkit import (
    ClosedError,
    SocketKind,
    SocketOptions,
    StateError,
    Timeout,
    UnsupportedError,
)
from transportkit.zmq_backend import BlockingSocket, ThreadSafeSocket, ZmqNetwork

EndpointFor = Callable[[str], str]
Run = Callable[..., Any]

# Every test here runs with the C accelerator (if built) and with pure pyzmq calls.
pytestmark = pytest.mark.usefixtures("message_impl")


def test_blocking_round_trip_over_each_transport(
    net: ZmqNetwork, transport: str, endpoint_for: EndpointFor
) -> None:
    server = net.blocking(SocketKind.REP, bind=endpoint_for(transport))
    assert server.last_endpoint is not None
    client = net.blocking(SocketKind.REQ, connect=server.last_endpoint)
    assert isinstance(client, BlockingSocket) and client.kind is SocketKind.REQ
    client.send([b"risk?", b"AAPL"])
    assert server.recv(timeout=5) == [b"risk?", b"AAPL"]
    server.send([b"ok"])
    assert client.recv(timeout=5) == [b"ok"]
    assert client.stats.sent == 1 and client.stats.received == 1
    assert client.stats.dropped is None


def test_blocking_recv_timeout(net: ZmqNetwork) -> None:
    pull = net.blocking(SocketKind.PULL, bind="inproc://b-timeout")
    started = time.monotonic()
    with pytest.raises(Timeout, match="blocking PULL socket"):
        pull.recv(timeout=0.05)
    assert 0.04 <= time.monotonic() - started < 2
    assert pull.try_recv() is None


def test_blocking_recv_uses_rcvtimeo_unless_told_otherwise(net: ZmqNetwork) -> None:
    pull = net.blocking(
        SocketKind.PULL, bind="inproc://b-rcvtimeo", options=SocketOptions(rcvtimeo=30)
    )
    with pytest.raises(Timeout):
        pull.recv()
    with pytest.raises(Timeout):
        pull.recv(timeout=0.03)  # the same as rcvtimeo: no poll needed
    push = net.blocking(SocketKind.PUSH, connect="inproc://b-rcvtimeo")

    def late() -> None:
        time.sleep(0.1)
        push.send([b"late"])

    sender = threading.Thread(target=late)
    sender.start()
    try:
        assert pull.recv(timeout=math.inf) == [b"late"]
    finally:
        sender.join()


def test_blocking_pub_sub_with_subscriptions(net: ZmqNetwork) -> None:
    pub = net.blocking(SocketKind.PUB, bind="inproc://b-feed")
    sub = net.blocking(SocketKind.SUB, connect="inproc://b-feed")
    sub.subscribe(b"AAPL")
    sub.subscribe(b"MSFT")
    sub.unsubscribe(b"MSFT")
    assert sub.subscriptions == (b"AAPL",)
    pub.send([b"MSFT", b"1"])
    pub.send([b"AAPL", b"2"])
    assert sub.recv(timeout=5) == [b"AAPL", b"2"]
    with pytest.raises(UnsupportedError, match="only SUB"):
        pub.subscribe(b"x")


def test_blocking_kind_that_cannot_send_or_recv(net: ZmqNetwork) -> None:
    pull = net.blocking(SocketKind.PULL)
    with pytest.raises(UnsupportedError):
        pull.send([b"x"])
    push = net.blocking(SocketKind.PUSH)
    with pytest.raises(UnsupportedError):
        push.try_recv()


def test_blocking_req_lockstep_state_error(net: ZmqNetwork) -> None:
    req = net.blocking(SocketKind.REQ, connect="inproc://nobody-yet")
    with pytest.raises(StateError):
        req.recv(timeout=0.01)


def test_blocking_socket_is_a_context_manager(net: ZmqNetwork) -> None:
    with net.blocking(SocketKind.PAIR, bind="inproc://b-ctx") as pair:
        assert not pair.closed
        assert "inproc://b-ctx" in repr(pair)
    assert pair.closed
    with pytest.raises(ClosedError):
        pair.send([b"x"])


def test_thread_safe_push_shared_by_eight_threads_delivers_every_message(
    net: ZmqNetwork,
) -> None:
    threads_n, per_thread = 8, 2000
    pull = net.blocking(SocketKind.PULL, bind="inproc://hammer")
    push = net.blocking(SocketKind.PUSH, connect="inproc://hammer", thread_safe=True)
    assert isinstance(push, ThreadSafeSocket)
    start = threading.Barrier(threads_n + 1)
    errors: list[BaseException] = []

    def hammer(thread_id: int) -> None:
        try:
            start.wait(timeout=5)
            tid = thread_id.to_bytes(1, "big")
            for seq in range(per_thread):
                push.send([tid, seq.to_bytes(4, "big"), tid * 16])
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(threads_n)]
    for worker in workers:
        worker.start()
    start.wait(timeout=5)
    received: Counter[int] = Counter()
    last_seq = dict.fromkeys(range(threads_n), -1)
    try:
        for _ in range(threads_n * per_thread):
            tid, seq_bytes, payload = pull.recv(timeout=10)
            thread_id, seq = tid[0], int.from_bytes(seq_bytes, "big")
            assert payload == tid * 16
            assert seq == last_seq[thread_id] + 1  # per-sender order holds
            last_seq[thread_id] = seq
            received[thread_id] += 1
    finally:
        for worker in workers:
            worker.join(timeout=10)
    assert not errors
    assert received == dict.fromkeys(range(threads_n), per_thread)
    assert push.stats.sent == threads_n * per_thread
    assert pull.try_recv() is None


def test_thread_safe_socket_recv_with_timeout_lets_senders_in(net: ZmqNetwork) -> None:
    pair_a = net.blocking(SocketKind.PAIR, bind="inproc://ts-pair", thread_safe=True)
    pair_b = net.blocking(SocketKind.PAIR, connect="inproc://ts-pair")
    done = threading.Event()

    def receiver() -> None:
        while not done.is_set():
            try:
                pair_a.recv(timeout=0.01)
            except Timeout:
                continue
            done.set()

    thread = threading.Thread(target=receiver)
    thread.start()
    try:
        pair_a.send([b"from main, while another thread receives"])
        assert pair_b.recv(timeout=5) == [b"from main, while another thread receives"]
        pair_b.send([b"stop"])
        assert done.wait(timeout=5)
    finally:
        done.set()
        thread.join(timeout=5)


def test_shared_context_publisher_and_subscriber_in_their_own_threads(
    net: ZmqNetwork, endpoint_for: EndpointFor
) -> None:
    """Seed strategy 1: one context, one socket per thread, over ipc."""
    endpoint = endpoint_for("ipc")
    bound = threading.Event()
    subscribed = threading.Event()
    got: list[list[bytes]] = []
    errors: list[BaseException] = []

    def publisher() -> None:
        try:
            with net.blocking(SocketKind.PUB, bind=endpoint) as pub:
                bound.set()
                deadline = time.monotonic() + 5
                while not subscribed.is_set() and time.monotonic() < deadline:
                    pub.send([b"tick", b"probe"])
                    time.sleep(0.005)
                for i in range(10):
                    pub.send([b"tick", str(i).encode()])
                time.sleep(0.05)
        except BaseException as exc:
            errors.append(exc)

    def subscriber() -> None:
        try:
            assert bound.wait(timeout=5)
            with net.blocking(SocketKind.SUB, connect=endpoint) as sub:
                sub.subscribe(b"tick")
                while len(got) < 10:
                    message = sub.recv(timeout=5)
                    subscribed.set()
                    if message[1] != b"probe":
                        got.append(message)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publisher), threading.Thread(target=subscriber)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors
    assert got == [[b"tick", str(i).encode()] for i in range(10)]


def test_inproc_between_threads_and_between_async_and_blocking(run: Run, net: ZmqNetwork) -> None:
    """Seed strategy 3: the main thread binds PUSH on inproc, a worker thread PULLs."""
    push = net.blocking(SocketKind.PUSH, bind="inproc://work")
    results: list[list[bytes]] = []

    def worker() -> None:
        with net.blocking(SocketKind.PULL, connect="inproc://work") as pull:
            while True:
                message = pull.recv(timeout=5)
                if message == [b"done"]:
                    return
                results.append(message)

    thread = threading.Thread(target=worker)
    thread.start()
    for i in range(100):
        push.send([b"job", str(i).encode()])
    push.send([b"done"])
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert results == [[b"job", str(i).encode()] for i in range(100)]

    # inproc also joins asyncio sockets and blocking sockets of the same network.
    async def body() -> None:
        pull = net.puller(bind="inproc://mixed")
        blocking_push = net.blocking(SocketKind.PUSH, connect="inproc://mixed")
        blocking_push.send([b"from blocking"])
        assert await pull.recv(timeout=5) == [b"from blocking"]

    run(body())
