"""docs/performance.md's table of latest results sets each of the bench's targets.

The bench (``transportkit bench``) checks every figure against a target
(:data:`transportkit._bench._report.TARGETS`); the page's table must show every one of
them, with the same comparison and limit, and no other.
"""

from __future__ import annotations

import re
from pathlib import Path

from transportkit._bench._report import TARGETS

PAGE = Path(__file__).resolve().parents[2] / "docs" / "performance.md"


def table_targets() -> list[tuple[str, float]]:
    """The target column of the "Latest results" table, as (comparison, limit)."""
    section = PAGE.read_text(encoding="utf-8").split("## Latest results", 1)[1]
    rows = [line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("| ")]
    header, *body = rows
    assert [c.strip() for c in header.strip("|").split("|")][-1] == "target"
    found = []
    for row in body:
        cell = row.strip().strip("|").split("|")[-1].strip()
        match = re.match(r"(<=|>=) ([0-9.]+)", cell)
        assert match, f"a target the bench cannot check: {cell!r}"
        found.append((match[1], float(match[2])))
    return found


def test_the_results_table_shows_every_target_of_the_bench() -> None:
    assert sorted(set(table_targets())) == sorted(set(TARGETS.values()))
