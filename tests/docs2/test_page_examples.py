"""The examples of the pattern and trading pages run and print what the pages show.

Each ```python block of these pages is a complete program on the sim backend, followed
by "It prints:" and a ```text block with its exact output; the program is run here
and its output compared. (Every block of the documentation also runs in the docs'
own test; this one checks what the page says it prints.)
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = [*sorted((DOCS / "patterns").glob("*.md")), DOCS / "trading.md"]
EXAMPLE = re.compile(r"```python\n(.*?)```\n\nIt prints:\n\n```text\n(.*?)```", re.S)


def examples() -> list[tuple[str, str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        pairs = EXAMPLE.findall(text)
        assert len(pairs) == text.count("```python\n"), f"{page.name}: a block without output"
        found += [(f"{page.name}#{i + 1}", code, out) for i, (code, out) in enumerate(pairs)]
    return found


def test_every_pattern_page_but_the_index_has_an_example() -> None:
    pages = {name.split("#")[0] for name, _, _ in examples()}
    want = {p.name for p in PAGES} - {"index.md"}
    assert want <= pages, f"pages without an example: {sorted(want - pages)}"


@pytest.mark.parametrize(
    ("name", "code", "expected"), [pytest.param(*e, id=e[0]) for e in examples()]
)
def test_the_example_prints_what_the_page_shows(name: str, code: str, expected: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, name, "exec"), {"__name__": "__main__"})
    assert out.getvalue() == expected
