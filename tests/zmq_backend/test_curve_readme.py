"""The README's CURVE example (``readme_curve.py``, pasted into the README's Production
section as it is) runs and prints what the text promises."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

EXAMPLE = Path(__file__).with_name("readme_curve.py")


def test_the_curve_risk_example_admits_alice_and_refuses_mallory() -> None:
    out = io.StringIO()
    namespace: dict[str, object] = {"__name__": "readme"}
    with contextlib.redirect_stdout(out):
        exec(compile(EXAMPLE.read_text(encoding="utf-8"), str(EXAMPLE), "exec"), namespace)
    assert out.getvalue().splitlines() == ["mallory: refused (no reply)", "alice: approved=True"]
