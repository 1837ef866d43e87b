"""pytest plugin (registered as ``transportkit``): run one test on every backend.

Every name the plugin gives pytest starts with ``tk_``, so it never takes over a
fixture, marker or option of the project under test (a fixture of its own called
``backend`` or ``harness`` is left alone).

- ``tk_backend``: a test that takes this fixture runs once per backend, with ids
  ``[sim]`` and ``[zmq]``; its value is the backend's name. Mark a test
  ``@pytest.mark.tk_backends("sim")`` to limit it to some backends.
- ``tk_harness``: a fresh :class:`~transportkit.testing.Harness` on the test's
  backend (``tk_backend``), closed after the test. Tests using Hypothesis open their
  own with :func:`~transportkit.testing.open_harness` per example instead.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from transportkit.testing._harness import BACKENDS, Harness, open_harness


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``tk_backends`` marker."""
    config.addinivalue_line(
        "markers", "tk_backends(*names): run this test only on the named backends (sim, zmq)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``tk_backend`` over the backends the test's marker allows."""
    if "tk_backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("tk_backends")
    names = [b for b in BACKENDS if marker is None or b in marker.args]
    metafunc.parametrize("tk_backend", names, ids=names, scope="session")


@pytest.fixture
def tk_harness(tk_backend: str) -> Iterator[Harness]:
    """A fresh harness on the test's backend, closed after the test."""
    with open_harness(tk_backend) as h:
        yield h
