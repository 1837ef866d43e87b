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


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--updates", "1000000000000"], "--updates: must be from 1 to 100,000"),
        (["--updates", "0"], "--updates: must be from 1 to 100,000"),
        (["--subscribers", "1000000"], "--subscribers: must be from 1 to 16"),
        (["--latency-us", "inf"], "--latency-us: must be from 0 to 100000"),
        (["--latency-us", "nan"], "--latency-us: must be from 0 to 100000"),
        (["--latency-us", "1e12"], "--latency-us: must be from 0 to 100000"),
        (["--jitter-us", "-1"], "--jitter-us: must be from 0 to 100000"),
        (["--seed", "-1"], "--seed: must be from 0 to"),
        (["--seed", "many"], "--seed: must be an integer"),
    ],
    ids=[
        "updates-1e12", "updates-0", "subscribers-1e6", "latency-inf", "latency-nan",
        "latency-1e12", "jitter-negative", "seed-negative", "seed-text",
    ],
)  # fmt: skip
def test_demo_options_out_of_range_exit_2_before_running(argv: list[str], needle: str) -> None:
    """Each of these hung the demo (1e12 updates, a million subscribers), crashed it
    with a traceback (an infinite or huge latency: a Timeout while subscribers join) or
    was taken as is (a negative seed). In a child process, so the old hang times out."""
    proc = subprocess.run(
        [sys.executable, "-m", "transportkit", *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_demo_options_at_their_bounds_are_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "--subscribers", "16", "--updates", "5", "--latency-us", "100000",
              "--jitter-us", "100000", "--seed", str(2**63 - 1))  # fmt: skip
    assert out.count("delivered 5, lost 0") == 16


def test_the_demo_and_scenario_seed_bounds_agree() -> None:
    from transportkit.cli import MAX_SEED  # noqa: PLC0415
    from transportkit.scenario._bounds import MAX_SEED as SCENARIO_MAX_SEED  # noqa: PLC0415

    assert MAX_SEED == SCENARIO_MAX_SEED
