"""A scenario run measures real time and shows real progress, while the code it runs
reads virtual clocks: transportkit's own wall-time needs use the real clocks taken at
import (:mod:`transportkit._wallclock`), tqdm its own reference to ``time.time``."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import pytest
from tqdm import tqdm

from transportkit import _wallclock as wallclock
from transportkit.cli import main
from transportkit.scenario import load, run_scenario
from transportkit.sim_backend import VIRTUAL_EPOCH

SCENARIO = (
    Path(__file__).resolve().parents[2]
    / "src"
    / "transportkit"
    / "scenarios"
    / "risk_latency_spike.toml"
)


def test_a_run_with_a_progress_bar_measures_real_time_and_reaches_100_percent() -> None:
    out = io.StringIO()
    bar = tqdm(total=100, file=out, delay=0, mininterval=0, ascii=True)
    read_inside: list[float] = []

    def hook(done: float, total: float) -> None:
        read_inside.append(time.time() - VIRTUAL_EPOCH)  # called from inside the run
        bar.update(int(100 * done / total) - bar.n)

    scenario = load(SCENARIO)
    start = wallclock.perf_counter()
    result = run_scenario(scenario, progress=hook)
    real = wallclock.perf_counter() - start
    elapsed = bar.format_dict["elapsed"]
    bar.close()
    assert result.passed
    assert "100/100" in out.getvalue()
    assert 0 <= elapsed <= real + 1  # tqdm's clock was real throughout
    assert 0 < result.wall_seconds <= real
    total = scenario.duration + scenario.drain
    assert read_inside[0] == 0.0  # the hook itself, in the run, reads virtual time
    assert read_inside[-1] == pytest.approx(total)
    assert len(read_inside) >= 100


def test_the_cli_report_gives_the_real_wall_time_of_a_sim_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    start = wallclock.perf_counter()
    status = main(["run", str(SCENARIO)])  # progress bar enabled (shown after 2 s)
    real = wallclock.perf_counter() - start
    out = capsys.readouterr().out
    assert status == 0
    match = re.search(r"s virtual in ([0-9.]+) s wall", out)
    assert match is not None, out
    assert 0 < float(match.group(1)) <= real + 0.01
