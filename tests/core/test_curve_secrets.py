"""No CURVE secret key reaches a log record, a repr, the sim's trace or an exception.

A pair is generated, a CURVE exchange runs on each backend (an allowed client, a
refused one, a wrong server key) with every logger at DEBUG and the sim's trace
recorded, and the secrets' Z85 text (and raw bytes) is looked for in every record
(message, arguments, extra fields), every trace event, and the ``repr`` of the
options, the pairs, the policy and the authenticator.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import zmq

from transportkit import OptionError, SocketOptions, Timeout
from transportkit._curve import z85_decode
from transportkit.security import AuthPolicy, CurveKeyPair, generate_keypair
from transportkit.sim_backend import Simulation
from transportkit.testing import Harness, SimHarness
from transportkit.testing._checks import wait_for_event
from transportkit.zmq_backend._options import apply_options

WAIT = 2.0


def _leaks(text: str, secrets: list[bytes]) -> list[str]:
    found = []
    for secret in secrets:
        for form in (secret.decode("ascii"), repr(secret), repr(z85_decode(secret))):
            if form in text:
                found.append(form)
    return found


def _record_text(record: logging.LogRecord) -> str:
    fields: dict[str, Any] = dict(vars(record))
    fields.pop("exc_info", None)  # formatted into exc_text by the handler, if any
    return record.getMessage() + " " + repr(fields)


def test_no_secret_reaches_logs_reprs_or_the_trace(
    tk_harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = tk_harness
    caplog.set_level(logging.DEBUG)
    server, client, stranger = generate_keypair(), generate_keypair(), generate_keypair()
    secrets = [p.secret for p in (server, client, stranger) if p.secret is not None]
    server_options = SocketOptions(curve_server=True, curve_secretkey=server.secret, linger=0)

    def client_options(pair: CurveKeyPair, serverkey: bytes = server.public) -> SocketOptions:
        return SocketOptions(
            curve_secretkey=pair.secret, curve_serverkey=serverkey, linger=0, reconnect_ivl=50
        )

    shown: list[str] = []

    async def main() -> None:
        srv, cli = h.network("srv"), h.network("cli")
        auth = srv.start_authenticator(AuthPolicy(allow_keys=[client.public]))
        auth.update(AuthPolicy(allow_keys=[client.public]))
        with srv.puller(options=server_options) as pull:
            monitor = pull.monitor()
            endpoint = pull.bind(h.bind_endpoint("tcp"))
            with (
                cli.pusher(connect=endpoint, options=client_options(client)) as good,
                cli.pusher(connect=endpoint, options=client_options(stranger)),
                cli.pusher(connect=endpoint, options=client_options(client, stranger.public)),
            ):
                await good.send([b"order"])
                assert await pull.recv(timeout=WAIT) == [b"order"]
                await wait_for_event(monitor, "HANDSHAKE_FAILED_AUTH", 1, WAIT)
                await wait_for_event(monitor, "HANDSHAKE_FAILED_PROTOCOL", 1, WAIT)
                with pytest.raises(Timeout):
                    await pull.recv(timeout=0.1)
                shown.extend(repr(x) for x in (good, pull, good.options, pull.options))
            monitor.close()
        shown.extend(repr(x) for x in (auth, auth.policy, auth.stats))
        auth.close()

    h.run(main(), timeout=30.0)
    assert any(r.levelno == logging.WARNING for r in caplog.records)  # the refusal
    shown += [repr(p) for p in (server, client, stranger)]
    shown += [repr(client_options(client)), repr(server_options)]
    shown += [_record_text(r) for r in caplog.records]
    shown.append(caplog.text)
    if isinstance(h, SimHarness):
        events = h.sim.trace.events
        assert any(e.kind == "zap" for e in events)
        shown += [repr(e) for e in events]
    assert [leak for text in shown for leak in _leaks(text, secrets)] == []
    assert "secret=<hidden>" in repr(server)


def test_the_key_pair_repr_hides_the_secret() -> None:
    """The dataclass repr printed the secret key (``secret=b'...'``)."""
    pair = generate_keypair()
    assert pair.secret is not None
    assert repr(pair) == f"CurveKeyPair(public={pair.public!r}, secret=<hidden>)"
    assert pair.secret.decode() not in str(pair)
    assert repr(CurveKeyPair(public=pair.public)) == (
        f"CurveKeyPair(public={pair.public!r}, secret=None)"
    )


def test_option_errors_never_show_the_secret() -> None:
    pair = generate_keypair()
    assert pair.secret is not None
    with pytest.raises(OptionError) as no_server_key:
        SocketOptions(curve_secretkey=pair.secret)  # a client needs the server's key
    other = generate_keypair()
    with pytest.raises(OptionError) as mismatch:
        SocketOptions(curve_secretkey=pair.secret, curve_publickey=other.public)
    for exc in (no_server_key.value, mismatch.value):
        assert _leaks(str(exc), [pair.secret]) == []


class _RefusingSocket:
    """A socket whose libzmq refuses ZMQ_CURVE_SECRETKEY (as one built without CURVE
    does, with EINVAL) and takes every other option."""

    def __init__(self) -> None:
        self.set: list[int] = []

    def setsockopt(self, option: int, value: object) -> None:
        if option == zmq.CURVE_SECRETKEY:
            raise zmq.ZMQError(zmq.EINVAL)
        self.set.append(option)


def test_libzmq_refusing_the_secret_key_does_not_print_it() -> None:
    """apply_options used to put ``{value!r}`` of the refused option in its message."""
    pair = generate_keypair()
    assert pair.secret is not None
    options = SocketOptions(curve_server=True, curve_secretkey=pair.secret)
    with pytest.raises(OptionError) as refused:
        apply_options(_RefusingSocket(), options, "PULL socket")  # type: ignore[arg-type]
    assert "option 'curve_secretkey' = <secret>" in str(refused.value)
    assert _leaks(str(refused.value), [pair.secret]) == []


def test_the_authenticator_trace_events_carry_no_keys() -> None:
    """The authenticator's trace events carry counts and names, never keys."""
    sim = Simulation(seed=1)
    auth = sim.node("srv").start_authenticator(AuthPolicy(allow_keys=[generate_keypair().public]))
    auth.close()
    details = [e.detail for e in sim.trace.events]
    assert details == ["keys=1 allow_ips=0 deny_ips=0 domain='*'", "close"]
    sim.close()
