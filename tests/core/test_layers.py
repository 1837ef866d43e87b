"""The layers: patterns and trading code know the interfaces only (the example programs,
which choose a backend, live in ``transportkit.examples``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "transportkit"
BACKEND_FREE = ["patterns", "trading"]
FORBIDDEN = ("zmq", "simpy", "transportkit.zmq_backend", "transportkit.sim_backend")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("room", BACKEND_FREE)
def test_backend_free_rooms_import_no_backend(room: str) -> None:
    offenders = []
    for path in sorted((PACKAGE / room).rglob("*.py")):
        for name in imported_modules(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert offenders == []


def test_interfaces_import_no_backend_module() -> None:
    for path in sorted(PACKAGE.glob("_*.py")):
        for name in imported_modules(path):
            assert not any(name == f or name.startswith(f + ".") for f in FORBIDDEN), path
