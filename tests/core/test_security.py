"""CURVE keys and options: Z85, X25519 against libzmq's, and option validation."""

from __future__ import annotations

import pytest
import zmq
import zmq.utils.z85

from transportkit import OptionError, SocketOptions
from transportkit._curve import curve_public, z85_decode, z85_encode
from transportkit.security import AuthPolicy, CurveKeyPair, generate_keypair, public_key


def test_public_key_matches_libzmq() -> None:
    for _ in range(5):
        pub, sec = zmq.curve_keypair()
        assert curve_public(sec) == pub
        assert public_key(sec.decode()) == pub
        assert public_key(zmq.utils.z85.decode(sec)) == pub


def test_z85_round_trip_matches_libzmq() -> None:
    data = bytes(range(32))
    assert z85_encode(data) == zmq.utils.z85.encode(data)
    assert z85_decode(z85_encode(data)) == data
    with pytest.raises(ValueError):
        z85_decode(b"abc")
    with pytest.raises(ValueError):
        z85_encode(b"abc")


def test_generated_pairs_are_valid_and_distinct() -> None:
    a, b = generate_keypair(), generate_keypair()
    assert a != b
    assert a.secret is not None and curve_public(a.secret) == a.public
    with pytest.raises(OptionError, match="does not belong"):
        CurveKeyPair(public=a.public, secret=b.secret)


def test_options_derive_and_check_the_public_key() -> None:
    pair = generate_keypair()
    server = SocketOptions(curve_server=True, curve_secretkey=pair.secret)
    assert server.curve_publickey == pair.public
    assert pair.secret is not None
    raw = SocketOptions(curve_server=True, curve_secretkey=z85_decode(pair.secret))
    assert raw.curve_secretkey == pair.secret
    assert str(pair.secret) not in repr(server)
    other = generate_keypair()
    with pytest.raises(OptionError, match="does not belong"):
        SocketOptions(curve_server=True, curve_secretkey=pair.secret, curve_publickey=other.public)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"curve_server": True}, "needs 'curve_secretkey'"),
        ({"curve_secretkey": b"#" * 40}, "not Z85"),
        ({"curve_secretkey": b"short"}, "40 Z85 characters or 32 raw bytes"),
        ({"curve_serverkey": b"\x00" * 32}, "needs 'curve_secretkey'"),
        ({"zap_domain": "d" * 255}, "at most 254"),
    ],
)
def test_bad_curve_options_are_refused(changes: dict[str, object], match: str) -> None:
    with pytest.raises(OptionError, match=match):
        SocketOptions(**changes)  # type: ignore[arg-type]


def test_a_key_pair_without_a_server_key_is_refused() -> None:
    pair = generate_keypair()
    with pytest.raises(OptionError, match="needs 'curve_serverkey'"):
        SocketOptions(curve_secretkey=pair.secret)
    with pytest.raises(OptionError, match="is for CURVE clients"):
        SocketOptions(curve_server=True, curve_secretkey=pair.secret, curve_serverkey=pair.public)


def test_auth_policy_normalises_keys() -> None:
    pair = generate_keypair()
    assert pair.secret is not None
    policy = AuthPolicy(allow_keys=[z85_decode(pair.public)], deny_ips={"10.0.0.1"})
    assert policy.allow_keys == frozenset({pair.public})
    with pytest.raises(OptionError, match="not one key"):
        AuthPolicy(allow_keys=pair.public)  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="not one address"):
        AuthPolicy(allow_ips="127.0.0.1")  # type: ignore[arg-type]
