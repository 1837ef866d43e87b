"""The proxy against libzmq's own ``zmq_proxy_steerable``: the same traffic, the same
capture, the same STATISTICS reply, the same control answers, on tcp.

PAUSE and RESUME are not compared: the libzmq that pyzmq bundles (4.3.5) has them
swapped (PAUSE resumes and RESUME pauses; libzmq fixed it after 4.3.5, in "Fix
zmq_proxy_steerable PAUSE/RESUME"). transportkit follows the documentation and the
fixed code; ``test_proxy.py`` tests pause and resume on both backends.

Each device runs in a thread (libzmq's in ``zmq.proxy_steerable``, transportkit's in
its own event loop on a :class:`ZmqNetwork`); the peers are raw pyzmq with timeouts,
LINGER=0 and random ports on 127.0.0.1, and everything is closed in teardown.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable

import pytest
import zmq

from transportkit import SocketOptions
from transportkit.patterns.proxy import parse_statistics, streamer
from transportkit.zmq_backend import ZmqNetwork

pytestmark = pytest.mark.timeout(30)

ANY = "tcp://127.0.0.1:*"
MESSAGES = [[b"a", b"bc"], [b"def"], [b"", b"g", b"hi"], [b"x" * 300]]
Endpoints = tuple[str, str, str, str]


def libzmq_device(ready: queue.Queue[Endpoints]) -> threading.Thread:
    ctx = zmq.Context()
    socks = [ctx.socket(kind) for kind in (zmq.PULL, zmq.PUSH, zmq.PUB, zmq.REP)]
    for sock in socks:
        sock.linger = 0
        sock.bind(ANY)
    front, back, capture, control = socks

    def run() -> None:
        try:
            zmq.proxy_steerable(front, back, capture, control)
        finally:
            for sock in socks:
                sock.close()
            ctx.term()

    ready.put(tuple(s.last_endpoint.decode() for s in socks))  # type: ignore[arg-type]
    return threading.Thread(target=run, daemon=True)


def transportkit_device(ready: queue.Queue[Endpoints]) -> threading.Thread:
    async def main() -> None:
        with (
            ZmqNetwork(name="proxy") as net,
            streamer(
                net,
                frontend=ANY,
                backend=ANY,
                capture=ANY,
                control=ANY,
                options=SocketOptions(linger=0),
            ) as proxy,
        ):
            socks = (proxy.frontend, proxy.backend, proxy.capture, proxy.control)
            ready.put(tuple(str(s.last_endpoint) for s in socks if s is not None))  # type: ignore[arg-type]
            await asyncio.wait_for(proxy.run(), 20.0)

    return threading.Thread(target=lambda: asyncio.run(main()), daemon=True)


def drive(make: Callable[[queue.Queue[Endpoints]], threading.Thread]) -> dict[str, object]:
    """Send, read, capture, an unknown command, STATISTICS, TERMINATE."""
    ready: queue.Queue[Endpoints] = queue.Queue()
    thread = make(ready)
    thread.start()
    front, back, capture, control = ready.get(timeout=10.0)
    ctx = zmq.Context()
    socks: list[zmq.Socket[bytes]] = []

    def sock(kind: int, endpoint: str) -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = ctx.socket(kind)
        s.linger = 0
        s.rcvtimeo = s.sndtimeo = 5000
        if kind == zmq.SUB:
            s.subscribe(b"")
        s.connect(endpoint)
        socks.append(s)
        return s

    try:
        ctl = sock(zmq.REQ, control)
        tap = sock(zmq.SUB, capture)
        push = sock(zmq.PUSH, front)
        pull = sock(zmq.PULL, back)
        out: dict[str, object] = {}
        # The tap's subscription must reach the capture PUB before anything is
        # captured (the slow joiner; nothing can show it without traffic, which
        # would change the counters compared).
        time.sleep(0.5)
        for message in MESSAGES:
            push.send_multipart(message)
        out["received"] = [pull.recv_multipart() for _ in MESSAGES]
        out["captured"] = [tap.recv_multipart() for _ in MESSAGES]
        ctl.send(b"NONSENSE")
        out["unknown"] = ctl.recv_multipart()
        ctl.send(b"STATISTICS")
        out["statistics"] = parse_statistics(ctl.recv_multipart())
        ctl.send(b"TERMINATE")
        out["terminate"] = ctl.recv_multipart()
        thread.join(10.0)
        out["ended"] = not thread.is_alive()
        return out
    finally:
        for s in socks:
            s.close()
        ctx.term()


def test_the_proxy_behaves_as_libzmqs_proxy_steerable() -> None:
    theirs = drive(libzmq_device)
    ours = drive(transportkit_device)
    assert theirs["received"] == MESSAGES  # the reference run is meaningful
    frames = sum(map(len, MESSAGES))
    assert theirs["statistics"][0] == frames  # type: ignore[index]
    assert ours == theirs
