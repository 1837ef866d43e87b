"""Clone against peers written from 12/CHP and the Guide's Python servers, on tcp.

The peers are raw pyzmq, written here from the specification's text (and, for the
Guide-like server, from what the Guide's ``kvmsg.py``/``clonesrv6.py`` put on the wire:
a fresh random uuid in every message, HUGZ and KTHXBAI included, and HUGZ carrying the
server's sequence). Each runs in a thread with its own context, LINGER=0, random ports
on 127.0.0.1, and is stopped and joined in teardown.
"""

from __future__ import annotations

import asyncio
import queue
import struct
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import zmq
import zmq.asyncio

from transportkit.patterns.clone import CloneClient, CloneServer
from transportkit.zmq_backend import ZmqNetwork

pytestmark = pytest.mark.timeout(30)

ICANHAZ, KTHXBAI, HUGZ = b"ICANHAZ?", b"KTHXBAI", b"HUGZ"


def seq(n: int) -> bytes:
    return struct.pack("!Q", n)


class RawServer(threading.Thread):
    """A CHP server in raw pyzmq: snapshot ROUTER, PUB, collector SUB, HUGZ, TTL.

    ``guide=True`` speaks as the Guide's Python clonesrv6: a fresh ``uuid4`` in the uuid
    frame of every message it sends (KVSYNC, KTHXBAI, HUGZ, updates of its own) and its
    current sequence in HUGZ. ``guide=False`` follows CHP to the letter: KVSYNC with
    empty uuid and properties, ``[KTHXBAI][seq][][][subtree]``,
    ``[HUGZ][00000000][][][]``.
    """

    def __init__(self, *, guide: bool, heartbeat: float) -> None:
        super().__init__(daemon=True)
        self.guide, self.heartbeat = guide, heartbeat
        self.ctx = zmq.Context()
        self.router = self._bind(zmq.ROUTER)
        self.pub = self._bind(zmq.PUB)
        self.collector = self._bind(zmq.SUB)
        self.collector.setsockopt(zmq.SUBSCRIBE, b"")
        self.commands: queue.Queue[tuple[str, bytes, bytes]] = queue.Queue()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sequence = 0
        self.kvmap: dict[bytes, list[bytes]] = {}
        self.expiry: dict[bytes, float] = {}
        self.hugz = 0
        self.errors: list[str] = []

    def _bind(self, kind: int) -> zmq.Socket[bytes]:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind("tcp://127.0.0.1:*")
        return sock

    def endpoint(self, sock: zmq.Socket[bytes]) -> str:
        return sock.getsockopt_string(zmq.LAST_ENDPOINT)

    @property
    def values(self) -> dict[bytes, bytes]:
        with self.lock:
            return {k: m[4] for k, m in self.kvmap.items()}

    def _uuid(self) -> bytes:
        return uuid.uuid4().bytes if self.guide else b""

    def _publish(self, key: bytes, uid: bytes, props: bytes, body: bytes) -> None:
        with self.lock:
            self.sequence += 1
            msg = [key, seq(self.sequence), uid, props, body]
            self.pub.send_multipart(msg)
            if body:
                self.kvmap[key] = msg
            else:
                self.kvmap.pop(key, None)
                self.expiry.pop(key, None)

    def run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # reported by the test
            self.errors.append(repr(exc))
        finally:
            for sock in (self.router, self.pub, self.collector):
                sock.close(0)
            self.ctx.term()

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.collector, zmq.POLLIN)
        beat = time.monotonic() + self.heartbeat
        while not self.stop.is_set():
            for sock, _ in poller.poll(5):
                msg = sock.recv_multipart()
                if sock is self.router:
                    self._snapshot(msg)
                else:
                    self._collect(msg)
            while not self.commands.empty():
                command, key, body = self.commands.get()
                if command == "set":
                    self._publish(key, self._uuid(), b"", body)
                elif command == "restart":  # a new process: sequence and map begin again
                    with self.lock:
                        self.sequence, self.kvmap, self.expiry = 0, {}, {}
            now = time.monotonic()
            for key, deadline in list(self.expiry.items()):
                if deadline <= now:
                    self._publish(key, self._uuid(), b"", b"")
            if now >= beat:
                hugz_seq = seq(self.sequence) if self.guide else b"\0" * 8
                self.pub.send_multipart([HUGZ, hugz_seq, self._uuid(), b"", b""])
                self.hugz += 1
                beat = now + self.heartbeat

    def _snapshot(self, msg: list[bytes]) -> None:
        if len(msg) != 3 or msg[1] != ICANHAZ:
            self.errors.append(f"bad request {msg!r}")
            return
        identity, _, subtree = msg
        with self.lock:
            for key, stored in self.kvmap.items():
                if key.startswith(subtree):
                    if self.guide:
                        self.router.send_multipart([identity, *stored])
                    else:
                        self.router.send_multipart([identity, key, stored[1], b"", b"", stored[4]])
            end = [KTHXBAI, seq(self.sequence), self._uuid(), b"", subtree]
            self.router.send_multipart([identity, *end])

    def _collect(self, msg: list[bytes]) -> None:
        if len(msg) != 5 or len(msg[1]) != 8:
            self.errors.append(f"bad KVSET {msg!r}")
            return
        key, _, uid, props, body = msg
        self._publish(key, uid, props, body)
        for line in props.decode().splitlines():
            name, _, value = line.partition("=")
            if name == "ttl" and float(value) and body:
                self.expiry[key] = time.monotonic() + float(value)


