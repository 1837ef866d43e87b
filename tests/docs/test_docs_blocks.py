"""Every code block of the README and of the documentation runs, so none can drift.

- Each fenced ``python`` block (also ``py``, ``python3``) of ``README.md`` and of every
  ``docs/**/*.md`` runs as a script of its own: a fresh namespace whose ``__name__`` is
  ``"__main__"``, its output captured, a timeout. A ``test_*`` function it defines
  without parameters is called too (a test shown in the docs must pass). Blocks fenced
  ``text``, ``pycon``, ``toml`` or anything else are not run.
- Each command of a ``sh`` block that starts with ``transportkit`` (or
  ``.venv/bin/transportkit``, also after ``&&``) is parsed by the installed command's
  own argument parser, so a renamed subcommand or option fails here; the fast ones
  (``--help``, ``--version``, ``scenarios``, the bare demo) are also run and must exit 0.

Tests are named by file and block number (``docs/testing.md:3``), so a failure names
the page. Some blocks also promise what they print; those lines are checked.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import re
import shlex
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
BLOCK_TIMEOUT = 30.0  # seconds; each block should take well under one
RUN_TIMEOUT = 20.0  # seconds for a command that is run (they take about one)
PYTHON = {"python", "py", "python3"}
FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S
)


@dataclass(frozen=True)
class Block:
    path: str  # relative to the repository
    index: int  # among the blocks of its language in that file
    line: int
    language: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.index}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks_of(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    found: list[Block] = []
    counts: dict[str, int] = {}
    for match in FENCE.finditer(text):
        info = match["info"].strip().split()
        language = info[0].lower() if info else ""
        language = "python" if language in PYTHON else language
        index = counts.get(language, 0)
        counts[language] = index + 1
        line = text.count("\n", 0, match.start()) + 2
        code = textwrap.dedent(match["body"])
        found.append(Block(str(path.relative_to(ROOT)), index, line, language, code))
    return found


def all_blocks(language: str) -> list[Block]:
    return [b for page in pages() for b in blocks_of(page) if b.language == language]


PYTHON_BLOCKS = all_blocks("python")
SH_BLOCKS = all_blocks("sh")

# Lines some blocks promise to print, by page and a text that marks the block.
PRINTS: dict[tuple[str, str], list[str]] = {
    ("README.md", "def trader"): [
        "[b'approved', b'Position limit exceeded']",
        "[b'approved', b'Position limit exceeded']",
    ],
    ("docs/getting-started.md", "async def trading"): [
        "[b'approved', b'rejected']",
        "[b'approved', b'rejected']",
    ],
    ("docs/backends.md", "def one_quote"): ["[b'187.20', b'187.25']", "[b'187.20', b'187.25']"],
    ("docs/testing.md", "def echo_once"): ["sim [b'ping']", "zmq [b'ping']"],
    ("docs/testing.md", "def two_tasks"): ["0", "FIFO except step 1 (index 1)", "never short 0.5"],
}


# Tests some blocks define and that must have been found and run.
RUNS: dict[tuple[str, str], list[str]] = {
    ("docs/testing.md", "def test_every_order_gets_a_verdict"): [
        "test_every_order_gets_a_verdict_or_a_typed_failure",
        "test_the_run_is_a_function_of_its_seed",
    ],
    ("docs/testing.md", "def test_an_order_sent_into_a_partition"): [
        "test_an_order_sent_into_a_partition_arrives_after_the_repair"
    ],
}


class BlockTimeout(Exception):
    pass


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> NoReturn:
        raise BlockTimeout(f"{what} ran for more than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_block(block: Block) -> tuple[str, list[str]]:
    """Run ``block`` as a script; return its output and the tests it defined and ran."""
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": str(ROOT / block.path)}
    out = io.StringIO()
    ran = []
    # Line numbers in a traceback are the page's own.
    code = compile("\n" * (block.line - 1) + block.code, str(ROOT / block.path), "exec")
    with deadline(BLOCK_TIMEOUT, block.id), contextlib.redirect_stdout(out):
        exec(code, namespace)
        for name, value in list(namespace.items()):
            is_test = name.startswith("test_") and inspect.isfunction(value)
            if is_test and not inspect.signature(value).parameters:
                value()
                ran.append(name)
    return out.getvalue(), ran


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.id for b in PYTHON_BLOCKS])
def test_python_block_runs(block: Block) -> None:
    output, ran = run_block(block)
    for (path, marker), names in RUNS.items():
        if block.path == path and marker in block.code:
            assert set(names) <= set(ran), (block.id, names, ran)
    printed = output.splitlines()
    for (path, marker), lines in PRINTS.items():
        if block.path == path and marker in block.code:
            position = 0
            for line in lines:  # in this order, others may come between
                assert line in printed[position:], (block.id, line, printed)
                position = printed.index(line, position) + 1


def test_the_promises_name_real_blocks() -> None:
    """Each entry of PRINTS and RUNS finds its block, so a moved example cannot skip its
    check; and the pages do have Python blocks."""
    for path, marker in [*PRINTS, *RUNS]:
        assert any(b.path == path and marker in b.code for b in PYTHON_BLOCKS), (path, marker)
    assert len({b.path for b in PYTHON_BLOCKS}) >= 5


def test_a_failing_block_fails_and_names_its_page() -> None:
    block = Block("docs/example.md", 0, 10, "python", "x = 1\nassert x == 2\n")
    with pytest.raises(AssertionError) as failure:
        run_block(block)
    assert str(failure.traceback[-1].path) == str(ROOT / "docs" / "example.md")
    assert failure.traceback[-1].lineno + 1 == 11  # the page's own line number


# The command line.


def cli_main() -> Callable[[list[str]], int | None]:
    (script,) = entry_points(group="console_scripts", name="transportkit")
    main: Callable[[list[str]], int | None] = script.load()
    return main


def commands_of(block: Block) -> list[list[str]]:
    """The ``transportkit`` commands of a sh block, as argument lists (without the name)."""
    text = block.code.replace("\\\n", " ")
    commands = []
    for raw in text.splitlines():
        line = raw.strip().removeprefix("$ ")
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"&&|\|\||;|\|", line):
            words = shlex.split(part, comments=True)
            if words and words[0].rsplit("/", 1)[-1] == "transportkit":
                commands.append(words[1:])
    return commands


COMMANDS = [(b, argv) for b in SH_BLOCKS for argv in commands_of(b)]
FAST = {"--help", "-h", "--version", "scenarios"}


class Parsed(BaseException):  # not caught by an `except Exception` in the command
    """Raised in place of running the command once its arguments parsed."""


def parse_only(argv: list[str]) -> None:
    """Give ``argv`` to the command, stopping after its parser accepted them.

    Raises:
        AssertionError: The parser refused them (argparse exits with status 2).
    """
    original = argparse.ArgumentParser.parse_args

    def parse_args(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        original(self, *args, **kwargs)  # refuses with SystemExit(2)
        raise Parsed

    err = io.StringIO()
    with (
        pytest.MonkeyPatch.context() as patch,
        contextlib.redirect_stderr(err),
        contextlib.redirect_stdout(io.StringIO()),
        deadline(BLOCK_TIMEOUT, f"transportkit {shlex.join(argv)}"),
    ):
        patch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
        try:
            cli_main()(argv)
        except Parsed:
            return
        except SystemExit as exc:  # --help, --version, or a refusal
            assert exc.code in (0, None), f"transportkit {shlex.join(argv)}: {err.getvalue()}"
            return
    raise AssertionError(f"transportkit {shlex.join(argv)} ran without parsing arguments")


@pytest.mark.parametrize(
    ("block", "argv"), COMMANDS, ids=[f"{b.id}:{shlex.join(a) or 'demo'}" for b, a in COMMANDS]
)
def test_transportkit_command_parses(block: Block, argv: list[str]) -> None:
    parse_only(argv)
    if argv and not FAST.intersection(argv[:1] + argv[-1:]):
        return
    result = subprocess.run(
        [sys.executable, "-m", "transportkit", *argv],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, (block.id, argv, result.stdout, result.stderr)


def test_the_command_check_refuses_an_unknown_option() -> None:
    """The parser check itself fails on what the command would refuse."""
    with pytest.raises(AssertionError, match="no-such-option"):
        parse_only(["run", "trading_day.toml", "--no-such-option"])
    parse_only(["run", "trading_day.toml", "--seed", "7"])


def test_sh_blocks_with_commands_are_found() -> None:
    assert any(argv[:1] == ["run"] for _, argv in COMMANDS), COMMANDS


# Tests shown in the docs that need pytest (plugin fixtures, @sim_test) run under pytest.

FAILS_ON_PURPOSE = {("docs/testing.md", "def test_the_first_order_sent_is_the_first_booked")}
"""A block that shows a failing test: tests/testing/test_sim_test.py runs it and checks
the report the page shows."""


def pytest_blocks() -> list[Block]:
    """Blocks with a test that takes a ``tk_`` fixture or is a ``@sim_test`` (tests
    without parameters, and Hypothesis ``@given`` tests, already ran as scripts)."""
    return [
        b
        for b in PYTHON_BLOCKS
        if (re.search(r"def test_\w+\([^)]*\btk_\w+", b.code) or "@sim_test" in b.code)
        and not any(b.path == p and m in b.code for p, m in FAILS_ON_PURPOSE)
    ]


def test_tests_shown_in_the_docs_pass_under_pytest(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    for name in ("CI", "BUILD_NUMBER"):  # the inner run's output, as on a developer's machine
        monkeypatch.delenv(name, raising=False)
    shown = pytest_blocks()
    assert len(shown) >= 2  # getting-started and testing show some
    names = [f"test_block_{number}" for number in range(len(shown))]
    for name, block in zip(names, shown, strict=True):
        pytester.makepyfile(**{name: block.code})
    result = pytester.runpytest("-p", "no:cacheprovider", "-q", "-rA")
    lines = result.stdout.lines
    for name, block in zip(names, shown, strict=True):
        assert any(line.startswith(f"PASSED {name}.py") for line in lines), (block.id, lines)
    assert not any(line.startswith(("FAILED", "ERROR")) for line in lines), lines


def test_the_failing_example_is_the_one_the_report_test_runs() -> None:
    source = (ROOT / "tests" / "testing" / "test_sim_test.py").read_text(encoding="utf-8")
    for path, marker in FAILS_ON_PURPOSE:
        assert any(b.path == path and marker in b.code for b in PYTHON_BLOCKS), (path, marker)
        assert path in source
