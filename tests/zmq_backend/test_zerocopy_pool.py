"""BufferPool: a buffer is handed out again only once libzmq has released it.

Real sockets, LINGER=0, every wait bounded. The "held" cases use inproc with a 1 MB
frame: the message waits in the pipe (the receiver does not read), so libzmq holds the
buffer for as long as the test wants, and no copy threshold hides it.
"""

from __future__ import annotations

import gc
import os
import pickle
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import pytest

from transportkit import (
    ClosedError,
    SocketKind,
    SocketOptions,
    StateError,
    Timeout,
    UnsupportedError,
)
from transportkit.sim_backend import Simulation
from transportkit.zmq_backend import BlockingSocket, BufferPool, ZmqNetwork

MB = 1 << 20
OPTS = SocketOptions(linger=0, rcvtimeo=2000, sndtimeo=2000)


@pytest.fixture
def pair(
    net: ZmqNetwork, endpoint_for: Callable[[str], str]
) -> Iterator[tuple[BlockingSocket, BlockingSocket]]:
    push = net.blocking(SocketKind.PUSH, options=OPTS)
    pull = net.blocking(SocketKind.PULL, options=OPTS)
    try:
        endpoint = push.bind(endpoint_for("inproc"))
        pull.connect(endpoint)
        yield push, pull
    finally:
        push.close()
        pull.close()


def _fill(pool: BufferPool, byte: bytes, timeout: float = 1.0) -> object:
    buf = pool.acquire(timeout)
    buf.view[:] = byte * pool.size
    return buf


@pytest.mark.parametrize("transport", ["inproc", "ipc", "tcp"])
@pytest.mark.parametrize("size", [100, MB])
def test_received_bytes_are_the_buffers(
    net: ZmqNetwork, endpoint_for: Callable[[str], str], transport: str, size: int
) -> None:
    with (
        net.blocking(SocketKind.PUSH, options=OPTS) as push,
        net.blocking(SocketKind.PULL, options=OPTS) as pull,
    ):
        pull.connect(push.bind(endpoint_for(transport)))
        pool = BufferPool(2, size)
        for i in range(4):
            buf = pool.acquire(2.0)
            payload = os.urandom(size)
            buf.view[:] = payload
            pool.send(push, buf, prefix=[b"topic", str(i).encode()])
            assert pull.recv() == [b"topic", str(i).encode(), payload]
        pool.close(2.0)


def test_a_buffer_is_not_reacquired_while_libzmq_holds_it(
    pair: tuple[BlockingSocket, BlockingSocket],
) -> None:
    push, pull = pair
    pool = BufferPool(1, MB)
    buf = pool.acquire(1.0)
    buf.view[:] = b"A" * MB
    tracker = pool.send(push, buf)
    # Queued in the inproc pipe, unread: libzmq references the buffer.
    assert not tracker.done
    assert pool.in_flight == 1 and pool.free == 0
    with pytest.raises(Timeout, match="1 of 1 held by libzmq"):
        pool.acquire(0.2)
    assert not tracker.done  # still held: the timeout was not a lucky race
    [frame] = pull.recv_buffers(timeout=2.0)  # a view of libzmq's message: still held
    with pytest.raises(Timeout):
        pool.acquire(0.1)
    assert bytes(frame) == b"A" * MB
    del frame
    again = pool.acquire(2.0)  # released by libzmq once the view is gone
    assert tracker.done and again.index == 0
    again.release()
    pool.close(1.0)


def test_a_copied_small_frame_frees_its_buffer_at_once(
    pair: tuple[BlockingSocket, BlockingSocket],
) -> None:
    push, pull = pair
    pool = BufferPool(1, 1024)  # below pyzmq's 64 KB copy threshold: copied at the send
    buf = pool.acquire(1.0)
    buf.view[:] = b"s" * 1024
    assert pool.send(push, buf).done
    nxt = pool.acquire(0)  # nobody read the message, yet the buffer is free
    nxt.view[:] = b"t" * 1024  # and overwriting it does not touch the queued copy
    assert pull.recv() == [b"s" * 1024]
    nxt.release()


