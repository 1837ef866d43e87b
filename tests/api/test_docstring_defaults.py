"""Defaults stated in public docstrings match the signatures.

Every ``Args:``/``Attributes:`` entry of a public class, function or method that says
"default X" ("Default 3.", "(default 1 MiB)", "defaults to False") is compared with the
parameter's default in :func:`inspect.signature`. Only literal values are compared
(numbers, with thousands separators and binary units, booleans, strings); a parameter
whose default is None is skipped, since its entry states what None stands for.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterator
from typing import Any

PACKAGES = (
    "transportkit",
    "transportkit.sim_backend",
    "transportkit.zmq_backend",
    "transportkit.testing",
    "transportkit.patterns",
    "transportkit.scenario",
    "transportkit.trading",
    "transportkit.metrics",
    "transportkit.security",
)

_ENTRY = re.compile(r"^(\s*)\**(\w+)(?: \([^)]*\))?: (.*)$")
_SECTION_END = ("Raises:", "Returns:", "Yields:", "Example:", "Examples:", "Note:")
_DEFAULT = re.compile(
    r"[Dd]efaults?(?: to| is)?:?\s+(?:``)?"
    r"(?P<value>True|False|\"[^\"]*\"|'[^']*'|-?[\d][\d,_]*(?:\.\d+)?(?:e-?\d+)?(?:\*\*\d+)?)"
    r"(?:``)?(?:\s?(?P<unit>KiB|MiB|GiB))?"
)
_UNITS = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_NOTHING: Any = object()


def _entries(doc: str) -> dict[str, str]:
    """The ``name: text`` entries of the docstring's Args and Attributes sections."""
    found: dict[str, str] = {}
    current: str | None = None
    indent: int | None = None
    inside = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Attributes:"):
            inside, current, indent = True, None, None
            continue
        if not inside:
            continue
        if stripped in _SECTION_END or (stripped.endswith(":") and not line.startswith(" ")):
            inside = False
            continue
        match = _ENTRY.match(line)
        if match and (indent is None or len(match.group(1)) == indent):
            indent, current = len(match.group(1)), match.group(2)
            found[current] = match.group(3)
        elif current is not None and stripped:
            found[current] += " " + stripped
    return found


def _value(text: str, unit: str | None) -> Any:
    if text in ("True", "False"):
        return text == "True"
    if text[0] in "\"'":
        return text[1:-1]
    number = text.replace(",", "").replace("_", "")
    if "**" in number:
        base, power = number.split("**")
        value: float = float(base) ** int(power)
    else:
        value = float(number)
    return value * _UNITS.get(unit or "", 1)


def _same(stated: Any, actual: Any) -> bool:
    if isinstance(stated, bool) or isinstance(actual, bool):
        return stated is actual
    if isinstance(stated, float) and isinstance(actual, (int, float)):
        return abs(stated - actual) <= 1e-9 * max(1.0, abs(actual))
    if isinstance(actual, str) or hasattr(actual, "value"):
        return stated in (actual, getattr(actual, "value", _NOTHING))
    return False


def _public() -> Iterator[tuple[str, Any]]:
    seen: set[int] = set()
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if id(obj) in seen or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            seen.add(id(obj))
            yield f"{package}.{name}", obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if inspect.isfunction(member) and not attr.startswith("_"):
                        yield f"{package}.{name}.{attr}", member


def _stated_defaults() -> Iterator[tuple[str, str, str, Any, Any]]:
    for where, obj in _public():
        target = obj.__init__ if inspect.isclass(obj) else obj
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):
            continue
        doc = inspect.getdoc(obj) or ""
        if inspect.isclass(obj) and "__init__" in vars(obj):
            doc += "\n" + (inspect.getdoc(obj.__init__) or "")
        for arg, text in _entries(doc).items():
            param = signature.parameters.get(arg)
            if param is None or param.default in (inspect.Parameter.empty, None):
                continue
            for match in _DEFAULT.finditer(text):
                stated = _value(match.group("value"), match.group("unit"))
                yield where, arg, match.group(0), stated, param.default


def test_the_scan_finds_stated_defaults() -> None:
    # The scan itself works: it reads many statements (so a broken regex cannot pass).
    assert len(list(_stated_defaults())) >= 40


def test_every_stated_default_matches_the_signature() -> None:
    wrong = [
        f"{where}({arg}=...): the docstring says {said!r}, the signature has {actual!r}"
        for where, arg, said, stated, actual in _stated_defaults()
        if not _same(stated, actual)
    ]
    assert not wrong, "\n".join(wrong)
