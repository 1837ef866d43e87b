"""The transportkit command runs the demo on both backends and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from transportkit.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_demo_on_the_sim_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "--updates", "20")
    assert "trader-1: delivered 20, lost 0" in out
    assert "trader-2: delivered 20, lost 0" in out
    assert "orders: 4 approved, 4 rejected" in out
    assert "Position limit exceeded" in out and "Insufficient capital" in out
    assert "malformed requests answered: 1" in out
    assert re.search(r"virtual time elapsed: [0-9.]+ ms", out)
    assert re.search(r"trace hash: [0-9a-f]{16,}", out)


def test_same_seed_same_output_other_seed_other_trace(capsys: pytest.CaptureFixture[str]) -> None:
    first = run(capsys, "demo", "--seed", "7")
    again = run(capsys, "demo", "--seed", "7")
    other = run(capsys, "demo", "--seed", "8")
    assert first == again

    def trace(out: str) -> str:
        return out.rsplit("trace hash:", 1)[1]

    assert trace(first) != trace(other)


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_demo_on_zmq(capsys: pytest.CaptureFixture[str], transport: str) -> None:
    out = run(capsys, "--backend", "zmq", "--transport", transport, "--subscribers", "3")
    assert out.count("delivered 100, lost 0") == 3
    assert "orders: 4 approved, 4 rejected" in out
    assert f"backend: zmq ({transport})" in out


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--backend", "carrier-pigeon"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_python_dash_m_transportkit() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "transportkit", "--updates", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "delivered 5" in proc.stdout
