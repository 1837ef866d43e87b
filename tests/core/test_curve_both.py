"""An auth misconfiguration fails the same test on both backends (issue 12, deliverable 1).

Each case runs on the sim and on real tcp sockets with the same assertions: an allowed
client is served; a client with no keys, a wrong server key, a key not on the list or
a denied address never delivers a message, and the monitors report what libzmq 4.3.5
reports (measured there): ``HANDSHAKE_FAILED_PROTOCOL`` on the server for a wrong
server key (the client retries), and on the client for a plaintext client (which then
stops), ``HANDSHAKE_FAILED_AUTH`` on both ends for a refusal by the authenticator,
after which the client does not retry.

The zmq runs need the zmq backend's authenticator: they are skipped while
``ZmqNetwork`` does not override :meth:`Network.start_authenticator` (and only then).
"""

from __future__ import annotations

import asyncio

import pytest

from transportkit import Network, SocketOptions, Timeout
from transportkit._curve import z85_encode
from transportkit._socket import Monitor
from transportkit.security import AuthPolicy, AuthStats, CurveKeyPair, public_key
from transportkit.testing import Harness
from transportkit.testing._checks import wait_for_event
from transportkit.zmq_backend import ZmqNetwork

ZMQ_AUTHENTICATOR = ZmqNetwork.start_authenticator is not Network.start_authenticator

WAIT = 2.0
"""Seconds (virtual on the sim) to wait for a monitor event or a message."""


def _pair(n: int) -> CurveKeyPair:
    secret = z85_encode(bytes([n]) * 32)
    return CurveKeyPair(public=public_key(secret), secret=secret)


SERVER = _pair(11)
CLIENT = _pair(12)
STRANGER = _pair(13)


def _needs_authenticator(h: Harness) -> None:
    if h.name == "zmq" and not ZMQ_AUTHENTICATOR:
        pytest.skip("ZmqNetwork has no start_authenticator override on this branch yet")


def _client_address(h: Harness) -> str:
    """The address the server's authenticator sees for a client on network ``cli``:
    on the sim the client node's name, on zmq (every network on this machine) loopback.
    """
    return "cli" if h.name == "sim" else "127.0.0.1"


def _server_options() -> SocketOptions:
    return SocketOptions(curve_server=True, curve_secretkey=SERVER.secret, linger=0)


def _client_options(pair: CurveKeyPair = CLIENT, serverkey: bytes = SERVER.public) -> SocketOptions:
    return SocketOptions(
        curve_secretkey=pair.secret, curve_serverkey=serverkey, linger=0, reconnect_ivl=50
    )


async def _names_within(monitor: Monitor, seconds: float) -> list[str]:
    names = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            names.append((await monitor.recv(timeout=left)).name)
        except Timeout:
            break
    return names


def test_an_allowed_client_is_served(tk_harness: Harness) -> None:
    h = tk_harness
    _needs_authenticator(h)
    srv, cli = h.network("srv"), h.network("cli")

    async def main() -> list[bytes]:
        auth = srv.start_authenticator(
            AuthPolicy(allow_keys=[CLIENT.public], allow_ips=[_client_address(h)])
        )
        with srv.puller(options=_server_options()) as pull:
            monitor = pull.monitor()
            endpoint = pull.bind(h.endpoint("tcp"))
            with cli.pusher(connect=endpoint, options=_client_options()) as push:
                await push.send([b"order-1"])
                got = await pull.recv(timeout=WAIT)
                await wait_for_event(monitor, "HANDSHAKE_SUCCEEDED", 1, WAIT)
                monitor.close()
                assert auth.stats.allowed == 1
                return got

    assert h.run(main(), timeout=30.0) == [b"order-1"]


PROTOCOL = ("HANDSHAKE_FAILED_PROTOCOL",)
EITHER = ("HANDSHAKE_FAILED_PROTOCOL", "HANDSHAKE_FAILED_NO_DETAIL")
AUTH = ("HANDSHAKE_FAILED_AUTH",)

