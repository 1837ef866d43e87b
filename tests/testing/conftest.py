"""pytester projects run the same on every machine.

They get the one pytest-asyncio setting the suite's own config has, and pytest's
continuous-integration detection is switched off for them: with ``CI`` or
``BUILD_NUMBER`` set, pytest prints whole assertion messages in its short summary, so
an inner run's output (which the tests read line by line) would differ between a
developer's machine and CI."""

from __future__ import annotations

import pytest

PYTESTER_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
"""An inner project's ini: without it, pytest-asyncio (in the dev extra) warns that
``asyncio_default_fixture_loop_scope`` is unset in every inner run."""


CI_VARIABLES = ("CI", "BUILD_NUMBER")
"""The environment variables pytest reads to decide it runs on CI (``running_on_ci``)."""


@pytest.fixture(autouse=True)
def _pytester_project(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester").makeini(PYTESTER_INI)
        for name in CI_VARIABLES:
            monkeypatch.delenv(name, raising=False)
