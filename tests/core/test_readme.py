"""The README's code is run, so it cannot drift from the library."""

from __future__ import annotations

import contextlib
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


def test_the_two_backends_example_prints_what_the_text_promises() -> None:
    """The README's one Python block runs on both backends and prints what it says.

    (Every Python block of the README and of docs/ also runs in tests/docs/.)"""
    (code,) = blocks("python")
    out = io.StringIO()
    namespace: dict[str, object] = {"__name__": "__main__"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), namespace)
    printed = out.getvalue().splitlines()
    assert printed[0] == "[b'approved', b'Position limit exceeded']"
    assert printed[1] == "[b'approved', b'Position limit exceeded']"
    assert printed[2].startswith("virtual time ")
    assert "Both runs print `[b'approved', b'Position limit exceeded']`" in TEXT


def test_the_readme_links_every_page_of_the_site() -> None:
    """The README's table of contents names every page of mkdocs.yml's navigation, and
    each link points to a file that exists."""
    root = README.parent
    section = TEXT.split("## Documentation", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\((docs/[^)#]+\.md)\)", section)
    assert links, section
    for link in links:
        assert (root / link).is_file(), link
    nav = (root / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:", 1)[1]
    pages = re.findall(r"([\w/.-]+\.md)\s*$", nav, flags=re.M)
    top_pages = {p for p in pages if "/" not in p or p.endswith("/index.md")}  # not sub-pages
    assert top_pages <= {link.removeprefix("docs/") for link in links}, top_pages
