"""The extras: what each installs, and the message when one is missing (fast checks).

The fresh-virtualenv versions of these checks are in ``test_packaging_venv.py`` (slow).
Here a child interpreter blocks every optional dependency with a meta-path finder, as
if only the core were installed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from _packaging_helpers import MISSING_EXTRA_MESSAGES as MESSAGES

import transportkit
from transportkit import MissingExtraError
from transportkit._extras import EXTRAS, requires_extra

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
OPTIONAL = PYPROJECT["project"]["optional-dependencies"]
BLOCKED = ("google", "hdrh", "tqdm", "matplotlib", "hypothesis", "prometheus_client", "distributed")

# Installed in a child interpreter before anything else: these modules cannot be found.
BLOCKER = f"""
import importlib.abc, sys

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
"""


def _requirement_names(extra: str) -> set[str]:
    """The distributions ``extra`` installs, its included extras expanded."""
    names: set[str] = set()
    for requirement in OPTIONAL[extra]:
        match = re.match(r"([A-Za-z0-9_.-]+)(\[([a-z,]+)\])?", requirement)
        assert match, requirement
        name = match.group(1).lower()
        if name == "transportkit":
            for included in match.group(3).split(","):
                names |= _requirement_names(included)
        else:
            names.add(name)
    return names


def _child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_core_dependencies_are_pyzmq_and_simpy_with_both_bounds() -> None:
    dependencies = PYPROJECT["project"]["dependencies"]
    assert [re.match(r"[a-z]+", d).group(0) for d in dependencies] == ["pyzmq", "simpy"]  # type: ignore[union-attr]
    assert all(">=" in d and ",<" in d for d in dependencies), dependencies


def test_extras_map_matches_pyproject() -> None:
    """Every extra that ``_extras`` names installs the packages it says, and no more."""
    for extra, provided in EXTRAS.items():
        assert {dist for _, dist in provided} == _requirement_names(extra), extra
    assert set(OPTIONAL) == {*EXTRAS, "docs", "all", "dev", "bench"}
    assert _requirement_names("bench") <= _requirement_names("dev")
    assert _requirement_names("all") == set().union(*(_requirement_names(e) for e in EXTRAS))
    dev = _requirement_names("dev")
    assert _requirement_names("all") | _requirement_names("docs") <= dev
    assert {
        "pytest",
        "pytest-timeout",
        "pytest-asyncio",
        "grpcio-tools",
        "mypy",
        "ruff",
        "types-protobuf",
        "hypothesis",
        "pyyaml",
    } <= dev
    assert "test" not in OPTIONAL


def test_every_module_imports_with_the_core_alone_or_names_its_extra() -> None:
    """No import of an optional dependency escapes the helper, anywhere in the package;
    the modules that need an extra say which, in one line."""
    out = _child(
        """
        import importlib, json, pkgutil
        import transportkit
        outcome = {}
        for info in pkgutil.walk_packages(transportkit.__path__, "transportkit."):
            if info.name == "transportkit.__main__":
                continue  # runs the command line
            try:
                importlib.import_module(info.name)
            except transportkit.MissingExtraError as exc:
                outcome[info.name] = ["MissingExtraError", str(exc), exc.extra]
            except BaseException as exc:
                outcome[info.name] = [type(exc).__name__, str(exc), None]
            else:
                outcome[info.name] = "ok"
        print(json.dumps(outcome))
        """
    )
    assert out.returncode == 0, out.stderr
    outcome = json.loads(out.stdout)
    bad = {
        name: what
        for name, what in outcome.items()
        if what != "ok" and what[0] != "MissingExtraError"
    }
    assert bad == {}
    assert {name: outcome[name][1] for name in MESSAGES} == MESSAGES
    assert {name: outcome[name][2] for name in MESSAGES} == {
        "transportkit.trading": "trading",
        "transportkit.scenario": "scenarios",
        "transportkit.metrics": "metrics",
        "transportkit.testing.strategies": "testing",
        "transportkit.testing.stateful": "testing",
    }
    core = (
        "transportkit.sim_backend",
        "transportkit.zmq_backend",
        "transportkit.patterns",
        "transportkit.testing",
        "transportkit.cli",
        "transportkit.testing.pytest_plugin",
        "transportkit.security",
    )
    assert {name: outcome[name] for name in core} == dict.fromkeys(core, "ok")


def test_command_line_help_works_and_commands_name_their_extra() -> None:
    out = _child(
        """
        import contextlib, io, sys
        from transportkit.cli import main
        for argv in (["demo"], ["run", "trading_day"], ["sweep", "trading_day"]):
            print(main(argv))
        try:
            main(["--help"])
        except SystemExit as exc:
            print("help exit", exc.code)
        """
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:3] == ["2", "2", "2"]
    assert lines[-1] == "help exit 0"
    assert "usage: transportkit" in out.stdout
    assert out.stderr.splitlines() == [
        "transportkit: transportkit.trading needs protobuf: pip install 'transportkit[trading]'",
        "transportkit: transportkit.scenario needs hdrhistogram and protobuf: "
        "pip install 'transportkit[scenarios]'",
        "transportkit: transportkit.scenario needs hdrhistogram and protobuf: "
        "pip install 'transportkit[scenarios]'",
    ]


def test_requires_extra_lets_other_errors_through() -> None:
    with pytest.raises(ModuleNotFoundError) as info, requires_extra("plot", "--plot"):
        import transportkit_no_such_module  # type: ignore[import-not-found]  # noqa: F401, PLC0415
    assert not isinstance(info.value, MissingExtraError)
    with pytest.raises(ValueError, match="boom"), requires_extra("plot", "--plot"):
        raise ValueError("boom")
    with pytest.raises(KeyError), requires_extra("no-such-extra", "x"):
        pass


def test_requires_extra_names_the_extra_and_is_an_import_error() -> None:
    def missing() -> None:
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    with pytest.raises(ImportError) as info, requires_extra("plot", "--plot"):
        missing()
    error = info.value
    assert isinstance(error, MissingExtraError)
    assert str(error) == "--plot needs matplotlib: pip install 'transportkit[plot]'"
    assert (error.feature, error.extra, error.packages, error.name) == (
        "--plot",
        "plot",
        ("matplotlib",),
        "matplotlib",
    )
    assert isinstance(error.__cause__, ModuleNotFoundError)


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version  # noqa: PLC0415

    assert transportkit.__version__ == version("transportkit"), (
        "the installed metadata is older than the code: pip install -e ."
    )
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "transportkit.__version__"
    }
