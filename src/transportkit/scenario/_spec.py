"""Scenario files: TOML in, validated plain data out.

A scenario names its nodes' components (publishers, subscribers, risk servers, ...),
the endpoints they use, the load, the latency of the links, a fault schedule and the
invariants to check. Every mistake in a file is reported as a :class:`ScenarioError`
naming the file, the key and the problem, before anything runs; so is a file that is
not one (a directory, a FIFO, a device), is not UTF-8, is larger than
:data:`~transportkit.scenario._bounds.MAX_FILE_BYTES`, or nests deeper than the
format needs. Every count, number and string is bounded (see
:mod:`transportkit.scenario._bounds`), and validation is linear in the file's size.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import reprlib
import stat
import sys
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from transportkit._errors import OptionError, TransportError
from transportkit._options import SocketOptions
from transportkit.scenario._bounds import (
    MAX_CHILD_STARTS,
    MAX_COMPONENTS,
    MAX_DESCRIPTION_CHARS,
    MAX_FAULTS,
    MAX_FILE_BYTES,
    MAX_INVARIANTS,
    MAX_KEY_PARTS,
    MAX_LATENCY_US,
    MAX_LINKS,
    MAX_LIST_ITEMS,
    MAX_NAME_CHARS,
    MAX_NESTING,
    MAX_NODES,
    MAX_PROCESS_NODES,
    MAX_RUN_SECONDS,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_SIGMA,
    MAX_TEXT_CHARS,
)
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
    "check_nesting",
    "load_scenario",
    "parse_scenario",
    "read_scenario_text",
    "show",
]

T = TypeVar("T")

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlong = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxlevel = 3


def show(value: Any) -> str:
    """``repr(value)`` cut to a few dozen characters (a value in an error message)."""
    return _REPR.repr(value)


class ScenarioError(TransportError, ValueError):
    """A scenario file is malformed; the message names the file, the key and the problem."""


class Table:
    """A TOML table being read: typed getters that name the key on error, and a check
    that every key was used (so a typo is an error, not a silently ignored setting).

    Every getter bounds what it accepts (string lengths, list lengths, numeric ranges),
    and shows a rejected value cut short (:func:`show`), so no value in a file can make
    an error message long or slow.
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
        return ScenarioError(f"{self.source}: {self.where} key {show(key)}: {problem}")

    def has(self, key: str) -> bool:
        """Whether the table sets ``key``."""
        return key in self._data

    def _get(self, key: str, default: Any, check: Callable[[Any], bool], what: str) -> Any:
        self._used.add(key)
        if key not in self._data:
            if default is _REQUIRED:
                keys = [str(k) for k in self._data] if len(self._data) <= _HINT_KEYS else []
                typo = difflib.get_close_matches(key, keys, n=1)
                hint = f"; the table has {show(typo[0])}: a typo?" if typo else ""
                raise self.error(key, f"is required ({what}){hint}")
            return default
        value = self._data[key]
        if not check(value):
            raise self.error(key, f"must be {what}, got {show(value)}")
        return value

    def text(
        self,
        key: str,
        default: Any = None,
        *,
        choices: tuple[str, ...] = (),
        max_chars: int = MAX_TEXT_CHARS,
    ) -> Any:
        """A non-empty printable string of at most ``max_chars`` (one of ``choices`` if
        given).
        """
        if choices:
            what = "one of " + ", ".join(repr(c) for c in choices)
            return self._get(key, default, lambda v: isinstance(v, str) and v in choices, what)
        return self._get(
            key,
            default,
            lambda v: _is_text(v, max_chars),
            f"a non-empty string of at most {max_chars} printable characters",
        )

    def name(self, key: str, default: Any = None) -> Any:
        """A name (of a component, a node, a stream...): see :data:`MAX_NAME_CHARS`."""
        return self.text(key, default, max_chars=MAX_NAME_CHARS)

    def number(
        self,
        key: str,
        default: Any = None,
        *,
        minimum: float = 0.0,
        positive: bool = False,
        maximum: float = math.inf,
    ) -> Any:
        """A finite number >= ``minimum`` (> 0 if ``positive``) and <= ``maximum``, as
        float.
        """
        low = "> 0" if positive else f">= {minimum:g}"
        what = f"a number {low}" + (f" and <= {maximum:g}" if maximum < math.inf else "")

        def check(v: Any) -> bool:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return False
            # ints compare exactly (math.isfinite would overflow on a 400-digit one)
            if isinstance(v, float) and not math.isfinite(v):
                return False
            if not -sys.float_info.max <= v <= sys.float_info.max:  # no float holds it
                return False
            return minimum <= v <= maximum and (v > 0 or not positive)

        value = self._get(key, default, check, what)
        return value if value is None or value is _REQUIRED else float(value)

    def integer(
        self, key: str, default: Any = None, *, minimum: int = 0, maximum: int | None = None
    ) -> Any:
        """An integer >= ``minimum`` (and <= ``maximum`` if given)."""
        high = math.inf if maximum is None else maximum
        what = f"an integer >= {minimum}" + ("" if maximum is None else f" and <= {maximum}")
        return self._get(
            key,
            default,
            lambda v: isinstance(v, int) and not isinstance(v, bool) and minimum <= v <= high,
            what,
        )

    def boolean(self, key: str, default: Any = None) -> Any:
        """True or false."""
        return self._get(key, default, lambda v: isinstance(v, bool), "true or false")

    def texts(self, key: str, default: Any = None, *, max_items: int = MAX_LIST_ITEMS) -> Any:
        """A list of at most ``max_items`` names (non-empty printable strings)."""
        return self._get(
            key,
            default,
            lambda v: (
                isinstance(v, list)
                and len(v) <= max_items
                and all(_is_text(x, MAX_NAME_CHARS) for x in v)
            ),
            f"a list of at most {max_items} strings of 1 to {MAX_NAME_CHARS} printable characters",
        )

    def numbers(
        self,
        key: str,
        default: Any = None,
        *,
        max_items: int = MAX_SAMPLES,
        maximum: float = math.inf,
    ) -> Any:
        """A non-empty list of at most ``max_items`` finite numbers from 0 to ``maximum``."""

        def number(x: Any) -> bool:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                return False
            return (not isinstance(x, float) or math.isfinite(x)) and 0 <= x <= maximum

        return self._get(
            key,
            default,
            lambda v: isinstance(v, list) and 0 < len(v) <= max_items and all(map(number, v)),
            f"a list of 1 to {max_items} numbers from 0 to {maximum:g}",
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
            raise self.error(key, f"must be a table, got {show(value)}")
        where = f"[{key}]" if self.where == _ROOT else f"{self.where}.{key}"
        return Table(value, where, self.source)

    def tables(self, key: str, *, limit: int) -> Iterator[tuple[int, Table]]:
        """An array of at most ``limit`` tables (``[[key]]``), each with its index.

        The count is checked before any table is read.
        """
        self._used.add(key)
        value = self._data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise self.error(key, f"must be an array of tables ([[{key}]]), got {show(value)}")
        if len(value) > limit:
            raise self.error(key, f"at most {limit} [[{key}]] tables are allowed, got {len(value)}")
        prefix = "" if self.where == _ROOT else f"{self.where} "
        for i, item in enumerate(value):
            yield i, Table(item, f"{prefix}[[{key}]] #{i + 1}", self.source)

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
        except (OptionError, TypeError) as exc:
            raise self.error(key, _cut(str(exc))) from None

    def done(self) -> None:
        """Raise for every key that nothing read (typos, unsupported settings)."""
        unknown = [k for k in self._data if k not in self._used]
        if unknown:
            key = min(unknown)
            close = difflib.get_close_matches(key, sorted(self._used), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise self.error(key, f"is not a known setting here{hint}")


def _is_text(value: Any, max_chars: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_chars and value.isprintable()


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


_HINT_KEYS = 1000
"""Tables with more keys than this get no "a typo?" hint (difflib is quadratic-ish)."""


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
    """An invariant: its kind, a description, and its parameters.

    ``zmq_params`` are the parameters on the zmq backend when the file relaxes (or
    tightens) a threshold there (an ``[invariant.zmq]`` table), with ``zmq_reason``
    the file's reason for it; None on both backends otherwise.
    """

    kind: str
    description: str
    params: Mapping[str, Any]
    zmq_params: Mapping[str, Any] | None = None
    zmq_reason: str = ""

    def params_on(self, backend: str) -> Mapping[str, Any]:
        """The parameters that hold on ``backend``."""
        if backend == "zmq" and self.zmq_params is not None:
            return self.zmq_params
        return self.params


ZMQ_THRESHOLDS: Mapping[str, tuple[str, ...]] = {
    "bound": ("at_least", "at_most"),
    "latency": ("max_us", "percentile"),
}
"""The keys an ``[invariant.zmq]`` table may set, per invariant kind: thresholds only
(what is measured stays the same on both backends)."""


DEFAULT_LOAD_TOLERANCE = 0.02
"""``[scenario] load_tolerance`` unless the file says otherwise: 2 %."""


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
    load_tolerance: float = DEFAULT_LOAD_TOLERANCE
    """The largest shortfall (a fraction of what was offered) an open-loop source may
    have before the run is reported as not representative (``[scenario]
    load_tolerance``)."""


def latency_model(table: Table) -> LatencyModel:
    """Read a latency model table (values in microseconds, each at most
    :data:`MAX_LATENCY_US`; a log-normal ``sigma`` at most :data:`MAX_SIGMA`).
    """
    model = table.text("model", REQUIRED, choices=_MODELS)
    us = 1e-6

    def micros(key: str, default: Any = REQUIRED, *, positive: bool = False) -> float:
        value: float = table.number(key, default, positive=positive, maximum=MAX_LATENCY_US)
        return value * us

    try:
        if model == "constant":
            result: LatencyModel = Constant(micros("delay_us"))
        elif model == "uniform":
            result = Uniform(micros("low_us"), micros("high_us"))
        elif model == "normal":
            result = Normal(micros("mean_us"), micros("stddev_us"), micros("min_us", 0.0))
        elif model == "lognormal":
            result = LogNormal.from_median(
                micros("median_us", positive=True),
                table.number("sigma", REQUIRED, maximum=MAX_SIGMA),
                micros("min_us", 0.0),
            )
        else:
            samples = table.numbers("samples_us", REQUIRED, maximum=MAX_LATENCY_US)
            result = Empirical([v * us for v in samples])
    except OptionError as exc:
        raise table.error("model", str(exc)) from None
    table.done()
    return result


_MODELS = ("constant", "uniform", "normal", "lognormal", "empirical")
_FAULT_KINDS = (
    "crash", "restart", "partition", "repair", "hold", "release", "drop_connection", "set_latency",
)  # fmt: skip
"""The ``kind`` of a ``[[fault]]``: each fault class's name in snake case
(:data:`transportkit.sim_backend.FAULT_KINDS`)."""

_RENAMED_FAULT_KINDS = {"latency": "set_latency", "spike": "set_latency", "drop": "drop_connection"}
"""Old or other names of fault kinds, refused with the one to write."""


def _fault(table: Table, nodes: Mapping[str, object], end: float) -> tuple[float, Fault]:
    at = table.number("at", REQUIRED, maximum=MAX_RUN_SECONDS)
    if at > end:
        raise table.error("at", f"is {at:g} s, after the run ends at {end:g} s (duration + drain)")
    kind = table.text("kind", REQUIRED)
    if kind in _RENAMED_FAULT_KINDS:
        new = _RENAMED_FAULT_KINDS[kind]
        raise table.error(
            "kind",
            f"{show(kind)} is now {show(new)} (each fault kind is its fault class's name "
            f'in snake case): write kind = "{new}"',
        )
    if kind not in _FAULT_KINDS:
        raise table.error(
            "kind", f"must be one of {', '.join(map(repr, _FAULT_KINDS))}, got {show(kind)}"
        )

    def node(key: str) -> str:
        value: str = table.name(key, REQUIRED)
        if value not in nodes:
            raise table.error(
                key, f"names node {show(value)}, which runs no component (nodes: {_listed(nodes)})"
            )
        return value

    fault: Fault
    if kind in ("crash", "restart"):
        target = node("node")
        fault = Crash(target) if kind == "crash" else Restart(target)
    elif kind == "drop_connection":
        a, b = node("a"), node("b")
        if table.has("both_ways"):
            raise table.error(
                "both_ways",
                "does not apply: a dropped connection is dropped at both ends (remove it)",
            )
        fault = DropConnection(a, b, table.boolean("discard_queues", False))
    else:
        a, b = node("a"), node("b")
        both = table.boolean("both_ways", True)
        if kind == "partition":
            fault = Partition(a, b, both)
        elif kind == "repair":
            fault = Repair(a, b, both)
        elif kind == "hold":
            fault = Hold(a, b, both)
        elif kind == "release":
            fault = Release(a, b, both)
        else:
            sub = table.table("latency")
            fault = SetLatency(a, b, None if sub is None else latency_model(sub), both)
    table.done()
    return at, fault


def _listed(names: Iterable[str], limit: int = 10) -> str:
    """Up to ``limit`` names, comma-separated, then how many there are in all."""
    shown: list[str] = []
    count = 0
    for count, item in enumerate(names, 1):
        if count <= limit:
            shown.append(show(item)[1:-1] if isinstance(item, str) else show(item))
    text = ", ".join(shown)
    return text if count <= limit else f"{text}, ... ({count} in all)"


def parse_scenario(
    data: Mapping[str, Any],
    source: str,
    components: Mapping[str, Callable[[Table], Any]],
    invariants: Mapping[str, Callable[[Table], Mapping[str, Any]]],
) -> Scenario:
    """Validate parsed TOML ``data`` (from ``source``) into a :class:`Scenario`.

    Linear in the size of ``data``: each table is read once, names are checked for
    duplicates and looked up in sets, and every array of tables has its count checked
    (against :mod:`~transportkit.scenario._bounds`) before its first table is read.

    Args:
        data: The parsed TOML document.
        source: The file name, for error messages.
        components: Component kind -> parser of its parameters (from the table).
        invariants: Invariant kind -> parser of its parameters.

    Raises:
        ScenarioError: The first problem found, naming ``source``, the key and what is
            wrong.
    """
    root = Table(data, _ROOT, source)
    head = root.table("scenario", required=True)
    assert head is not None
    name = head.name("name", REQUIRED)
    description = head.text("description", "", max_chars=MAX_DESCRIPTION_CHARS)
    seed = head.integer("seed", 0, maximum=MAX_SEED)
    duration = head.number("duration", REQUIRED, positive=True, maximum=MAX_RUN_SECONDS)
    drain = head.number("drain", 1.0, maximum=MAX_RUN_SECONDS)
    if duration + drain > MAX_RUN_SECONDS:
        raise head.error(
            "drain" if head.has("drain") else "duration",
            f"duration + drain must be at most {MAX_RUN_SECONDS:g} s, got {duration:g} + {drain:g}",
        )
    end = duration + drain
    record = head.boolean("record_trace", True)
    load_tolerance = head.number("load_tolerance", DEFAULT_LOAD_TOLERANCE, maximum=1.0)
    lat = head.table("latency")
    default_latency = Constant(50e-6) if lat is None else latency_model(lat)
    head.done()

    link_tables = list(root.tables("link", limit=MAX_LINKS))

    specs: list[ComponentSpec] = []
    names: set[str] = set()
    nodes: dict[str, None] = {}  # a set that keeps the order of first use
    for _, table in root.tables("component", limit=MAX_COMPONENTS):
        comp_name = table.name("name", REQUIRED)
        table.where = f"[[component]] {show(comp_name)}"
        kind = table.text("kind", REQUIRED, choices=tuple(sorted(components)))
        node = table.name("node", REQUIRED)
        if comp_name in names:
            raise table.error("name", f"duplicate component name {show(comp_name)}")
        names.add(comp_name)
        if node not in nodes:
            if len(nodes) == MAX_NODES:
                raise table.error(
                    "node",
                    f"{show(node)} would be node number {MAX_NODES + 1}: a scenario may "
                    f"place components on at most {MAX_NODES} nodes",
                )
            nodes[node] = None
        params = components[kind](table)
        table.done()
        specs.append(ComponentSpec(comp_name, kind, node, params))
    if not specs:
        raise ScenarioError(f"{source}: a scenario needs at least one [[component]]")

    links = []
    for _, table in link_tables:
        sub = table.table("latency", required=True)
        assert sub is not None
        a, b = table.name("a", REQUIRED), table.name("b", REQUIRED)
        for key, node_name in (("a", a), ("b", b)):
            if node_name not in nodes:
                raise table.error(
                    key,
                    f"names unknown node {show(node_name)}, which runs no component "
                    f"(nodes: {_listed(nodes)})",
                )
        links.append(LinkSpec(a, b, latency_model(sub), table.boolean("both_ways", True)))
        table.done()

    faults: list[tuple[float, Fault]] = []
    fault_tables: list[Table] = []
    for _, table in root.tables("fault", limit=MAX_FAULTS):
        faults.append(_fault(table, nodes, end))
        fault_tables.append(table)

    process_nodes = _node_settings(root, nodes)
    if process_nodes:
        processes = set(process_nodes)
        starts = len(processes)
        for (_, fault), table in zip(faults, fault_tables, strict=True):
            if isinstance(fault, Restart) and fault.node in processes:
                starts += 1
                if starts > MAX_CHILD_STARTS:
                    raise table.error(
                        "node",
                        f"restarting process node {show(fault.node)} here would start child "
                        f"process number {starts}: a run may start at most "
                        f"{MAX_CHILD_STARTS} (its process nodes and their restarts)",
                    )

    checks = []
    for _, table in root.tables("invariant", limit=MAX_INVARIANTS):
        kind = table.text("kind", REQUIRED, choices=tuple(sorted(invariants)))
        says = table.text("description", "", max_chars=MAX_DESCRIPTION_CHARS)
        table.where = f"[[invariant]] {kind}"
        zmq = table.table("zmq")
        params = invariants[kind](table)
        table.done()
        zmq_params, reason = (
            (None, "") if zmq is None else _zmq_thresholds(table, zmq, kind, invariants[kind])
        )
        checks.append(InvariantSpec(kind, says, params, zmq_params, reason))
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
        nodes=tuple(nodes),
        process_nodes=process_nodes,
        load_tolerance=load_tolerance,
    )


def _zmq_thresholds(
    table: Table,
    zmq: Table,
    kind: str,
    parse: Callable[[Table], Mapping[str, Any]],
) -> tuple[Mapping[str, Any], str]:
    """An ``[invariant.zmq]`` table: the invariant's thresholds on the zmq backend.

    It may set only the kind's thresholds (:data:`ZMQ_THRESHOLDS`), each validated as
    the invariant's own key is, and must give a ``reason`` (shown in the report).
    Returns the parameters on zmq and the reason.
    """
    allowed = ZMQ_THRESHOLDS.get(kind)
    if allowed is None:
        raise table.error(
            "zmq",
            f"an invariant of kind {kind!r} has no threshold to set on zmq (only "
            + ", ".join(sorted(ZMQ_THRESHOLDS))
            + " invariants have)",
        )
    reason = zmq.text("reason", REQUIRED, max_chars=MAX_DESCRIPTION_CHARS)
    overrides = {key: zmq._data[key] for key in allowed if zmq.has(key)}
    zmq._used.update(overrides)
    zmq.done()
    if not overrides:
        raise zmq.error(
            "reason", f"sets no threshold: give one of {', '.join(allowed)} besides the reason"
        )
    merged = Table(
        {k: v for k, v in table._data.items() if k != "zmq"} | overrides,
        zmq.where,
        table.source,
    )
    params = parse(merged)
    return params, reason


def _node_settings(root: Table, nodes: Mapping[str, object]) -> tuple[str, ...]:
    """Read the ``[[node]]`` tables; return the nodes to run as processes (zmq only)."""
    seen: set[str] = set()
    processes: list[str] = []
    for _, table in root.tables("node", limit=MAX_NODES):
        name = table.name("name", REQUIRED)
        if name not in nodes:
            raise table.error(
                "name",
                f"{show(name)} is not a node that runs components (nodes: {_listed(nodes)})",
            )
        if name in seen:
            raise table.error("name", f"node {show(name)} has two [[node]] tables")
        seen.add(name)
        table.where = f"[[node]] {show(name)}"
        if table.boolean("process", False):
            if len(processes) == MAX_PROCESS_NODES:
                raise table.error(
                    "process", f"at most {MAX_PROCESS_NODES} nodes may run as processes"
                )
            processes.append(name)
        table.done()
    return tuple(processes)


_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
}


def _not_regular(mode: int) -> str | None:
    """What a file of ``mode`` is, if it is not a regular file."""
    if stat.S_ISREG(mode):
        return None
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def read_scenario_text(path: str | Path) -> str:
    """The text of scenario file ``path``, read with every precaution.

    The file must be a regular file (not a directory, FIFO, socket or device: those
    could block or never end) of at most :data:`MAX_FILE_BYTES` bytes in UTF-8. It is
    opened without blocking, checked again once open, and read up to one byte past the
    bound, whatever its size claims (files in ``/proc`` claim 0).

    Raises:
        ScenarioError: The file is missing, unreadable, not a regular file, too large
            or not UTF-8; the message names the file and the problem.
    """
    name = str(path)
    try:
        kind = _not_regular(os.stat(path).st_mode)
    except FileNotFoundError:
        raise ScenarioError(f"{name}: no such scenario file") from None
    except OSError as exc:
        raise ScenarioError(f"{name}: cannot read the scenario file: {exc.strerror}") from None
    if kind is not None:
        raise ScenarioError(f"{name}: is {kind}, not a scenario file")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ScenarioError(f"{name}: cannot read the scenario file: {exc.strerror}") from None
    chunks: list[bytes] = []
    total = 0
    try:
        kind = _not_regular(os.fstat(fd).st_mode)  # it may have been replaced since
        if kind is not None:
            raise ScenarioError(f"{name}: is {kind}, not a scenario file")
        while total <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise ScenarioError(f"{name}: cannot read the scenario file: {exc.strerror}") from None
    finally:
        os.close(fd)
    if total > MAX_FILE_BYTES:
        raise ScenarioError(
            f"{name}: larger than {MAX_FILE_BYTES:,} bytes, the largest scenario file "
            "allowed (the shipped ones are a few KB)"
        )
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ScenarioError(
            f"{name}: line {line}: not UTF-8 text (byte {data[exc.start]:#04x} at offset "
            f"{exc.start}): a scenario file is TOML, in UTF-8"
        ) from None


def check_nesting(text: str, source: str) -> None:
    """Refuse TOML nested deeper than the scenario format needs, before parsing it.

    :mod:`tomllib` recurses on arrays and inline tables (50,000 levels raise
    RecursionError, or worse) and slows down quadratically on long dotted keys (a
    key of 50,000 parts takes a minute). This scan is linear: it follows strings
    (basic, literal, multi-line, with escapes) and comments the way TOML does, counts
    the open ``[``/``{`` of values, and the parts of every key and table header.

    Raises:
        ScenarioError: Values nest deeper than :data:`MAX_NESTING`, or a key or header
            has more than :data:`MAX_KEY_PARTS` parts; the message names the line.
    """
    inline: list[bool] = []  # per open bracket: whether it is an inline table
    mode = _LINE
    parts = 1
    i, n = 0, len(text)
    while i < n:
        # a run of characters that change nothing (in an array: commas and newlines too)
        pattern = _IN_ARRAY if mode == _VALUE and inline and not inline[-1] else _PLAIN[mode]
        plain = pattern.match(text, i)
        if plain is not None:
            i = plain.end()
            continue
        c = text[i]
        if c in "\"'":
            i = _skip_string(text, i)
            if mode == _LINE:
                mode = _KEY
            continue
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c == "\n":
            if not inline:
                mode, parts = _LINE, 1
            i += 1
            continue
        if mode == _LINE:
            if c == "[":
                mode, parts = _HEADER, 1
            elif not c.isspace():
                mode, parts = _KEY, 1
                continue  # read this character as part of the key
        elif mode in (_KEY, _HEADER):
            if c == ".":
                parts += 1
                if parts > MAX_KEY_PARTS:
                    raise ScenarioError(
                        f"{source}: line {text.count(chr(10), 0, i) + 1}: a key or table "
                        f"header of more than {MAX_KEY_PARTS} dotted parts"
                    )
            elif c == "=" and mode == _KEY:
                mode = _VALUE
            elif c == "]" and mode == _HEADER:
                mode = _VALUE  # the rest of the line: brackets there count (and are errors)
            elif c == "}" and inline:
                inline.pop()
                mode = _VALUE
        elif c in "[{":
            if len(inline) == MAX_NESTING:
                raise ScenarioError(
                    f"{source}: line {text.count(chr(10), 0, i) + 1}: arrays and inline tables "
                    f"nested more than {MAX_NESTING} deep"
                )
            inline.append(c == "{")
            if c == "{":
                mode, parts = _KEY, 1
        elif c in "]}":
            if inline:
                inline.pop()
        elif c == "," and inline and inline[-1]:
            mode, parts = _KEY, 1
        i += 1


_LINE, _KEY, _HEADER, _VALUE = range(4)
_PLAIN = (
    re.compile(r"[ \t\r\f\v]+"),  # line: blanks before a key or a header
    re.compile(r"[^\"'#\n.=}]+"),  # key
    re.compile(r"[^\"'#\n.\]]+"),  # header
    re.compile(r"[^\"'#\n\[\]{},]+"),  # value
)
_IN_ARRAY = re.compile(r"[^\"'#\[\]{}]+")
_STRING_RUN = {
    ('"', True): re.compile(r'[^"\\]+'),
    ("'", True): re.compile(r"[^']+"),
    ('"', False): re.compile(r'[^"\\\n]+'),
    ("'", False): re.compile(r"[^'\n]+"),
}


def _skip_string(text: str, i: int) -> int:
    """The index just past the TOML string that starts at ``text[i]`` (a quote).

    Ends a string no later than TOML does (an unterminated one at the end of its line,
    or of the text), so that nothing TOML reads as structure is skipped.
    """
    quote = text[i]
    n = len(text)
    if text.startswith(quote * 3, i):
        run = _STRING_RUN[quote, True]
        j = i + 3
        while j < n:
            plain = run.match(text, j)
            if plain is not None:
                j = plain.end()
                continue
            c = text[j]
            if c == "\\" and quote == '"':
                j += 2
                continue
            if c == quote and text.startswith(quote * 3, j):
                k = j + 3
                extra = 0
                while k < n and text[k] == quote and extra < 2:  # """a"""" is 'a"'
                    k += 1
                    extra += 1
                return k
            j += 1
        return n
    run = _STRING_RUN[quote, False]
    j = i + 1
    while j < n:
        plain = run.match(text, j)
        if plain is not None:
            j = plain.end()
            continue
        c = text[j]
        if c == "\n":
            return j
        if c == "\\" and quote == '"':
            if j + 1 < n and text[j + 1] == "\n":
                return j + 1
            j += 2
            continue
        if c == quote:
            return j + 1
        j += 1
    return n


def load_scenario(
    path: str | Path,
    components: Mapping[str, Callable[[Table], Any]],
    invariants: Mapping[str, Callable[[Table], Mapping[str, Any]]],
) -> Scenario:
    """Read and validate a scenario file (see :func:`read_scenario_text`,
    :func:`check_nesting` and :func:`parse_scenario`).

    Raises:
        ScenarioError: What is wrong, naming the file, the key (or line) and the
            problem.
    """
    source = str(path)
    text = read_scenario_text(path)
    if not text.strip():
        raise ScenarioError(
            f"{source}: the file is empty (a scenario needs a [scenario] table and at "
            "least one [[component]])"
        )
    check_nesting(text, source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {_cut(str(exc))}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of over 4,300 digits
        raise ScenarioError(f"{source}: not a valid scenario file: {_cut(str(exc))}") from None
    return parse_scenario(data, source, components, invariants)
