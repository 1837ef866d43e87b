"""pytester projects get the one pytest-asyncio setting the suite's own config has."""

from __future__ import annotations

import pytest

PYTESTER_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
"""An inner project's ini: without it, pytest-asyncio (in the test extra) warns that
``asyncio_default_fixture_loop_scope`` is unset in every inner run."""


@pytest.fixture(autouse=True)
def _pytester_ini(request: pytest.FixtureRequest) -> None:
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester").makeini(PYTESTER_INI)
