"""Signal-handler scenarios for the zmq backend, run in a child process by
``test_signals.py`` (each may crash the interpreter on broken code).

Usage: ``python signal_scenarios.py SCENARIO:RUNS ...``; prints one JSON object on
stdout: for each scenario, the count of each outcome. ``TRANSPORTKIT_PURE_PYTHON=1``
selects the pure pyzmq path, as for any other process.

The scenarios:

- ``recv``: the main thread is blocked in ``a.recv()`` (PULL, no timeout) when a
  signal arrives; its handler closes ``a``, binds a new PULL ``b`` and sends
  ``b"meant for b"`` to it. ``a.recv()`` must raise ClosedError and ``b`` must keep
  its message.
- ``send``: the same for ``a.send()`` blocked at the high-water mark; the handler
  closes ``a`` and connects a new PUSH ``b`` to another PULL ``d``. ``a.send()`` must
  raise ClosedError and ``d`` must not receive ``a``'s message.
- ``recv-timed``: as ``recv``, with ``a.recv(timeout=30)`` (a wait on a poll).
- ``recv-buffers``: as ``recv``, with the zero-copy ``a.recv_buffers()``.
- ``async-behind-back``: an asyncio PULL's pyzmq socket is closed behind
  transportkit's back and a new PULL takes its place: ``try_recv()`` must raise
  ClosedError, not return the new socket's message.
- ``send-interrupted``: a 3-frame ``send()`` waiting at the high-water mark is
  interrupted by a handler that raises: nothing of it may be sent, and the next
  message must arrive whole.
- ``send-storm`` / ``recv-storm``: 3-frame messages sent (received) by the main
  thread for ``STORM_SECONDS`` under a storm of signals whose handler raises; every
  message the peer thread receives (the main thread receives) must be whole. With
  ``SCENARIO_DEBUG=1`` the broken messages are printed on stderr.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

import zmq

from transportkit import ClosedError, SocketKind, SocketOptions, Timeout, WouldBlock
from transportkit.zmq_backend import BlockingSocket, ZmqNetwork

MAIN = threading.main_thread()
STORM_SECONDS = float(os.environ.get("STORM_SECONDS", "1.0"))
_names = itertools.count()


def _endpoint(prefix: str) -> str:
    return f"inproc://{prefix}-{next(_names)}"


class Interrupted(Exception):
    """Raised by the storm's signal handler."""


