"""Optional dependencies: which extra installs what, and the error naming the one to install.

The core (the sockets, both backends, the patterns, the testing kit's checks and
harnesses) needs only pyzmq and simpy. Everything else is behind an extra of the
``transportkit`` distribution, and every import of such a dependency inside the package
runs under :func:`requires_extra`, so that a missing one raises
:class:`MissingExtraError` with the command that fixes it::

    transportkit.trading needs protobuf: pip install 'transportkit[trading]'

:data:`EXTRAS` lists, for each extra, the modules it provides; a test checks it
against ``pyproject.toml``.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

__all__ = ["EXTRAS", "MissingExtraError", "missing_packages", "requires_extra"]

EXTRAS: Final[Mapping[str, tuple[tuple[str, str], ...]]] = {
    "trading": (("google.protobuf", "protobuf"),),
    "scenarios": (("hdrh", "hdrhistogram"), ("google.protobuf", "protobuf")),
    "plot": (("matplotlib", "matplotlib"),),
    "testing": (("hypothesis", "hypothesis"),),
    "metrics": (("hdrh", "hdrhistogram"), ("prometheus_client", "prometheus-client")),
    "dask": (("distributed", "distributed"),),
}
"""For each extra, the ``(module, distribution)`` pairs it brings that the package imports
(an extra that includes another, as ``scenarios`` includes ``trading``, lists both)."""


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra to install.

    A :class:`ModuleNotFoundError` (so an :class:`ImportError`): code that already
    catches those keeps working. The message reads
    ``<feature> needs <packages>: pip install 'transportkit[<extra>]'``.

    Attributes:
        feature: What needs it: a module (``transportkit.trading``) or an option
            (``--plot``).
        extra: The extra of the ``transportkit`` distribution that installs it.
        packages: The distributions of that extra that are missing, by their PyPI names.
    """

    def __init__(
        self, feature: str, extra: str, packages: Sequence[str], module: str | None = None
    ) -> None:
        """Build the error.

        Args:
            feature: What needs the extra.
            extra: The extra's name, a key of :data:`EXTRAS`.
            packages: The missing distributions (at least one).
            module: The module whose import failed, if known (``ImportError.name``).
        """
        self.feature = feature
        self.extra = extra
        self.packages = tuple(packages)
        message = f"{feature} needs {_join(self.packages)}: pip install 'transportkit[{extra}]'"
        super().__init__(message, name=module)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent is missing, or a module without a spec
        return False


def _covers(module: str, name: str) -> bool:
    """Whether a failed import of ``name`` is the missing ``module`` (or a parent of it)."""
    return name == module or module.startswith(f"{name}.") or name.startswith(f"{module}.")


def missing_packages(extra: str, *also: str) -> tuple[str, ...]:
    """The distributions of ``extra`` that cannot be imported, in :data:`EXTRAS` order.

    Args:
        extra: A key of :data:`EXTRAS`.
        also: Distributions to count as missing whatever a look-up says (the one whose
            import just failed).

    Raises:
        KeyError: ``extra`` is not an extra.
    """
    return tuple(dist for module, dist in EXTRAS[extra] if dist in also or not _importable(module))


@contextlib.contextmanager
def requires_extra(extra: str, feature: str) -> Iterator[None]:
    """Run imports that need ``extra``; turn a missing dependency into a :class:`MissingExtraError`.

    Use it around the imports of an optional dependency, at the top of a module or
    inside the function that needs it::

        with requires_extra("plot", "--plot"):
            import matplotlib

    A :class:`ModuleNotFoundError` for a module that ``extra`` provides, or a
    :class:`MissingExtraError` from a nested use whose packages ``extra`` also
    installs (``transportkit.scenario`` imports ``transportkit.trading``), becomes one
    error naming ``feature``, ``extra`` and every package of it that is missing. Any
    other error, a missing module ``extra`` does not provide included, passes
    unchanged.

    Args:
        extra: A key of :data:`EXTRAS`.
        feature: What needs it, as the message should name it.

    Raises:
        MissingExtraError: As above.
        KeyError: ``extra`` is not an extra (at entry: a typo fails at once).
    """
    provided = EXTRAS[extra]
    try:
        yield
    except MissingExtraError as exc:
        dists = {dist for _, dist in provided}
        if exc.extra == extra or not set(exc.packages) <= dists:
            raise
        raise MissingExtraError(
            feature, extra, missing_packages(extra, *exc.packages), exc.name
        ) from exc
    except ModuleNotFoundError as exc:
        failed = [dist for module, dist in provided if exc.name and _covers(module, exc.name)]
        if not failed:
            raise
        raise MissingExtraError(feature, extra, missing_packages(extra, *failed), exc.name) from exc
