"""Each exit status of ``transportkit run`` and ``transportkit sweep``, and every bad
option refused before the run starts (in well under a second, with status 2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from transportkit.cli import EXIT_STATUS_HELP, ExitCode, main
from transportkit.scenario import RunResult, _cli, _sweep_cli

DEV_FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="needs /dev/full (Linux)")


def test_the_statuses_are_distinct_and_documented() -> None:
    values = [code.value for code in ExitCode]
    assert values == [0, 1, 2, 3, 4, 130]
    for code in ExitCode:
        assert f"\n  {code.value} " in "\n" + EXIT_STATUS_HELP.split(":", 1)[1]
    docs = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    text = docs.read_text(encoding="utf-8")
    for code in ExitCode:
        assert f"| {code.value} |" in text, code


def test_zero_when_every_invariant_holds(tiny: Path) -> None:
    assert main(["run", str(tiny), "--no-progress"]) == ExitCode.OK == 0


def test_one_when_an_invariant_fails(failing: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(failing), "--no-progress"]) == ExitCode.FAILED == 1
    assert "FAIL  the feed ran" in capsys.readouterr().out


def test_three_when_the_run_is_not_representative(
    tiny: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sim never falls short (tests/scenarios/test_zmq_pacing.py gets a real 3 on
    zmq); here the run's verdict is forced, to pin how the CLI maps it."""
    monkeypatch.setattr(RunResult, "short_of_load", property(lambda self: ["feed"]))
    assert main(["run", str(tiny), "--no-progress"]) == ExitCode.NOT_REPRESENTATIVE == 3
    assert "NOT REPRESENTATIVE" in capsys.readouterr().out


@needs_dev_full
@pytest.mark.parametrize("option", ["--trace", "--plot"])
def test_four_when_an_output_fails_after_the_run(
    option: str, tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """/dev/full passes every check before the run (a writable file) and fails to take
    the bytes after it. It was 2, the status of an invalid file."""
    status = main(["run", str(tiny), option, str(DEV_FULL), "--no-progress"])
    captured = capsys.readouterr()
    assert status == ExitCode.OUTPUT_FAILED == 4
    assert "PASSED" in captured.out  # the report was written, then the export failed
    assert f"transportkit run: {option}: " in captured.err
    assert "No space left on device" in captured.err and "Traceback" not in captured.err


@needs_dev_full
def test_four_wins_over_a_failed_invariant(failing: Path) -> None:
    assert main(["run", str(failing), "--trace", str(DEV_FULL), "--no-progress"]) == 4


@needs_dev_full
def test_sweep_four_when_its_json_cannot_be_written(
    shipped_tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["sweep", "tiny", "--seeds", "1", "--jobs", "1", "--no-progress"]
    assert main([*argv, "--json", str(DEV_FULL)]) == ExitCode.OUTPUT_FAILED
    assert "--json: cannot write /dev/full" in capsys.readouterr().err


def _refuses_before_running(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the run started")

    monkeypatch.setattr(_cli, "run_scenario", never)
    monkeypatch.setattr(_sweep_cli, "sweep", never)
    began = time.perf_counter()
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        assert isinstance(exc.code, int)
        status = exc.code
    assert time.perf_counter() - began < 1.0
    assert status == ExitCode.USAGE == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--trace", "{tmp}/no/such/dir/t.json"], "--trace: directory"),
        (["--plot", "{tmp}/no/such/dir/p.png"], "--plot: directory"),
        (["--trace", "{tmp}"], "is a directory"),
        (["--trace", "{scenario}"], "is the scenario file"),
        (["--trace", "{tmp}/same", "--plot", "{tmp}/same"], "name the same file"),
        (["--max-events", "0"], "--max-events: must be from 1"),
        (["--max-events", "lots"], "--max-events: must be an integer"),
        (["--seed", "-1"], "--seed: must be from 0"),
        (["--seed", "1e3"], "--seed: must be an integer"),
        (["--backend", "carrier-pigeon"], "invalid choice"),
        (["--faults", "crsh"], "unknown fault kind 'crsh'"),
        (["--backend", "zmq", "--trace", "{tmp}/t.json"], "sim backend only"),
    ],
    ids=[
        "trace-no-dir", "plot-no-dir", "trace-is-dir", "trace-is-scenario", "same-file",
        "max-events-0", "max-events-text", "seed-negative", "seed-float", "backend",
        "faults", "trace-on-zmq",
    ],
)  # fmt: skip
def test_run_refuses_a_bad_option_before_running(
    extra: list[str],
    needle: str,
    tiny: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [w.format(tmp=tmp_path, scenario=tiny) for w in ["run", str(tiny), *extra]]
    assert needle in _refuses_before_running(argv, monkeypatch, capsys)


def test_run_refuses_plot_without_matplotlib_before_running(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # find_spec says: not installed
    argv = ["run", str(tiny), "--plot", str(tmp_path / "p.png")]
    err = _refuses_before_running(argv, monkeypatch, capsys)
    assert "--plot needs matplotlib: pip install 'transportkit[plot]'" in err
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--seeds", "0"], "--seeds: must be from 1"),
        (["--jobs", "0"], "--jobs: must be from 1"),
        (["--wall-budget", "nan"], "--wall-budget: must be more than 0"),
        (["--wall-budget", "-1"], "--wall-budget: must be more than 0"),
        (["--json", "{tmp}/no/such/dir/s.json"], "--json: directory"),
        (["--json", "{scenario}"], "is the scenario file"),
        (["--max-shown", "-1"], "--max-shown: must be from 0"),
    ],
    ids=["seeds-0", "jobs-0", "budget-nan", "budget-negative", "json-no-dir", "json-is-scenario",
         "max-shown"],
)  # fmt: skip
def test_sweep_refuses_a_bad_option_before_running(
    extra: list[str],
    needle: str,
    tiny: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [w.format(tmp=tmp_path, scenario=tiny) for w in ["sweep", str(tiny), *extra]]
    assert needle in _refuses_before_running(argv, monkeypatch, capsys)


def test_unknown_names_are_refused_before_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("run", "sweep"):
        err = _refuses_before_running([command, "tradingday"], monkeypatch, capsys)
        assert "did you mean trading_day?" in err


_CHILD = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from transportkit.cli import main; raise SystemExit(main(sys.argv[1:]))"
)
"""The command, with Python's own SIGINT handler even if this test runs where SIGINT
is ignored (a background job of a non-interactive shell inherits SIG_IGN)."""


def test_one_hundred_thirty_when_interrupted() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, "run", "trading_day", "--log-connections"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # the run has started: its first connection
        assert "CONNECT" in first or "ACCEPTED" in first, first
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == ExitCode.INTERRUPTED == 130
    assert err.rstrip().endswith("transportkit: interrupted")
    assert "Traceback" not in err


@pytest.mark.slow
def test_sweep_one_hundred_thirty_when_interrupted() -> None:
    """Ctrl-C at a terminal signals the whole process group. It waited for a whole seed
    more (8 s of the flagship): each pool worker caught its seed's KeyboardInterrupt and
    ran the seed the pool had queued for it. Now the workers are killed: 0.3 s."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, "sweep", "trading_day", "--seeds", "6",
         "--jobs", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(3.0)
        os.killpg(proc.pid, signal.SIGINT)
        began = time.monotonic()
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    assert proc.returncode == 130, err[-2000:]
    assert "transportkit: interrupted" in err
    assert out == ""
    assert took < 4.0, took  # a trading_day seed takes 4 to 9 s
