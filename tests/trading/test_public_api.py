"""transportkit.trading exports what it documents, and never imports a backend."""

from __future__ import annotations

import ast
from pathlib import Path

import transportkit.trading as trading

PACKAGE = Path(trading.__file__).parent


def test_all_names_exist_and_are_sorted_uniquely() -> None:
    for name in trading.__all__:
        assert hasattr(trading, name), name
    assert len(set(trading.__all__)) == len(trading.__all__)
    assert sorted(trading.__all__, key=lambda n: (not n.isupper(), n)) == trading.__all__


def test_every_public_non_module_attribute_is_in_all() -> None:
    public = {
        name
        for name, value in vars(trading).items()
        if not name.startswith("_") and not isinstance(value, type(trading))
    }
    assert public == set(trading.__all__)


def test_trading_code_imports_no_backend_and_no_zmq_or_simpy() -> None:
    forbidden = ("zmq", "simpy", "transportkit.zmq_backend", "transportkit.sim_backend")
    for path in PACKAGE.rglob("*.py"):
        if "_pb" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"
