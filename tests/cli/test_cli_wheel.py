"""``transportkit run trading_day`` from a built wheel, outside the checkout: the
scenario files are package data, found through importlib.resources."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_built_wheel_runs_a_shipped_scenario_by_name(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(ROOT)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("transportkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert "transportkit/scenarios/trading_day.toml" in names
        archive.extractall(tmp_path / "site")
    away = tmp_path / "elsewhere"  # no checkout, no scenarios/ folder here
    away.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, cwd=away, env=env,
            timeout=300, check=False,
        )  # fmt: skip

    where = run("-c", "import transportkit; print(transportkit.__file__)")
    assert where.stdout.strip().startswith(str(tmp_path / "site")), where
    listed = run("-m", "transportkit", "scenarios", "--paths")
    assert listed.returncode == 0, listed.stderr
    paths = dict(line.split(maxsplit=1) for line in listed.stdout.splitlines())
    assert paths["trading_day"] == str(
        tmp_path / "site" / "transportkit" / "scenarios" / "trading_day.toml"
    )
    ran = run("-m", "transportkit", "run", "trading_day", "--json")
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert '"scenario": "trading-day"' in ran.stdout
