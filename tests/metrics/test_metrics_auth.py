"""An authenticator's counters, exported the same way on both backends.

``MetricsRegistry.watch(authenticator, name=...)`` exports every ``AuthStats`` counter
as ``transportkit_authenticator_<counter>_total{name=...}`` and the gauge
``transportkit_authenticator_running``, whichever backend made it; scraped here over
HTTP as a Prometheus server would.
"""

from __future__ import annotations

import asyncio
import urllib.request

import zmq
from prometheus_client.parser import text_string_to_metric_families

from transportkit import SocketOptions, Timeout
from transportkit._curve import z85_decode, z85_encode
from transportkit.metrics import AUTHENTICATOR_PATTERN, MetricsRegistry, start_http_server
from transportkit.security import Authenticator, AuthPolicy, CurveKeyPair, public_key
from transportkit.testing import Harness
from transportkit.testing._checks import wait_for_event
from transportkit.zmq_backend import ZmqNetwork
from transportkit.zmq_backend._auth import ZAP_ENDPOINT

WAIT = 2.0
COUNTERS = ("allowed", "denied_key", "denied_ip", "malformed", "handler_errors")


def _pair(n: int) -> CurveKeyPair:
    secret = z85_encode(bytes([n]) * 32)
    return CurveKeyPair(public=public_key(secret), secret=secret)


SERVER, ALLOWED, STRANGER = _pair(61), _pair(62), _pair(63)


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _malformed_request(net: ZmqNetwork) -> None:
    """What libzmq never sends: a ZAP request of the wrong version (zmq only)."""
    req = net.context.socket(zmq.REQ)
    req.linger = 0
    req.rcvtimeo = 2000
    try:
        req.connect(ZAP_ENDPOINT)
        req.send_multipart(
            [b"2.0", b"1", b"", b"127.0.0.1", b"", b"CURVE", z85_decode(STRANGER.public)]
        )
        assert req.recv_multipart()[2] == b"400"
    finally:
        req.close(linger=0)


def test_a_scrape_shows_the_authenticator_counters_on_both(tk_harness: Harness) -> None:
    h = tk_harness
    registry = MetricsRegistry()
    srv, cli = h.network("srv"), h.network("cli")
    server_options = SocketOptions(curve_server=True, curve_secretkey=SERVER.secret, linger=0)

    def client(pair: CurveKeyPair) -> SocketOptions:
        return SocketOptions(curve_secretkey=pair.secret, curve_serverkey=SERVER.public, linger=0)

    async def main() -> Authenticator:
        auth = srv.start_authenticator(AuthPolicy(allow_keys=[ALLOWED.public]))
        registry.watch(auth, name="zap")
        with srv.puller(options=server_options) as pull:
            monitor = pull.monitor()
            endpoint = pull.bind(h.bind_endpoint("tcp"))
            with (
                cli.pusher(connect=endpoint, options=client(ALLOWED)) as good,
                cli.pusher(connect=endpoint, options=client(STRANGER)),
            ):
                await good.send([b"in"])
                assert await pull.recv(timeout=WAIT) == [b"in"]
                # No send on the refused one: with its session ended (libzmq's
                # outcome) a PUSH has no pipe, and its send would wait.
                await wait_for_event(monitor, "HANDSHAKE_FAILED_AUTH", 1, WAIT)
                try:
                    await pull.recv(timeout=0.1)
                    raise AssertionError("the refused client delivered")
                except Timeout:
                    pass
            monitor.close()
        if isinstance(srv, ZmqNetwork):
            await asyncio.to_thread(_malformed_request, srv)
        return auth

    auth = h.run(main(), timeout=30.0)
    malformed = 1 if h.name == "zmq" else 0  # the sim has no raw ZAP endpoint to abuse
    expected = {"allowed": 1, "denied_key": 1, "denied_ip": 0, "malformed": malformed}
    expected["handler_errors"] = 0
    entry = registry.as_dict()["patterns"]["zap"]
    assert entry == {
        "pattern": AUTHENTICATOR_PATTERN,
        "counters": expected,
        "gauges": {"running": 1},
    }
    label = (("name", "zap"),)
    with start_http_server(0, registry=registry) as server:
        samples = _scrape(server.url)
        for counter in COUNTERS:
            assert (
                samples[(f"transportkit_authenticator_{counter}_total", label)] == expected[counter]
            )
        assert samples[("transportkit_authenticator_running", label)] == 1
        auth.close()  # the alert to have: its CURVE servers now admit any valid client
        assert _scrape(server.url)[("transportkit_authenticator_running", label)] == 0
