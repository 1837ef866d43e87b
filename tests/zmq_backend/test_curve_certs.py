"""Certificate files: transportkit's and pyzmq's ``zmq.auth`` read each other's."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import zmq.auth

from transportkit import OptionError, SocketOptions
from transportkit.security import (
    MAX_CERTIFICATE_BYTES,
    AuthPolicy,
    CertificateError,
    CurveKeyPair,
    generate_keypair,
    load_certificate,
    load_public_keys,
    save_certificate,
)
from transportkit.zmq_backend import ZmqNetwork

from .conftest import Runner


def test_our_files_load_in_pyzmq(tmp_path: Path) -> None:
    pair = generate_keypair()
    public, secret = save_certificate(tmp_path, "server", pair, {"desk": "equities"})
    assert public == tmp_path / "server.key" and secret == tmp_path / "server.key_secret"
    assert zmq.auth.load_certificate(public) == (pair.public, None)
    assert zmq.auth.load_certificate(secret) == (pair.public, pair.secret)
    assert zmq.auth.load_certificates(tmp_path) == {pair.public: True}
    assert b"secret-key" not in public.read_bytes()
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert 'desk = "equities"' in secret.read_text()


def test_pyzmqs_files_load_here(tmp_path: Path) -> None:
    public_file, secret_file = zmq.auth.create_certificates(tmp_path, "client", {"a": "b"})
    pub, sec = zmq.auth.load_certificate(secret_file)
    assert load_certificate(public_file) == CurveKeyPair(public=pub)
    both = load_certificate(secret_file)
    assert both.public == pub and both.secret == sec
    assert load_public_keys(tmp_path) == frozenset({pub})


def test_a_directory_of_keys_makes_an_allow_list(tmp_path: Path) -> None:
    pairs = [generate_keypair() for _ in range(3)]
    for n, pair in enumerate(pairs):
        save_certificate(tmp_path, f"client{n}", pair)
    zmq.auth.create_certificates(tmp_path, "pyzmq")
    (tmp_path / "notes.txt").write_text("not a certificate")
    keys = load_public_keys(tmp_path)
    assert len(keys) == 4 and {p.public for p in pairs} <= keys  # .key_secret not read
    assert AuthPolicy(allow_keys=keys).allow_keys == keys
    assert load_public_keys(_empty(tmp_path)) == frozenset()


def _empty(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


def test_a_public_only_pair_writes_one_file(tmp_path: Path) -> None:
    pair = generate_keypair()
    public, secret = save_certificate(tmp_path, "peer", CurveKeyPair(public=pair.public))
    assert secret is None and not (tmp_path / "peer.key_secret").exists()
    assert load_certificate(public) == CurveKeyPair(public=pair.public)


def test_saving_replaces_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    first, second = generate_keypair(), generate_keypair()
    save_certificate(tmp_path, "s", first)
    save_certificate(tmp_path, "s", second)
    assert load_certificate(tmp_path / "s.key_secret") == second
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.key", "s.key_secret"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("metadata\ncurve\n", "no public-key"),
        ('curve\n    public-key = "short"\n', "not 40 Z85 characters"),
        ('curve\n    public-key = "' + "~" * 40 + '"\n', "not Z85"),
        ("\x00\xff binary", "no public-key"),
    ],
)
def test_malformed_files_name_the_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(CertificateError, match=match) as info:
        load_certificate(path)
    assert "bad.key" in str(info.value) and info.value.path == path
    assert isinstance(info.value, OptionError)
    with pytest.raises(CertificateError, match=r"bad\.key"):
        load_public_keys(tmp_path)


def test_a_secret_that_does_not_match_is_refused(tmp_path: Path) -> None:
    a, b = generate_keypair(), generate_keypair()
    assert b.secret is not None
    path = tmp_path / "mixed.key_secret"
    path.write_text(
        f'curve\n    public-key = "{a.public.decode()}"\n    secret-key = "{b.secret.decode()}"\n'
    )
    with pytest.raises(CertificateError, match=r"mixed\.key_secret.*does not belong"):
        load_certificate(path)


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    a, b = generate_keypair(), generate_keypair()
    path = tmp_path / "twice.key"
    path.write_text(
        f'curve\n    public-key = "{a.public.decode()}"\n    public-key = "{b.public.decode()}"\n'
    )
    with pytest.raises(CertificateError, match="second public-key"):
        load_certificate(path)


def test_an_oversized_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "huge.key"
    pair = generate_keypair()
    with open(path, "wb") as f:
        f.write(f'curve\n    public-key = "{pair.public.decode()}"\n'.encode())
        f.write(b"#" * (MAX_CERTIFICATE_BYTES + 10))
    with pytest.raises(CertificateError, match=r"huge\.key.*longer than"):
        load_certificate(path)


def test_missing_paths_raise_os_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_certificate(tmp_path / "nope.key")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_public_keys(tmp_path / "nodir")
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        load_public_keys(tmp_path / "file")


@pytest.mark.parametrize("name", ["", "a/b", "..", "."])
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(CertificateError, match="plain file name"):
        save_certificate(tmp_path, name, generate_keypair())


@pytest.mark.parametrize(
    "metadata", [{"bad name": "v"}, {"ok": 'quote"d'}, {"ok": "new\nline"}, {"ok": 1}]
)
def test_unwritable_metadata_is_refused_before_writing(
    tmp_path: Path, metadata: dict[str, str]
) -> None:
    with pytest.raises(CertificateError):
        save_certificate(tmp_path, "m", generate_keypair(), metadata)
    assert list(tmp_path.iterdir()) == []


def test_the_secret_file_is_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        _, secret = save_certificate(tmp_path, "u", generate_keypair())
    finally:
        os.umask(old)
    assert secret is not None and stat.S_IMODE(secret.stat().st_mode) == 0o600


def test_certificates_drive_a_curve_exchange(tmp_path: Path, run: Runner) -> None:
    """Ironhouse from files: the server's secret file, the clients' public files."""
    server_dir, clients_dir = tmp_path / "server", tmp_path / "clients"
    server_dir.mkdir()
    clients_dir.mkdir()
    save_certificate(server_dir, "server", generate_keypair())
    _, client_secret = zmq.auth.create_certificates(clients_dir, "client")
    server = load_certificate(server_dir / "server.key_secret")
    client = load_certificate(client_secret)
    # The client knows the server by its public file only.
    server_public = load_certificate(server_dir / "server.key").public

    async def body(net: ZmqNetwork, client_net: ZmqNetwork) -> bytes:
        net.start_authenticator(AuthPolicy(allow_keys=load_public_keys(clients_dir)))
        opts = SocketOptions(curve_server=True, curve_secretkey=server.secret)
        with net.worker(bind="tcp://127.0.0.1:*", options=opts) as rep:
            assert rep.last_endpoint is not None
            copts = SocketOptions(curve_secretkey=client.secret, curve_serverkey=server_public)
            with client_net.requester(connect=rep.last_endpoint, options=copts) as req:
                await req.send([b"hello"])
                frames = await rep.recv(timeout=3.0)
                await rep.send(frames)
                return (await req.recv(timeout=3.0))[0]

    with ZmqNetwork() as net, ZmqNetwork() as client_net:
        assert run(body(net, client_net)) == b"hello"
