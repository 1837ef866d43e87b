"""A refused CURVE client is logged the same way by both backends' connection logs:
``HANDSHAKE_FAILED_AUTH`` at WARNING, ``error=400``, on the server and on the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from transportkit import Network, SocketOptions, Timeout
from transportkit._curve import z85_encode
from transportkit.security import AuthPolicy, CurveKeyPair, public_key
from transportkit.sim_backend import Simulation
from transportkit.zmq_backend import ZmqNetwork


def _pair(n: int) -> CurveKeyPair:
    secret = z85_encode(bytes([n]) * 32)
    return CurveKeyPair(public=public_key(secret), secret=secret)


SERVER, CLIENT, STRANGER = _pair(21), _pair(22), _pair(23)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def failed(self) -> list[logging.LogRecord]:
        return [r for r in list(self.records) if getattr(r, "event", "") == "HANDSHAKE_FAILED_AUTH"]


@contextmanager
def captured(name: str) -> Iterator[Lines]:
    logger = logging.getLogger(name)
    lines = Lines()
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(lines)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)
        logger.setLevel(old)


async def refused(srv: Network, cli: Network, endpoint: str, lines: Lines) -> None:
    srv.start_authenticator(AuthPolicy(allow_keys=[CLIENT.public]))
    server = SocketOptions(curve_server=True, curve_secretkey=SERVER.secret, linger=0)
    stranger = SocketOptions(
        curve_secretkey=STRANGER.secret, curve_serverkey=SERVER.public, linger=0
    )
    with srv.puller(bind=endpoint, options=server) as pull:
        assert pull.last_endpoint is not None
        with cli.pusher(connect=pull.last_endpoint, options=stranger) as push:
            await push.send([b"order"])
            try:
                await pull.recv(timeout=0.5)
            except Timeout:
                pass
            else:
                raise AssertionError("a refused client delivered a message")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2.0
            while len({r.socket for r in lines.failed()}) < 2 and loop.time() < deadline:  # type: ignore[attr-defined]
                await asyncio.sleep(0.01)


def check(lines: Lines, server: str, client: str) -> None:
    failed = lines.failed()
    assert {r.socket for r in failed} == {server, client}  # type: ignore[attr-defined]
    assert {r.levelno for r in failed} == {logging.WARNING}
    assert all(r.getMessage().endswith(" error=400") for r in failed)


def test_sim_a_refused_client_is_logged_on_both_ends() -> None:
    with (
        captured("transportkit.sim_backend.connections") as lines,
        Simulation(seed=1, log_connections=True) as sim,
    ):
        srv, cli = sim.node("srv"), sim.node("cli")
        sim.run(refused(srv, cli, "tcp://srv:5555", lines))
    check(lines, "srv/pull0", "cli/push0")


def test_zmq_a_refused_client_is_logged_on_both_ends() -> None:
    async def main(lines: Lines) -> None:
        with (
            ZmqNetwork(name="srv", log_connections=True) as srv,
            ZmqNetwork(name="cli", log_connections=True) as cli,
        ):
            await refused(srv, cli, "tcp://127.0.0.1:*", lines)

    with captured("transportkit.zmq_backend.connections") as lines:
        began = time.monotonic()
        asyncio.run(asyncio.wait_for(main(lines), 10))
        assert time.monotonic() - began < 10
    check(lines, "srv/pull0", "cli/push0")
