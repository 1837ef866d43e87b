"""Run a test body on each backend: the simulation and real pyzmq sockets."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

from transportkit import Network
from transportkit.sim_backend import Simulation
from transportkit.zmq_backend import ZmqNetwork

T = TypeVar("T")
BODY_TIMEOUT = 10.0


@dataclass
class Backend:
    """Makes networks and endpoints for one backend and runs a test body on them."""

    name: str
    tmp_path: Path
    seed: int = 1
    last_trace_hash: str | None = None
    _ports: Iterator[int] = field(default_factory=lambda: itertools.count(6000))

    def endpoint(self, transport: str = "tcp") -> str:
        """A fresh endpoint to bind: a random 127.0.0.1 port or a tmp ipc path on zmq."""
        port = next(self._ports)
        if transport == "ipc":
            return f"ipc://{self.tmp_path / f'ep{port}.ipc'}"
        if self.name == "sim":
            return "tcp://*:*"
        return "tcp://127.0.0.1:*"

    def run(self, body: Callable[[Sequence[Network]], Awaitable[T]], nodes: Sequence[str]) -> T:
        """Run ``body(networks)``, one network per name in ``nodes``, within 10 s."""

        async def bounded(nets: Sequence[Network]) -> T:
            return await asyncio.wait_for(body(nets), BODY_TIMEOUT)

        if self.name == "sim":
            sim = Simulation(seed=self.seed)
            sim_nets = [sim.node(name) for name in nodes]
            result = sim.run(bounded(sim_nets))
            self.last_trace_hash = sim.trace.hash
            return result
        zmq_nets = [ZmqNetwork(name=name) for name in nodes]
        try:
            return asyncio.run(bounded(zmq_nets))
        finally:
            for net in zmq_nets:
                net.close()


@pytest.fixture(params=["sim", "zmq"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each test using this runs once per backend, with the backend in its id."""
    return Backend(request.param, tmp_path)
