"""Child process of ``test_close_in_use.py``: close networks under sockets in use.

Run as ``python close_in_use_child.py SCENARIO ROUNDS``. Each round makes a network,
starts a thread whose call blocks on one of its sockets with no timeout, closes the
network from the main thread, and records how the blocked call ended. It prints one
JSON object, ``{"outcomes": {outcome: count}, "slowest_close": seconds}``, and exits
0. If libzmq aborts the process (the bug under test), the parent sees the signal in
the exit status instead of pytest dying with it.

The close happens after a delay that varies from round to round (0 to 3 ms), so that
some rounds close before the thread has entered its call and others while it waits
inside libzmq.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from transportkit import ClosedError, SocketKind, SocketOptions
from transportkit.zmq_backend import ZmqNetwork

DELAYS = (0.0, 0.0002, 0.001, 0.003)
JOIN_TIMEOUT = 5.0
ENDPOINT = "inproc://close-in-use"


def _outcome(call: Callable[[], Any], name: str) -> str:
    try:
        call()
    except ClosedError as exc:
        return "ClosedError" if name in str(exc) else f"ClosedError without {name!r}: {exc}"
    except BaseException as exc:  # what the user would see instead
        return f"{type(exc).__name__}: {exc}"
    return "returned"


def _blocked_recv(net: ZmqNetwork) -> tuple[Callable[[], Any], str]:
    pull = net.blocking(SocketKind.PULL, bind=ENDPOINT)
    return pull.recv, "blocking PULL socket (inproc://close-in-use)"


def _blocked_send(net: ZmqNetwork) -> tuple[Callable[[], Any], str]:
    net.blocking(SocketKind.PULL, bind=ENDPOINT, options=SocketOptions(rcvhwm=1))
    push = net.blocking(SocketKind.PUSH, connect=ENDPOINT, options=SocketOptions(sndhwm=1))

    def fill() -> None:
        while True:  # blocks once the pipe holds its HWM
            push.send([b"order"])

    return fill, "blocking PUSH socket (inproc://close-in-use)"


def _blocked_spin(net: ZmqNetwork) -> tuple[Callable[[], Any], str]:
    pull = net.blocking(SocketKind.PULL, bind=ENDPOINT, spin=True)
    return pull.recv, "blocking PULL socket (inproc://close-in-use)"


def _blocked_thread_safe(net: ZmqNetwork) -> tuple[Callable[[], Any], str]:
    pull = net.blocking(SocketKind.PULL, bind=ENDPOINT, thread_safe=True)
    return pull.recv, "blocking PULL socket (inproc://close-in-use)"


def _blocked_asyncio(net: ZmqNetwork) -> tuple[Callable[[], Any], str]:
    pull = net.puller(bind=ENDPOINT)
    monitor = pull.monitor()  # closed with its socket, by the loop's thread

    async def wait() -> None:
        watching = asyncio.ensure_future(monitor.recv())
        try:
            await pull.recv()
        finally:
            watching.cancel()

    return lambda: asyncio.run(wait()), "PULL socket (inproc://close-in-use)"


SCENARIOS: dict[str, Callable[[ZmqNetwork], tuple[Callable[[], Any], str]]] = {
    "recv": _blocked_recv,
    "send": _blocked_send,
    "spin": _blocked_spin,
    "thread_safe": _blocked_thread_safe,
    "asyncio": _blocked_asyncio,
}


def _round(scenario: str, delay: float, twice: bool) -> tuple[str, float]:
    net = ZmqNetwork()
    call, name = SCENARIOS[scenario](net)
    outcome: list[str] = []
    started = threading.Event()

    def user() -> None:
        started.set()
        outcome.append(_outcome(call, name))

    thread = threading.Thread(target=user, daemon=True)
    thread.start()
    started.wait(JOIN_TIMEOUT)
    time.sleep(delay)
    began = time.monotonic()
    if twice:  # a second thread closes at the same time
        other = threading.Thread(target=net.close, daemon=True)
        other.start()
        net.close()
        other.join(JOIN_TIMEOUT)
        if other.is_alive():
            return "second close hung", time.monotonic() - began
    else:
        net.close()
    took = time.monotonic() - began
    thread.join(JOIN_TIMEOUT)
    if thread.is_alive():
        return "hung", took
    return outcome[0], took


def _caller_context(rounds: int) -> dict[str, Any]:
    """A network on the caller's context: close, then the caller unblocks and terms."""
    outcomes: Counter[str] = Counter()
    slowest = 0.0
    for i in range(rounds):
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        net = ZmqNetwork(context=ctx)
        pull = net.blocking(SocketKind.PULL, bind=ENDPOINT)
        got: list[str] = []
        started = threading.Event()

        def user(pull: Any = pull, got: list[str] = got, ready: Any = started) -> None:
            ready.set()
            got.append(_outcome(pull.recv, ""))

        thread = threading.Thread(target=user, daemon=True)
        thread.start()
        started.wait(JOIN_TIMEOUT)
        time.sleep(DELAYS[i % len(DELAYS)])
        began = time.monotonic()
        net.close()
        slowest = max(slowest, time.monotonic() - began)
        # The network cannot interrupt a call on a context it does not own: the
        # caller ends it (here with a message), then terminates its own context.
        raw = ctx.socket(zmq.PUSH)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(ENDPOINT)
        raw.send(b"last")
        thread.join(JOIN_TIMEOUT)
        raw.close()
        terminator = threading.Thread(target=ctx.term, daemon=True)
        terminator.start()
        terminator.join(JOIN_TIMEOUT)
        if thread.is_alive():
            outcomes["hung"] += 1
        elif terminator.is_alive():
            outcomes["context term hung"] += 1
        else:
            outcomes[got[0]] += 1
    return {"outcomes": dict(outcomes), "slowest_close": slowest}


