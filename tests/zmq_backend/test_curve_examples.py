"""The example programs' CURVE flags: keygen's certificates, an lpserver that admits
only listed clients, lpclient with and without the right keys, usage errors."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from transportkit.examples import (
    keygen,
    lpclient,
    mdbroker,
    mdclient,
    mdworker,
)
from transportkit.security import load_certificate
from transportkit.testing import ChildProcess, free_tcp_endpoint


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    """server, client and stranger certificates, and an allow-list of client only."""
    assert keygen.main([str(tmp_path), "server", "client", "stranger"]) == 0
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(tmp_path / "client.key", allowed / "client.key")
    return tmp_path


def test_keygen_writes_pairs_and_refuses_to_overwrite(
    certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = certs / "server.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pair = load_certificate(secret)
    assert load_certificate(certs / "server.key").public == pair.public
    assert keygen.main([str(certs), "server"]) == 1
    assert "exists" in capsys.readouterr().err
    assert load_certificate(secret) == pair
    assert keygen.main([str(certs), "server", "--force"]) == 0
    assert load_certificate(secret) != pair


def test_lpserver_admits_only_listed_clients(
    certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = free_tcp_endpoint()
    server_argv = [
        "-m",
        "transportkit.examples.lpserver",
        "--bind",
        endpoint,
        "--quiet",
        "--curve-secret",
        str(certs / "server.key_secret"),
        "--allow-keys",
        str(certs / "allowed"),
    ]
    base = ["--connect", endpoint, "--requests", "2", "--timeout", "0.15", "--attempts", "2"]
    server_key = ["--curve-server-key", str(certs / "server.key")]
    with ChildProcess(*server_argv) as server:
        assert server.ready_line == f"READY {endpoint}"
        ok = [*base, *server_key, "--curve-secret", str(certs / "client.key_secret")]
        assert lpclient.main(ok) == 0
        assert "2 replies" in capsys.readouterr().out
        stranger = [*base, *server_key, "--curve-secret", str(certs / "stranger.key_secret")]
        assert lpclient.main(stranger) == 1
        assert "offline" in capsys.readouterr().out
        assert lpclient.main([*base, *server_key]) == 1  # a key pair made for the run
        assert lpclient.main(base) == 1  # plaintext against a CURVE server
        assert server.running


@pytest.mark.slow
def test_lpserver_with_a_secret_and_no_list_admits_any_client_with_its_key(
    certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = free_tcp_endpoint()
    argv = ["-m", "transportkit.examples.lpserver", "--bind", endpoint, "--quiet"]
    with ChildProcess(*argv, "--curve-secret", str(certs / "server.key_secret")):
        base = ["--connect", endpoint, "--requests", "1", "--timeout", "0.5", "--attempts", "2"]
        assert lpclient.main([*base, "--curve-server-key", str(certs / "server.key")]) == 0
        wrong = ["--curve-server-key", str(certs / "stranger.key")]
        assert lpclient.main([*base, *wrong]) == 1
    capsys.readouterr()


def test_bad_certificates_are_usage_errors_naming_the_file(
    certs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = certs / "bad.key"
    bad.write_text("not a certificate\n")
    with pytest.raises(SystemExit) as info:
        lpclient.parse_args(["--curve-server-key", str(bad)])
    assert info.value.code == 2
    assert "bad.key" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a public certificate is not a secret one
        lpclient.parse_args(["--curve-secret", str(certs / "client.key")])
    assert "no secret key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        mdbroker.parse_args(["--allow-keys", str(certs / "missing-dir")])
    assert "missing-dir" in capsys.readouterr().err


def test_majordomo_programs_take_the_flags(certs: Path) -> None:
    server = load_certificate(certs / "server.key_secret")
    broker_args = mdbroker.parse_args(["--curve-secret", str(certs / "server.key_secret")])
    assert broker_args.curve_secret == server
    for program in (mdworker, mdclient):
        args = program.parse_args(
            [
                "--curve-server-key",
                str(certs / "server.key"),
                "--curve-secret",
                str(certs / "client.key_secret"),
            ]
        )
        assert args.curve_server_key == server.public
