"""docs/scenarios.md documents exactly the keys the scenario parser accepts.

The parser reads every key through :class:`transportkit.scenario._spec.Table`, which
marks each key it asks for as used, whether the file sets it or not, and rejects the
keys nothing asked for. So parsing a valid file of each kind of table and collecting
the keys each table asked for gives the keys the parser accepts there, with no list
kept by hand. The files parsed are the shipped scenarios and the page's own TOML
examples (which must load, too). The page's key tables are read from its headings:
an H2 per table (``[scenario]``, ``[[component]]``, ...), an H3 per kind (its code
spans of quoted strings: ``"crash"``, ``"restart"``), and rows whose first cell is a
key in backquotes.
"""

from __future__ import annotations

import re
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from transportkit.scenario import COMPONENTS, CUSTOM_CHECKS, INVARIANTS, _spec, load
from transportkit.scenario._spec import ZMQ_THRESHOLDS, Table

PAGE = Path(__file__).resolve().parents[2] / "docs" / "scenarios.md"

Context = tuple[str, str]
"""(table, kind): ("component", "risk_server"), ("scenario", ""), ("latency", "uniform")."""

# H2 headings: the code span that names the table documented under it.
TABLES = {
    "[scenario]": "scenario",
    "[[link]]": "link",
    "[[component]]": "component",
    "[[node]]": "node",
    "[[fault]]": "fault",
    "[[invariant]]": "invariant",
}
SUBTABLES = {"[[component.burst]]": "burst", "[invariant.zmq]": "zmq"}
ROOT_KEYS = {"scenario", "link", "component", "node", "fault", "invariant"}
"""The top-level tables."""


# -- the page -------------------------------------------------------------------------


class Page:
    """The key tables of the page: per context, each key and its row's cells (key,
    type, default, meaning)."""

    def __init__(self, text: str) -> None:
        self.keys: dict[Context, dict[str, list[str]]] = defaultdict(dict)
        self.kinds: dict[str, list[str]] = defaultdict(list)
        self.tables: list[str] = []
        section = ""
        contexts: list[Context] = []
        in_code = False
        for line in text.splitlines():
            if line.startswith("```"):
                in_code = not in_code
                continue
            if in_code:
                continue
            spans = re.findall(r"`([^`]+)`", line)
            if line.startswith("## "):
                named = [TABLES[s] for s in spans if s in TABLES]
                if line.startswith("## Latency models"):
                    named = ["latency"]
                section = named[0] if named else ""
                if named and named[0] != "latency":
                    self.tables.append(named[0])
                contexts = [(section, "")] if section else []
            elif line.startswith(("### ", "#### ")) and section:
                sub = [SUBTABLES[s] for s in spans if s in SUBTABLES]
                kinds = [s[1:-1] for s in spans if re.fullmatch(r'"[a-z_]+"', s)]
                if sub:
                    contexts = [(sub[0], "")]
                elif kinds:
                    self.kinds[section].extend(kinds)
                    contexts = [(section, kind) for kind in kinds]
                else:
                    contexts = []
            elif line.startswith("| `") and contexts:
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                key = cells[0].strip("`")
                for context in contexts:
                    assert key not in self.keys[context], f"{context}: {key} twice"
                    self.keys[context][key] = cells
        assert not in_code, "an unclosed code block"

    def documented(self, context: Context) -> dict[str, list[str]]:
        """Every key of ``context``: its table's common keys and its kind's own."""
        table, kind = context
        common = self.keys.get((table, ""), {}) if kind else {}
        return {**common, **self.keys.get(context, {})}


def toml_examples(text: str) -> list[str]:
    return re.findall(r"```toml\n(.*?)```", text, flags=re.S)


@pytest.fixture(scope="module")
def page() -> Page:
    return Page(PAGE.read_text(encoding="utf-8"))


# -- the parser -----------------------------------------------------------------------


def shipped() -> Iterator[tuple[str, str]]:
    for entry in sorted(resources.files("transportkit.scenarios").iterdir(), key=str):
        if entry.name.endswith(".toml"):
            yield entry.name, entry.read_text(encoding="utf-8")


class Recorder:
    """Which keys each table of a parsed file asked for, and which it required."""

    def __init__(self) -> None:
        self.used: dict[Context, set[str]] = defaultdict(set)
        self.required: dict[Context, dict[str, bool]] = defaultdict(dict)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        recorder = self
        get, table, tables, done = Table._get, Table.table, Table.tables, Table.done

        def tagged(sub: Table, key: str) -> Table:
            sub.docs2_role = key  # type: ignore[attr-defined]
            return sub

        def _get(self: Table, key: str, default: Any, *args: Any) -> Any:
            self.__dict__.setdefault("docs2_required", {})[key] = default is _spec.REQUIRED
            return get(self, key, default, *args)

        def table_(self: Table, key: str, *, required: bool = False) -> Table | None:
            self.__dict__.setdefault("docs2_required", {})[key] = required
            sub = table(self, key, required=required)
            return None if sub is None else tagged(sub, key)

        def tables_(self: Table, key: str, *, limit: int) -> Iterator[tuple[int, Table]]:
            self.__dict__.setdefault("docs2_required", {})[key] = False
            for i, sub in tables(self, key, limit=limit):
                yield i, tagged(sub, key)

        def done_(self: Table) -> None:
            context = recorder.context(self)
            recorder.used[context].update(self._used)
            for key, required in self.__dict__.get("docs2_required", {}).items():
                recorder.required[context][key] = required
            done(self)

        monkeypatch.setattr(Table, "_get", _get)
        monkeypatch.setattr(Table, "table", table_)
        monkeypatch.setattr(Table, "tables", tables_)
        monkeypatch.setattr(Table, "done", done_)

    @staticmethod
    def context(table: Table) -> Context:
        role = table.__dict__.get("docs2_role", "root")
        data = table._data
        if role == "latency" and "model" in data:
            return "latency", str(data["model"])
        if role in ("component", "fault", "invariant"):
            return role, str(data["kind"])
        return {"burst": "burst", "zmq": "zmq"}.get(role, role), ""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> Recorder:
    """Every shipped scenario and every TOML example of the page, loaded for real."""
    recorder = Recorder()
    directory = tmp_path_factory.mktemp("docs2-scenarios")
    files = list(shipped())
    for i, example in enumerate(toml_examples(PAGE.read_text(encoding="utf-8"))):
        files.append((f"page-example-{i + 1}.toml", example))
    with pytest.MonkeyPatch.context() as monkeypatch:
        recorder.install(monkeypatch)
        for name, text in files:
            path = directory / name
            path.write_text(text, encoding="utf-8")
            load(path)
    return recorder


