"""Every pattern takes security settings per socket: CURVE end to end on tcp.

Each test runs the pattern over real sockets (the zmq backend), the servers as CURVE
servers behind an authenticator that admits only the test's client keys, and checks
both that an allowed client is served and, where cheap, that a stranger is not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from transportkit import Message, ServiceUnavailableError, SocketOptions
from transportkit.patterns.binary_star import BinaryStarClient, BinaryStarServer, BStarState
from transportkit.patterns.clone import CloneClient, ClonePairServer, CloneServer
from transportkit.patterns.freelance import FreelanceClient, FreelanceServer
from transportkit.patterns.lazy_pirate import LazyPirateClient, serve_lazy_pirate
from transportkit.patterns.load_balancing import LoadBalancingBroker, run_load_balancing_worker
from transportkit.patterns.majordomo import (
    AsyncMajordomoClient,
    MajordomoBroker,
    MajordomoClient,
    MajordomoWorker,
)
from transportkit.patterns.paranoid_pirate import ParanoidPirateQueue, ParanoidPirateWorker
from transportkit.patterns.titanic import Titanic, TitanicClient
from transportkit.security import AuthPolicy, CurveKeyPair, generate_keypair
from transportkit.testing import free_tcp_endpoint
from transportkit.zmq_backend import ZmqNetwork

T = TypeVar("T")
ANY_TCP = "tcp://127.0.0.1:*"
SERVER = generate_keypair()
CLIENT = generate_keypair()
STRANGER = generate_keypair()


def run(coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def curve_server(pair: CurveKeyPair = SERVER, **more: Any) -> SocketOptions:
    return SocketOptions(curve_server=True, curve_secretkey=pair.secret, **more)


def curve_client(pair: CurveKeyPair = CLIENT, server: CurveKeyPair = SERVER) -> SocketOptions:
    return SocketOptions(
        curve_secretkey=pair.secret,
        curve_serverkey=server.public,
        reconnect_ivl=20,
        reconnect_ivl_max=100,
    )


@pytest.fixture
def nets() -> Iterator[tuple[ZmqNetwork, ZmqNetwork]]:
    """A server network with an authenticator admitting CLIENT, and a client network."""
    server, client = ZmqNetwork(name="server"), ZmqNetwork(name="client")
    try:
        server.start_authenticator(AuthPolicy(allow_keys={CLIENT.public}))
        yield server, client
    finally:
        client.close()
        server.close()


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, Any]) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def echo(body: Message) -> Message:
    return [b"echo", *body]


def test_lazy_pirate_over_curve(nets: tuple[ZmqNetwork, ZmqNetwork]) -> None:
    server_net, client_net = nets

    async def body() -> None:
        with server_net.worker(bind=ANY_TCP, options=curve_server()) as rep:
            assert rep.last_endpoint is not None
            async with background(serve_lazy_pirate(rep, echo)):
                with LazyPirateClient(
                    client_net, rep.last_endpoint, timeout=1.0, options=curve_client()
                ) as client:
                    assert await client.request([b"risk", b"AAPL"]) == [b"echo", b"risk", b"AAPL"]
                stranger = LazyPirateClient(
                    client_net,
                    rep.last_endpoint,
                    timeout=0.2,
                    attempts=1,
                    options=curve_client(STRANGER),
                )
                with stranger, pytest.raises(ServiceUnavailableError):
                    await stranger.request([b"risk", b"AAPL"])

    run(body())


def test_majordomo_over_curve(nets: tuple[ZmqNetwork, ZmqNetwork]) -> None:
    server_net, client_net = nets

    async def body() -> None:
        broker = MajordomoBroker(server_net, ANY_TCP, options=curve_server())
        endpoint = broker.bind()
        async with background(broker.run()):
            worker = MajordomoWorker(client_net, endpoint, b"risk", options=curve_client())
            async with background(worker.serve(echo)):
                client = MajordomoClient(client_net, endpoint, timeout=2.0, options=curve_client())
                with client:
                    assert await client.request(b"risk", [b"q"]) == [b"echo", b"q"]
                async_client = AsyncMajordomoClient(
                    client_net, endpoint, timeout=2.0, options=curve_client()
                )
                with async_client:
                    await async_client.send(b"risk", [b"a"])
                    assert await async_client.recv() == [b"echo", b"a"]
                stranger = MajordomoClient(
                    client_net, endpoint, timeout=0.2, attempts=1, options=curve_client(STRANGER)
                )
                with stranger, pytest.raises(ServiceUnavailableError):
                    await stranger.request(b"risk", [b"q"])
            worker.close()
        broker.stop()

    run(body())


def test_clone_over_curve(nets: tuple[ZmqNetwork, ZmqNetwork]) -> None:
    """The server's three sockets are CURVE servers, the client's three CURVE clients."""
    server_net, client_net = nets

    async def body() -> None:
        server = CloneServer(
            server_net,
            publisher=ANY_TCP,
            snapshot=ANY_TCP,
            collector=ANY_TCP,
            heartbeat=0.1,
            publisher_options=curve_server(),
            snapshot_options=curve_server(),
            collector_options=curve_server(),
        )
        async with server:
            await server.set(b"/px/AAPL", b"187.25")
            assert server.snapshot_endpoint and server.publisher_endpoint
            assert server.collector_endpoint
            client = CloneClient(
                client_net,
                snapshot=server.snapshot_endpoint,
                updates=server.publisher_endpoint,
                collector=server.collector_endpoint,
                heartbeat=0.1,
                subscriber_options=curve_client(),
                snapshot_options=curve_client(),
                publisher_options=curve_client(),
            )
            async with client:
                await client.wait_for(lambda c: b"/px/AAPL" in c.messages, timeout=5.0)
                # Through the collector (a CURVE PUB to the server's SUB) and back.
                await client.wait_for(lambda c: c.stats.snapshots >= 1, timeout=5.0)
                for _ in range(50):
                    await client.set(b"/px/MSFT", b"411.10")
                    with contextlib.suppress(TimeoutError):
                        await client.wait_for(lambda c: b"/px/MSFT" in c.messages, timeout=0.1)
                    if b"/px/MSFT" in client.messages:
                        break
                assert client.messages[b"/px/MSFT"].body == b"411.10"

    run(body())


def test_binary_star_over_curve() -> None:
    """Front ends and the peers' state PUB/SUB all CURVE: each peer is the other's
    CURVE client (its state SUB knows the peer's public key)."""
    primary_pair, backup_pair = generate_keypair(), generate_keypair()
    nets = [ZmqNetwork(name="primary"), ZmqNetwork(name="backup"), ZmqNetwork(name="client")]
    try:
        primary_net, backup_net, client_net = nets
        allowed = {CLIENT.public, primary_pair.public, backup_pair.public}
        for net in (primary_net, backup_net):
            net.start_authenticator(AuthPolicy(allow_keys=allowed))

        async def body() -> None:
            # Each peer's state SUB must name the other's state PUB: the primary's is
            # connected once the backup has bound (its placeholder dropped).
            placeholder = "tcp://127.0.0.1:1"
            primary = BinaryStarServer(
                primary_net,
                primary=True,
                frontend=ANY_TCP,
                state_pub=ANY_TCP,
                state_sub=placeholder,
                heartbeat=0.1,
                options=curve_server(SERVER),  # the service's key, on both front ends
                state_pub_options=curve_server(primary_pair),
                state_sub_options=curve_client(primary_pair, backup_pair),
            )
            assert primary.state_endpoint is not None
            backup = BinaryStarServer(
                backup_net,
                primary=False,
                frontend=ANY_TCP,
                state_pub=ANY_TCP,
                state_sub=primary.state_endpoint,
                heartbeat=0.1,
                options=curve_server(SERVER),
                state_pub_options=curve_server(backup_pair),
                state_sub_options=curve_client(backup_pair, primary_pair),
            )
            assert backup.state_endpoint is not None
            primary._state_sub.connect(backup.state_endpoint)
            primary._state_sub.disconnect(placeholder)
            async with primary, backup:
                # The backup goes PASSIVE only on hearing the primary's ACTIVE state:
                # proof that the CURVE state channel carries messages.
                for _ in range(60):
                    if backup.state is BStarState.PASSIVE:
                        break
                    await asyncio.sleep(0.05)
                assert backup.state is BStarState.PASSIVE
                assert primary.state is BStarState.ACTIVE
                assert primary.frontend_endpoint and backup.frontend_endpoint
                # A Binary Star client has one set of options for both servers, so
                # the two front ends share the service's key pair (the peers' state
                # channel uses each peer's own).
                client = BinaryStarClient(
                    client_net,
                    [primary.frontend_endpoint, backup.frontend_endpoint],
                    timeout=0.3,
                    settle_delay=0.05,
                    options=curve_client(),
                )
                with client:
                    assert await client.request([b"hello"]) == [b"hello"]
                    await primary.close()  # fail over, to the same key on the backup
                    assert await client.request([b"again"]) == [b"again"]
                    assert backup.state is BStarState.ACTIVE
                    assert backup.stats.served == 1

        run(body())
    finally:
        for net in reversed(nets):
            net.close()


def test_a_broker_with_a_curve_front_end_and_a_plain_ipc_back_end(
    nets: tuple[ZmqNetwork, ZmqNetwork], tmp_path: Path
) -> None:
    server_net, client_net = nets
    backend = f"ipc://{tmp_path}/lb-back"

    async def body() -> None:
        with LoadBalancingBroker(
            server_net,
            frontend=ANY_TCP,
            backend=backend,
            options=curve_server(),
            backend_options=SocketOptions(),
        ) as broker:
            assert broker.frontend.options.curve_server
            assert not broker.backend.options.curve_server
            async with (
                background(broker.run()),
                background(run_load_balancing_worker(server_net, backend, echo)),
            ):
                with client_net.requester(
                    connect=broker.frontend_endpoint, options=curve_client()
                ) as req:
                    reply = await req.request([b"job"], timeout=3.0)
                    assert reply == [b"echo", b"job"]

    run(body())


def test_paranoid_pirate_queue_with_curve_on_both_sides(
    nets: tuple[ZmqNetwork, ZmqNetwork],
) -> None:
    """Front end and back end each with their own key pair; the worker is a CURVE
    client of the back end, the client of the front end."""
    server_net, client_net = nets
    back_pair = generate_keypair()

    async def body() -> None:
        with ParanoidPirateQueue(
            server_net,
            frontend=ANY_TCP,
            backend=ANY_TCP,
            heartbeat_interval=0.1,
            options=curve_server(),
            backend_options=curve_server(back_pair),
        ) as queue:
            worker = ParanoidPirateWorker(
                client_net,
                queue.backend_endpoint,
                echo,
                heartbeat_interval=0.1,
                options=curve_client(CLIENT, back_pair),
            )
            async with background(queue.run()), background(worker.run()):
                with LazyPirateClient(
                    client_net, queue.frontend_endpoint, timeout=2.0, options=curve_client()
                ) as client:
                    assert await client.request([b"job"]) == [b"echo", b"job"]
            worker.close()

    run(body())


def test_backend_options_default_to_the_front_ends(nets: tuple[ZmqNetwork, ZmqNetwork]) -> None:
    server_net, _ = nets
    with LoadBalancingBroker(
        server_net, frontend=ANY_TCP, backend=ANY_TCP, options=curve_server()
    ) as broker:
        assert broker.backend.options.curve_server
        assert broker.backend.options.maxmsgsize == broker.frontend.options.maxmsgsize
    with LoadBalancingBroker(
        server_net,
        frontend=ANY_TCP,
        backend=ANY_TCP,
        backend_options=SocketOptions(sndhwm=77),
    ) as broker:
        # Bounded like the front end: maxmsgsize comes from max_message_bytes.
        assert broker.backend.options.sndhwm == 77
        assert broker.backend.options.maxmsgsize == broker.frontend.options.maxmsgsize
        with pytest.raises(ValueError, match="sndhwm=0"):
            LoadBalancingBroker(
                server_net,
                frontend=ANY_TCP,
                backend=ANY_TCP,
                backend_options=SocketOptions(sndhwm=0),
            )


def test_clone_pair_server_passes_each_socket_its_options(
    nets: tuple[ZmqNetwork, ZmqNetwork],
) -> None:
    """Wiring only (the pair's failover runs in test_clone_pair.py): every socket of
    the pair gets the options meant for it, the follower's included."""
    server_net, _ = nets
    peer = generate_keypair()

    async def body() -> None:
        pair = ClonePairServer(
            server_net,
            primary=False,
            publisher=ANY_TCP,
            snapshot=ANY_TCP,
            collector=ANY_TCP,
            state_pub=ANY_TCP,
            state_sub="tcp://127.0.0.1:1",
            peer_snapshot="tcp://127.0.0.1:2",
            peer_publisher="tcp://127.0.0.1:3",
            publisher_options=curve_server(sndhwm=11),
            snapshot_options=curve_server(sndhwm=12),
            collector_options=curve_server(rcvhwm=13),
            state_pub_options=curve_server(sndhwm=14),
            state_sub_options=curve_client(SERVER, peer),
            mirror_options=curve_client(SERVER, peer),
        )
        assert pair.server._publisher.options.sndhwm == 11
        assert pair.server._router.options.sndhwm == 12
        assert pair.server._collector is not None
        assert pair.server._collector.options.rcvhwm == 13
        assert pair.bstar._state_pub.options.sndhwm == 14
        assert pair.bstar._state_sub.options.curve_serverkey == peer.public
        async with pair:
            pair._follow_peer()  # what a passive server does on hearing its peer
            assert pair._mirror is not None
            assert pair._mirror._sub_options.curve_serverkey == peer.public
            assert pair._mirror._dealer_options.curve_serverkey == peer.public

    run(body())


def test_freelance_over_curve(nets: tuple[ZmqNetwork, ZmqNetwork]) -> None:
    """The Freelance client is one ROUTER to every server, so one ``curve_serverkey``:
    its servers share a key pair (here two servers, one key)."""
    server_net, client_net = nets
    endpoints = [free_tcp_endpoint(), free_tcp_endpoint()]

    async def body() -> None:
        servers = [
            FreelanceServer(server_net, bind=endpoint, handler=echo, options=curve_server())
            for endpoint in endpoints
        ]
        try:
            async with background(servers[0].run()), background(servers[1].run()):
                client = FreelanceClient(client_net, endpoints, timeout=3.0, options=curve_client())
                with client:
                    for n in range(4):
                        assert await client.request([b"%d" % n]) == [b"echo", b"%d" % n]
        finally:
            for server in servers:
                server.close()

    run(body())


def test_titanic_over_curve(nets: tuple[ZmqNetwork, ZmqNetwork], tmp_path: Path) -> None:
    """Titanic's sockets (three workers and a dispatching client of the broker) are
    all the broker's CURVE clients, with the one ``options``; so are its clients."""
    server_net, client_net = nets

    async def body() -> None:
        broker = MajordomoBroker(server_net, ANY_TCP, options=curve_server())
        endpoint = broker.bind()
        titanic = Titanic(
            client_net,
            endpoint,
            tmp_path,
            dispatch_interval=0.05,
            request_timeout=0.5,
            heartbeat_interval=0.25,
            options=curve_client(),
        )
        worker = MajordomoWorker(client_net, endpoint, b"risk", options=curve_client())
        async with (
            background(broker.run()),
            background(titanic.run()),
            background(worker.serve(echo)),
        ):
            client = TitanicClient(client_net, endpoint, timeout=1.0, options=curve_client())
            with client:
                reply = await client.call(b"risk", [b"order"], poll_interval=0.05, max_polls=60)
                assert reply == [b"echo", b"order"]
            titanic.stop()
            worker.close()
        broker.stop()

    run(body())
