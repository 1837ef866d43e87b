"""Helpers for the sim backend tests: every test body runs in virtual time."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from transportkit.sim_backend import Simulation

T = TypeVar("T")

TCP = "tcp://127.0.0.1:*"


@pytest.fixture
def sim() -> Simulation:
    """A fresh simulation with seed 0 and the default 50 us constant latency."""
    return Simulation(seed=0)


def run(sim: Simulation, body: Callable[[], Coroutine[Any, Any, T]], timeout: float = 3600) -> T:
    """Run ``body()`` in ``sim`` bounded by ``timeout`` virtual seconds."""
    return sim.run(body(), timeout=timeout)