def test_a_zero_copy_threshold_holds_even_small_frames(
    pair: tuple[BlockingSocket, BlockingSocket],
) -> None:
    push, pull = pair
    push.zmq_socket.copy_threshold = 0  # pyzmq's knob: never copy
    pool = BufferPool(1, 1024)
    buf = pool.acquire(1.0)
    buf.view[:] = b"z" * 1024
    tracker = pool.send(push, buf)
    with pytest.raises(Timeout):
        pool.acquire(0.1)
    assert pull.recv() == [b"z" * 1024]
    pool.acquire(2.0).release()
    assert tracker.done


def test_acquire_times_out_when_the_caller_holds_every_buffer() -> None:
    pool = BufferPool(2, 64)
    held = [pool.acquire(0), pool.acquire(0)]
    with pytest.raises(Timeout, match="0 of 2 held by libzmq, 2 by the caller"):
        pool.acquire(0.05)
    with pytest.raises(Timeout):
        pool.acquire(0)
    held[0].release()
    assert pool.acquire(0).index == held[0].index
    with pytest.raises(ValueError, match="timeout"):
        pool.acquire(-1)


def test_give_back_twice_and_use_after_give_back_are_errors(
    pair: tuple[BlockingSocket, BlockingSocket],
) -> None:
    push, pull = pair
    pool = BufferPool(2, MB)
    buf = pool.acquire(1.0)
    view = buf.view
    buf.release()
    with pytest.raises(StateError, match="given back already"):
        buf.release()
    with pytest.raises(StateError, match="given back"):
        buf.view  # noqa: B018
    with pytest.raises(ValueError, match="released"):
        view[0] = 1  # the view handed out was revoked
    with pytest.raises(StateError, match="given back"):
        pool.send(push, buf)
    sent = pool.acquire(1.0)
    pool.send(push, sent)
    with pytest.raises(StateError, match="given back"):
        pool.send(push, sent)  # sending twice
    with pytest.raises(StateError, match="another pool"):
        pool.send(push, BufferPool(1, 8).acquire(0))
    assert len(pull.recv()[0]) == MB


def test_an_exported_view_blocks_give_back(pair: tuple[BlockingSocket, BlockingSocket]) -> None:
    push, _ = pair
    pool = BufferPool(1, MB)
    buf = pool.acquire(0)
    # An export of the view itself (numpy arrays and zmq.Frame hold one too); slices
    # and memoryview(view) are new views, which no pool can see.
    exported = pickle.PickleBuffer(buf.view)
    with pytest.raises(StateError, match="still exported"):
        pool.send(push, buf)
    assert buf.held  # not sent, still the caller's
    del exported
    buf.release()
    assert pool.free == 1


def test_a_failed_send_keeps_the_buffer_until_its_frame_is_gone(
    net: ZmqNetwork, endpoint_for: Callable[[str], str]
) -> None:
    with net.blocking(SocketKind.PUSH, options=SocketOptions(linger=0, sndtimeo=50)) as push:
        push.bind(endpoint_for("inproc"))  # no peer: the send times out
        pool = BufferPool(1, MB)
        buf = pool.acquire(0)
        with pytest.raises(Timeout):
            pool.send(push, buf)
        gc.collect()
        pool.acquire(2.0).release()  # libzmq never took it: free once the frame went
        assert not buf.held


def test_close_waits_for_buffers_in_flight(pair: tuple[BlockingSocket, BlockingSocket]) -> None:
    push, pull = pair
    pool = BufferPool(1, MB)
    pool.send(push, pool.acquire(0))
    with pytest.raises(Timeout, match="still held by libzmq"):
        pool.close(0.1)
    assert pool.closed
    with pytest.raises(Exception, match="closed"):
        pool.acquire(0)
    assert len(pull.recv()[0]) == MB
    pool.close(2.0)


