"""Run a trading test body on each backend through the shared testing harness."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

import pytest

from transportkit import Network
from transportkit.testing import Harness, SimHarness, open_harness

T = TypeVar("T")
BODY_TIMEOUT = 10.0


class System:
    """A harness seen as named networks: one per simulated node, one context on zmq."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.name = harness.name

    def endpoint(self, transport: str = "tcp") -> str:
        """A fresh endpoint to bind."""
        return self.harness.bind_endpoint(transport)

    def run(self, body: Callable[[Sequence[Network]], Awaitable[T]], nodes: Sequence[str]) -> T:
        """Run ``body(networks)``, one network per name in ``nodes``, within 10 s."""
        nets = [self.harness.network(name) for name in nodes]

        async def main() -> T:
            return await body(nets)

        return self.harness.run(main(), timeout=BODY_TIMEOUT)

    @property
    def trace_hash(self) -> str | None:
        """The simulation's trace hash (None on real sockets)."""
        h = self.harness
        return h.sim.trace.hash if isinstance(h, SimHarness) else None


@pytest.fixture
def system(tk_backend: str) -> Iterator[System]:
    """The test's backend (from the transportkit plugin's ``tk_backend`` parameter)."""
    with open_harness(tk_backend, seed=1) as h:
        yield System(h)
