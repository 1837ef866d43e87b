"""The CURVE examples of the documentation's Production page (``docs/production.md``) run
and print what the page promises.

``readme_curve.py`` is the page's refusal example, kept as a file too so that a failure
points at a line; the page must show it exactly as it is here.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

EXAMPLE = Path(__file__).with_name("readme_curve.py")
PAGE = Path(__file__).resolve().parents[2] / "docs" / "production.md"


def page_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def run(code: str, name: str) -> list[str]:
    out = io.StringIO()
    namespace: dict[str, object] = {"__name__": "docs"}
    with contextlib.redirect_stdout(out):
        exec(compile(code, name, "exec"), namespace)
    return out.getvalue().splitlines()


def test_the_page_shows_the_refusal_example_as_it_runs() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") in page_blocks()


def test_the_curve_risk_example_admits_alice_and_refuses_mallory() -> None:
    printed = run(EXAMPLE.read_text(encoding="utf-8"), str(EXAMPLE))
    assert printed == ["mallory: refused (no reply)", "alice: approved=True"]


def test_the_complete_production_program_prints_what_the_page_says() -> None:
    programs = [code for code in page_blocks() if "async def production()" in code]
    assert len(programs) == 1
    printed = run(programs[0], f"{PAGE}:production")
    assert printed == [
        "approved",
        "approved",
        "approved",
        "['transportkit_request_latency_seconds_count{name=\"risk\"} 3.0']",
        "stopped cleanly: True",
    ]
