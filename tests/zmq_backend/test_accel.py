"""The blocking sockets' whole-message send/receive: the C accelerator and its pure
pyzmq fallback must behave the same, and the C one must never crash the process.

Every test runs against both implementations (the ``impl`` fixture); so do the
blocking-socket tests in ``test_blocking.py`` (``message_impl``).
"""

from __future__ import annotations

import errno
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from transportkit import ClosedError, FrameError, SocketKind, StateError, Timeout
from transportkit.zmq_backend import ZmqNetwork, _accel, accelerated
from transportkit.zmq_backend._errors import FRAME_ERRORS

from .conftest import Impl


@pytest.fixture
def pair() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx: zmq.Context[Any] = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    try:
        for sock in (a, b):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 5000)
            sock.setsockopt(zmq.SNDTIMEO, 5000)
        a.bind("inproc://accel-pair")
        b.connect("inproc://accel-pair")
        yield a, b
    finally:
        a.close()
        b.close()
        ctx.term()


def test_the_accelerator_is_built_where_a_compiler_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a C compiler at install the extension must have been built and passed its
    check: a silent fallback would lose the fast path unnoticed."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine: the fallback is expected")
    on, why = accelerated()
    if _accel.os.environ.get("TRANSPORTKIT_PURE_PYTHON"):
        assert not on and "TRANSPORTKIT_PURE_PYTHON" in why
    else:
        assert on, why


MESSAGES = [
    [b"one"],
    [b""],
    [b"", b""],
    [b"topic", b"x" * 100_000],
    [bytes([i]) * i for i in range(50)],
]


@pytest.mark.parametrize("message", MESSAGES, ids=["one", "empty", "two-empty", "big", "50"])
def test_messages_cross_both_ways_unchanged(impl: Impl, pair: Any, message: list[bytes]) -> None:
    recv_message, send_message = impl
    a, b = pair
    send_message(a, message)
    assert b.recv_multipart() == message
    a.send_multipart(message)
    got = recv_message(b)
    assert got == message and all(type(f) is bytes for f in got)


def test_any_contiguous_buffer_is_a_frame(impl: Impl, pair: Any) -> None:
    _, send_message = impl
    a, b = pair
    data = bytearray(b"abcdef")
    send_message(a, (data, memoryview(data)[2:4], memoryview(b"xyz")))
    assert b.recv_multipart() == [b"abcdef", b"cd", b"xyz"]


@pytest.mark.parametrize("bad", ["text", 7, None])
def test_a_bad_frame_anywhere_sends_nothing(impl: Impl, pair: Any, bad: object) -> None:
    """A bad frame after good ones must not leave half a message in the socket (which
    the next send would silently complete)."""
    _, send_message = impl
    a, b = pair
    with pytest.raises(TypeError):
        send_message(a, [b"good", b"also good", bad])
    send_message(a, [b"next"])
    assert b.recv_multipart() == [b"next"]


def test_a_non_contiguous_buffer_is_refused(impl: Impl, pair: Any) -> None:
    _, send_message = impl
    a, _ = pair
    strided = memoryview(bytearray(b"abcdef"))[::2]
    with pytest.raises(FRAME_ERRORS):
        send_message(a, [b"first", strided])


def test_an_empty_message_is_refused(impl: Impl, pair: Any) -> None:
    _, send_message = impl
    a, _ = pair
    with pytest.raises(FRAME_ERRORS):
        send_message(a, [])


def test_nothing_waiting_and_noblock_raises_again(impl: Impl, pair: Any) -> None:
    recv_message, _ = impl
    _, b = pair
    with pytest.raises(zmq.Again):
        recv_message(b, zmq.NOBLOCK)


def test_rcvtimeo_raises_again_after_the_timeout(impl: Impl, pair: Any) -> None:
    recv_message, _ = impl
    _, b = pair
    b.setsockopt(zmq.RCVTIMEO, 100)
    started = time.monotonic()
    with pytest.raises(zmq.Again):
        recv_message(b)
    assert 0.08 <= time.monotonic() - started < 3


def test_a_closed_socket_is_an_error_not_a_crash(impl: Impl) -> None:
    recv_message, send_message = impl
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PAIR)
    sock.close()
    with pytest.raises(zmq.ZMQError) as raised:
        recv_message(sock, zmq.NOBLOCK)
    assert raised.value.errno == errno.ENOTSOCK
    with pytest.raises(zmq.ZMQError):
        send_message(sock, [b"x"], zmq.NOBLOCK)
    ctx.term()


def test_a_destroyed_context_is_an_error_not_a_crash(impl: Impl) -> None:
    """Context.destroy closes sockets behind our back; the handle is read per call."""
    recv_message, send_message = impl
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    ctx.destroy(linger=0)
    with pytest.raises(zmq.ZMQError):
        recv_message(sock, zmq.NOBLOCK)
    with pytest.raises(zmq.ZMQError):
        send_message(sock, [b"x"])


def test_a_blocked_receive_lets_other_threads_run(impl: Impl, pair: Any) -> None:
    recv_message, _ = impl
    a, b = pair

    def later() -> None:
        time.sleep(0.05)  # only runs if the receive released the GIL
        a.send_multipart([b"woke", b"up"])

    sender = threading.Thread(target=later)
    sender.start()
    try:
        assert recv_message(b) == [b"woke", b"up"]
    finally:
        sender.join(5)


