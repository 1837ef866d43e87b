"""Scenario files: TOML in, validated plain data out.

A scenario names its nodes' components (publishers, subscribers, risk servers, ...),
the endpoints they use, the load, the latency of the links, a fault schedule and the
invariants to check. Every mistake in a file is reported as a :class:`ScenarioError`
naming the file, the key and the problem, before anything runs.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from transportkit._errors import OptionError, TransportError
from transportkit._options import SocketOptions
from transportkit.sim_backend import (
    Constant,
    Crash,
    DropConnection,
    Empirical,
    Fault,
    Hold,
    LatencyModel,
    LogNormal,
    Normal,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
    Uniform,
)

__all__ = [
    "ComponentSpec",
    "InvariantSpec",
    "LinkSpec",
    "Scenario",
    "ScenarioError",
    "Table",
    "load_scenario",
    "parse_scenario",
]

T = TypeVar("T")


class ScenarioError(TransportError, ValueError):
    """A scenario file is malformed; the message names the file, the key and the problem."""


class Table:
    """A TOML table being read: typed getters that name the key on error, and a check
    that every key was used (so a typo is an error, not a silently ignored setting).
    """

    def __init__(self, data: Mapping[str, Any], where: str, source: str) -> None:
        if not isinstance(data, Mapping):
            raise ScenarioError(f"{source}: {where} must be a table, got {type(data).__name__}")
        self._data = dict(data)
        self._used: set[str] = set()
        self.where = where
        self.source = source

    def error(self, key: str, problem: str) -> ScenarioError:
        """A ScenarioError for ``key`` of this table."""
        return ScenarioError(f"{self.source}: {self.where} key '{key}': {problem}")

    def has(self, key: str) -> bool:
        """Whether the table sets ``key``."""
        return key in self._data

    def _get(self, key: str, default: Any, check: Callable[[Any], bool], what: str) -> Any:
        self._used.add(key)
        if key not in self._data:
            if default is _REQUIRED:
                typo = difflib.get_close_matches(key, [str(k) for k in self._data], n=1)
                hint = f"; the table has '{typo[0]}': a typo?" if typo else ""
                raise self.error(key, f"is required ({what}){hint}")
            return default
        value = self._data[key]
        if not check(value):
            raise self.error(key, f"must be {what}, got {value!r}")
        return value

    def text(self, key: str, default: Any = None, *, choices: tuple[str, ...] = ()) -> Any:
        """A string (one of ``choices`` if given)."""
        what = "one of " + ", ".join(repr(c) for c in choices) if choices else "a string"
        return self._get(
            key,
            default,
            lambda v: isinstance(v, str) and (not choices or v in choices) and v != "",
            what,
        )

    def number(
        self, key: str, default: Any = None, *, minimum: float = 0.0, positive: bool = False
    ) -> Any:
        """A finite number >= ``minimum`` (> 0 if ``positive``), as float."""
        what = "a number > 0" if positive else f"a number >= {minimum:g}"
        value = self._get(
            key,
            default,
            lambda v: (
                isinstance(v, (int, float))
                and not isinstance(v, bool)
                and math.isfinite(v)
                and v >= minimum
                and (v > 0 or not positive)
            ),
            what,
        )
        return value if value is None or value is _REQUIRED else float(value)

    def integer(self, key: str, default: Any = None, *, minimum: int = 0) -> Any:
        """An integer >= ``minimum``."""
        return self._get(
            key,
            default,
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum,
            f"an integer >= {minimum}",
        )

    def boolean(self, key: str, default: Any = None) -> Any:
        """True or false."""
        return self._get(key, default, lambda v: isinstance(v, bool), "true or false")

    def texts(self, key: str, default: Any = None) -> Any:
        """A list of non-empty strings."""
        return self._get(
            key,
            default,
            lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
            "a list of strings",
        )

    def numbers(self, key: str, default: Any = None) -> Any:
        """A non-empty list of finite numbers >= 0."""
        return self._get(
            key,
            default,
            lambda v: (
                isinstance(v, list)
                and bool(v)
                and all(
                    isinstance(x, (int, float))
                    and not isinstance(x, bool)
                    and math.isfinite(x)
                    and x >= 0
                    for x in v
                )
            ),
            "a non-empty list of numbers >= 0",
        )

    def table(self, key: str, *, required: bool = False) -> Table | None:
        """A sub-table, or None if absent."""
        self._used.add(key)
        if key not in self._data:
            if required:
                raise self.error(key, "is required (a table)")
            return None
        value = self._data[key]
        if not isinstance(value, Mapping):
            raise self.error(key, f"must be a table, got {value!r}")
        where = f"[{key}]" if self.where == _ROOT else f"{self.where}.{key}"
        return Table(value, where, self.source)

    def tables(self, key: str) -> Iterator[tuple[int, Table]]:
        """An array of tables (``[[key]]``), each with its index."""
        self._used.add(key)
        value = self._data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self.error(key, f"must be an array of tables ([[{key}]]), got {value!r}")
        for i, item in enumerate(value):
            yield i, Table(item, f"[[{key}]] #{i + 1}", self.source)

    def options(self, key: str = "options") -> SocketOptions:
        """A table of socket options, validated by :class:`~transportkit.SocketOptions`."""
        sub = self.table(key)
        if sub is None:
            return SocketOptions()
        raw = dict(sub._data)
        if isinstance(raw.get("routing_id"), str):
            raw["routing_id"] = raw["routing_id"].encode()
        try:
            return SocketOptions.from_mapping(raw)
        except OptionError as exc:
            raise self.error(key, str(exc)) from None

    def done(self) -> None:
        """Raise for every key that nothing read (typos, unsupported settings)."""
        unknown = sorted(set(self._data) - self._used)
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, sorted(self._used), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.error(key, f"is not a known setting here{hint}")


_ROOT = "the file"
_REQUIRED: Any = object()
REQUIRED: Any = _REQUIRED
"""Pass as ``default`` to make a key mandatory."""


@dataclass(frozen=True)
class ComponentSpec:
    """One component: what it is, where it runs, and its kind-specific parameters."""

    name: str
    kind: str
    node: str
    params: Any


@dataclass(frozen=True)
class LinkSpec:
    """A latency override for the link(s) between two nodes."""

    a: str
    b: str
    latency: LatencyModel
    both_ways: bool = True


@dataclass(frozen=True)
class InvariantSpec:
    """An invariant: its kind, a description, and its parameters."""

    kind: str
    description: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class Scenario:
    """A validated scenario (see :func:`load_scenario`)."""

    name: str
    description: str
    source: str
    seed: int
    duration: float
    drain: float
    latency: LatencyModel
    links: tuple[LinkSpec, ...]
    components: tuple[ComponentSpec, ...]
    faults: tuple[tuple[float, Fault], ...]
    invariants: tuple[InvariantSpec, ...]
    record_trace: bool = True
    nodes: tuple[str, ...] = field(default=())
    process_nodes: tuple[str, ...] = field(default=())
    """Nodes whose components run in a child process on the zmq backend ([[node]])."""


def latency_model(table: Table) -> LatencyModel:
    """Read a latency model table (values in microseconds)."""
    model = table.text("model", REQUIRED, choices=_MODELS)
    us = 1e-6
    try:
        if model == "constant":
            result: LatencyModel = Constant(table.number("delay_us", REQUIRED) * us)
        elif model == "uniform":
            result = Uniform(
                table.number("low_us", REQUIRED) * us, table.number("high_us", REQUIRED) * us
            )
        elif model == "normal":
            result = Normal(
                table.number("mean_us", REQUIRED) * us,
                table.number("stddev_us", REQUIRED) * us,
                table.number("min_us", 0.0) * us,
            )
        elif model == "lognormal":
            result = LogNormal.from_median(
                table.number("median_us", REQUIRED, positive=True) * us,
                table.number("sigma", REQUIRED),
                table.number("min_us", 0.0) * us,
            )
        else:
            result = Empirical([v * us for v in table.numbers("samples_us", REQUIRED)])
    except OptionError as exc:
        raise table.error("model", str(exc)) from None
    table.done()
    return result


_MODELS = ("constant", "uniform", "normal", "lognormal", "empirical")
_FAULT_KINDS = (
    "crash", "restart", "partition", "repair", "hold", "release", "drop_connection", "latency",
)  # fmt: skip


def _fault(table: Table) -> tuple[float, Fault]:
    at = table.number("at", REQUIRED)
    kind = table.text("kind", REQUIRED, choices=_FAULT_KINDS)
    fault: Fault
    if kind in ("crash", "restart"):
        node = table.text("node", REQUIRED)
        fault = Crash(node) if kind == "crash" else Restart(node)
    else:
        a, b = table.text("a", REQUIRED), table.text("b", REQUIRED)
        both = table.boolean("both_ways", True)
        if kind == "partition":
            fault = Partition(a, b, both)
        elif kind == "repair":
            fault = Repair(a, b, both)
        elif kind == "hold":
            fault = Hold(a, b, both)
        elif kind == "release":
            fault = Release(a, b, both)
        elif kind == "drop_connection":
            fault = DropConnection(a, b, table.boolean("discard_queues", False))
        else:
            sub = table.table("latency")
            fault = SetLatency(a, b, None if sub is None else latency_model(sub), both)
    table.done()
    return at, fault


def parse_scenario(
    data: Mapping[str, Any],
    source: str,
    components: Mapping[str, Callable[[Table], Any]],
    invariants: Mapping[str, Callable[[Table], Mapping[str, Any]]],
) -> Scenario:
    """Validate parsed TOML ``data`` (from ``source``) into a :class:`Scenario`.

    Args:
        data: The parsed TOML document.
        source: The file name, for error messages.
        components: Component kind -> parser of its parameters (from the table).
        invariants: Invariant kind -> parser of its parameters.
    """
    root = Table(data, _ROOT, source)
    head = root.table("scenario", required=True)
    assert head is not None
    name = head.text("name", REQUIRED)
    description = head.text("description", "")
    seed = head.integer("seed", 0)
    duration = head.number("duration", REQUIRED, positive=True)
    drain = head.number("drain", 1.0)
    record = head.boolean("record_trace", True)
    lat = head.table("latency")
    default_latency = Constant(50e-6) if lat is None else latency_model(lat)
    head.done()

    links = []
    for _, table in root.tables("link"):
        sub = table.table("latency", required=True)
        assert sub is not None
        links.append(
            LinkSpec(
                table.text("a", REQUIRED),
                table.text("b", REQUIRED),
                latency_model(sub),
                table.boolean("both_ways", True),
            )
        )
        table.done()

    specs: list[ComponentSpec] = []
    for _, table in root.tables("component"):
        comp_name = table.text("name", REQUIRED)
        table.where = f"[[component]] '{comp_name}'"
        kind = table.text("kind", REQUIRED, choices=tuple(sorted(components)))
        node = table.text("node", REQUIRED)
        if any(spec.name == comp_name for spec in specs):
            raise table.error("name", f"duplicate component name {comp_name!r}")
        params = components[kind](table)
        table.done()
        specs.append(ComponentSpec(comp_name, kind, node, params))
    if not specs:
        raise ScenarioError(f"{source}: a scenario needs at least one [[component]]")
    nodes = tuple(dict.fromkeys(spec.node for spec in specs))

    faults = []
    for _, table in root.tables("fault"):
        faults.append(_fault(table))
    for _, fault in faults:
        for field_name in ("node", "a", "b"):
            node_name = getattr(fault, field_name, None)
            if node_name is not None and node_name not in nodes:
                raise ScenarioError(
                    f"{source}: fault {fault!r} names node {node_name!r}, which runs no "
                    f"component (nodes: {', '.join(nodes)})"
                )
    for link in links:
        for node_name in (link.a, link.b):
            if node_name not in nodes:
                raise ScenarioError(f"{source}: [[link]] names unknown node {node_name!r}")

    process_nodes = _node_settings(root, nodes)

    checks = []
    for _, table in root.tables("invariant"):
        kind = table.text("kind", REQUIRED, choices=tuple(sorted(invariants)))
        says = table.text("description", "")
        table.where = f"[[invariant]] {kind}"
        params = invariants[kind](table)
        table.done()
        checks.append(InvariantSpec(kind, says, params))
    root.done()
    return Scenario(
        name=name,
        description=description,
        source=source,
        seed=seed,
        duration=duration,
        drain=drain,
        latency=default_latency,
        links=tuple(links),
        components=tuple(specs),
        faults=tuple(sorted(faults, key=lambda item: item[0])),
        invariants=tuple(checks),
        record_trace=record,
        nodes=nodes,
        process_nodes=process_nodes,
    )


def _node_settings(root: Table, nodes: tuple[str, ...]) -> tuple[str, ...]:
    """Read the ``[[node]]`` tables; return the nodes to run as processes (zmq only)."""
    seen: set[str] = set()
    processes = []
    for _, table in root.tables("node"):
        name = table.text("name", REQUIRED)
        if name not in nodes:
            raise table.error(
                "name", f"{name!r} is not a node that runs components (nodes: {', '.join(nodes)})"
            )
        if name in seen:
            raise table.error("name", f"node {name!r} has two [[node]] tables")
        seen.add(name)
        table.where = f"[[node]] '{name}'"
        if table.boolean("process", False):
            processes.append(name)
        table.done()
    return tuple(processes)


def load_scenario(
    path: str | Path,
    components: Mapping[str, Callable[[Table], Any]],
    invariants: Mapping[str, Callable[[Table], Mapping[str, Any]]],
) -> Scenario:
    """Read and validate a scenario file; ScenarioError names what is wrong."""
    file = Path(path)
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScenarioError(f"{file}: no such scenario file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{file}: not valid TOML: {exc}") from None
    return parse_scenario(data, str(file), components, invariants)
