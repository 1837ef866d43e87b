"""Shared helpers of the Pirate and load-balancing pattern tests (not a conftest)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from transportkit.testing import free_tcp_endpoint

T = TypeVar("T")

EXAMPLES = "transportkit.examples"


def run_real(main: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
    """Run ``main`` on a real asyncio loop, failing (never hanging) after ``timeout``."""
    return asyncio.run(asyncio.wait_for(main, timeout))


def real_endpoint(transport: str, tmp_path: Path, name: str = "ep") -> str:
    """A fixed endpoint a child process can bind again after a restart."""
    if transport == "tcp":
        return free_tcp_endpoint()
    return f"ipc://{tmp_path}/{name}.ipc"


def example(name: str) -> tuple[str, str]:
    """``ChildProcess`` arguments running example program ``name``."""
    return ("-m", f"{EXAMPLES}.{name}")


async def cancel(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and wait for them to finish."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