def _plain_close(rounds: int) -> dict[str, Any]:
    """A BlockingSocket closed by another thread while its own thread waits in recv."""
    outcomes: Counter[str] = Counter()
    slowest = 0.0
    for i in range(rounds):
        with ZmqNetwork() as net:
            pull = net.blocking(SocketKind.PULL, bind=ENDPOINT)
            push = net.blocking(SocketKind.PUSH, connect=ENDPOINT)
            got: list[str] = []
            started = threading.Event()

            def user(pull: Any = pull, got: list[str] = got, ready: Any = started) -> None:
                ready.set()
                try:
                    first = pull.recv(timeout=JOIN_TIMEOUT)
                except ClosedError:
                    got.append("ClosedError")  # closed before the call began
                    return
                after = _outcome(lambda: pull.recv(timeout=0), "blocking PULL socket")
                what = "returned" if first == [b"late"] else repr(first)
                got.append(f"{what}, then {after}")

            thread = threading.Thread(target=user, daemon=True)
            thread.start()
            started.wait(JOIN_TIMEOUT)
            time.sleep(0.002 + DELAYS[i % len(DELAYS)])  # inside its wait, this time
            began = time.monotonic()
            pull.close()  # from the main thread, while the user thread waits
            slowest = max(slowest, time.monotonic() - began)
            push.send([b"late"])
            thread.join(JOIN_TIMEOUT)
            outcomes["hung" if thread.is_alive() else got[0]] += 1
    return {"outcomes": dict(outcomes), "slowest_close": slowest}


def main() -> None:
    scenario, rounds = sys.argv[1], int(sys.argv[2])
    if scenario == "caller_context":
        print(json.dumps(_caller_context(rounds)), flush=True)
        return
    if scenario == "plain_close":
        print(json.dumps(_plain_close(rounds)), flush=True)
        return
    twice = scenario.endswith("+twice")
    scenario = scenario.removesuffix("+twice")
    outcomes: Counter[str] = Counter()
    slowest = 0.0
    for i in range(rounds):
        outcome, took = _round(scenario, DELAYS[i % len(DELAYS)], twice)
        outcomes[outcome] += 1
        slowest = max(slowest, took)
    print(json.dumps({"outcomes": dict(outcomes), "slowest_close": slowest}), flush=True)


if __name__ == "__main__":
    main()
