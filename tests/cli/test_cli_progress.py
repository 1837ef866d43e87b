"""The progress line: on a terminal only (a pseudo-terminal here), never in redirected
output unless forced, with virtual seconds per wall second and an ETA."""

from __future__ import annotations

import contextlib
import io
import os
import pty
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from transportkit.cli import main
from transportkit.scenario import _progress
from transportkit.scenario._progress import ProgressLine, eta_text


def read_all(fd: int, timeout: float = 5.0) -> bytes:
    """What is waiting on ``fd`` (a pty's master or a pipe's read end)."""
    chunks = []
    while select.select([fd], [], [], timeout)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # a pty whose other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
        timeout = 0.2
    return b"".join(chunks)


@pytest.fixture
def at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Draw from the start and at every step (a tiny run lasts 0.1 s)."""
    monkeypatch.setattr(_progress, "DELAY", 0.0)
    monkeypatch.setattr(_progress, "REDRAW_INTERVAL", 0.0)
    monkeypatch.setattr(_progress, "LOG_INTERVAL", 0.0)


@contextlib.contextmanager
def stderr_on(kind: str) -> Iterator[int]:
    """sys.stderr on a pseudo-terminal (``"pty"``) or a pipe (``"pipe"``, a redirected
    log) for the block; yields the side to read it from. (Set inside the test: pytest
    puts its own capture back on sys.stderr before each test runs.)
    """
    if kind == "pty":
        reader, writer = pty.openpty()
    else:
        reader, writer = os.pipe()
    stream = os.fdopen(writer, "w", encoding="utf-8", closefd=True)
    saved = sys.stderr
    sys.stderr = stream
    try:
        yield reader
    finally:
        sys.stderr = saved
        stream.close()
        os.close(reader)


def test_on_a_terminal_it_shows_the_rate_and_an_eta_then_clears(
    tiny: Path, at_once: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with stderr_on("pty") as terminal:
        assert main(["run", str(tiny), "--json"]) == 0
        sys.stderr.flush()
        shown = read_all(terminal).decode("utf-8")
    frames = [f for f in shown.split("\r") if f.strip()]
    assert len(frames) >= 10, shown[:500]
    assert "of 2.5 s virtual" in frames[-1] and "100%" in frames[-1]
    assert all("virtual s per wall s" in f and "ETA" in f for f in frames)
    assert shown.endswith("\r") and shown.rsplit("\r", 2)[-2].strip() == ""  # cleared
    assert "\n" not in shown
    assert capsys.readouterr().out.startswith("{")  # stdout holds the report alone


def test_redirected_it_writes_nothing_by_default(
    tiny: Path, at_once: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """tqdm wrote carriage-return frames into redirected logs."""
    with stderr_on("pipe") as pipe:
        assert main(["run", str(tiny)]) == 0
        sys.stderr.flush()
        assert not select.select([pipe], [], [], 0.2)[0]  # nothing waiting
    assert "PASSED" in capsys.readouterr().out


def test_forced_onto_a_log_it_writes_whole_lines(tiny: Path, at_once: None) -> None:
    with stderr_on("pipe") as pipe:
        assert main(["run", str(tiny), "--progress"]) == 0
        sys.stderr.flush()
        shown = read_all(pipe).decode("utf-8")
    assert "\r" not in shown
    lines = shown.splitlines()
    assert lines and all("virtual s per wall s" in line and "ETA" in line for line in lines)


def test_no_progress_on_a_terminal_writes_nothing(tiny: Path, at_once: None) -> None:
    with stderr_on("pty") as terminal:
        assert main(["run", str(tiny), "--no-progress"]) == 0
        sys.stderr.flush()
        assert read_all(terminal, timeout=0.2) == b""


def test_with_a_log_on_stderr_it_is_shown_only_if_asked(tiny: Path, at_once: None) -> None:
    """Log records would land in the middle of the redrawn line."""
    with stderr_on("pty") as terminal:
        assert main(["run", str(tiny), "--log-level", "ERROR"]) == 0
        sys.stderr.flush()
        assert "\r" not in read_all(terminal, timeout=0.2).decode("utf-8")
        assert main(["run", str(tiny), "--log-level", "ERROR", "--progress"]) == 0
        sys.stderr.flush()
        assert "virtual s per wall s" in read_all(terminal).decode("utf-8")


def test_sweep_shows_seeds_per_second_and_failures(shipped_tiny: Path, at_once: None) -> None:
    with stderr_on("pty") as terminal:
        assert main(["sweep", "failing", "--seeds", "2", "--jobs", "1"]) == 1
        sys.stderr.flush()
        frames = [f for f in read_all(terminal).decode("utf-8").split("\r") if f.strip()]
    assert frames and "2/2 seeds, 100%" in frames[-1]
    assert "seeds/s" in frames[-1] and "ETA" in frames[-1] and "2 failed" in frames[-1]


def test_the_line_says_how_far_how_fast_and_how_long() -> None:
    line = ProgressLine(io.StringIO(), "s virtual", terminal=True)
    text = line.text(11.3, 22.6, 2.0)
    assert text == "11.3 of 22.6 s virtual, 50%  5.65 virtual s per wall s  ETA 2 s"
    real = ProgressLine(io.StringIO(), "s", terminal=True).text(3.0, 10.0, 3.0)
    assert real == "3.0 of 10.0 s, 30%  ETA 7 s"  # a real-time run: no rate of 1
    assert ProgressLine(io.StringIO(), "seeds").text(0, 10, 1.0).endswith("ETA -")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "ETA 0 s"), (59.4, "ETA 59 s"), (61, "ETA 1 min 01 s"), (7260, "ETA 2 h 01 min"),
     (float("inf"), "ETA -"), (-1, "ETA -")],
)  # fmt: skip
def test_eta_text(seconds: float, text: str) -> None:
    assert eta_text(seconds) == text


@pytest.mark.slow
def test_the_command_on_a_real_pty_and_on_a_pipe() -> None:
    """The installed command, its default delay: frames on a terminal, none in a log."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "transportkit", "run", "trading_day"],
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=120,
            check=False,
        )
        shown = read_all(master, timeout=1.0).decode("utf-8")
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 0
    assert "\r" in shown and "virtual s per wall s" in shown and "ETA" in shown
    piped = subprocess.run(
        [sys.executable, "-m", "transportkit", "run", "trading_day"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert piped.returncode == 0 and piped.stderr == b""