def test_thread_safe_sockets_send_tracked(
    net: ZmqNetwork, endpoint_for: Callable[[str], str]
) -> None:
    with (
        net.blocking(SocketKind.PUSH, options=OPTS, thread_safe=True) as push,
        net.blocking(SocketKind.PULL, options=OPTS) as pull,
    ):
        pull.connect(push.bind(endpoint_for("inproc")))
        pool = BufferPool(1, MB)
        buf = pool.acquire(0)
        buf.view[:4] = b"safe"
        tracker = pool.send(push, buf, 4)  # 4 bytes: copied
        assert tracker.done and pull.recv() == [b"safe"]


def test_the_sim_and_asyncio_sockets_refuse_loudly() -> None:
    pool = BufferPool(1, 16)
    seen: list[BaseException] = []

    async def body(node: object) -> None:
        with node.pusher(bind="inproc://zc") as push:  # type: ignore[attr-defined]
            buf = pool.acquire(0)
            try:
                pool.send(push, buf)
            except UnsupportedError as exc:
                seen.append(exc)
            assert buf.held  # refused before anything was given back
            buf.release()

    sim = Simulation(seed=1)
    sim.run(body(sim.node("a")))
    assert len(seen) == 1 and "zmq backend blocking socket" in str(seen[0])
    with pytest.raises(UnsupportedError):
        pool.send(object(), pool.acquire(0))


def test_naive_reuse_corrupts_what_the_peer_receives(
    pair: tuple[BlockingSocket, BlockingSocket],
) -> None:
    """The hazard the pool prevents, shown on purpose with raw pyzmq (a zero-copy
    publisher reusing one buffer): sent without a copy, the buffer is overwritten by
    the next message before the peer read the first.
    """
    push, pull = pair
    buffer = bytearray(b"A" * MB)
    push.zmq_socket.send(buffer, copy=False)  # libzmq now points into `buffer`
    buffer[:] = b"B" * MB  # "reuse buffer" for the next message
    received = pull.recv(timeout=2.0)[0]
    assert received == b"B" * MB  # the first message arrived with the second's bytes

    # The same two messages through the pool: the second cannot take the first's
    # buffer while libzmq holds it, so the first arrives intact.
    pool = BufferPool(1, MB)
    first = pool.acquire(0)
    first.view[:] = b"A" * MB
    pool.send(push, first)
    with pytest.raises(Timeout):
        pool.acquire(0.1)
    assert pull.recv(timeout=2.0) == [b"A" * MB]
    second = pool.acquire(2.0)
    second.view[:] = b"B" * MB
    pool.send(push, second)
    assert pull.recv(timeout=2.0) == [b"B" * MB]
    pool.close(2.0)


def test_pool_arguments_are_checked(pair: tuple[BlockingSocket, BlockingSocket]) -> None:
    for count, size in ((0, 1), (1, 0), (4097, 1), (True, 1)):
        with pytest.raises(ValueError):
            BufferPool(count, size)
    pool = BufferPool(1, 8)
    buf = pool.acquire(0)
    with pytest.raises(ValueError, match="length"):
        pool.send(pair[0], buf, 9)
    assert buf.held  # refused before it was given back


def test_a_zero_copy_send_keeps_the_object_until_libzmq_releases_it(
    pair: tuple[BlockingSocket, BlockingSocket],
) -> None:
    """The contract the pool relies on, through the blocking socket's own send path
    (pure pyzmq or the accelerator): the very object sent with ``copy=False`` stays
    referenced until libzmq's free callback ran, and no longer. A send path that kept
    only a view derived from it would break the pool; this test would say so.
    """
    push, pull = pair
    view = memoryview(bytearray(MB))[:]
    ref = weakref.ref(view)
    push.send([view], copy=False)
    del view
    gc.collect()
    assert ref() is not None  # queued, unread: pyzmq holds it for libzmq
    assert len(pull.recv()[0]) == MB  # received by copy: libzmq lets go
    hold_ends = time.monotonic() + 2.0
    while ref() is not None and time.monotonic() < hold_ends:
        time.sleep(0.001)  # pyzmq's collector thread drops it
    assert ref() is None