def accepted(parsed: Recorder, context: Context) -> set[str]:
    keys = set(parsed.used.get(context, set()))
    if context == ("zmq", ""):  # only the thresholds present are marked used
        keys |= {"reason", *(key for keys in ZMQ_THRESHOLDS.values() for key in keys)}
    return keys


# -- the checks -----------------------------------------------------------------------


def test_the_page_has_a_section_for_every_kind_the_parser_knows(page: Page) -> None:
    assert sorted(page.kinds["component"]) == sorted(COMPONENTS)
    assert sorted(page.kinds["fault"]) == sorted(_spec._FAULT_KINDS)
    assert sorted(page.kinds["latency"]) == sorted(_spec._MODELS)
    assert sorted(page.kinds["invariant"]) == sorted(INVARIANTS)
    assert sorted(page.tables) == sorted(ROOT_KEYS)


def test_the_custom_checks_are_all_documented(page: Page) -> None:
    cell = page.keys[("invariant", "check")]["check"][3]  # each check: `name` (what it checks)
    assert sorted(re.findall(r"`([a-z_]+)` \(", cell)) == sorted(CUSTOM_CHECKS)


def test_the_page_examples_and_the_shipped_files_exercise_every_documented_table(
    page: Page, parsed: Recorder
) -> None:
    contexts = {(table, kind) for table, kinds in page.kinds.items() for kind in kinds}
    contexts |= {(table, "") for table in ("scenario", "link", "node", "burst", "zmq")}
    missing = sorted(contexts - set(parsed.used))
    assert not missing, f"no example loads a table of {missing}: add one to the page"


def test_every_key_the_parser_accepts_is_documented_and_no_other(
    page: Page, parsed: Recorder
) -> None:
    problems = []
    for context in sorted(parsed.used):
        if context == ("root", ""):
            assert parsed.used[context] == ROOT_KEYS
            continue
        if context[0] == "latency" and not context[1]:
            continue
        documented = set(page.documented(context))
        if context[0] == "latency":
            documented |= set(page.keys[("latency", "")])
        keys = accepted(parsed, context)
        for key in sorted(keys - documented):
            problems.append(f"{context}: the parser accepts {key!r}, the page does not say")
        for key in sorted(documented - keys):
            problems.append(f"{context}: the page documents {key!r}, the parser rejects it")
    assert not problems, "\n".join(problems)


def test_required_keys_are_the_ones_the_page_calls_required(page: Page, parsed: Recorder) -> None:
    problems = []
    for context, keys in sorted(parsed.required.items()):
        if context[0] in ("root", "zmq"):
            continue
        documented = page.documented(context)
        if context[0] == "latency":
            documented = {**page.keys[("latency", "")], **documented}
        for key, required in sorted(keys.items()):
            if key in documented and (documented[key][2] == "required") != required:
                want = "required" if required else "optional"
                says = documented[key][2]
                problems.append(f"{context}: {key!r} is {want}, the page says {says}")
    assert not problems, "\n".join(problems)


def test_documented_scenario_defaults_are_the_parsers(page: Page) -> None:
    """A ``[scenario]`` default written on the page as a TOML value is what an absent
    key gives: the first example without the key parses to the same scenario as with
    the key set to the page's default."""
    base = tomllib.loads(toml_examples(PAGE.read_text(encoding="utf-8"))[0])
    parsers = {kind: comp.parse for kind, comp in COMPONENTS.items()}
    checks = {kind: parse for kind, (parse, _) in INVARIANTS.items()}
    compared = []
    for key, cells in page.keys[("scenario", "")].items():
        cell = cells[2]
        try:
            value = tomllib.loads(f"v = {cell.strip('`')}")["v"]
        except tomllib.TOMLDecodeError:
            continue  # "required", or a default told in words
        head = {k: v for k, v in base["scenario"].items() if k != key}
        without = _spec.parse_scenario({**base, "scenario": head}, "page", parsers, checks)
        head[key] = value
        given = _spec.parse_scenario({**base, "scenario": head}, "page", parsers, checks)
        assert without == given, f"[scenario] {key}: the page's default {cell} is not the parser's"
        compared.append(key)
    assert {"seed", "drain", "record_trace", "load_tolerance"} <= set(compared)
