"""The wheel: what it contains, and that it installs and works where no compiler exists.

Slow: each test builds a wheel from a copy of this checkout (``pip wheel . --no-deps``)
and installs it into a fresh virtualenv whose PATH holds no compiler (``CC=/bin/false``).
"""

from __future__ import annotations

import re
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from _packaging_helpers import (
    copy_project,
    core_check,
    make_venv,
    pip_install,
    run,
    without_compiler_env,
)

import transportkit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SCENARIOS = sorted(
    p.name for p in (Path(transportkit.__file__).parent / "scenarios").glob("*.toml")
)


def _build_wheel(tmp_path: Path, env: dict[str, str] | None = None) -> tuple[Path, str]:
    """Build a wheel of a copy of the checkout: the wheel, and the build's output."""
    project = copy_project(tmp_path / "project")
    dist = tmp_path / "dist"
    python = make_venv(tmp_path / "build-venv")
    done = run(
        [
            str(python),
            "-m",
            "pip",
            "wheel",
            "-v",
            "--disable-pip-version-check",
            "--no-deps",
            "-w",
            str(dist),
            str(project),
        ],
        env=env,
    )
    (wheel,) = dist.glob("transportkit-*.whl")
    return wheel, done.stdout + done.stderr


def test_wheel_has_the_accelerator_and_runs_the_flagship_without_a_compiler(
    tmp_path: Path,
) -> None:
    wheel, output = _build_wheel(tmp_path)
    assert "building 'transportkit.zmq_backend._accel_c' extension" in output
    assert "DeprecationWarning" not in output  # e.g. a licence given the old way
    assert re.fullmatch(r"transportkit-[^-]+-cp3\d+-cp3\d+-linux_\w+\.whl", wheel.name)
    names = zipfile.ZipFile(wheel).namelist()
    assert [n for n in names if re.fullmatch(r"transportkit/zmq_backend/_accel_c\..*\.so", n)]
    assert "transportkit/py.typed" in names
    assert (
        sorted(
            n.rsplit("/", 1)[1]
            for n in names
            if n.startswith("transportkit/scenarios/") and n.endswith(".toml")
        )
        == SCENARIOS
    )
    assert len(SCENARIOS) >= 9
    metadata = (
        zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith(".dist-info/METADATA")))
        .decode()
    )
    assert "License-Expression: MIT" in metadata
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert [r for r in requires if "extra ==" not in r] == [
        "Requires-Dist: pyzmq<28,>=26",
        "Requires-Dist: simpy<5,>=4.1",
    ]

    python = make_venv(tmp_path / "venv")
    env = without_compiler_env(python)
    pip_install(python, f"{wheel}[scenarios]", env=env)
    out = run(
        [
            str(python),
            "-c",
            "import pathlib, transportkit\n"
            "from transportkit.zmq_backend import accelerated\n"
            "a = accelerated()\n"
            "print(bool(a), a.reason or '-', transportkit.__file__)\n",
        ],
        env=env,
        cwd=tmp_path,
    )
    accelerated, reason, location = out.stdout.split(maxsplit=2)
    assert (accelerated, reason) == ("True", "-")
    installed = Path(location.strip()).parent
    assert installed.is_relative_to(tmp_path / "venv")
    assert (installed / "scenarios" / "trading_day.toml").is_file()
    # By name, from the installed package (not a checkout: cwd is the test's tmp_path).
    done = run([str(python.parent / "transportkit"), "run", "trading_day"], env=env, cwd=tmp_path)
    assert done.stdout.rstrip().endswith("PASSED"), done.stdout


def test_a_failed_compile_gives_a_working_wheel_without_the_accelerator(tmp_path: Path) -> None:
    build_env = without_compiler_env(tmp_path / "build-venv" / "bin" / "python")
    wheel, output = _build_wheel(tmp_path, env=build_env)
    assert "building 'transportkit.zmq_backend._accel_c' extension" in output
    assert "DeprecationWarning" not in output
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.endswith((".so", ".pyd"))]
    assert "transportkit/py.typed" in names

    python = make_venv(tmp_path / "venv")
    env = without_compiler_env(python)
    pip_install(python, str(wheel), env=env)
    report = core_check(python, cwd=tmp_path, env=env)
    assert report["sim"] == report["zmq"] == ["AAPL", "approved"]
    assert report["accelerated"] == [
        False,
        False,
        "the C extension was not built (no C compiler at install?)",
    ]


def test_sdist_has_what_a_build_needs_and_installs(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--sdist", "-o", str(dist), str(project)])
    (sdist,) = dist.glob("transportkit-*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    expected = {
        "pyproject.toml",
        "setup.py",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "src/transportkit/py.typed",
        "src/transportkit/zmq_backend/_accel_c.c",
    }
    assert expected <= names
    assert {
        n.rsplit("/", 1)[1]
        for n in names
        if n.startswith("src/transportkit/scenarios/") and n.endswith(".toml")
    } == set(SCENARIOS)
    python = make_venv(tmp_path / "venv")
    pip_install(python, str(sdist))
    report = core_check(python, cwd=tmp_path)
    assert report["sim"] == report["zmq"] == ["AAPL", "approved"]
    if shutil.which("cc") or shutil.which("gcc"):  # built from the sdist with it
        assert report["accelerated"] == [True, True, ""]
