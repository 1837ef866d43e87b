"""Shared helpers of the Majordomo tests (not a conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import zmq

from transportkit import Message, Network, Receiver
from transportkit.patterns.majordomo import MajordomoBroker, MajordomoHandler, MajordomoWorker
from transportkit.testing import free_tcp_endpoint

T = TypeVar("T")

EXAMPLES = "transportkit.examples"


def example_argv(name: str) -> tuple[str, str]:
    """``ChildProcess`` arguments running example program ``name``."""
    return ("-m", f"{EXAMPLES}.{name}")


def real_endpoint(transport: str, tmp_path: Path, name: str = "mdp") -> str:
    """A fixed endpoint that a restarted process can bind again."""
    if transport == "tcp":
        return free_tcp_endpoint()
    return f"ipc://{tmp_path}/{name}.ipc"


def run_real(main: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
    """Run ``main`` on a real asyncio loop, failing (never hanging) after ``timeout``."""
    return asyncio.run(asyncio.wait_for(main, timeout))


async def cancel(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and wait for them to end."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def eventually(check: Callable[[], bool], timeout: float, step: float = 0.01) -> float:
    """Wait until ``check()`` holds; return the seconds it took; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not check():
        if loop.time() - start > timeout:
            raise AssertionError(f"condition still false after {timeout} s")
        await asyncio.sleep(step)
    return loop.time() - start


async def recv_frames(sock: Receiver, timeout: float = 5.0) -> Message:
    """The next message on a raw socket (fails the test rather than hang)."""
    return await sock.recv(timeout=timeout)


