"""Clone against the Guide's model 5: a PULL collector, PUSH clients (opt-in).

12/CHP has clients publish their updates on a PUB to the server's collector SUB; the
Guide's ``clonesrv5``/``clonecli5`` use PULL and PUSH there instead, and a PUSH cannot
connect to a SUB (nor a PUB to a PULL). ``CloneServer(collector_kind=SocketKind.PULL)``
and ``CloneClient(collector_kind=SocketKind.PUSH)`` speak to them. The model-5 peers in
the zmq-only tests are raw pyzmq written here from ``clonecli5.py``/``kvmsg.py``'s
wire format: ``[key][sequence 0][uuid4][properties][body]``, a ``ttl`` property.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import Iterator

import pytest
import zmq
import zmq.asyncio

from transportkit import SocketKind, SocketOptions, Timeout
from transportkit.examples import clonecli, clonesrv
from transportkit.patterns.clone import CloneClient, CloneEvent, CloneServer
from transportkit.testing import Harness, free_tcp_endpoint, open_harness
from transportkit.zmq_backend import ZmqNetwork

pytestmark = pytest.mark.timeout(30)

ICANHAZ, KTHXBAI, HUGZ = b"ICANHAZ?", b"KTHXBAI", b"HUGZ"


def seq(n: int) -> bytes:
    return struct.pack("!Q", n)


# -- both backends: our PUSH client, our PULL collector ------------------------------------


def unserved_endpoint(h: Harness, backend: str) -> str:
    """A tcp endpoint nobody has bound (on zmq, not even a socket still closing: a
    PUSH that reached one would lose its queue with it)."""
    if backend == "zmq":
        return free_tcp_endpoint()
    probe = h.network("srv").puller(bind=h.bind_endpoint())
    endpoint = probe.last_endpoint
    probe.close()
    assert endpoint
    return endpoint


def test_a_push_client_updates_a_pull_collector_which_sequences_and_expires_them(
    tk_backend: str,
) -> None:
    async def main(h: Harness) -> tuple[CloneServer, CloneClient]:
        server = CloneServer(
            h.network("srv"),
            publisher=h.bind_endpoint(),
            snapshot=h.bind_endpoint(),
            collector=h.bind_endpoint(),
            collector_kind=SocketKind.PULL,
            heartbeat=0.05,
        )
        async with server:
            await server.set(b"/client/0", b"zero")
            assert server.snapshot_endpoint and server.publisher_endpoint
            client = CloneClient(
                h.network("cli"),
                snapshot=server.snapshot_endpoint,
                updates=server.publisher_endpoint,
                collector=server.collector_endpoint,
                collector_kind=SocketKind.PUSH,
                timeout=1.0,
            )
            async with client:
                # Sent at once, before any connection is made: a PUSH queues it where a
                # PUB would drop it, so one call is enough.
                uid = await client.set(b"/client/1", b"one", ttl=0.1)
                await client.set(b"/client/2", b"two")
                await client.wait_for(lambda c: c.sequence == 3, 5.0)
                assert client.messages[b"/client/1"].uuid == uid
                # Republished with the ttl it was sent with, or (if the snapshot came
                # after it was collected) the seconds that remained.
                assert 0 < float(client.messages[b"/client/1"].properties["ttl"]) <= 0.1
                assert client.messages[b"/client/2"].sequence == 3
                await client.wait_for(lambda c: b"/client/1" not in c.state, 5.0)
                assert (
                    client.state
                    == server.values
                    == {
                        b"/client/0": b"zero",
                        b"/client/2": b"two",
                    }
                )
        return server, client

    with open_harness(tk_backend) as h:
        server, client = h.run(main(h), timeout=20.0)
    assert server.stats.collected == 2 and server.stats.expired == 1
    assert server.stats.malformed == server.stats.over_limit == 0
    assert client.stats.sets == 2 and client.stats.set_timeouts == 0


def test_a_push_client_sends_every_update_to_each_of_its_collectors(tk_backend: str) -> None:
    """One PUSH per collector: a single PUSH connected to both would round-robin, and
    a pair's passive server must see every update (as with PUB)."""

    async def main(h: Harness) -> list[CloneServer]:
        servers = [
            CloneServer(
                h.network(f"srv{i}"),
                publisher=h.bind_endpoint(),
                snapshot=h.bind_endpoint(),
                collector=h.bind_endpoint(),
                collector_kind=SocketKind.PULL,
            )
            for i in range(2)
        ]
        client = CloneClient(
            h.network("cli"),
            snapshot=h.bind_endpoint(),
            updates=h.bind_endpoint(),
            collector=[str(s.collector_endpoint) for s in servers],
            collector_kind=SocketKind.PUSH,
            timeout=1.0,
        )
        try:
            for server in servers:
                server.start()
            for i in range(4):
                await client.set(b"K.%d" % i, b"v")
            for _ in range(200):
                if all(len(s.values) == 4 for s in servers):
                    break
                await asyncio.sleep(0.01)
        finally:
            await client.close()
            for server in servers:
                await server.close()
        return servers

    with open_harness(tk_backend) as h:
        servers = h.run(main(h), timeout=20.0)
    for server in servers:
        assert sorted(server.values) == [b"K.0", b"K.1", b"K.2", b"K.3"]
        assert server.stats.collected == 4


