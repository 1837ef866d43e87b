"""Fresh virtualenvs with transportkit installed from a copy of this checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

MISSING_EXTRA_MESSAGES = {
    "transportkit.trading": "transportkit.trading needs protobuf: "
    "pip install 'transportkit[trading]'",
    "transportkit.scenario": "transportkit.scenario needs hdrhistogram and protobuf: "
    "pip install 'transportkit[scenarios]'",
    "transportkit.metrics": "transportkit.metrics needs hdrhistogram and prometheus-client: "
    "pip install 'transportkit[metrics]'",
    "transportkit.testing.strategies": "transportkit.testing.strategies needs hypothesis: "
    "pip install 'transportkit[testing]'",
    "transportkit.testing.stateful": "transportkit.testing.stateful needs hypothesis: "
    "pip install 'transportkit[testing]'",
}
"""What importing each optional module says when its extra is missing."""

ROOT = Path(__file__).resolve().parents[2]
CORE_CHECK = Path(__file__).resolve().parent / "_core_check.py"
PROJECT_FILES = (
    "pyproject.toml",
    "setup.py",
    "MANIFEST.in",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
)
PIP_TIMEOUT = 600

# A user's program: uses the public API, and has one deliberate type error. If mypy
# could not see transportkit's types (not found, or found without py.typed), the error
# would not be reported as such: it would say the import is missing or untyped.
USER_PROGRAM = """\
import asyncio

from transportkit import Network, SocketOptions
from transportkit.sim_backend import Constant, Simulation


async def ping(net: Network) -> list[bytes]:
    with net.pair(bind="inproc://x") as a, net.pair(connect="inproc://x") as b:
        await a.send([b"ping"])
        return await b.recv(timeout=1.0)


sim = Simulation(seed=1, latency=Constant(1e-4))
frames: list[bytes] = sim.run(ping(sim.node("n")))
options = SocketOptions(rcvtimeo=100)
elapsed: str = sim.now
asyncio.run(asyncio.sleep(0))
"""
USER_ERROR = (
    'user.py:16: error: Incompatible types in assignment (expression has type "float", '
    'variable has type "str")  [assignment]'
)


def copy_project(dest: Path) -> Path:
    """Copy what a build needs (no compiled files, no caches) into ``dest``; return it."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(
        ROOT / "src",
        dest / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyd", "*.egg-info"),
    )
    return dest


def make_venv(path: Path) -> Path:
    """A new virtualenv with pip (``python -m venv``); return its interpreter."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    return path / "bin" / "python"


def run(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = PIP_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run ``args``; fail with its output if it exits non-zero."""
    done = subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{args} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        )
    return done


def pip_install(python: Path, *args: str, env: dict[str, str] | None = None) -> None:
    """``pip install -q ARGS`` in the venv of ``python``."""
    run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], env=env)


def distributions(python: Path) -> set[str]:
    """The names of the distributions installed in the venv of ``python``, lower case."""
    out = run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"]
    ).stdout
    return {row["name"].lower().replace("_", "-") for row in json.loads(out)}


def core_check(python: Path, cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``_core_check.py`` with ``python`` in ``cwd`` (not the checkout); its JSON report."""
    out = run([str(python), str(CORE_CHECK)], env=env, cwd=cwd, timeout=120).stdout
    report: dict[str, Any] = json.loads(out)
    return report


def mypy_user_program(python: Path, workdir: Path) -> subprocess.CompletedProcess[str]:
    """``mypy --strict user.py`` for the venv of ``python`` (mypy from this interpreter)."""
    (workdir / "user.py").write_text(USER_PROGRAM, encoding="utf-8")
    (workdir / "mypy.ini").write_text("[mypy]\n", encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--config-file",
            "mypy.ini",
            "--cache-dir",
            str(workdir / ".mypy_cache"),
            "--python-executable",
            str(python),
            "user.py",
        ],
        capture_output=True,
        text=True,
        cwd=workdir,
        timeout=300,
        check=False,
    )


def without_compiler_env(python: Path) -> dict[str, str]:
    """An environment where no C compiler can be found: PATH is the venv's bin only."""
    env = {k: v for k, v in os.environ.items() if k not in {"CC", "CXX", "LDSHARED", "CFLAGS"}}
    env["PATH"] = str(python.parent)
    env["CC"] = env["CXX"] = env["LDSHARED"] = "/bin/false"
    return env
