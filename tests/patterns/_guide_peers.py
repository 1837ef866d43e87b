"""Peers written with raw pyzmq the way the ZeroMQ Guide's chapter 4 describes them.

Each one follows the Guide's text for its program (``lpclient``, ``lpserver``,
``spqueue``, ``spworker``, ``ppqueue``) and its wire format, with what a test needs on
top: bounded waits, LINGER=0, ports chosen by the system, a stop flag, and a record of
what it saw. They run in threads (:class:`PeerThread`), beside transportkit's side on
an asyncio loop.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

LRU_READY = b"\x01"
"""The Guide's Simple Pirate READY (``spqueue``/``spworker``)."""

PPP_READY = b"\x01"
PPP_HEARTBEAT = b"\x02"

POLL_MS = 50
"""How often a peer thread looks at its stop flag."""


def _socket(ctx: zmq.Context[Any], kind: int) -> zmq.Socket[Any]:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


def _bind(sock: zmq.Socket[Any]) -> str:
    sock.bind("tcp://127.0.0.1:*")
    endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
    assert isinstance(endpoint, bytes)
    return endpoint.decode()


class PeerThread:
    """Run ``target(stop)`` in a thread; join it (bounded) and re-raise its error on exit."""

    def __init__(self, target: Callable[[threading.Event], None], join_timeout: float = 5.0):
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self._target = target
        self._join_timeout = join_timeout
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._target(self.stop)
        except BaseException as exc:  # reported by __exit__
            self.error = exc

    def __enter__(self) -> PeerThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._thread.join(self._join_timeout)
        assert not self._thread.is_alive(), "a Guide peer thread did not stop"
        if self.error is not None and exc[0] is None:
            raise self.error


@dataclass
class LpClientResult:
    """What the Guide's ``lpclient`` saw."""

    replies: list[list[bytes]] = field(default_factory=list)
    malformed: list[list[bytes]] = field(default_factory=list)
    abandoned: bool = False


def lpclient(
    endpoint: str, requests: int, *, timeout_ms: int = 2500, retries: int = 3
) -> LpClientResult:
    """The Guide's Lazy Pirate client: the sequence number (from 0) as the only frame.

    It waits ``timeout_ms`` for each reply; a reply that is not the request echoed is
    malformed (the Guide logs it and keeps waiting); after a silent wait it closes the
    REQ socket and resends on a new one, and abandons after ``retries`` silent waits.
    """
    result = LpClientResult()
    ctx: zmq.Context[Any] = zmq.Context()
    client = _socket(ctx, zmq.REQ)
    client.connect(endpoint)
    try:
        for sequence in range(requests):
            request = str(sequence).encode()
            client.send(request)
            retries_left = retries
            while True:
                if client.poll(timeout_ms, zmq.POLLIN):
                    reply = client.recv_multipart()
                    if reply == [request]:
                        result.replies.append(reply)
                        break
                    result.malformed.append(reply)
                    continue
                retries_left -= 1
                client.close()
                if retries_left == 0:
                    result.abandoned = True
                    return result
                client = _socket(ctx, zmq.REQ)
                client.connect(endpoint)
                client.send(request)
        return result
    finally:
        client.close()
        ctx.term()


@dataclass
class ServerRecord:
    """What a Guide-side server peer received, and how it ended."""

    endpoint: str = ""
    requests: list[list[bytes]] = field(default_factory=list)
    failure: str | None = None


def lpserver(record: ServerRecord, ready: threading.Event) -> Callable[[threading.Event], None]:
    """The Guide's ``lpserver`` (without its simulated faults): a REP that does
    ``recv()`` then ``send()`` of that one frame. A multipart request makes the
    ``send()`` fail (EFSM: the rest of the request is still unread); that ends it, as it
    would end the Guide's program, and is kept in ``record.failure``.
    """

    def run(stop: threading.Event) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        server = _socket(ctx, zmq.REP)
        try:
            record.endpoint = _bind(server)
            ready.set()
            while not stop.is_set():
                if not server.poll(POLL_MS, zmq.POLLIN):
                    continue
                request = server.recv()
                record.requests.append([request])
                try:
                    server.send(request)
                except zmq.ZMQError as exc:
                    record.failure = f"{zmq.strerror(exc.errno)} (errno {exc.errno})"
                    return
        finally:
            server.close()
            ctx.term()

    return run


def rep_echo(record: ServerRecord, ready: threading.Event) -> Callable[[threading.Event], None]:
    """A plain REP echo: every request, all its frames, sent back as it came."""

    def run(stop: threading.Event) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        server = _socket(ctx, zmq.REP)
        try:
            record.endpoint = _bind(server)
            ready.set()
            while not stop.is_set():
                if server.poll(POLL_MS, zmq.POLLIN):
                    request = server.recv_multipart()
                    record.requests.append(request)
                    server.send_multipart(request)
        finally:
            server.close()
            ctx.term()

    return run


