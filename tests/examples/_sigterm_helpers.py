"""Helpers of the SIGTERM tests: server programs in child processes, clients here."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

from transportkit.testing import ChildProcess

T = TypeVar("T")

EXAMPLES = "transportkit.examples"
EXIT_BOUND = 10.0
"""Seconds a stopped server program may take to exit (generous: the machine is shared)."""


def server(name: str, *args: str) -> ChildProcess:
    """A child process running example server ``name`` with ``args``."""
    return ChildProcess("-m", f"{EXAMPLES}.{name}", *args, timeout=30.0)


def run_real(main: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run ``main`` on a real asyncio loop, failing (never hanging) after ``timeout``."""
    return asyncio.run(asyncio.wait_for(main, timeout))


def terminate(child: ChildProcess, signum: int = signal.SIGTERM) -> None:
    """Send ``signum`` and wait for the child to say it is stopping."""
    child.send_signal(signum)
    child.wait_for_line("STOPPING", 10.0)