@pytest.fixture
def guide_server() -> Iterator[RawServer]:
    server = RawServer(guide=True, heartbeat=0.02)
    server.start()
    yield server
    server.stop.set()
    server.join(5)
    assert not server.errors


@pytest.fixture
def spec_server() -> Iterator[RawServer]:
    server = RawServer(guide=False, heartbeat=0.05)
    server.start()
    yield server
    server.stop.set()
    server.join(5)
    assert not server.errors


def test_a_client_stays_synced_to_a_clonesrv6_like_server_without_resnapshots(
    guide_server: RawServer,
) -> None:
    # The Guide's servers put a fresh random uuid in every HUGZ: that is no restart.
    server = guide_server
    for i in range(5):
        server.commands.put(("set", b"KEY.%d" % i, b"before-%d" % i))

    async def main(net: ZmqNetwork) -> None:
        client = CloneClient(
            net,
            snapshot=server.endpoint(server.router),
            updates=server.endpoint(server.pub),
            timeout=2.0,
        )
        async with client:
            await client.wait_for(lambda c: c.synced, 5.0)
            for i in range(20):  # updates between heartbeats
                server.commands.put(("set", b"KEY.%d" % (i % 7), b"after-%d" % i))
                await asyncio.sleep(0.02)
            deadline = time.monotonic() + 10.0
            while client.stats.heartbeats < 40 or client.state != server.values:
                assert time.monotonic() < deadline, (client.stats, server.hugz)
                await asyncio.sleep(0.02)  # HUGZ change no state: poll
            assert client.sequence == server.sequence
            assert client.stats.snapshots == 1, client.stats
            assert client.stats.resyncs == 0, client.stats
            assert client.stats.restarts == 0, client.stats
            assert client.stats.updates >= 20 - 5

    with ZmqNetwork(name="clonecli") as net:
        asyncio.run(asyncio.wait_for(main(net), 20.0))


