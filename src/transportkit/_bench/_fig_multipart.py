"""The ``multipart`` figure of ``transportkit bench`` (placeholder until it is built)."""

from __future__ import annotations

from typing import Any, Final

from transportkit._bench._common import BenchConfig

__all__ = ["TARGETS", "checks", "format_lines", "run"]

TARGETS: Final[dict[str, tuple[str, float]]] = {}


def run(config: BenchConfig) -> dict[str, Any]:
    """Measure the figure with ``config``'s counts."""
    del config
    return {"built": False}


def format_lines(figure: dict[str, Any]) -> list[str]:
    """The figure as Markdown lines."""
    del figure
    return []


def checks(figure: dict[str, Any]) -> list[dict[str, Any]]:
    """The figure's rows of the report's targets."""
    del figure
    return []
