"""The scenario files shipped in the package, and resolving a name to one of them.

``transportkit run trading_day`` runs ``transportkit/scenarios/trading_day.toml`` from
wherever the package is installed (a checkout, an installed wheel): the files are
package data, found through :mod:`importlib.resources`.
"""

from __future__ import annotations

import atexit
import contextlib
import difflib
import os
import tomllib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from transportkit.scenario._spec import ScenarioError

__all__ = ["ShippedScenario", "is_scenario_name", "resolve_scenario", "shipped_scenarios"]

_PACKAGE = "transportkit"
_FOLDER = "scenarios"
_SUFFIX = ".toml"
_MAX_HEAD_BYTES = 1 << 20
"""The most of a shipped file read to find its description (they are a few KiB)."""

_extracted = contextlib.ExitStack()
atexit.register(_extracted.close)


@dataclass(frozen=True, slots=True)
class ShippedScenario:
    """A scenario file shipped with transportkit.

    Attributes:
        name: What ``transportkit run NAME`` takes: the file's name without
            ``.toml`` (``trading_day``).
        description: The file's ``[scenario] description`` (one line, may be empty).
        resource: The file, as :mod:`importlib.resources` finds it in the package.
    """

    name: str
    description: str
    resource: Traversable


def _folder() -> Traversable:
    return resources.files(_PACKAGE).joinpath(_FOLDER)


def _description(resource: Traversable) -> str:
    try:
        with resource.open("rb") as file:
            head = file.read(_MAX_HEAD_BYTES)
        data = tomllib.loads(head.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ""
    table = data.get("scenario")
    text = table.get("description", "") if isinstance(table, dict) else ""
    return " ".join(text.split()) if isinstance(text, str) else ""


def shipped_scenarios() -> list[ShippedScenario]:
    """The scenario files shipped in the package, sorted by name.

    Each file's description is read from its ``[scenario]`` table without validating
    the rest (:func:`~transportkit.scenario.load` does that). Never raises: a package
    without the folder has none.
    """
    try:
        entries = list(_folder().iterdir())
    except (FileNotFoundError, NotADirectoryError, ModuleNotFoundError):
        return []
    found = [
        ShippedScenario(entry.name[: -len(_SUFFIX)], _description(entry), entry)
        for entry in entries
        if entry.name.endswith(_SUFFIX) and entry.is_file()
    ]
    return sorted(found, key=lambda s: s.name)


def is_scenario_name(text: str) -> bool:
    """Whether ``text`` is a bare scenario name (no path separator, no ``.toml``),
    which :func:`resolve_scenario` looks up among the shipped files, rather than a path.
    """
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return bool(text) and not any(s in text for s in separators) and not text.endswith(_SUFFIX)


def _as_path(resource: Traversable) -> Path:
    if isinstance(resource, Path):
        return resource
    # A package imported from a zip: extract the file for the rest of the process.
    return _extracted.enter_context(resources.as_file(resource))


def resolve_scenario(name_or_path: str | os.PathLike[str]) -> Path:
    """The scenario file that ``name_or_path`` names.

    A bare name (no path separator, no ``.toml``: ``trading_day``) is a scenario
    shipped in the package (:func:`shipped_scenarios`), whatever the current
    directory holds; anything else is a path, returned as given (whether it exists is
    for :func:`~transportkit.scenario.load` to say).

    Raises:
        ScenarioError: A bare name that is not a shipped scenario; the message lists
            the shipped names and suggests the closest.
    """
    text = os.fspath(name_or_path)
    if not is_scenario_name(text):
        return Path(text)
    shipped = {s.name: s for s in shipped_scenarios()}
    found = shipped.get(text)
    if found is not None:
        return _as_path(found.resource)
    shown = text if len(text) <= 60 else text[:57] + "..."
    close = difflib.get_close_matches(text.replace("-", "_"), list(shipped), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    names = ", ".join(shipped) or "none"
    raise ScenarioError(
        f"no shipped scenario is called {shown!r}{hint} (shipped: {names}; "
        "`transportkit scenarios` lists them; a file needs a path, e.g. ./my.toml)"
    )
