"""transportkit installed alone into fresh virtualenvs (slow: builds and installs).

From a copy of this checkout (so nothing is built in the checkout itself), with pip
and the package index this machine has: the core works on both backends, the modules
that need an extra say which, no optional dependency came along, and ``mypy --strict``
sees the package's types after an installed and an editable install.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _packaging_helpers import (
    MISSING_EXTRA_MESSAGES,
    USER_ERROR,
    copy_project,
    core_check,
    distributions,
    make_venv,
    mypy_user_program,
    pip_install,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with ``pip install <checkout>``: no extras. Its interpreter."""
    base = tmp_path_factory.mktemp("core")
    project = copy_project(base / "project")
    python = make_venv(base / "venv")
    pip_install(python, str(project))
    return python


def test_core_alone_installs_only_pyzmq_and_simpy(core_venv: Path) -> None:
    assert distributions(core_venv) - {"pip", "setuptools"} == {"pyzmq", "simpy", "transportkit"}


def test_core_alone_works_on_both_backends_and_names_the_missing_extras(
    core_venv: Path, tmp_path: Path
) -> None:
    report = core_check(core_venv, cwd=tmp_path)
    assert report["sim"] == ["AAPL", "approved"]
    assert report["zmq"] == ["AAPL", "approved"]
    assert report["present"] == []  # hypothesis, protobuf, tqdm, hdrh, matplotlib
    assert {name: error[:2] for name, error in report["errors"].items()} == {
        name: ["MissingExtraError", message] for name, message in MISSING_EXTRA_MESSAGES.items()
    }
    assert all(error[2] for error in report["errors"].values())  # each is an ImportError
    assert Path(report["prefix"]) == core_venv.parent.parent


def test_mypy_strict_sees_the_installed_package(core_venv: Path, tmp_path: Path) -> None:
    result = mypy_user_program(core_venv, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == USER_ERROR, result.stdout


def test_mypy_strict_sees_an_editable_install(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    python = make_venv(tmp_path / "venv")
    pip_install(python, "-e", str(project))
    result = mypy_user_program(python, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[0] == USER_ERROR, result.stdout
    assert "Found 1 error in 1 file" in result.stdout
