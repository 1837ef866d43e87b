"""Shared helpers of the Majordomo tests (not a conftest)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from transportkit import Message, Network, Receiver
from transportkit.patterns.majordomo import MajordomoBroker, MajordomoHandler, MajordomoWorker
from transportkit.testing import free_tcp_endpoint

T = TypeVar("T")

EXAMPLES = "transportkit.patterns.examples"


def example_argv(name: str) -> tuple[str, str]:
    """``ChildProcess`` arguments running example program ``name``."""
    return ("-m", f"{EXAMPLES}.{name}")


def real_endpoint(transport: str, tmp_path: Path, name: str = "mdp") -> str:
    """A fixed endpoint that a restarted process can bind again."""
    if transport == "tcp":
        return free_tcp_endpoint()
    return f"ipc://{tmp_path}/{name}.ipc"


def run_real(main: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
    """Run ``main`` on a real asyncio loop, failing (never hanging) after ``timeout``."""
    return asyncio.run(asyncio.wait_for(main, timeout))


async def cancel(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and wait for them to end."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def eventually(check: Callable[[], bool], timeout: float, step: float = 0.01) -> float:
    """Wait until ``check()`` holds; return the seconds it took; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not check():
        if loop.time() - start > timeout:
            raise AssertionError(f"condition still false after {timeout} s")
        await asyncio.sleep(step)
    return loop.time() - start


async def recv_frames(sock: Receiver, timeout: float = 5.0) -> Message:
    """The next message on a raw socket (fails the test rather than hang)."""
    return await sock.recv(timeout=timeout)


@contextlib.asynccontextmanager
async def running_broker(
    network: Network, endpoint: str, **kwargs: Any
) -> AsyncIterator[tuple[MajordomoBroker, str]]:
    """A broker bound to ``endpoint`` and running in a task; yields it and its endpoint."""
    broker = MajordomoBroker(network, endpoint, **kwargs)
    bound = broker.bind()
    task = asyncio.ensure_future(broker.run())
    try:
        yield broker, bound
    finally:
        broker.stop()
        await asyncio.gather(task, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


@contextlib.asynccontextmanager
async def serving_worker(
    network: Network,
    endpoint: str,
    service: bytes,
    reply: MajordomoHandler,
    **kwargs: Any,
) -> AsyncIterator[MajordomoWorker]:
    """A worker answering ``service`` with ``reply`` in a task, closed on exit."""
    worker = MajordomoWorker(network, endpoint, service, **kwargs)
    await worker.start()
    task = asyncio.ensure_future(worker.serve(reply))
    try:
        yield worker
    finally:
        await worker.aclose()
        await cancel(task)