@dataclass
class QueueRecord:
    """The endpoints of a Guide-side queue and what went wrong in it."""

    frontend: str = ""
    backend: str = ""
    workers_seen: set[bytes] = field(default_factory=set)
    forwarded: list[list[bytes]] = field(default_factory=list)
    misrouted: list[list[bytes]] = field(default_factory=list)
    invalid: list[list[bytes]] = field(default_factory=list)


def spqueue(record: QueueRecord, ready: threading.Event) -> Callable[[threading.Event], None]:
    """The Guide's Simple Pirate queue: ROUTER/ROUTER, workers listed LRU.

    A worker's message is ``[worker, b"", *reply]``; everything but ``[LRU_READY]`` is
    forwarded to the front end as a client reply, as the Guide's does. Beyond the
    Guide: a forwarded "reply" whose first frame is no client's routing id (the ROUTER
    would drop it) is kept in ``record.misrouted``.
    """

    def run(stop: threading.Event) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        frontend = _socket(ctx, zmq.ROUTER)
        backend = _socket(ctx, zmq.ROUTER)
        clients: set[bytes] = set()
        workers: list[bytes] = []
        try:
            record.frontend = _bind(frontend)
            record.backend = _bind(backend)
            ready.set()
            while not stop.is_set():
                poller = zmq.Poller()
                poller.register(backend, zmq.POLLIN)
                if workers:
                    poller.register(frontend, zmq.POLLIN)
                socks = dict(poller.poll(POLL_MS))
                if socks.get(backend) == zmq.POLLIN:
                    msg = backend.recv_multipart()
                    workers.append(msg[0])
                    record.workers_seen.add(msg[0])
                    reply = msg[2:]
                    if reply[0] != LRU_READY:
                        if reply[0] not in clients:
                            record.misrouted.append(reply)
                        record.forwarded.append(reply)
                        frontend.send_multipart(reply)
                if socks.get(frontend) == zmq.POLLIN:
                    msg = frontend.recv_multipart()
                    clients.add(msg[0])
                    backend.send_multipart([workers.pop(0), b"", *msg])
        finally:
            frontend.close()
            backend.close()
            ctx.term()

    return run


def spworker(endpoint: str, identity: bytes) -> Callable[[threading.Event], None]:
    """The Guide's Simple Pirate worker (without its simulated faults): a REQ with an
    identity that says ``LRU_READY`` and then echoes every message it gets.
    """

    def run(stop: threading.Event) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        worker = _socket(ctx, zmq.REQ)
        worker.setsockopt(zmq.IDENTITY, identity)
        try:
            worker.connect(endpoint)
            worker.send(LRU_READY)
            while not stop.is_set():
                if worker.poll(POLL_MS, zmq.POLLIN):
                    worker.send_multipart(worker.recv_multipart())
        finally:
            worker.close()
            ctx.term()

    return run


def ppqueue(
    record: QueueRecord, ready: threading.Event, *, interval: float = 1.0, liveness: int = 3
) -> Callable[[threading.Event], None]:
    """The Guide's Paranoid Pirate queue, with its heartbeat ``interval`` a parameter.

    Workers are listed LRU with an expiry ``interval * liveness`` after each message;
    a one-frame message that is neither READY nor HEARTBEAT is invalid (kept in
    ``record.invalid``, as the Guide prints it); anything longer is a reply forwarded
    to the front end. Idle workers get a heartbeat every ``interval``.
    """

    def run(stop: threading.Event) -> None:
        ctx: zmq.Context[Any] = zmq.Context()
        frontend = _socket(ctx, zmq.ROUTER)
        backend = _socket(ctx, zmq.ROUTER)
        workers: OrderedDict[bytes, float] = OrderedDict()
        try:
            record.frontend = _bind(frontend)
            record.backend = _bind(backend)
            ready.set()
            heartbeat_at = time.monotonic() + interval
            while not stop.is_set():
                poller = zmq.Poller()
                poller.register(backend, zmq.POLLIN)
                if workers:
                    poller.register(frontend, zmq.POLLIN)
                socks = dict(poller.poll(min(POLL_MS, int(interval * 1000))))
                if socks.get(backend) == zmq.POLLIN:
                    frames = backend.recv_multipart()
                    address = frames[0]
                    record.workers_seen.add(address)
                    workers.pop(address, None)
                    workers[address] = time.monotonic() + interval * liveness
                    msg = frames[1:]
                    if len(msg) == 1:
                        if msg[0] not in (PPP_READY, PPP_HEARTBEAT):
                            record.invalid.append(msg)
                    else:
                        record.forwarded.append(msg)
                        frontend.send_multipart(msg)
                if time.monotonic() >= heartbeat_at:
                    for address in workers:
                        backend.send_multipart([address, PPP_HEARTBEAT])
                    heartbeat_at = time.monotonic() + interval
                if socks.get(frontend) == zmq.POLLIN:
                    frames = frontend.recv_multipart()
                    address, _ = workers.popitem(last=False)
                    backend.send_multipart([address, *frames])
                now = time.monotonic()
                for address in [a for a, expiry in workers.items() if now > expiry]:
                    del workers[address]
        finally:
            frontend.close()
            backend.close()
            ctx.term()

    return run
