"""The simulator's connection log: ``Simulation(..., log_connections=True)``.

Each socket's monitor events (the ones a libzmq monitor would report, so none for
inproc) are logged on this module's logger, ``transportkit.sim_backend.connections``,
with the lines, levels and rate limit of the zmq backend's connection log (see
:mod:`transportkit.zmq_backend.connections`). Records carry virtual time (the
simulation's logging guard), the rate limit counts virtual seconds from a limiter of
the simulation's own, and no monitor is opened: the same seed writes the same lines,
and a run logs or not without any change to its trace. The peer is the other node's
name on tcp (the address the sim's ZAP handler is given), ``-`` on ipc and for
retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from transportkit._connlog import MAX_KEYS, log_event
from transportkit._log import RateLimitedLog

__all__ = ["ConnectionLog", "logger"]

logger = logging.getLogger(__name__)


class ConnectionLog:
    """A simulation's connection log: a rate limiter on the virtual clock ``clock``."""

    __slots__ = ("_limiter", "lines")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._limiter = RateLimitedLog(logger, max_keys=MAX_KEYS, clock=clock)
        self.lines = 0
        """Lines written (suppressed ones not counted)."""

    def event(
        self, kind: str, socket: str, event: str, endpoint: str, *, value: int, peer: str | None
    ) -> None:
        """Log one monitor event of ``socket`` (rate-limited per event, socket and endpoint)."""
        if log_event(
            self._limiter.log,
            event=event,
            kind=kind,
            socket=socket,
            endpoint=endpoint,
            peer=peer,
            value=value,
        ):
            self.lines += 1

    def flush(self) -> int:
        """Write the pending suppressed-count lines (the simulation closes); their count."""
        return self._limiter.flush()
