"""What a component sees while a scenario runs."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
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
        servers: The graceful stop (``shutdown(timeout)``) of each server component
            running now, by component name: the runner calls them at the end of the
            drain, before it cancels what is left. A component registers itself while
            it serves (:meth:`serving`).
        shutdowns: Per server component stopped at the end of the run: whether its
            shutdown was clean (nothing in flight dropped or failed at the deadline).
    """

    metrics: Metrics
    duration: float
    seed: int
    start: float = 0.0
    sockets: dict[str, list[Socket]] = field(default_factory=dict)
    objects: dict[str, Any] = field(default_factory=dict)
    expected: dict[tuple[str, str], Callable[[], int]] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)
    servers: dict[str, Callable[[float], Awaitable[bool]]] = field(default_factory=dict)
    shutdowns: dict[str, bool] = field(default_factory=dict)

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
        name = getattr(sock, "name", None)  # a sim socket's name is its trace subject
        if isinstance(name, str):
            self.metrics.socket_streams[name] = stream

    def serving(self, name: str, shutdown: Callable[[float], Awaitable[bool]]) -> None:
        """Register the graceful stop of server component ``name`` (while it serves;
        :meth:`done_serving` when it ends, crashed or not).
        """
        self.servers[name] = shutdown

    def done_serving(self, name: str, shutdown: Callable[[float], Awaitable[bool]]) -> None:
        """Forget ``name``'s graceful stop, if it is still ``shutdown`` (a restarted
        incarnation may have registered its own).
        """
        if self.servers.get(name) == shutdown:  # bound methods are equal, not identical
            del self.servers[name]