def test_over_tcp_buffers_stay_held_while_the_peer_is_full(
    net: ZmqNetwork, endpoint_for: Callable[[str], str]
) -> None:
    """Over tcp the peer's libzmq reads ahead of the application, up to its HWM; past
    that the kernel's buffers fill and the sender's libzmq keeps the frames. Two
    buffers for up to 16 messages of 4 MB: the pool must make the sender wait rather
    than overwrite a message still on its way (each arrives intact).
    """
    tight = SocketOptions(linger=0, sndhwm=1, rcvhwm=1, rcvtimeo=2000, sndtimeo=100)
    size = 4 * MB
    with (
        net.blocking(SocketKind.PUSH, options=tight) as push,
        net.blocking(SocketKind.PULL, options=tight) as pull,
    ):
        pull.connect(push.bind(endpoint_for("tcp")))
        pool = BufferPool(2, size)
        sent: list[int] = []
        stopped_by: type[BaseException] | None = None
        for i in range(16):
            try:
                buf = pool.acquire(0.3)
            except Timeout as exc:
                stopped_by = type(exc)
                break  # both buffers are held by libzmq somewhere on the way
            buf.view[:] = bytes([i]) * size
            try:
                pool.send(push, buf)
            except Timeout as exc:  # at the HWM: this one was not sent
                stopped_by = type(exc)
                break
            sent.append(i)
        assert stopped_by is Timeout  # the peer's HWM and the kernel stopped the sender
        assert len(sent) >= 2
        for i in sent:
            [frame] = pull.recv()
            assert frame == bytes([i]) * size  # intact: no buffer was handed out early
        pool.close(2.0)


def test_threads_share_a_pool_and_every_message_arrives_intact(
    net: ZmqNetwork, endpoint_for: Callable[[str], str]
) -> None:
    """Four threads, two buffers, one thread-safe socket: acquires wait for releases,
    and no buffer is written while a message in it is queued.
    """
    senders, each, size = 4, 15, 128 * 1024
    with (
        net.blocking(SocketKind.PUSH, options=OPTS, thread_safe=True) as push,
        net.blocking(SocketKind.PULL, options=OPTS) as pull,
    ):
        pull.connect(push.bind(endpoint_for("inproc")))
        pool = BufferPool(2, size)
        errors: list[BaseException] = []

        def send_all(who: int) -> None:
            try:
                for seq in range(each):
                    buf = pool.acquire(5.0)
                    buf.view[:] = bytes([who * 16 + seq % 16]) * size
                    pool.send(push, buf, prefix=[bytes([who, seq])])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=send_all, args=(w,), daemon=True) for w in range(4)]
        for thread in threads:
            thread.start()
        got: dict[int, list[int]] = {w: [] for w in range(senders)}
        for _ in range(senders * each):
            [head, body] = pull.recv_buffers(timeout=5.0)
            who, seq = bytes(head)
            assert bytes(body) == bytes([who * 16 + seq % 16]) * size, (who, seq)
            got[who].append(seq)
            del body  # gives the buffer back to libzmq, and so to the pool
        for thread in threads:
            thread.join(5.0)
        assert not errors and not any(t.is_alive() for t in threads)
        assert got == {w: list(range(each)) for w in range(senders)}
        pool.close(2.0)


def test_acquire_waits_for_another_threads_give_back_and_close_wakes_it() -> None:
    pool = BufferPool(1, 64)
    held = pool.acquire(0)
    timer = threading.Timer(0.05, held.release)
    timer.start()
    try:
        again = pool.acquire(2.0)  # nothing in flight: woken by the give-back
    finally:
        timer.cancel()
    assert again.index == held.index
    closer = threading.Timer(0.05, pool.close)
    closer.start()
    try:
        with pytest.raises(ClosedError):
            pool.acquire(2.0)  # woken by the close, not by its timeout
    finally:
        closer.cancel()
