"""pytest plugin (registered as ``transportkit``): run one test on every backend.

A test that takes the ``backend`` fixture runs once per backend, with ids ``[sim]`` and
``[zmq]``; the fixture's value is the backend's name, and :func:`harness_for` (or the
``harness`` fixture, for tests without Hypothesis) opens a fresh harness. Mark a test
``@pytest.mark.backends("sim")`` to limit it to some backends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from transportkit.testing._harness import BACKENDS, Harness, open_harness


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``backends`` marker."""
    config.addinivalue_line(
        "markers", "backends(*names): run this test only on the named backends (sim, zmq)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``backend`` over the backends the test's marker allows."""
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = [b for b in BACKENDS if marker is None or b in marker.args]
    metafunc.parametrize("backend", names, ids=names, scope="session")


@pytest.fixture
def harness(backend: str) -> Iterator[Harness]:
    """A fresh harness on the test's backend, closed after the test."""
    with open_harness(backend) as h:
        yield h
