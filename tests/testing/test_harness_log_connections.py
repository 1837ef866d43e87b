"""``open_harness(..., log_connections=True)``: the connection log of every network of
the harness, on both backends; off by default."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from transportkit import OptionError, SocketOptions
from transportkit.testing import BACKENDS, Harness, open_harness

OPTIONS = SocketOptions(linger=0, rcvtimeo=5000)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self) -> list[tuple[str, str]]:
        return [(getattr(r, "event", ""), getattr(r, "socket_kind", "")) for r in self.records]


@contextmanager
def _captured(backend: str) -> Iterator[_Records]:
    logger = logging.getLogger(f"transportkit.{backend}_backend.connections")
    records, old = _Records(), logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(records)
    try:
        yield records
    finally:
        logger.removeHandler(records)
        logger.setLevel(old)


async def _one_message(h: Harness) -> bytes:
    with h.network("srv").puller(bind=h.bind_endpoint("tcp"), options=OPTIONS) as pull:
        endpoint = pull.last_endpoint
        assert endpoint is not None
        with h.network("cli").pusher(connect=endpoint, options=OPTIONS) as push:
            await push.send([b"hello"])
            (body,) = await pull.recv()
            return body


def _run(backend: str, **kwargs: bool) -> list[tuple[str, str]]:
    with _captured(backend) as records, open_harness(backend, **kwargs) as h:
        assert h.run(_one_message(h), timeout=10.0) == b"hello"
    return records.events()


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_connections_logs_each_networks_connects_and_accepts(backend: str) -> None:
    events = _run(backend, log_connections=True)
    assert ("CONNECTED", "PUSH") in events
    assert ("ACCEPTED", "PULL") in events


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_connection_log_is_off_by_default(backend: str) -> None:
    assert _run(backend) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_connections_must_be_a_bool(backend: str) -> None:
    with pytest.raises(OptionError, match="log_connections must be a bool"):  # noqa: SIM117
        with open_harness(backend, log_connections="yes"):  # type: ignore[arg-type]
            pass
