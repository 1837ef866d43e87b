"""Fixtures for the zmq backend tests: a network closed in teardown, endpoints on
random ports / unique names / temporary paths, and a runner that bounds every async
test body to 10 seconds.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from transportkit.zmq_backend import ZmqNetwork, _accel, accelerated

T = TypeVar("T")

TRANSPORTS = ("inproc", "ipc", "tcp")
_names = itertools.count()


def _run(coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


Runner = Callable[..., Any]


@pytest.fixture
def run() -> Runner:
    """Run an async test body on a fresh loop, failing (never hanging) after 10 s."""
    return _run


@pytest.fixture
def net() -> Iterator[ZmqNetwork]:
    network = ZmqNetwork()
    try:
        yield network
    finally:
        network.close()


@pytest.fixture(scope="session")
def ipc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short path: ipc endpoints are limited to about 107 bytes.
    return tmp_path_factory.mktemp("ipc")


@pytest.fixture
def endpoint_for(ipc_dir: Path) -> Callable[[str], str]:
    """Make a fresh bindable endpoint on a transport (tcp gets a random port)."""

    def make(transport: str) -> str:
        n = next(_names)
        if transport == "inproc":
            return f"inproc://test-{n}"
        if transport == "ipc":
            return f"ipc://{ipc_dir}/{n}.ipc"
        if transport == "tcp":
            return "tcp://127.0.0.1:*"
        raise ValueError(transport)

    return make


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Impl = tuple[Callable[..., list[bytes]], Callable[..., None]]


def _implementations() -> list[Any]:
    params = [pytest.param((_accel.py_recv_message, _accel.py_send_message), id="py")]
    if accelerated()[0]:
        params.append(pytest.param((_accel.recv_message, _accel.send_message), id="c"))
    return params


@pytest.fixture(params=_implementations())
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Impl:
    """The whole-message (recv, send) pair: pure pyzmq, and the C accelerator if built.

    With the pure pair, the fallback's waits are the pure ones too (``_accel.wait``).
    """
    pair: Impl = request.param
    if pair[0] is _accel.py_recv_message:
        monkeypatch.setattr(_accel, "wait", _accel.py_wait)
    return pair


@pytest.fixture
def message_impl(impl: Impl, monkeypatch: pytest.MonkeyPatch) -> Impl:
    """Make the zmq sockets (blocking and asyncio) created in the test use ``impl``."""
    monkeypatch.setattr(_accel, "recv_message", impl[0])
    monkeypatch.setattr(_accel, "send_message", impl[1])
    return impl