REFUSED = {
    # case: (client options, policy, server's failure events, client's final event)
    # A plaintext client: libzmq races on real sockets (the end that reads the other's
    # greeting first fails with PROTOCOL and closes; the other may see the close
    # first, NO_DETAIL, and the client then retries), until an attempt where the
    # client reads the mismatch: PROTOCOL, and its session ends. The sim models that
    # last attempt (measured alone with pyzmq: PROTOCOL on both ends, once).
    "no keys": (SocketOptions(linger=0, reconnect_ivl=50), AuthPolicy(), EITHER, PROTOCOL[0]),
    "wrong server key": (
        _client_options(serverkey=STRANGER.public),
        AuthPolicy(),
        PROTOCOL,
        "HANDSHAKE_FAILED_NO_DETAIL",
    ),
    "key not on the list": (
        _client_options(),
        AuthPolicy(allow_keys=[STRANGER.public]),
        AUTH,
        AUTH[0],
    ),
    "address denied": (
        _client_options(),
        None,  # deny_ips=[the client's address], set per backend
        AUTH,
        AUTH[0],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_client_never_delivers(tk_harness: Harness, case: str) -> None:
    h = tk_harness
    _needs_authenticator(h)
    client_options, policy, server_events, client_event = REFUSED[case]
    if policy is None:
        policy = AuthPolicy(deny_ips=[_client_address(h)])
    srv, cli = h.network("srv"), h.network("cli")

    async def main() -> tuple[list[str], list[str], AuthStats]:
        auth = srv.start_authenticator(policy)
        with srv.puller(options=_server_options()) as pull:
            srv_monitor = pull.monitor()
            endpoint = pull.bind(h.endpoint("tcp"))
            with cli.pusher(options=client_options) as push:
                cli_monitor = push.monitor()
                push.connect(endpoint)
                await push.send([b"must-not-arrive"])
                await wait_for_event(cli_monitor, client_event, 1, WAIT)
                # Ten reconnect intervals more: nothing is delivered, and a client
                # whose session ended (a protocol error for it) does not try again.
                later = await _names_within(cli_monitor, 0.5)
                with pytest.raises(Timeout):
                    await pull.recv(timeout=0.2)
                assert pull.stats.received == 0
                on_server = await _names_within(srv_monitor, 0.1)
                srv_monitor.close()
                cli_monitor.close()
                return later, on_server, auth.stats

    later, on_server, stats = h.run(main(), timeout=30.0)
    assert any(name in server_events for name in on_server), on_server
    assert "HANDSHAKE_SUCCEEDED" not in on_server
    if client_event == "HANDSHAKE_FAILED_NO_DETAIL":
        assert "CONNECT_RETRIED" in later  # a connection error: the client retries
    else:
        assert "CONNECT_RETRIED" not in later
    if case == "key not on the list":
        assert stats == AuthStats(denied_key=1)
    elif case == "address denied":
        assert stats == AuthStats(denied_ip=1)
    else:  # never reaches the authenticator
        assert stats == AuthStats()


def test_a_plaintext_server_with_a_zap_domain_refuses_a_denied_address(
    tk_harness: Harness,
) -> None:
    """libzmq's NULL mechanism asks the ZAP handler when the socket has a domain.

    Whether the refused client retries is a race in libzmq 4.3.5 (it does when the
    ERROR reaches it before it sent its READY: seen once in seven runs here), so only
    the refusal and the silence are asserted; the sim does not retry (the usual
    outcome).
    """
    h = tk_harness
    _needs_authenticator(h)
    srv, cli = h.network("srv"), h.network("cli")

    async def main() -> AuthStats:
        auth = srv.start_authenticator(AuthPolicy(deny_ips=[_client_address(h)]))
        with srv.puller(options=SocketOptions(zap_domain="global", linger=0)) as pull:
            srv_monitor = pull.monitor()
            endpoint = pull.bind(h.endpoint("tcp"))
            with cli.pusher(options=SocketOptions(linger=0, reconnect_ivl=50)) as push:
                cli_monitor = push.monitor()
                push.connect(endpoint)
                await push.send([b"must-not-arrive"])
                await wait_for_event(srv_monitor, "HANDSHAKE_FAILED_AUTH", 1, WAIT)
                await wait_for_event(cli_monitor, "HANDSHAKE_FAILED_AUTH", 1, WAIT)
                with pytest.raises(Timeout):
                    await pull.recv(timeout=0.5)
                assert pull.stats.received == 0
                srv_monitor.close()
                cli_monitor.close()
                return auth.stats

    stats = h.run(main(), timeout=30.0)
    assert stats.denied_ip >= 1
    assert stats.allowed == 0
