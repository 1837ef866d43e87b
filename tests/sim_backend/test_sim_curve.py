"""The sim models CURVE security (issue 12, deliverable 1, the sim side).

Each case is what libzmq 4.3.5 does, measured with pyzmq on real tcp sockets (the
monitor events of both ends, whether the client retries, whether its queue survives):

- allowed: ACCEPTED/HANDSHAKE_SUCCEEDED on the server, CONNECT_DELAYED/CONNECTED/
  HANDSHAKE_SUCCEEDED on the client, two round trips after the connection forms;
- a plaintext (NULL) client, or a CURVE client to a plaintext server:
  HANDSHAKE_FAILED_PROTOCOL (MECHANISM_MISMATCH) on both ends, no retry;
- a wrong server key: HANDSHAKE_FAILED_PROTOCOL (CRYPTOGRAPHIC) on the server,
  HANDSHAKE_FAILED_NO_DETAIL on the client, which retries every reconnect interval
  and keeps its queue;
- refused by the authenticator (key or address): HANDSHAKE_FAILED_AUTH (400) on both
  ends, no retry (the client's session ends), its queue lost.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Iterator

import pytest

from transportkit import SocketOptions, Timeout
from transportkit._curve import z85_encode
from transportkit._socket import Monitor
from transportkit.security import AuthPolicy, AuthStats, CurveKeyPair, public_key
from transportkit.sim_backend import Constant, Node, Simulation
from transportkit.sim_backend._auth import (
    PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC,
    PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH,
)

from .conftest import VIRTUAL_LIMIT


def _pair(n: int) -> CurveKeyPair:
    """A fixed key pair (deterministic, no randomness)."""
    secret = z85_encode(bytes([n]) * 32)
    return CurveKeyPair(public=public_key(secret), secret=secret)


SERVER = _pair(1)
CLIENT = _pair(2)
OTHER = _pair(3)
LATENCY = 0.001
ENDPOINT = "tcp://srv:5555"


def server_options(**extra: object) -> SocketOptions:
    return SocketOptions(curve_server=True, curve_secretkey=SERVER.secret, **extra)  # type: ignore[arg-type]


def client_options(
    pair: CurveKeyPair = CLIENT, serverkey: bytes = SERVER.public, **extra: object
) -> SocketOptions:
    return SocketOptions(
        curve_secretkey=pair.secret,
        curve_serverkey=serverkey,
        **extra,  # type: ignore[arg-type]
    )


def _drain(mon: Monitor) -> list[tuple[str, int]]:
    events = []
    while (event := mon.try_recv()) is not None:
        events.append((event.name, event.value))
    return events


def _names(events: list[tuple[str, int]]) -> list[str]:
    return [name for name, _ in events]


class World:
    """A server node ``srv`` (PULL bound on :5555) and client nodes, 1 ms links."""

    def __init__(self, seed: int = 0) -> None:
        self.sim = Simulation(seed, latency=Constant(LATENCY))
        self.srv: Node = self.sim.node("srv")
        self.cli: Node = self.sim.node("cli")

    def close(self) -> None:
        self.sim.close()

    def failures(self) -> list[tuple[str, str]]:
        return [
            (e.subject, e.detail) for e in self.sim.trace.events if e.kind == "handshake-failed"
        ]


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.close()


def _outcome(
    world: World,
    client: SocketOptions,
    *,
    server: SocketOptions | None = None,
    policy: AuthPolicy | None = None,
    authenticator: bool = True,
    seconds: float = 1.0,
) -> tuple[list[bytes], list[tuple[str, int]], list[tuple[str, int]], int, AuthStats | None]:
    """Run one client (PUSH on ``cli``) against the server for ``seconds``: what the
    server received, both monitors' events, the client's drops, the auth stats.
    """

    async def main() -> tuple[list[bytes], list[tuple[str, int]], list[tuple[str, int]], int]:
        auth = world.srv.start_authenticator(policy) if authenticator else None
        del auth
        pull = world.srv.puller(bind="tcp://*:5555", options=server or server_options())
        srv_mon = pull.monitor()
        push = world.cli.pusher(options=client)
        cli_mon = push.monitor()
        push.connect(ENDPOINT)
        await push.send([b"order-1"])
        got: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                got.extend(await pull.recv(timeout=left))
            except Timeout:
                break
        dropped = push.stats.dropped
        assert dropped is not None
        return got, _drain(srv_mon), _drain(cli_mon), dropped

    got, srv_events, cli_events, dropped = world.sim.run(main(), timeout=VIRTUAL_LIMIT)
    auth = world.srv.authenticator
    return got, srv_events, cli_events, dropped, None if auth is None else auth.stats


def test_an_allowed_client_is_served_after_two_round_trips(world: World) -> None:
    got, srv_events, cli_events, dropped, stats = _outcome(
        world, client_options(), policy=AuthPolicy(allow_keys=[CLIENT.public])
    )
    assert got == [b"order-1"]
    assert _names(srv_events) == ["ACCEPTED", "HANDSHAKE_SUCCEEDED"]
    assert _names(cli_events) == ["CONNECT_DELAYED", "CONNECTED", "HANDSHAKE_SUCCEEDED"]
    assert dropped == 0
    assert stats == AuthStats(allowed=1)
    delivered = [e.time for e in world.sim.trace.events if e.kind == "deliver"]
    # connect: 1 link delay; HELLO/WELCOME/INITIATE/READY: 4 more; the message: 1 more.
    assert delivered == [pytest.approx(6 * LATENCY)]
    assert world.failures() == []


def test_a_plaintext_connection_still_takes_one_link_delay() -> None:
    w = World()
    try:
        got, *_ = _outcome(w, SocketOptions(), server=SocketOptions(), authenticator=False)
        assert got == [b"order-1"]
        delivered = [e.time for e in w.sim.trace.events if e.kind == "deliver"]
        assert delivered == [pytest.approx(2 * LATENCY)]
        assert not any(e.kind.startswith(("handshake-", "zap", "auth")) for e in w.sim.trace.events)
    finally:
        w.close()


def test_a_plaintext_client_is_refused_as_a_mechanism_mismatch(world: World) -> None:
    got, srv_events, cli_events, dropped, stats = _outcome(world, SocketOptions())
    assert got == []
    mismatch = ("HANDSHAKE_FAILED_PROTOCOL", PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    assert srv_events == [("ACCEPTED", 0), mismatch, ("DISCONNECTED", 0)]
    assert cli_events == [
        ("CONNECT_DELAYED", 0),
        ("CONNECTED", 0),
        mismatch,
        ("DISCONNECTED", 0),
    ]  # no CONNECT_RETRIED: libzmq ends the session on a protocol error
    assert dropped == 1  # the queued order went with the session's pipe
    assert stats == AuthStats()  # never reaches the authenticator
    assert world.failures() == [
        ("srv/pull0", f"{ENDPOINT} mechanism-mismatch NULL to CURVE-server"),
        ("cli/push0", f"{ENDPOINT} mechanism-mismatch NULL to CURVE-server"),
    ]


def test_a_curve_client_of_a_plaintext_server_is_refused_too(world: World) -> None:
    got, srv_events, cli_events, _, _ = _outcome(
        world, client_options(), server=SocketOptions(), authenticator=False
    )
    assert got == []
    mismatch = ("HANDSHAKE_FAILED_PROTOCOL", PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    assert mismatch in srv_events
    assert mismatch in cli_events
    assert "CONNECT_RETRIED" not in _names(cli_events)


def test_a_wrong_server_key_fails_every_retry_and_keeps_the_queue(world: World) -> None:
    got, srv_events, cli_events, dropped, stats = _outcome(
        world, client_options(serverkey=OTHER.public), seconds=0.55
    )
    assert got == []
    crypto = ("HANDSHAKE_FAILED_PROTOCOL", PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
    reset = ("HANDSHAKE_FAILED_NO_DETAIL", errno.EPIPE)
    # The first attempt and one retry every 100 ms: 6 attempts in 0.55 s.
    assert srv_events == [("ACCEPTED", 0), crypto, ("DISCONNECTED", 0)] * 6
    assert cli_events[:6] == [
        ("CONNECT_DELAYED", 0),
        ("CONNECTED", 0),
        reset,
        ("DISCONNECTED", 0),
        ("CONNECT_RETRIED", 100),
        ("CONNECTED", 0),
    ]
    assert _names(cli_events).count("CONNECT_RETRIED") == 6
    assert dropped == 0  # the order waits in the pipe across the retries
    assert stats == AuthStats()  # HELLO fails before the authenticator is asked


def test_a_key_not_on_the_list_is_refused_and_not_retried(world: World) -> None:
    got, srv_events, cli_events, dropped, stats = _outcome(
        world, client_options(), policy=AuthPolicy(allow_keys=[OTHER.public]), seconds=2.0
    )
    assert got == []
    denied = ("HANDSHAKE_FAILED_AUTH", 400)
    assert srv_events == [("ACCEPTED", 0), denied, ("DISCONNECTED", 0)]
    assert cli_events == [("CONNECT_DELAYED", 0), ("CONNECTED", 0), denied, ("DISCONNECTED", 0)]
    assert dropped == 1
    assert stats == AuthStats(denied_key=1)  # one handshake in 2 s: no retry
    assert world.failures() == [
        ("srv/pull0", f"{ENDPOINT} zap denied_key"),
        ("cli/push0", f"{ENDPOINT} zap denied_key"),
    ]


def test_an_empty_allow_list_allows_nobody(world: World) -> None:
    got, *_, stats = _outcome(world, client_options(), policy=AuthPolicy(allow_keys=[]))
    assert got == []
    assert stats == AuthStats(denied_key=1)


def test_without_an_authenticator_any_valid_client_gets_in(world: World) -> None:
    got, *_, stats = _outcome(world, client_options(OTHER), authenticator=False)
    assert got == [b"order-1"]
    assert stats is None


@pytest.mark.parametrize(
    ("policy", "served", "expected"),
    [
        (AuthPolicy(deny_ips=["cli"]), False, AuthStats(denied_ip=1)),
        (AuthPolicy(deny_ips=["elsewhere"]), True, AuthStats(allowed=1)),
        (AuthPolicy(allow_ips=["elsewhere"]), False, AuthStats(denied_ip=1)),
        (AuthPolicy(allow_ips=["cli"]), True, AuthStats(allowed=1)),
        # An allowed address never replaces the key check.
        (AuthPolicy(allow_ips=["cli"], allow_keys=[OTHER.public]), False, AuthStats(denied_key=1)),
        # allow_ips set: deny_ips is ignored (pyzmq's rule).
        (AuthPolicy(allow_ips=["cli"], deny_ips=["cli"]), True, AuthStats(allowed=1)),
    ],
)
def test_the_address_is_the_client_nodes_name(
    world: World, policy: AuthPolicy, served: bool, expected: AuthStats
) -> None:
    got, srv_events, _, _, stats = _outcome(world, client_options(), policy=policy)
    assert (got == [b"order-1"]) is served
    assert stats == expected
    assert (("HANDSHAKE_FAILED_AUTH", 400) in srv_events) is not served


@pytest.mark.parametrize(
    ("policy_domain", "socket_domain", "served"),
    [("*", "", True), ("*", "global", True), ("global", "global", True), ("global", "", False)],
)
def test_the_zap_domain(world: World, policy_domain: str, socket_domain: str, served: bool) -> None:
    got, *_ = _outcome(
        world,
        client_options(),
        server=server_options(zap_domain=socket_domain),
        policy=AuthPolicy(domain=policy_domain),
    )
    assert (got == [b"order-1"]) is served


def test_over_ipc_the_address_is_empty() -> None:
    sim = Simulation(latency=Constant(LATENCY))
    srv, cli = sim.node("srv"), sim.node("cli")

    async def main(policy: AuthPolicy, path: str) -> list[bytes]:
        auth = srv.authenticator
        if auth is None or auth.closed:
            srv.start_authenticator(policy)
        else:
            auth.update(policy)
        with (
            srv.puller(bind=path, options=server_options()) as pull,
            cli.pusher(connect=path, options=client_options()) as push,
        ):
            await push.send([b"x"])
            try:
                return await pull.recv(timeout=0.1)
            except Timeout:
                return []

    try:
        assert sim.run(main(AuthPolicy(), "ipc:///tmp/tk-a")) == [b"x"]
        assert sim.run(main(AuthPolicy(allow_ips=["cli"]), "ipc:///tmp/tk-b")) == []
        assert sim.run(main(AuthPolicy(allow_ips=[""]), "ipc:///tmp/tk-c")) == [b"x"]
    finally:
        sim.close()


def test_update_applies_to_later_handshakes_only(world: World) -> None:
    async def main() -> tuple[list[bytes], list[bytes], AuthStats]:
        auth = world.srv.start_authenticator(AuthPolicy(allow_keys=[CLIENT.public]))
        pull = world.srv.puller(bind="tcp://*:5555", options=server_options())
        first = world.cli.pusher(connect=ENDPOINT, options=client_options())
        await first.send([b"a"])
        assert await pull.recv(timeout=1.0) == [b"a"]
        auth.update(AuthPolicy(allow_keys=[OTHER.public]))
        assert auth.policy == AuthPolicy(allow_keys=[OTHER.public])
        await first.send([b"b"])  # the connection made before the update stays
        kept = await pull.recv(timeout=1.0)
        second = world.sim.node("cli2").pusher(connect=ENDPOINT, options=client_options())
        third = world.sim.node("cli3").pusher(connect=ENDPOINT, options=client_options(OTHER))
        await second.send([b"refused"])
        await third.send([b"c"])
        later = [await pull.recv(timeout=1.0)]
        with pytest.raises(Timeout):
            await pull.recv(timeout=0.5)
        return kept, later[0], auth.stats

    kept, later, stats = world.sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert kept == [b"b"]
    assert later == [b"c"]
    assert stats == AuthStats(allowed=2, denied_key=1)


def test_a_refused_client_gets_in_by_connecting_again_after_an_update(world: World) -> None:
    async def main() -> tuple[AuthStats, AuthStats, list[bytes]]:
        auth = world.srv.start_authenticator(AuthPolicy(allow_keys=[]))
        pull = world.srv.puller(bind="tcp://*:5555", options=server_options())
        push = world.cli.pusher(connect=ENDPOINT, options=client_options(reconnect_ivl=100))
        push.try_send([b"lost"])
        await asyncio.sleep(1.0)  # ten reconnect intervals: libzmq does not retry
        refused = auth.stats
        auth.update(AuthPolicy(allow_keys=[CLIENT.public]))
        push.disconnect(ENDPOINT)  # the endpoint is still known, as in libzmq
        push.connect(ENDPOINT)
        await push.send([b"again"])
        got = await pull.recv(timeout=1.0)
        return refused, auth.stats, got

    refused, after, got = world.sim.run(main(), timeout=VIRTUAL_LIMIT)
    assert refused == AuthStats(denied_key=1)
    assert after == AuthStats(allowed=1, denied_key=1)
    assert got == [b"again"]


def test_immediate_clients_have_no_pipe_until_the_handshake_succeeds(world: World) -> None:
    async def main() -> int:
        world.srv.start_authenticator(AuthPolicy(allow_keys=[]))
        world.srv.puller(bind="tcp://*:5555", options=server_options())
        push = world.cli.pusher(
            connect=ENDPOINT, options=client_options(immediate=True, sndtimeo=500)
        )
        with pytest.raises(Timeout):
            await push.send([b"x"])  # refused: never a pipe to queue to
        dropped = push.stats.dropped
        assert dropped is not None
        return dropped

    assert world.sim.run(main(), timeout=VIRTUAL_LIMIT) == 0


@pytest.mark.parametrize(
    ("zap_domain", "policy", "served", "expected"),
    [
        ("global", AuthPolicy(deny_ips=["cli"]), False, AuthStats(denied_ip=1)),
        ("global", AuthPolicy(allow_ips=["cli"], allow_keys=[]), True, AuthStats(allowed=1)),
        ("global", AuthPolicy(domain="other"), False, AuthStats(denied_key=1)),
        ("", AuthPolicy(deny_ips=["cli"]), True, AuthStats()),  # no domain: never asked
    ],
)
def test_a_plaintext_server_with_a_zap_domain_asks_about_addresses(
    world: World, zap_domain: str, policy: AuthPolicy, served: bool, expected: AuthStats
) -> None:
    """libzmq's NULL mechanism asks the ZAP handler when the socket has a domain
    (measured on 4.3.5: a denied address gives HANDSHAKE_FAILED_AUTH 400 on both
    ends and no retry); keys play no part.
    """
    got, srv_events, cli_events, dropped, stats = _outcome(
        world,
        SocketOptions(),
        server=SocketOptions(zap_domain=zap_domain),
        policy=policy,
    )
    assert (got == [b"order-1"]) is served
    assert stats == expected
    if served:
        assert _names(cli_events) == ["CONNECT_DELAYED", "CONNECTED", "HANDSHAKE_SUCCEEDED"]
    else:
        denied = ("HANDSHAKE_FAILED_AUTH", 400)
        assert srv_events == [("ACCEPTED", 0), denied, ("DISCONNECTED", 0)]
        assert cli_events == [
            ("CONNECT_DELAYED", 0),
            ("CONNECTED", 0),
            denied,
            ("DISCONNECTED", 0),
        ]
        assert dropped == 1
