"""The sim's authenticator's life, and the CURVE cases around the main ones
(issue 12, deliverable 1, the sim side): crashes, inproc, roles, odd pairs, faults
during a handshake, determinism.
"""

from __future__ import annotations

import asyncio
import errno

import pytest

from transportkit import ClosedError, OptionError, SocketOptions, Timeout
from transportkit.security import AuthPolicy, AuthStats
from transportkit.sim_backend import Constant, Node, Simulation
from transportkit.sim_backend._auth import (
    PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND,
    SimAuthenticator,
)

from .conftest import VIRTUAL_LIMIT
from .test_sim_curve import (
    CLIENT,
    ENDPOINT,
    LATENCY,
    OTHER,
    SERVER,
    _drain,
    _names,
    client_options,
    server_options,
)


def test_one_authenticator_per_node_stopped_by_close() -> None:
    sim = Simulation()
    node = sim.node("srv")
    auth = node.start_authenticator()
    assert isinstance(auth, SimAuthenticator)
    assert auth.policy == AuthPolicy()
    assert node.authenticator is auth
    with pytest.raises(OptionError, match="already has a running authenticator"):
        node.start_authenticator()
    with pytest.raises(OptionError, match="AuthPolicy"):
        auth.update("allow everyone")  # type: ignore[arg-type]
    auth.close()
    auth.close()  # idempotent
    with pytest.raises(ClosedError):
        auth.update(AuthPolicy())
    second = node.start_authenticator(AuthPolicy(allow_keys=[]))  # after a close: fine
    node.close()
    assert second.closed
    with pytest.raises(ClosedError, match="closed"):
        node.start_authenticator()
    with pytest.raises(OptionError, match="AuthPolicy"):
        sim.node("other").start_authenticator("nobody")  # type: ignore[arg-type]
    sim.close()


def test_stats_are_a_snapshot() -> None:
    sim = Simulation()
    auth = sim.node("srv").start_authenticator()
    snapshot = auth.stats
    snapshot.allowed = 99
    assert auth.stats == AuthStats()
    sim.close()


def test_a_crash_stops_the_authenticator_and_a_restart_starts_afresh() -> None:
    sim = Simulation(latency=Constant(LATENCY))
    received: list[tuple[int, list[bytes]]] = []

    async def server_main(node: Node) -> None:
        node.start_authenticator(AuthPolicy(allow_keys=[CLIENT.public]))
        with node.puller(bind="tcp://*:5555", options=server_options()) as pull:
            while True:
                received.append((node.crashes, await pull.recv()))

    srv = sim.node("srv", main=server_main)
    cli = sim.node("cli")

    async def main() -> tuple[SimAuthenticator, SimAuthenticator]:
        push = cli.pusher(connect=ENDPOINT, options=client_options())
        await push.send([b"before"])
        await asyncio.sleep(0.1)
        first = srv.authenticator
        assert first is not None
        sim.crash("srv")
        assert first.closed
        with pytest.raises(ClosedError):
            first.update(AuthPolicy())
        with pytest.raises(ClosedError, match="down"):
            srv.start_authenticator()
        await asyncio.sleep(0.3)
        sim.restart("srv")
        await asyncio.sleep(0.3)  # the client reconnects: the new authenticator decides
        await push.send([b"after"])
        await asyncio.sleep(0.1)
        second = srv.authenticator
        assert second is not None
        return first, second

    try:
        first, second = sim.run(main(), timeout=VIRTUAL_LIMIT)
        assert received == [(0, [b"before"]), (1, [b"after"])]
        assert first is not second
        assert first.stats == AuthStats(allowed=1)
        assert second.stats == AuthStats(allowed=1)
        assert not second.closed
        stops = [e.detail for e in sim.trace.events if e.kind == "auth-stop"]
        assert stops == ["crash"]
    finally:
        sim.close()


def test_inproc_ignores_curve() -> None:
    """libzmq never secures inproc: CURVE options there have no effect (the server
    admits a plaintext client, and a client with a wrong server key), and the node's
    authenticator is not asked.
    """
    sim = Simulation()
    node = sim.node("app")

    async def main() -> list[list[bytes]]:
        auth = node.start_authenticator(AuthPolicy(allow_keys=[]))
        got = []
        with node.puller(bind="inproc://orders", options=server_options()) as pull:
            for n, options in enumerate(
                [SocketOptions(), client_options(serverkey=OTHER.public), client_options()]
            ):
                with node.pusher(connect="inproc://orders", options=options) as push:
                    await push.send([b"order-%d" % n])
                    got.append(await pull.recv(timeout=0.1))
        assert auth.stats == AuthStats()
        return got

    try:
        assert sim.run(main(), timeout=VIRTUAL_LIMIT) == [[b"order-0"], [b"order-1"], [b"order-2"]]
        assert not any(e.kind in ("handshake", "handshake-failed", "zap") for e in sim.trace.events)
    finally:
        sim.close()