def _sleeping(tid: int) -> bool:
    try:
        with open(f"/proc/self/task/{tid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "S"
    except OSError:  # no procfs: rely on the delay alone
        return True


def _signal_when_blocked(delay: float = 0.02) -> threading.Thread:
    """Send SIGUSR1 to the main thread once it sleeps (blocked in the call under test)."""
    tid = MAIN.native_id
    assert tid is not None

    def send() -> None:
        time.sleep(delay)
        deadline = time.monotonic() + 2
        while not _sleeping(tid) and time.monotonic() < deadline:
            time.sleep(0.001)
        signal.pthread_kill(MAIN.ident or 0, signal.SIGUSR1)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


def _with_handler(handler: Callable[[], None], call: Callable[[], object]) -> str:
    """Run ``call`` while a SIGUSR1 from a helper thread runs ``handler``."""

    def on_signal(signum: int, frame: object) -> None:
        handler()

    previous = signal.signal(signal.SIGUSR1, on_signal)
    helper = _signal_when_blocked()
    try:
        try:
            got = call()
        except ClosedError:
            return "closed"
        except Interrupted:
            return "interrupted"
        except Exception as exc:  # any other outcome is reported, not hidden
            return f"raised {type(exc).__name__}: {exc}"
        return f"returned {got!r}"
    finally:
        helper.join(5)
        signal.signal(signal.SIGUSR1, previous)


def _recv_case(net: ZmqNetwork, n: int, how: str) -> list[str]:
    a = net.blocking(SocketKind.PULL, bind=_endpoint("a"))
    made: list[BlockingSocket] = []

    def handler() -> None:
        a.close()
        time.sleep(0.005)  # let libzmq's reaper free a's memory
        endpoint = _endpoint("b")
        b = net.blocking(SocketKind.PULL, bind=endpoint)
        made.append(b)
        push = net.blocking(SocketKind.PUSH, connect=endpoint)
        made.append(push)
        push.send([b"meant for b"])

    try:
        calls: dict[str, Callable[[], object]] = {
            "plain": a.recv,
            "timed": lambda: a.recv(timeout=30),
            "buffers": lambda: [bytes(view) for view in a.recv_buffers()],
        }
        outcome = _with_handler(handler, calls[how])
        kept = "no b"
        if made:
            try:
                kept = "b kept" if made[0].recv(timeout=2) == [b"meant for b"] else "b got other"
            except Timeout:
                kept = "b lost its message"
        return [outcome, kept]
    finally:
        a.close()
        for sock in made:
            sock.close()


def _fill(push: BlockingSocket) -> None:
    """Send until ``push`` would block, and still would after the queues settle."""
    filler = [b"f" * 16384]
    deadline = time.monotonic() + 10
    refusals = 0
    while refusals < 3 and time.monotonic() < deadline:
        try:
            push.try_send(filler)
            refusals = 0
        except WouldBlock:
            refusals += 1
            time.sleep(0.02)


def _send_case(net: ZmqNetwork, n: int) -> list[str]:
    # If a.send() did not block after all (the queues were not quite full: a slow
    # run), the run proves nothing either way: try again.
    for _ in range(5):
        outcome = _send_once(net)
        if outcome != ["returned None", "d got nothing"]:
            return outcome
    return ["did not block", "inconclusive"]


def _send_once(net: ZmqNetwork) -> list[str]:
    # tcp, so that libzmq's I/O thread (not a socket no one reads) ends a's pipe and
    # its memory is freed at once; small kernel buffers, so that a fills up fast.
    hwm = SocketOptions(sndhwm=1, rcvhwm=1)
    c = net.blocking(SocketKind.PULL, options=hwm)
    c.zmq_socket.setsockopt(zmq.RCVBUF, 4096)
    c.bind("tcp://127.0.0.1:*")
    d = net.blocking(SocketKind.PULL, bind="tcp://127.0.0.1:*")
    a = net.blocking(SocketKind.PUSH, options=hwm)
    a.zmq_socket.setsockopt(zmq.SNDBUF, 4096)
    a.connect(c.last_endpoint or "")
    made: list[BlockingSocket] = []
    try:
        _fill(a)

        def handler() -> None:
            a.close()
            time.sleep(0.005)
            b = net.blocking(SocketKind.PUSH, connect=d.last_endpoint or "")
            made.append(b)

        outcome = _with_handler(handler, lambda: a.send([b"from a"]))
        try:
            leaked = f"d got {d.recv(timeout=0.1)!r}"
        except Timeout:
            leaked = "d got nothing"
        return [outcome, leaked]
    finally:
        for sock in (a, c, d, *made):
            sock.close()


def _async_case(net: ZmqNetwork, n: int) -> list[str]:
    async def main() -> str:
        a = net.puller(bind=_endpoint("aa"))
        b: BlockingSocket | None = None
        push: BlockingSocket | None = None
        try:
            a.zmq_socket.close()  # behind transportkit's back
            time.sleep(0.005)
            endpoint = _endpoint("ab")
            b = net.blocking(SocketKind.PULL, bind=endpoint)
            push = net.blocking(SocketKind.PUSH, connect=endpoint)
            push.send([b"meant for b"])
            time.sleep(0.005)
            try:
                return f"returned {a.try_recv()!r}"
            except ClosedError:
                return "closed"
        finally:
            a.close()
            for sock in (b, push):
                if sock is not None:
                    sock.close()

    return [asyncio.run(main())]


def _send_interrupted(net: ZmqNetwork, n: int) -> list[str]:
    endpoint = _endpoint("si")
    hwm = SocketOptions(sndhwm=1, rcvhwm=1)
    pull = net.blocking(SocketKind.PULL, bind=endpoint, options=hwm)
    push = net.blocking(SocketKind.PUSH, connect=endpoint, options=hwm)
    try:
        filled = 0
        while True:
            try:
                push.try_send([b"filler"])
                filled += 1
            except WouldBlock:
                break

        def handler() -> None:
            raise Interrupted

        outcome = _with_handler(handler, lambda: push.send([b"x-a", b"x-b", b"x-c"]))
        got = [pull.recv(timeout=2) for _ in range(filled)]
        push.send([b"y-a", b"y-b", b"y-c"], copy=n % 2 == 1)  # both send paths
        got.append(pull.recv(timeout=2))
        rest = pull.try_recv()
        whole = got == [[b"filler"]] * filled + [[b"y-a", b"y-b", b"y-c"]] and rest is None
        return [outcome, "next whole" if whole else f"got {got[filled:]!r} then {rest!r}"]
    finally:
        push.close()
        pull.close()


def _storm(seconds: float, body: Callable[[], None]) -> int:
    """Run ``body`` repeatedly for ``seconds`` under SIGALRM every 50 us; count raises.

    The handler raises only while armed, and disarms itself: so the exception lands
    somewhere in (or just around) ``body``, inside the ``try``, and never in this
    loop's own bookkeeping.
    """
    raised = 0
    armed = [False]

    def on_signal(signum: int, frame: object) -> None:
        if armed[0]:
            armed[0] = False
            raise Interrupted

    previous = signal.signal(signal.SIGALRM, on_signal)
    signal.setitimer(signal.ITIMER_REAL, 0.00005, 0.00005)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                armed[0] = True
                body()
                armed[0] = False
            except Interrupted:
                raised += 1
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return raised


def _whole(message: list[bytes]) -> bool:
    if len(message) != 3:
        return False
    ids = {frame.split(b"-")[0] for frame in message}
    return len(ids) == 1 and [frame.split(b"-")[-1] for frame in message] == [b"a", b"b", b"c"]


def _send_storm(net: ZmqNetwork, n: int) -> list[str]:
    endpoint = _endpoint("ss")
    pull = net.blocking(SocketKind.PULL, bind=endpoint)
    push = net.blocking(SocketKind.PUSH, connect=endpoint)
    got: list[list[bytes]] = []

    def receive() -> None:
        while True:
            message = pull.recv(timeout=5)
            if message == [b"end"]:
                return
            got.append(message)

    receiver = threading.Thread(target=receive)
    receiver.start()
    counter = iter(range(10**9))

    def body() -> None:
        i = next(counter)
        push.send([b"%d-a" % i, b"%d-b" % i, b"%d-c" % i])

    try:
        raised = _storm(STORM_SECONDS, body)
        push.send([b"end"])
    finally:
        receiver.join(10)
        push.close()
        pull.close()
    broken = sum(not _whole(m) for m in got)
    if os.environ.get("SCENARIO_DEBUG"):
        glued = sum(len({f.split(b"-")[0] for f in m}) > 1 for m in got)
        print(broken, glued, [m for m in got if not _whole(m)][:5], len(got), file=sys.stderr)
    return [f"{'broken' if broken else 'whole'}", f"interrupted: {raised > 0}"]


def _recv_storm(net: ZmqNetwork, n: int) -> list[str]:
    endpoint = _endpoint("rs")
    pull = net.blocking(SocketKind.PULL, bind=endpoint)
    push = net.blocking(SocketKind.PUSH, connect=endpoint)
    stop = threading.Event()

    def send() -> None:
        i = 0
        while not stop.is_set():
            try:
                push.send([b"%d-a" % i, b"%d-b" % i, b"%d-c" % i])
            except Timeout:
                continue
            i += 1

    sender = threading.Thread(target=send)
    sender.start()
    got: list[list[bytes]] = []

    def body() -> None:
        got.append(pull.recv(timeout=5))

    try:
        raised = _storm(STORM_SECONDS, body)
    finally:
        stop.set()
        while sender.is_alive():
            pull.try_recv()  # unblock a sender at the HWM
            sender.join(0.01)
        push.close()
        pull.close()
    broken = sum(not _whole(m) for m in got)
    if os.environ.get("SCENARIO_DEBUG"):
        print([m for m in got if not _whole(m)][:5], len(got), file=sys.stderr)
    return [f"{'broken' if broken else 'whole'}", f"interrupted: {raised > 0}"]


SCENARIOS: dict[str, Callable[[ZmqNetwork, int], list[str]]] = {
    "recv": lambda net, n: _recv_case(net, n, "plain"),
    "recv-timed": lambda net, n: _recv_case(net, n, "timed"),
    "recv-buffers": lambda net, n: _recv_case(net, n, "buffers"),
    "send": _send_case,
    "async-behind-back": _async_case,
    "send-interrupted": _send_interrupted,
    "send-storm": _send_storm,
    "recv-storm": _recv_storm,
}


def main(argv: list[str]) -> None:
    results: dict[str, dict[str, int]] = {}
    with ZmqNetwork() as net:
        for arg in argv[1:]:
            scenario, runs = arg.split(":")
            outcomes: Counter[str] = Counter()
            for n in range(int(runs)):
                outcomes[" / ".join(SCENARIOS[scenario](net, n))] += 1
            results[scenario] = dict(outcomes)
    print(json.dumps(results))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: nothing left to flush


if __name__ == "__main__":
    main(sys.argv)