def test_a_signal_interrupts_a_blocked_receive(impl: Impl, pair: Any) -> None:
    """A receive with no timeout must not swallow signals (Ctrl-C must work)."""
    recv_message, _ = impl
    _, b = pair
    b.setsockopt(zmq.RCVTIMEO, -1)

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    started = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            recv_message(b)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 3


def test_a_signal_handler_that_returns_lets_the_receive_go_on(impl: Impl, pair: Any) -> None:
    recv_message, _ = impl
    a, b = pair
    seen: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: seen.append(signum))
    sender = threading.Timer(0.3, lambda: a.send_multipart([b"after", b"signal"]))
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    sender.start()
    try:
        assert recv_message(b) == [b"after", b"signal"]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        sender.join(5)
    assert seen == [signal.SIGALRM]


def test_blocking_socket_errors_are_transportkit_errors(message_impl: Impl) -> None:
    with ZmqNetwork() as net:
        req = net.blocking(SocketKind.REQ, connect="inproc://accel-nobody")
        with pytest.raises(StateError):
            req.recv(timeout=1)
        with pytest.raises(FrameError, match="frame 1"):
            req.send([b"ok", "not bytes"])  # type: ignore[list-item]
        req.close()
        with pytest.raises(ClosedError):
            req.send([b"x"])
        with pytest.raises(ClosedError):
            req.recv()


def test_a_spinning_receive_does_not_starve_a_peer_thread(message_impl: Impl) -> None:
    """Busy polling must release the GIL on every attempt, as pyzmq does: a spinner
    holding it would let an echo thread in this process run only once per switch
    interval (made 50 ms here, so that 50 round trips would take over 2 s)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.05)
    stop = threading.Event()
    with ZmqNetwork() as net:
        echo = net.blocking(SocketKind.REP, bind="inproc://accel-spin")
        spinner = net.blocking(SocketKind.REQ, connect="inproc://accel-spin", spin=True)

        def serve() -> None:
            while not stop.is_set():
                try:
                    echo.send(echo.recv(timeout=0.05))
                except Timeout:
                    continue

        server = threading.Thread(target=serve)
        server.start()
        try:
            started = time.monotonic()
            for i in range(50):
                spinner.send([b"%d" % i])
                assert spinner.recv(timeout=5) == [b"%d" % i]
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            server.join(5)
            sys.setswitchinterval(previous)
    assert elapsed < 1.0, f"50 spinning round trips took {elapsed:.2f} s: GIL held while spinning?"


def _waits() -> list[Any]:
    params = [pytest.param(_accel.py_wait, id="py")]
    if accelerated()[0]:
        params.append(pytest.param(_accel._MODULE.wait, id="c"))
    return params


@pytest.mark.parametrize("wait", _waits())
def test_wait_says_when_a_socket_is_ready_and_takes_nothing(wait: Any, pair: Any) -> None:
    a, b = pair
    assert wait(b, zmq.POLLIN, 0) is False
    started = time.monotonic()
    assert wait(b, zmq.POLLIN, 50) is False
    assert 0.04 <= time.monotonic() - started < 3
    assert wait(a, zmq.POLLOUT, 0) is True
    a.send_multipart([b"x", b"y"])
    assert wait(b, zmq.POLLIN, 2000) is True
    assert wait(b, zmq.POLLIN | zmq.POLLOUT, -1) is True
    assert b.recv_multipart(zmq.NOBLOCK) == [b"x", b"y"]  # still there


@pytest.mark.parametrize("wait", _waits())
def test_wait_wakes_when_a_message_arrives(wait: Any, pair: Any) -> None:
    a, b = pair
    sender = threading.Timer(0.1, lambda: a.send(b"late"))
    sender.start()
    try:
        started = time.monotonic()
        assert wait(b, zmq.POLLIN, -1) is True
        assert time.monotonic() - started < 3
    finally:
        sender.join(5)


@pytest.mark.parametrize("wait", _waits())
def test_wait_on_a_closed_socket_is_an_error_not_a_crash(wait: Any) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.close()
    with pytest.raises(zmq.ZMQError) as raised:
        wait(sock, zmq.POLLIN, 10)
    assert raised.value.errno == errno.ENOTSOCK
    ctx.term()


@pytest.mark.parametrize("wait", _waits())
def test_a_signal_interrupts_a_wait(wait: Any, pair: Any) -> None:
    _, b = pair

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, 0.1)
    started = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            wait(b, zmq.POLLIN, -1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - started < 3


def test_a_receive_of_many_frames_keeps_them_in_order(impl: Impl, pair: Any) -> None:
    """More frames than the accelerator keeps on its stack, large and small."""
    recv_message, send_message = impl
    a, b = pair
    message = [bytes([i % 256]) * (i * 997 % 70_000) for i in range(40)]
    send_message(a, message)
    assert recv_message(b) == message


def test_the_handle_is_found_on_an_object_whose_lookup_is_its_own(pair: Any) -> None:
    """The C calls read `underlying` by the generic lookup (pyzmq's property) and fall
    back to the full one: an object that only has it through __getattr__ still works."""
    if not accelerated():
        pytest.skip("the C accelerator is not in use")

    class Wrapper:
        def __init__(self, sock: zmq.Socket[bytes]) -> None:
            self._sock = sock

        def __getattr__(self, name: str) -> Any:
            return getattr(self._sock, name)

    a, b = pair
    _accel.send_message(Wrapper(a), [b"via", b"wrapper"])
    assert _accel.recv_message(Wrapper(b)) == [b"via", b"wrapper"]
