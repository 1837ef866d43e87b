"""The real clocks, for transportkit's own measures of wall time.

Inside a simulation run, in the thread running it, ``time.time``, ``time.monotonic``,
``time.perf_counter`` and their ``_ns`` forms read virtual time (see
:mod:`transportkit.sim_backend._guards`). What transportkit measures in real time (how
long a scenario took, a benchmark, the deadlines of the zmq backend's blocking calls)
uses these instead: the original functions, taken when this module is imported, and
unwrapped if the guards happened to be in place at that moment. They never read
virtual time.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "GUARD_MARK",
    "monotonic",
    "perf_counter",
    "perf_counter_ns",
    "real",
    "time",
]

GUARD_MARK = "__transportkit_guarded__"
"""The attribute on a run guard that holds the original function it replaces."""

F = TypeVar("F", bound=Callable[..., Any])


def real(function: F) -> F:
    """``function``, or the original a simulation's guard stands in for."""
    return getattr(function, GUARD_MARK, function)


time: Callable[[], float] = real(_time.time)
monotonic: Callable[[], float] = real(_time.monotonic)
perf_counter: Callable[[], float] = real(_time.perf_counter)
perf_counter_ns: Callable[[], int] = real(_time.perf_counter_ns)