def test_the_curve_server_may_be_the_connecting_side() -> None:
    """Roles follow the options, not bind/connect: a CURVE server connecting to a
    binding CURVE client asks its own node's authenticator about the binder.
    """
    sim = Simulation(latency=Constant(LATENCY))
    feed, trader = sim.node("feed"), sim.node("trader")

    async def main(allowed: list[bytes]) -> list[bytes]:
        auth = feed.authenticator or feed.start_authenticator()
        auth.update(AuthPolicy(allow_keys=allowed))
        with (
            trader.puller(bind="tcp://*:7000", options=client_options()) as pull,
            feed.pusher(connect="tcp://trader:7000", options=server_options()) as push,
        ):
            await push.send([b"tick"])
            try:
                return await pull.recv(timeout=0.2)
            except Timeout:
                return []

    try:
        assert sim.run(main([CLIENT.public])) == [b"tick"]
        assert sim.run(main([OTHER.public])) == []
        assert feed.authenticator is not None
        # Refused, the binding client closes the connection: a connection error for
        # the connecting server, which retries (libzmq's session logic) and is refused
        # again 100 ms later, within the 0.2 s of the run.
        assert feed.authenticator.stats == AuthStats(allowed=1, denied_key=2)
    finally:
        sim.close()


Events = list[tuple[str, int]]


def _pair_of(server: SocketOptions, client: SocketOptions, seconds: float) -> tuple[Events, Events]:
    sim = Simulation(latency=Constant(LATENCY))
    a, b = sim.node("srv"), sim.node("cli")

    async def main() -> tuple[Events, Events]:
        pull = a.puller(bind="tcp://*:5555", options=server)
        mon_a = pull.monitor()
        push = b.pusher(options=client)
        mon_b = push.monitor()
        push.connect(ENDPOINT)
        await asyncio.sleep(seconds)
        assert pull.try_recv() is None
        return _drain(mon_a), _drain(mon_b)

    try:
        return sim.run(main(), timeout=VIRTUAL_LIMIT)
    finally:
        sim.close()


def test_two_curve_clients_fail_on_each_others_hello() -> None:
    srv, cli = _pair_of(client_options(), client_options(), 1.0)
    unexpected = ("HANDSHAKE_FAILED_PROTOCOL", PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND)
    assert srv == [("ACCEPTED", 0), unexpected, ("DISCONNECTED", 0)]
    assert cli == [("CONNECT_DELAYED", 0), ("CONNECTED", 0), unexpected, ("DISCONNECTED", 0)]


def test_two_curve_servers_time_out_and_retry() -> None:
    srv, cli = _pair_of(server_options(), server_options(), 31.0)
    timeout = ("HANDSHAKE_FAILED_NO_DETAIL", errno.EAGAIN)
    assert srv[:3] == [("ACCEPTED", 0), timeout, ("DISCONNECTED", 0)]
    assert cli[2:5] == [timeout, ("DISCONNECTED", 0), ("CONNECT_RETRIED", 100)]


def test_a_server_closing_during_the_handshake_resets_the_client() -> None:
    sim = Simulation(latency=Constant(LATENCY))
    srv, cli = sim.node("srv"), sim.node("cli")

    async def main() -> list[str]:
        pull = srv.puller(bind="tcp://*:5555", options=server_options())
        push = cli.pusher(options=client_options())
        mon = push.monitor()
        push.connect(ENDPOINT)
        await asyncio.sleep(1.5 * LATENCY)  # connected, HELLO on its way
        pull.close()
        await asyncio.sleep(10 * LATENCY)
        return _names(_drain(mon))

    try:
        events = sim.run(main(), timeout=VIRTUAL_LIMIT)
        assert events[:5] == [
            "CONNECT_DELAYED",
            "CONNECTED",
            "HANDSHAKE_FAILED_NO_DETAIL",
            "DISCONNECTED",
            "CONNECT_RETRIED",
        ]
        failed = [e.detail for e in sim.trace.events if e.kind == "handshake-failed"]
        assert failed == [f"{ENDPOINT} peer gone"]
    finally:
        sim.close()


def test_a_partition_holds_the_handshake_until_repair() -> None:
    sim = Simulation(latency=Constant(LATENCY))
    srv, cli = sim.node("srv"), sim.node("cli")

    async def main() -> tuple[float, list[bytes]]:
        pull = srv.puller(bind="tcp://*:5555", options=server_options())
        push = cli.pusher(connect=ENDPOINT, options=client_options())
        await push.send([b"x"])
        await asyncio.sleep(1.5 * LATENCY)  # connected; HELLO in flight
        sim.partition("srv", "cli")
        await asyncio.sleep(2.0)
        assert pull.try_recv() is None
        sim.repair("srv", "cli")
        got = await pull.recv(timeout=1.0)
        return sim.now, got

    try:
        now, got = sim.run(main(), timeout=VIRTUAL_LIMIT)
        assert got == [b"x"]
        assert now == pytest.approx(2.0015 + 4 * LATENCY)  # the rest of the handshake
    finally:
        sim.close()


def _curve_run(seed: int) -> str:
    sim = Simulation(seed, latency=Constant(LATENCY), shuffle_ties=True)
    srv = sim.node("srv")

    async def main() -> None:
        srv.start_authenticator(AuthPolicy(allow_keys=[CLIENT.public], deny_ips=["c3"]))
        pull = srv.puller(bind="tcp://*:5555", options=server_options())
        for name, options in [
            ("c1", client_options()),
            ("c2", client_options(OTHER)),
            ("c3", client_options()),
            ("c4", SocketOptions()),
            ("c5", client_options(serverkey=CLIENT.public)),
        ]:
            push = sim.node(name).pusher(connect=ENDPOINT, options=options)
            push.try_send([name.encode()])
        await asyncio.sleep(0.5)
        assert pull.try_recv() == [b"c1"]
        assert pull.try_recv() is None

    try:
        sim.run(main(), timeout=VIRTUAL_LIMIT)
        return sim.trace.hash
    finally:
        sim.close()


def test_curve_runs_are_deterministic() -> None:
    assert _curve_run(3) == _curve_run(3)
    assert SERVER.public != CLIENT.public
