"""The README's code is run, so it cannot drift from the library."""

from __future__ import annotations

import contextlib
import inspect
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
TEXT = README.read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", TEXT, flags=re.S)


def test_quick_start_is_two_one_line_commands() -> None:
    section = TEXT.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert len(commands) == 2
    assert all(c.count("\n") == 1 for c in commands), commands
    assert "transportkit" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_on_three_interpreters() -> None:
    """.ci/run runs every nox session; each makes a venv of its interpreter and runs
    the README's test command's two steps in it."""
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    noxfile = (README.parent / "noxfile.py").read_text(encoding="utf-8")
    test_command = blocks("sh")[1].strip()
    assert test_command == (
        "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && .venv/bin/pytest"
    )
    assert ci.strip().splitlines()[-1] == ".venv-ci/bin/nox"
    assert 'PYTHONS = ["3.11", "3.12", "3.13"]' in noxfile
    assert "@nox.session(python=PYTHONS)" in noxfile
    assert 'session.install("-q", "-e", ".[dev]")' in noxfile
    assert 'session.run("pytest", *session.posargs)' in noxfile


def test_python_examples_run_and_print_what_the_text_promises() -> None:
    """Every Python block runs; test functions without parameters in them run too."""
    out = io.StringIO()
    ran = []
    for code in blocks("python"):
        namespace: dict[str, object] = {"__name__": "readme"}
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(README), "exec"), namespace)
            for name, value in namespace.items():
                if name.startswith("test_") and callable(value):
                    params = inspect.signature(value).parameters
                    if not params:
                        value()
                        ran.append(name)
    assert "test_every_order_gets_a_verdict_or_a_typed_failure" in ran
    printed = out.getvalue().splitlines()
    assert printed[0] == "[b'approved', b'Position limit exceeded']"
    assert printed[1] == "[b'approved', b'Position limit exceeded']"
    assert printed[2].startswith("virtual time ")
    assert "FIFO except step 1 (index 1)" in printed  # the scheduler section
    assert "never short 0.5" in printed
