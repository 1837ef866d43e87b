"""The package's source logs the standard way: a logger per module named after it, no
root-logger calls, no logging configuration, no ``print`` outside the command-line tools
and the examples, and no eagerly formatted log messages.
"""

from __future__ import annotations

import ast
import functools
import logging
from pathlib import Path

import transportkit

PACKAGE = Path(transportkit.__file__).parent

PRINT_ALLOWED = (
    "cli.py",
    "scenario/_cli.py",
    "scenario/_sweep_cli.py",
    "_bench/",
    "examples/",
    # Command-line mains too (``python -m ...``): the scenario runner's child process,
    # whose stdout line READY is its protocol with the parent, and the protobuf code
    # generator for developers.
    "scenario/_child.py",
    "trading/_codegen.py",
)
LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}


@functools.cache
def _modules() -> list[tuple[str, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith("trading/_pb/"):
            continue  # generated protobuf code
        found.append((rel, ast.parse(path.read_text(encoding="utf-8"), rel)))
    return found


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def test_the_walk_sees_the_whole_package() -> None:
    names = [rel for rel, _ in _modules()]
    assert len(names) > 100
    assert "patterns/paranoid_pirate.py" in names and "cli.py" in names


def test_no_print_outside_the_command_line_tools_and_the_examples() -> None:
    offenders = [
        f"{rel}:{call.lineno}"
        for rel, tree in _modules()
        if not rel.startswith(PRINT_ALLOWED)
        for call in _calls(tree)
        if isinstance(call.func, ast.Name) and call.func.id == "print"
    ]
    assert offenders == []


def test_the_print_check_finds_a_print() -> None:
    tree = ast.parse("def f():\n    print('x')\n")
    assert [c.lineno for c in _calls(tree) if isinstance(c.func, ast.Name)] == [2]


def _logger_names(tree: ast.Module) -> set[str]:
    """Module-level names bound to ``logging.getLogger(...)``."""
    names = set()
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr == "getLogger"
        ):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def test_every_module_that_logs_uses_a_logger_named_after_it() -> None:
    problems = []
    loggers = 0
    for rel, tree in _modules():
        for call in _calls(tree):
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr == "getLogger":
                args = call.args
                named = len(args) == 1 and isinstance(args[0], ast.Name)
                named = named and args[0].id == "__name__"  # type: ignore[attr-defined]
                cli = rel.startswith(PRINT_ALLOWED)  # may configure the package's logger
                if not named and not cli:
                    problems.append(f"{rel}:{call.lineno}: getLogger without __name__")
            if (
                isinstance(func, ast.Attribute)
                and isinstance(func.value, ast.Name)
                and func.value.id == "logging"
                and (func.attr in LOG_METHODS or func.attr == "basicConfig")
            ):
                problems.append(f"{rel}:{call.lineno}: logging.{func.attr}() (root logger)")
        names = _logger_names(tree)
        uses = {
            call.func.value.id
            for call in _calls(tree)
            if isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name)
            and call.func.attr in LOG_METHODS
            and call.func.value.id in {"logger", "log", "_logger", "LOGGER"}
        }
        uses |= {
            arg.id
            for call in _calls(tree)
            if isinstance(call.func, ast.Name) and call.func.id == "limited" and call.args
            for arg in call.args[:1]
            if isinstance(arg, ast.Name)
        }
        if uses and rel != "_log.py":
            loggers += 1
            if "logger" not in names:
                problems.append(f"{rel}: logs through {sorted(uses)} without a module logger")
        if names - {"logger"}:
            problems.append(f"{rel}: a module logger not called 'logger': {sorted(names)}")
    assert problems == []
    assert loggers >= 15  # the patterns, the trading components


def test_the_package_logger_has_a_null_handler_and_no_other() -> None:
    handlers = logging.getLogger("transportkit").handlers
    assert [type(h) for h in handlers] == [logging.NullHandler]