def test_a_client_publishes_through_a_spec_server_and_notices_its_restart(
    spec_server: RawServer,
) -> None:
    server = spec_server

    async def main(net: ZmqNetwork) -> None:
        client = CloneClient(
            net,
            snapshot=server.endpoint(server.router),
            updates=server.endpoint(server.pub),
            collector=server.endpoint(server.collector),
            timeout=2.0,
            heartbeat=0.5,  # a stall (1 s) would be a resync, which the test counts
        )

        async def set_until_seen(key: bytes, body: bytes, ttl: float | None = None) -> None:
            for _ in range(50):  # a PUB drops what it sends before it is connected
                uid = await client.set(key, body, ttl=ttl)
                try:
                    await client.wait_for(
                        lambda c, uid=uid: key in c.messages and c.messages[key].uuid == uid, 0.2
                    )
                    return
                except TimeoutError:
                    continue
            raise AssertionError(f"{key!r} never came back from the server")

        async with client:
            await client.wait_for(lambda c: c.synced, 5.0)
            await set_until_seen(b"KEY.1", b"one")
            await set_until_seen(b"KEY.2", b"two")
            await set_until_seen(b"EPHEMERAL", b"short-lived", ttl=0.3)
            assert client.messages[b"EPHEMERAL"].properties == {"ttl": "0.300"}
            await client.wait_for(lambda c: b"EPHEMERAL" not in c.state, 3.0)
            assert client.state == server.values == {b"KEY.1": b"one", b"KEY.2": b"two"}
            assert client.stats.resyncs == 0, client.stats
            # The server starts again from sequence 0 with a new map: the sequence
            # going back on the update stream is the restart.
            server.commands.put(("restart", b"", b""))
            server.commands.put(("set", b"KEY.3", b"three"))
            await client.wait_for(lambda c: c.synced and c.stats.restarts >= 1, 5.0)
            await client.wait_for(lambda c: c.state == {b"KEY.3": b"three"}, 5.0)
            assert client.server_id == b""

    with ZmqNetwork(name="clonecli") as net:
        asyncio.run(asyncio.wait_for(main(net), 20.0))


def test_a_spec_client_reads_kthxbai_hugz_and_collector_updates_exactly() -> None:
    async def main(net: ZmqNetwork) -> None:
        server = CloneServer(
            net,
            publisher="tcp://127.0.0.1:*",
            snapshot="tcp://127.0.0.1:*",
            collector="tcp://127.0.0.1:*",
            heartbeat=0.05,
        )
        ctx = zmq.asyncio.Context()
        socks: list[zmq.asyncio.Socket] = []

        def sock(kind: int, endpoint: str | None) -> zmq.asyncio.Socket:
            s = ctx.socket(kind)
            s.setsockopt(zmq.LINGER, 0)
            socks.append(s)
            if kind == zmq.SUB:
                s.setsockopt(zmq.SUBSCRIBE, b"")
            assert endpoint
            s.connect(endpoint)
            return s

        async def recv(s: zmq.asyncio.Socket, timeout: float = 3.0) -> list[bytes]:
            return list(await asyncio.wait_for(s.recv_multipart(), timeout))

        try:
            async with server:
                await server.set(b"KEY.1", b"one")
                sub = sock(zmq.SUB, server.publisher_endpoint)
                dealer = sock(zmq.DEALER, server.snapshot_endpoint)
                pub = sock(zmq.PUB, server.collector_endpoint)
                while (msg := await recv(sub))[0] != HUGZ:
                    pass
                assert msg == [HUGZ, b"\0" * 8, b"", b"", b""]
                await dealer.send_multipart([ICANHAZ, b""])
                assert await recv(dealer) == [b"KEY.1", seq(1), b"", b"", b"one"]
                assert await recv(dealer) == [KTHXBAI, seq(1), b"", b"", b""]
                uid = uuid.uuid4().bytes
                kvset = [b"KEY.2", seq(0), uid, b"ttl=0.2\n", b"two"]
                for _ in range(100):  # until the collector's subscription is live
                    await pub.send_multipart(kvset)
                    msg = await recv(sub)
                    if msg[0] == b"KEY.2":
                        break
                assert msg == [b"KEY.2", seq(2), uid, b"ttl=0.2\n", b"two"]
                assert server.stats.collected >= 1
                while (msg := await recv(sub))[0] != b"KEY.2" or msg[4]:
                    pass
                assert msg[2:] == [uid, b"", b""]  # the deletion, once the TTL ran out
                await asyncio.sleep(0.3)  # copies sent while subscribing expire too
                assert server.values == {b"KEY.1": b"one"}
                assert server.stats.expired >= 1
        finally:
            for s in socks:
                s.close(0)
            ctx.term()

    with ZmqNetwork(name="clonesrv") as net:
        asyncio.run(asyncio.wait_for(main(net), 20.0))
