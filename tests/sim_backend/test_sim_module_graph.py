"""The sim core's modules import each other one way (issue 10, deliverable 10).

Parsed with ``ast``, not imported: what is checked is the source. Runtime imports
(module level or inside functions) must form a graph without a cycle and follow the
layers below. Imports under ``if TYPE_CHECKING:`` are for annotations only; the few that
point back up (a socket names its node and its wire, a pipe names its socket, the wire
names the sockets it moves messages between) are listed, so that a new one is a
decision, not an accident.
"""

from __future__ import annotations

import ast
from pathlib import Path

import transportkit.sim_backend as sim_backend

PACKAGE = "transportkit.sim_backend"
SOURCE = Path(sim_backend.__file__).parent

# Each module may import at runtime only modules of a lower layer.
LAYERS = [
    ["_trace", "_latency", "_guards", "_sched", "connections"],
    ["_invariants"],
    ["_loop", "_topology", "_faults", "_perfetto"],
    ["_pipes", "_shrink", "_run", "_auth"],
    ["_kernel"],
    ["_wire", "_sockets"],
    ["_world"],
    ["__init__"],
]

TYPE_ONLY_BACK_REFERENCES = {
    ("_faults", "_world"),
    ("_pipes", "_sockets"),
    ("_sockets", "_wire"),
    ("_sockets", "_world"),
    ("_wire", "_sockets"),
}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> tuple[set[str], set[str]]:
    """(runtime, type-only) sibling modules imported by ``tree``."""
    runtime: set[str] = set()
    type_only: set[str] = set()

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit_stmt(stmt, True)
                for stmt in child.orelse:
                    visit_stmt(stmt, typing_only)
                continue
            visit_stmt(child, typing_only)

    def visit_stmt(stmt: ast.AST, typing_only: bool) -> None:
        names: list[str] = []
        if isinstance(stmt, ast.ImportFrom) and stmt.module:
            names = [stmt.module]
        elif isinstance(stmt, ast.Import):
            names = [alias.name for alias in stmt.names]
        for name in names:
            if name.startswith(PACKAGE + "."):
                (type_only if typing_only else runtime).add(name.split(".")[2])
        visit(stmt, typing_only)

    visit(tree, False)
    return runtime, type_only - runtime


def _graph() -> dict[str, tuple[set[str], set[str]]]:
    return {
        path.stem: _imports(ast.parse(path.read_text(encoding="utf-8")))
        for path in sorted(SOURCE.glob("*.py"))
    }


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for target in sorted(edges.get(name, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(edges):
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_every_sim_module_is_in_a_layer() -> None:
    layered = {name for layer in LAYERS for name in layer}
    assert set(_graph()) == layered


def test_runtime_imports_have_no_cycle() -> None:
    graph = _graph()
    assert _cycle({name: runtime for name, (runtime, _) in graph.items()}) is None


def test_runtime_imports_go_down_the_layers() -> None:
    level = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    upward = [
        (name, target)
        for name, (runtime, _) in _graph().items()
        for target in runtime
        if level[target] >= level[name]
    ]
    assert upward == []


def test_type_only_imports_that_point_up_are_the_known_ones() -> None:
    level = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    back = {
        (name, target)
        for name, (_, type_only) in _graph().items()
        for target in type_only
        if level[target] >= level[name]
    }
    assert back == TYPE_ONLY_BACK_REFERENCES
