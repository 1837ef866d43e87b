"""Closing a network or a socket that another thread is using never aborts or hangs.

libzmq forbids closing a socket from one thread while another is inside a call on it
(it aborts the process: ``pfd.revents & POLLIN`` in ``signaler.cpp``). The network
shuts its context down instead, which wakes every blocked call with ETERM, and the
thread inside a call closes its own socket when the call returns. The stress runs go
through a child process (``close_in_use_child.py``) so that an abort fails one test
instead of killing pytest; they run on both paths: the C accelerator (when built)
and pure pyzmq calls (``TRANSPORTKIT_PURE_PYTHON=1``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from transportkit import ClosedError, OptionError, SocketKind, SocketOptions, StateError, Timeout
from transportkit.zmq_backend import ZmqNetwork, accelerated

CHILD = Path(__file__).with_name("close_in_use_child.py")
CHILD_TIMEOUT = 40.0  # a round takes milliseconds: only a hang comes near this

PATHS = [
    pytest.param(
        "c",
        id="c",
        marks=pytest.mark.skipif(not accelerated()[0], reason="C accelerator not built"),
    ),
    pytest.param("py", id="py"),
]


def _run_child(scenario: str, rounds: int, path: str) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop("TRANSPORTKIT_PURE_PYTHON", None)
    if path == "py":
        env["TRANSPORTKIT_PURE_PYTHON"] = "1"
    try:
        result = subprocess.run(
            [sys.executable, str(CHILD), scenario, str(rounds)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"child hung for {CHILD_TIMEOUT} s (stderr: {exc.stderr!r})")
    assert result.returncode == 0, (
        f"child exited with {result.returncode} (negative: killed by that signal)\n"
        f"stdout: {result.stdout[-2000:]}\nstderr: {result.stderr[-2000:]}"
    )
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("scenario", ["recv", "send"])
def test_network_close_under_a_call_blocked_without_timeout_100_times(
    scenario: str, path: str
) -> None:
    report = _run_child(scenario, 100, path)
    assert report["outcomes"] == {"ClosedError": 100}
    assert report["slowest_close"] < 2.0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("scenario", ["thread_safe", "spin", "asyncio", "recv+twice"])
def test_network_close_under_other_kinds_of_waits(scenario: str, path: str) -> None:
    """A ThreadSafeSocket, a busy-polling receive, an asyncio receive on a loop in
    another thread, and two threads closing at once."""
    report = _run_child(scenario, 20, path)
    assert report["outcomes"] == {"ClosedError": 20}
    assert report["slowest_close"] < 2.0


@pytest.mark.parametrize("path", PATHS)
def test_blocking_close_from_another_thread_leaves_the_call_to_its_thread(path: str) -> None:
    """A plain BlockingSocket closed by another thread while it waits is not closed
    under the waiting call (libzmq would abort): the call goes on and returns what
    arrives, the socket is released then, and every later call raises ClosedError."""
    report = _run_child("plain_close", 20, path)
    assert report["outcomes"] == {"returned, then ClosedError": 20}
    assert report["slowest_close"] < 0.5


@pytest.mark.parametrize("path", PATHS)
def test_network_on_a_caller_context_leaves_a_call_in_progress_to_its_thread(
    path: str,
) -> None:
    """The network does not own the context, so it cannot interrupt a call: it marks
    the socket closed, and the thread in the call closes it when the call returns (so
    that the caller's own ``term()`` does not hang)."""
    report = _run_child("caller_context", 20, path)
    assert set(report["outcomes"]) <= {"returned", "ClosedError"}, report
    assert report["slowest_close"] < 0.5


@pytest.fixture
def waiter() -> Iterator[Callable[[Callable[[], Any]], tuple[threading.Thread, list[Any]]]]:
    """Start a call in a daemon thread; returns the thread and a list with its outcome."""
    threads: list[threading.Thread] = []

    def start(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
        outcome: list[Any] = []

        def body() -> None:
            try:
                outcome.append(call())
            except BaseException as exc:  # checked by the test
                outcome.append(exc)

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # let it enter its wait
        return thread, outcome

    yield start
    for thread in threads:
        thread.join(timeout=5)


def _close_within(sock: Any, limit: float) -> float:
    """Close ``sock`` from a helper thread; the seconds it took, or inf if it hung."""
    closer = threading.Thread(target=sock.close, daemon=True)
    began = time.monotonic()
    closer.start()
    closer.join(limit)
    return time.monotonic() - began if not closer.is_alive() else float("inf")


@pytest.mark.usefixtures("message_impl")
def test_thread_safe_close_ends_a_recv_waiting_without_timeout(
    net: ZmqNetwork, waiter: Any
) -> None:
    pull = net.blocking(SocketKind.PULL, bind="inproc://ts-close", thread_safe=True)
    push = net.blocking(SocketKind.PUSH, connect="inproc://ts-close")
    thread, outcome = waiter(pull.recv)
    took = _close_within(pull, 2.0)
    if took == float("inf"):
        push.send([b"unblock"])  # the old close waited behind the recv: free it
    assert took < 1.0, "ThreadSafeSocket.close() waited behind a recv with no timeout"
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert isinstance(outcome[0], ClosedError)
    assert "blocking PULL socket (inproc://ts-close)" in str(outcome[0])
    assert pull.closed
    assert "1 sockets" in repr(net)  # only the PUSH is left: the PULL was released


@pytest.mark.usefixtures("message_impl")
def test_thread_safe_close_ends_a_send_waiting_at_the_hwm(net: ZmqNetwork, waiter: Any) -> None:
    pull = net.blocking(SocketKind.PULL, bind="inproc://ts-hwm", options=SocketOptions(rcvhwm=1))
    push = net.blocking(
        SocketKind.PUSH,
        connect="inproc://ts-hwm",
        options=SocketOptions(sndhwm=1),
        thread_safe=True,
    )
    stop = threading.Event()

    def fill() -> None:
        while not stop.is_set():
            push.send([b"order"])

    thread, outcome = waiter(fill)
    took = _close_within(push, 2.0)
    if took == float("inf"):  # the old close waited behind the send: free it
        stop.set()
        while thread.is_alive():
            pull.try_recv()
    assert took < 1.0, "ThreadSafeSocket.close() waited behind a send at the HWM"
    thread.join(timeout=2)
    assert isinstance(outcome[0], ClosedError)


@pytest.mark.usefixtures("message_impl")
def test_thread_safe_close_ends_a_long_timed_recv_and_a_spinning_recv(
    net: ZmqNetwork, waiter: Any
) -> None:
    timed = net.blocking(SocketKind.PULL, bind="inproc://ts-timed", thread_safe=True)
    spinning = net.blocking(SocketKind.PULL, bind="inproc://ts-spin", thread_safe=True, spin=True)
    waits = [waiter(lambda: timed.recv(timeout=30)), waiter(spinning.recv)]
    took = [_close_within(timed, 2.0), _close_within(spinning, 2.0)]
    if float("inf") in took:  # the old close waited behind the receives: free them
        for endpoint in ("inproc://ts-timed", "inproc://ts-spin"):
            net.blocking(SocketKind.PUSH, connect=endpoint).send([b"unblock"])
    assert max(took) < 1.0
    for thread, outcome in waits:
        thread.join(timeout=2)
        assert isinstance(outcome[0], ClosedError)


@pytest.mark.usefixtures("message_impl")
def test_thread_safe_waits_keep_their_results_and_errors(net: ZmqNetwork) -> None:
    """The wake-able wait changes nothing else: timeouts, state errors, zero-copy."""
    pull = net.blocking(SocketKind.PULL, bind="inproc://ts-same", thread_safe=True)
    push = net.blocking(SocketKind.PUSH, connect="inproc://ts-same", thread_safe=True)
    started = time.monotonic()
    with pytest.raises(Timeout, match="blocking PULL socket"):
        pull.recv(timeout=0.05)
    assert 0.04 <= time.monotonic() - started < 2
    push.send([b"a", b"b"])
    push.send([memoryview(b"x" * 100_000)], copy=False)
    assert pull.recv(timeout=5) == [b"a", b"b"]
    assert [bytes(b) for b in pull.recv_buffers(timeout=5)] == [b"x" * 100_000]
    assert pull.stats.received == 2 and push.stats.sent == 2
    req = net.blocking(SocketKind.REQ, connect="inproc://nobody", thread_safe=True)
    with pytest.raises(StateError):
        req.recv()  # at once, not after a wait
    alone = net.blocking(SocketKind.PUSH, options=SocketOptions(sndtimeo=50), thread_safe=True)
    started = time.monotonic()
    with pytest.raises(Timeout, match="send timed out"):
        alone.send([b"no peer"])
    assert 0.04 <= time.monotonic() - started < 2


def test_network_close_is_bounded_when_a_socket_stays_in_use() -> None:
    """An event loop that does not run cannot close its socket: close warns after its
    timeout and returns, and the context is terminated once that socket closes."""
    net = ZmqNetwork(name="stuck")
    pull = net.puller(bind="inproc://stuck")
    waiting, resume = threading.Event(), threading.Event()
    outcome: list[BaseException] = []

    def stuck_loop() -> None:
        async def main() -> None:
            recv = asyncio.ensure_future(pull.recv())
            await asyncio.sleep(0.01)  # the recv now waits on this loop
            waiting.set()
            resume.wait(5)  # a loop blocked in synchronous code: it runs nothing
            try:
                await recv
            except BaseException as exc:  # checked below
                outcome.append(exc)

        asyncio.run(main())

    thread = threading.Thread(target=stuck_loop, daemon=True)
    thread.start()
    try:
        assert waiting.wait(5)
        began = time.monotonic()
        with pytest.warns(RuntimeWarning, match=r"1 socket\(s\) are still in use.*PULL"):
            net.close(timeout=0.2)
        assert time.monotonic() - began < 1.0
        assert net.closed and not net.context.closed
    finally:
        resume.set()
        thread.join(5)
    assert isinstance(outcome[0], ClosedError)
    deadline = time.monotonic() + 5
    while not net.context.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert net.context.closed  # terminated in the background


def test_network_close_timeout_must_be_a_number_of_seconds() -> None:
    net = ZmqNetwork()
    for bad in (-1, float("nan"), "1", True):
        with pytest.raises(OptionError, match="timeout"):
            net.close(timeout=bad)  # type: ignore[arg-type]
    assert not net.closed
    net.close(timeout=0)
    assert net.closed and net.context.closed
