"""CURVE keys and options: Z85, X25519 against libzmq's, and option validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import zmq
import zmq.utils.z85
from mypy import api as mypy_api

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


def test_a_policy_is_made_from_any_collection_and_type_checks(tmp_path: Path) -> None:
    """Lists, sets and generators are what callers pass; the fields were typed as
    frozensets, so ``AuthPolicy(allow_keys=[key])`` failed strict mypy in user code."""
    key = generate_keypair().public
    made = AuthPolicy(allow_keys=[key], allow_ips=(a for a in ["10.0.0.1"]), deny_ips={"x"})
    assert made == AuthPolicy(allow_keys=frozenset({key}), allow_ips={"10.0.0.1"}, deny_ips=["x"])
    assert hash(made) == hash(dataclasses.replace(made))
    assert isinstance(made.allow_keys, frozenset) and isinstance(made.allow_ips, frozenset)
    snippet = tmp_path / "user_code.py"
    snippet.write_text(
        "from transportkit.security import AuthPolicy\n"
        'p = AuthPolicy(allow_keys=[b"k"], allow_ips=["127.0.0.1"], deny_ips={"10.0.0.1"})\n'
        "keys: frozenset[bytes] | None = p.allow_keys\n"
        "ips: frozenset[str] = p.allow_ips\n",
        encoding="utf-8",
    )
    out, err, status = mypy_api.run(
        ["--strict", "--cache-dir", str(tmp_path / "cache"), str(snippet)]
    )
    assert status == 0, out + err