@contextlib.asynccontextmanager
async def running_broker(
    network: Network, endpoint: str, **kwargs: Any
) -> AsyncIterator[tuple[MajordomoBroker, str]]:
    """A broker bound to ``endpoint`` and running in a task; yields it and its endpoint."""
    broker = MajordomoBroker(network, endpoint, **kwargs)
    bound = broker.bind()
    task = asyncio.ensure_future(broker.run())
    try:
        yield broker, bound
    finally:
        broker.stop()
        await asyncio.gather(task, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


@contextlib.asynccontextmanager
async def serving_worker(
    network: Network,
    endpoint: str,
    service: bytes,
    reply: MajordomoHandler,
    **kwargs: Any,
) -> AsyncIterator[MajordomoWorker]:
    """A worker answering ``service`` with ``reply`` in a task, closed on exit."""
    worker = MajordomoWorker(network, endpoint, service, **kwargs)
    await worker.start()
    task = asyncio.ensure_future(worker.serve(reply))
    try:
        yield worker
    finally:
        await worker.aclose()
        await cancel(task)


class GuideBroker:
    """A Majordomo broker as the Guide's ``mdbroker`` behaves, written with raw pyzmq.

    Written from 7/MDP, 8/MMI and the Guide's text, not from transportkit: a ROUTER
    bound to a random tcp port of 127.0.0.1, served by a thread. Requests queue per
    service (unbounded, as in the Guide) and go to the worker waiting longest; every
    worker gets a HEARTBEAT each ``interval`` and is forgotten after three silent
    intervals; ``mmi.service`` answers ``200``/``404``, other ``mmi.*`` ``501``. Use as
    a context manager; ``endpoint`` is where to connect.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self._ctx = zmq.Context()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.linger = 0
        self._router.bind("tcp://127.0.0.1:*")
        self.endpoint: str = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
        self.interval = interval
        self.requests: list[list[bytes]] = []  # every client message, as received
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="guide-mdbroker", daemon=True)

    def __enter__(self) -> GuideBroker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._router.close(linger=0)
        self._ctx.term()

    def _serve(self) -> None:
        router = self._router
        queues: dict[bytes, list[list[bytes]]] = {}  # service -> [client, b"", *body]
        waiting: dict[bytes, list[bytes]] = {}  # service -> idle worker ids, oldest first
        workers: dict[bytes, tuple[bytes, float]] = {}  # id -> (service, expiry)
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        beat_at = time.monotonic() + self.interval
        while not self._stop.is_set():
            if poller.poll(int(self.interval * 1000 / 5)):
                sender, empty, header, *rest = router.recv_multipart()
                assert empty == b""
                if header == b"MDPC01":
                    self.requests.append([header, *rest])
                    service, body = rest[0], rest[1:]
                    if service.startswith(b"mmi."):
                        if service == b"mmi.service":
                            known = any(s == body[0] for s, _ in workers.values())
                            code = b"200" if known else b"404"
                        else:
                            code = b"501"
                        router.send_multipart([sender, b"", b"MDPC01", service, code])
                    else:
                        queues.setdefault(service, []).append([sender, b"", *body])
                elif header == b"MDPW01":
                    command = rest[0]
                    if command == b"\x01":
                        workers[sender] = (rest[1], time.monotonic() + 3 * self.interval)
                        waiting.setdefault(rest[1], []).append(sender)
                    elif sender not in workers:
                        router.send_multipart([sender, b"", b"MDPW01", b"\x05"])
                    elif command == b"\x03":
                        service = workers[sender][0]
                        client, _, *body = rest[1:]
                        router.send_multipart([client, b"", b"MDPC01", service, *body])
                        waiting.setdefault(service, []).append(sender)
                    elif command == b"\x05":
                        service = workers.pop(sender)[0]
                        if sender in waiting.get(service, []):
                            waiting[service].remove(sender)
                    if sender in workers:
                        workers[sender] = (workers[sender][0], time.monotonic() + 3 * self.interval)
            now = time.monotonic()
            for wid, (service, expiry) in list(workers.items()):
                if expiry < now:
                    del workers[wid]
                    if wid in waiting.get(service, []):
                        waiting[service].remove(wid)
            for service, queue in queues.items():
                idle = waiting.get(service, [])
                while queue and idle:
                    wid = idle.pop(0)
                    client, empty, *body = queue.pop(0)
                    router.send_multipart([wid, b"", b"MDPW01", b"\x02", client, b"", *body])
            if now >= beat_at:
                for wid in workers:
                    router.send_multipart([wid, b"", b"MDPW01", b"\x04"])
                beat_at = now + self.interval


def guide_ticlient(
    endpoint: str, service: bytes, body: bytes, timeout: float = 10.0
) -> list[bytes]:
    """The Guide's ``ticlient`` dialogue, with a raw pyzmq REQ socket (run it in a thread).

    Stores one request with ``titanic.request``, polls ``titanic.reply`` until its
    status is ``200``, closes it with ``titanic.close``; returns every TSP reply body it
    received, in order (status frames included). A new REQ socket per call, as the
    Guide's synchronous client opens one per attempt; fails after ``timeout`` seconds.
    """
    ctx = zmq.Context()
    deadline = time.monotonic() + timeout
    seen: list[bytes] = []

    def call(tsp_service: bytes, *frames: bytes) -> list[bytes]:
        sock = ctx.socket(zmq.REQ)
        sock.linger = 0
        try:
            sock.connect(endpoint)
            sock.send_multipart([b"MDPC01", tsp_service, *frames])
            if not sock.poll(int(max(deadline - time.monotonic(), 0.0) * 1000)):
                raise AssertionError(f"{tsp_service!r}: no reply within {timeout} s")
            header, answered, *reply = sock.recv_multipart()
            assert (header, answered) == (b"MDPC01", tsp_service)
            seen.extend(reply)
            return reply
        finally:
            sock.close()

    try:
        status, uuid = call(b"titanic.request", service, body)
        assert status == b"200"
        while call(b"titanic.reply", uuid)[0] != b"200":
            time.sleep(0.05)
        assert call(b"titanic.close", uuid) == [b"200"]
        return seen
    finally:
        ctx.term()