def test_a_push_set_made_before_the_server_binds_is_collected_when_it_comes(
    tk_backend: str,
) -> None:
    async def main(h: Harness) -> CloneServer:
        srv = h.network("srv")
        endpoint = unserved_endpoint(h, tk_backend)
        client = CloneClient(
            h.network("cli"),
            snapshot=h.bind_endpoint(),
            updates=h.bind_endpoint(),
            collector=endpoint,
            collector_kind=SocketKind.PUSH,
            timeout=0.5,
        )
        try:
            await client.set(b"EARLY", b"queued")  # returns: queued in the PUSH
            await asyncio.sleep(0.1)
            bind = endpoint.replace("127.0.0.1", "*") if tk_backend == "sim" else endpoint
            server = CloneServer(
                srv,
                publisher=h.bind_endpoint(),
                snapshot=h.bind_endpoint(),
                collector=bind,
                collector_kind=SocketKind.PULL,
            )
            async with server:
                for _ in range(200):
                    if server.values:
                        break
                    await asyncio.sleep(0.01)
        finally:
            await client.close()
        return server

    with open_harness(tk_backend) as h:
        server = h.run(main(h), timeout=20.0)
    assert server.values == {b"EARLY": b"queued"}
    assert server.stats.collected == 1


def test_a_push_set_that_no_collector_takes_raises_timeout_within_the_client_timeout(
    tk_backend: str,
) -> None:
    async def main(h: Harness) -> tuple[CloneClient, float]:
        endpoint = unserved_endpoint(h, tk_backend)
        client = CloneClient(
            h.network("cli"),
            snapshot=h.bind_endpoint(),
            updates=h.bind_endpoint(),
            collector=endpoint,
            collector_kind=SocketKind.PUSH,
            timeout=0.2,
            publisher_options=SocketOptions(immediate=True),  # no queue without a peer
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            with pytest.raises(Timeout, match="collector"):
                await client.set(b"K", b"v")
        finally:
            await client.close()
        return client, loop.time() - start

    with open_harness(tk_backend) as h:
        client, waited = h.run(main(h), timeout=10.0)
    assert 0.15 <= waited < 1.0, waited
    assert client.stats.set_timeouts == 1 and client.stats.sets == 0


async def _model5_server(h: Harness, stop: asyncio.Event) -> tuple[str, str, list[bytes]]:
    """Start a server that behaves as the Guide's clonesrv5 towards snapshot requests:
    it answers only those whose subtree is non-empty, and sends no HUGZ (it publishes
    an update every 20 ms, so the client's update stream is not silent)."""
    net = h.network("srv5")
    router = net.router(bind=h.bind_endpoint())
    pub = net.publisher(bind=h.bind_endpoint())
    asked: list[bytes] = []

    async def serve() -> None:
        sequence = 0
        try:
            while not stop.is_set():
                request = await router.recv(timeout=0.02) if await router.poll(0.02) else None
                if request is not None:
                    identity, _, subtree = request
                    asked.append(subtree)
                    if subtree:  # clonesrv5: "if subtree:"
                        await router.send([identity, KTHXBAI, seq(sequence), b"", b"", subtree])
                sequence += 1
                await pub.send([b"/client/x", seq(sequence), b"%016d" % sequence, b"", b"v"])
        finally:
            router.close()
            pub.close()

    asyncio.get_running_loop().create_task(serve())
    assert router.last_endpoint and pub.last_endpoint
    return router.last_endpoint, pub.last_endpoint, asked


def test_a_client_of_the_whole_map_says_clonesrv5_never_answers_it(tk_backend: str) -> None:
    events: list[CloneEvent] = []

    async def main(h: Harness) -> tuple[CloneClient, CloneClient, list[bytes]]:
        stop = asyncio.Event()
        snapshot, updates, asked = await _model5_server(h, stop)
        whole = CloneClient(
            h.network("cli"),
            snapshot=snapshot,
            updates=updates,
            timeout=0.1,
            on_event=events.append,
        )
        part = CloneClient(
            h.network("cli"), snapshot=snapshot, updates=updates, subtree=b"/client/", timeout=0.5
        )
        async with whole, part:
            await part.wait_for(lambda c: c.synced and c.stats.updates >= 2, 5.0)
            await whole.wait_for(lambda c: c.stats.unanswered_snapshots >= 2, 5.0)
            assert not whole.synced
        stop.set()
        await asyncio.sleep(0.06)
        return whole, part, asked

    with open_harness(tk_backend) as h:
        whole, part, asked = h.run(main(h), timeout=20.0)
    assert whole.stats.snapshots == 0
    assert whole.stats.timeouts >= whole.stats.unanswered_snapshots >= 2
    assert [e.kind for e in events].count("timeout") >= 2  # said, not silent
    assert b"" in asked and b"/client/" in asked
    assert part.stats.unanswered_snapshots == 0 and part.stats.snapshots >= 1


def test_collector_kinds_are_validated() -> None:
    with open_harness("sim") as h:
        net = h.network("n")
        for kind in (SocketKind.PUB, SocketKind.PUSH, SocketKind.ROUTER, "pull"):
            with pytest.raises(ValueError, match="collector_kind"):
                CloneServer(
                    net,
                    publisher=h.bind_endpoint(),
                    snapshot=h.bind_endpoint(),
                    collector_kind=kind,
                )  # type: ignore[arg-type]
        for kind in (SocketKind.SUB, SocketKind.PULL, SocketKind.DEALER, "push"):
            with pytest.raises(ValueError, match="collector_kind"):
                CloneClient(net, snapshot="inproc://s", updates="inproc://u", collector_kind=kind)  # type: ignore[arg-type]


# -- raw pyzmq model-5 peers (zmq backend) --------------------------------------------------


@pytest.fixture
def ctx() -> Iterator[zmq.asyncio.Context]:
    context = zmq.asyncio.Context()
    yield context
    context.destroy(linger=0)


def _sock(ctx: zmq.asyncio.Context, kind: int) -> zmq.asyncio.Socket:
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    return sock


async def _recv(sock: zmq.asyncio.Socket, timeout: float = 3.0) -> list[bytes]:
    return list(await asyncio.wait_for(sock.recv_multipart(), timeout))


def test_a_clonecli5_push_peer_is_collected_sequenced_republished_and_expired(
    ctx: zmq.asyncio.Context,
) -> None:
    async def main(net: ZmqNetwork) -> CloneServer:
        server = CloneServer(
            net,
            publisher="tcp://127.0.0.1:*",
            snapshot="tcp://127.0.0.1:*",
            collector="tcp://127.0.0.1:*",
            collector_kind=SocketKind.PULL,
            heartbeat=0.05,
        )
        async with server:
            await server.set(b"/client/0", b"zero")
            assert server.publisher_endpoint and server.collector_endpoint
            sub = _sock(ctx, zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, b"")
            sub.connect(server.publisher_endpoint)
            push = _sock(ctx, zmq.PUSH)  # clonecli5's publisher
            push.connect(server.collector_endpoint)
            while (await _recv(sub))[0] != HUGZ:
                pass  # subscribed: nothing republished from here on is missed
            one, two = uuid.uuid4().bytes, uuid.uuid4().bytes
            await push.send_multipart([b"/client/17", seq(0), one, b"ttl=0.1\n", b"4711"])
            await push.send_multipart([b"/client/42", seq(0), two, b"ttl=0\n", b"99"])
            updates: list[list[bytes]] = []
            while len(updates) < 3:  # the two updates, then the expiry's deletion
                if (msg := await _recv(sub))[0] != HUGZ:
                    updates.append(msg)
            assert updates == [
                [b"/client/17", seq(2), one, b"ttl=0.1\n", b"4711"],
                [b"/client/42", seq(3), two, b"ttl=0\n", b"99"],
                [b"/client/17", seq(4), one, b"", b""],  # its TTL ran out: deleted
            ]
            assert server.values == {b"/client/0": b"zero", b"/client/42": b"99"}
            for sock in (sub, push):
                sock.close(0)
        return server

    with ZmqNetwork(name="clonesrv") as net:
        server = asyncio.run(asyncio.wait_for(main(net), 20.0))
    assert server.stats.collected == 2 and server.stats.expired == 1
    assert server.sequence == 4 and server.stats.malformed == 0


def test_our_push_client_sends_exact_kvset_frames_to_a_raw_pull_collector(
    ctx: zmq.asyncio.Context,
) -> None:
    async def main(net: ZmqNetwork) -> CloneClient:
        pull = _sock(ctx, zmq.PULL)  # clonesrv5's collector
        pull.bind("tcp://127.0.0.1:*")
        endpoint = pull.getsockopt_string(zmq.LAST_ENDPOINT)
        client = CloneClient(
            net,
            snapshot="tcp://127.0.0.1:1",
            updates="tcp://127.0.0.1:1",
            collector=endpoint,
            collector_kind=SocketKind.PUSH,
        )
        try:
            uid = await client.set(b"/client/1", b"v", ttl=2.5, uuid=b"u" * 16)
            generated = await client.set(b"/client/2", b"w", properties={"a": "b=c"})
            await client.delete(b"/client/1")
            assert await _recv(pull) == [b"/client/1", seq(0), uid, b"ttl=2.500\n", b"v"]
            assert await _recv(pull) == [b"/client/2", seq(0), generated, b"a=b=c\n", b"w"]
            frames = await _recv(pull)
            assert frames[:2] == [b"/client/1", seq(0)] and frames[3:] == [b"", b""]
            assert len(generated) == len(frames[2]) == 16
        finally:
            await client.close()
            pull.close(0)
        return client

    with ZmqNetwork(name="clonecli") as net:
        client = asyncio.run(asyncio.wait_for(main(net), 20.0))
    assert client.stats.sets == 3


def test_the_examples_take_a_collector_kind() -> None:
    assert clonesrv.parse_args([]).collector_kind == "sub"
    assert clonesrv.parse_args(["--collector-kind", "pull"]).collector_kind == "pull"
    assert clonecli.parse_args([]).collector_kind == "pub"
    assert clonecli.parse_args(["--collector-kind", "push"]).collector_kind == "push"
    with pytest.raises(SystemExit):
        clonesrv.parse_args(["--collector-kind", "push"])
