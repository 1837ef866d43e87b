"""A scenario run measures real time and shows real progress, while the code it runs
reads virtual clocks: transportkit's own wall-time needs use the real clocks taken at
import (:mod:`transportkit._wallclock`), the progress line among them."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest

from transportkit import _wallclock as wallclock
from transportkit.cli import main
from transportkit.scenario import _progress, load, run_scenario
from transportkit.scenario._progress import ProgressLine
from transportkit.sim_backend import VIRTUAL_EPOCH

SCENARIO = (
    Path(__file__).resolve().parents[2]
    / "src"
    / "transportkit"
    / "scenarios"
    / "risk_latency_spike.toml"
)


def test_a_run_with_a_progress_line_measures_real_time_and_reaches_100_percent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_progress, "LOG_INTERVAL", 0.0)
    out = io.StringIO()
    before_line = wallclock.perf_counter()
    line = ProgressLine(out, "s virtual", terminal=False, delay=0.0)
    read_inside: list[float] = []

    def hook(done: float, total: float) -> None:
        read_inside.append(time.time() - VIRTUAL_EPOCH)  # called from inside the run
        line.update(done, total)

    scenario = load(SCENARIO)
    start = wallclock.perf_counter()
    result = run_scenario(scenario, progress=hook)
    real = wallclock.perf_counter() - start
    line.close()
    assert result.passed
    total = scenario.duration + scenario.drain
    last = out.getvalue().splitlines()[-1]
    assert last.startswith(f"{total:.1f} of {total:.1f} s virtual, 100%"), last
    rate = re.search(r"([0-9.]+) virtual s per wall s", last)
    assert rate is not None, last
    # The line's clock was real throughout: the rate is virtual time over real time
    # (a virtual clock would make it about 1, or divide by zero).
    since_line = wallclock.perf_counter() - before_line
    assert float(rate.group(1)) >= 0.99 * total / since_line
    assert 0 < result.wall_seconds <= real
    assert read_inside[0] == 0.0  # the hook itself, in the run, reads virtual time
    assert read_inside[-1] == pytest.approx(total)
    assert len(read_inside) >= 100


def test_the_cli_report_gives_the_real_wall_time_of_a_sim_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    start = wallclock.perf_counter()
    status = main(["run", str(SCENARIO), "--progress"])  # progress forced on (after 1 s)
    real = wallclock.perf_counter() - start
    out = capsys.readouterr().out
    assert status == 0
    match = re.search(r"s virtual in ([0-9.]+) s wall", out)
    assert match is not None, out
    assert 0 < float(match.group(1)) <= real + 0.01
