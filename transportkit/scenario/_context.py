"""What a component sees while a scenario runs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from transportkit._socket import Socket
from transportkit.scenario._metrics import Metrics

__all__ = ["RunContext"]


@dataclass
class RunContext:
    """Shared by the components of one run.

    Attributes:
        metrics: Where components count what they send and receive.
        duration: Seconds of load (virtual on the sim, real on zmq).
        seed: The scenario seed (component RNGs derive from it).
        start: Loop time when the run began.
        sockets: Every socket a component opened, by stream, so drop counters can be
            summed at the end even for sockets of crashed nodes.
        objects: Live objects components expose for invariants (a Clone server, ...).
        expected: Per receiver, how to compute what it should have received.
        errors: Components that died of an unexpected exception: (name, repr).
    """

    metrics: Metrics
    duration: float
    seed: int
    start: float = 0.0
    sockets: dict[str, list[Socket]] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)
    expected: dict[tuple[str, str], Callable[[], int]] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)

    def rng(self, name: str) -> random.Random:
        """A random generator for component ``name``, a pure function of the seed."""
        return random.Random(f"{self.seed}/{name}")

    def elapsed(self) -> float:
        """Seconds since the run began (loop time)."""
        return asyncio.get_running_loop().time() - self.start

    def loading(self) -> bool:
        """Whether load generators should keep going."""
        return self.elapsed() < self.duration

    def track(self, stream: str, sock: Socket) -> None:
        """Remember ``sock`` as part of ``stream`` (its drops count for the stream)."""
        self.sockets.setdefault(stream, []).append(sock)
