"""Project basics: the licence, the changelog, the metadata, the wheel configuration, and
what ``accelerated()`` answers."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import yaml

from transportkit.zmq_backend import Acceleration, accelerated

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def test_accelerated_is_false_when_the_accelerator_is_off() -> None:
    """Regression: it returned the tuple ``(False, reason)``, which is true."""
    code = textwrap.dedent(
        """
        from transportkit.zmq_backend import accelerated
        a = accelerated()
        on, why = a
        print(bool(a), a.active, a[0], on, repr(why), repr(a.reason))
        """
    )
    env = {"TRANSPORTKIT_PURE_PYTHON": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    reason = "'TRANSPORTKIT_PURE_PYTHON is set'"
    assert out.stdout.split(" ", 4) == ["False", "False", "False", "False", f"{reason} {reason}\n"]


def test_accelerated_is_true_exactly_when_active() -> None:
    assert bool(Acceleration(True, "")) is True
    assert bool(Acceleration(False, "not built")) is False
    acceleration = accelerated()
    assert bool(acceleration) is acceleration.active
    assert acceleration.active == (acceleration.reason == "")


def test_licence_file_is_the_declared_mit_licence() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert re.search(r"^Copyright \(c\) \d{4} the transportkit authors$", text, flags=re.M)
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
    assert PROJECT["license"] == "MIT"
    assert PROJECT["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])  # PEP 639
    requires = PYPROJECT["build-system"]["requires"]
    assert requires == ["setuptools>=77"]  # the first to take a licence expression


def test_changelog_has_an_unreleased_section_for_this_version() -> None:
    import transportkit  # noqa: PLC0415

    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    release = transportkit.__version__.split(".dev")[0]
    assert f"## [{release}] - Unreleased" in text
    section = text.split(f"## [{release}]", 1)[1].split("\n## [", 1)[0]
    assert "### Breaking" in section
    for change in (
        "MissingExtraError",
        "recv_or_stop",
        "XPUB",
        "status 3",
        "linger",
        "transportkit.examples",
        "src layout",
    ):
        assert change in section, change


def test_metadata_has_classifiers_and_urls() -> None:
    classifiers = PROJECT["classifiers"]
    versions = {
        c.rsplit(" ", 1)[1]
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert versions == {"3.11", "3.12", "3.13"}
    assert PROJECT["requires-python"] == ">=3.11"
    assert "Typing :: Typed" in classifiers
    assert any(c.startswith("Operating System ::") for c in classifiers)
    assert any(c.startswith("Topic ::") for c in classifiers)
    urls = PROJECT["urls"]
    assert {"Homepage", "Documentation", "Changelog"} <= set(urls)
    assert all(u.startswith("https://") for u in urls.values())


def test_cibuildwheel_builds_cpython_311_to_313_and_smoke_tests_them() -> None:
    config = PYPROJECT["tool"]["cibuildwheel"]
    assert config["build"] == ["cp311-*", "cp312-*", "cp313-*"]
    assert "pp*" in config["skip"]
    assert config["test-command"] == "python tests/packaging/_core_check.py --smoke"
    for source in config["test-sources"]:
        assert (ROOT / source).is_file(), source


def test_wheels_workflow_is_well_formed_and_runs_cibuildwheel_on_three_oses() -> None:
    """It cannot run here: check that it parses and says what it should."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "wheels.yml").read_text("utf-8"))
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare on as True
    assert {"push", "pull_request", "workflow_dispatch"} <= set(triggers)
    job = workflow["jobs"]["wheels"]
    assert set(job["strategy"]["matrix"]["os"]) == {
        "ubuntu-latest",
        "macos-latest",
        "windows-latest",
    }
    assert job["runs-on"] == "${{ matrix.os }}"
    commands = "\n".join(step.get("run", "") for step in job["steps"])
    assert "python -m cibuildwheel --output-dir wheelhouse" in commands
    for step in job["steps"]:
        assert set(step) <= {"name", "uses", "with", "run", "env"}, step
        assert ("uses" in step) != ("run" in step), step
    assert "sdist" in workflow["jobs"]
