"""The sim's connection log (``Simulation(log_connections=True)``): the zmq backend's
lines for a connect, a dropped connection, a crash and a reconnect, in virtual time and
the same on every run of a seed; a long outage writes a bounded number of retry
lines; the default logs nothing; the log changes nothing in the trace.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from transportkit import OptionError, SocketOptions
from transportkit.sim_backend import Crash, DropConnection, Restart, Simulation
from transportkit.sim_backend._faults import schedule_faults

LOGGER = "transportkit.sim_backend.connections"


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def seen(self, level: int = logging.INFO) -> list[tuple[float, str, str, str]]:
        """(virtual time, event, socket, peer) of each record at ``level`` or above."""
        return [
            (round(r.sim_time, 6), r.event, r.socket, r.peer or "-")  # type: ignore[attr-defined]
            for r in self.records
            if r.levelno >= level and hasattr(r, "event")
        ]


@contextmanager
def captured() -> Iterator[Lines]:
    logger = logging.getLogger(LOGGER)
    lines = Lines()
    old = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(lines)
    try:
        yield lines
    finally:
        logger.removeHandler(lines)
        logger.setLevel(old)


def day(seed: int, *, log_connections: bool = True, outage: float = 0.5) -> tuple[Lines, str]:
    """A gateway's dealer to risk-host: connect, a dropped connection at 0.1 s, a crash
    of risk-host at 0.3 s, its restart ``outage`` seconds later; the lines and the
    trace hash.
    """
    with captured() as lines, Simulation(seed=seed, log_connections=log_connections) as sim:
        risk, gw = sim.node("risk-host"), sim.node("gw")

        async def serve(node: object) -> None:
            router = risk.router(bind="tcp://risk-host:5555")
            while True:
                frames = await router.recv()
                await router.send(frames)

        risk.main = serve
        schedule_faults(
            sim,
            [
                (0.1, DropConnection("gw", "risk-host")),
                (0.3, Crash("risk-host")),
                (0.3 + outage, Restart("risk-host")),
            ],
        )

        async def main() -> bytes:
            dealer = gw.dealer(connect="tcp://risk-host:5555")
            await asyncio.sleep(0.4 + outage)
            await dealer.send([b"order"])
            return (await dealer.recv(timeout=1.0))[0]

        assert sim.run(main()) == b"order"
        digest = sim.trace.hash
    return lines, digest


def test_a_connect_a_drop_a_crash_and_a_reconnect_log_the_expected_lines_in_order() -> None:
    lines, _ = day(1)
    assert lines.seen(logging.INFO) == [
        (0.00005, "CONNECTED", "gw/dealer0", "risk-host"),
        (0.00005, "ACCEPTED", "risk-host/router0", "gw"),
        # DropConnection: both ends see the drop; the dealer retries after 100 ms.
        (0.1, "DISCONNECTED", "gw/dealer0", "risk-host"),
        (0.1, "CONNECT_RETRIED", "gw/dealer0", "-"),
        (0.1, "DISCONNECTED", "risk-host/router0", "gw"),
        (0.2, "CONNECTED", "gw/dealer0", "risk-host"),
        (0.2, "ACCEPTED", "risk-host/router0", "gw"),
        # The crash: the dealer learns one link delay later, then retries.
        (0.30005, "DISCONNECTED", "gw/dealer0", "risk-host"),
        (0.30005, "CONNECT_RETRIED", "gw/dealer0", "-"),
        (0.40005, "CONNECT_RETRIED", "gw/dealer0", "-"),
        (0.50005, "CONNECT_RETRIED", "gw/dealer0", "-"),
        (0.60005, "CONNECT_RETRIED", "gw/dealer0", "-"),
        # five CONNECT_RETRIED lines in 10 s: the rest are counted, not written
        (0.80005, "CONNECTED", "gw/dealer0", "risk-host"),
        (0.80005, "ACCEPTED", "risk-host/router1", "gw"),
    ]
    levels = {r.event: r.levelno for r in lines.records if hasattr(r, "event")}  # type: ignore[attr-defined]
    assert levels["CONNECTED"] == levels["ACCEPTED"] == logging.INFO
    assert levels["DISCONNECTED"] == levels["CONNECT_RETRIED"] == logging.WARNING
    first = lines.records[0]
    assert first.getMessage() == (
        "LISTENING ROUTER risk-host/router0 endpoint=tcp://risk-host:5555 peer=-"
    )
    assert first.levelno == logging.DEBUG


def test_the_same_seed_writes_the_same_lines_and_the_log_changes_no_trace() -> None:
    first, digest = day(7)
    second, again = day(7)
    assert [r.getMessage() for r in first.records] == [r.getMessage() for r in second.records]
    assert first.seen(logging.DEBUG) == second.seen(logging.DEBUG)
    assert digest == again
    quiet, unlogged = day(7, log_connections=False)
    assert quiet.records == []  # off: nothing logged
    assert unlogged == digest  # on or off, the run is the same


def test_a_long_outage_writes_a_bounded_number_of_retry_lines() -> None:
    # risk-host down for an hour, the dealer retrying every 100 ms: 36,000 retries.
    lines, _ = day(3, outage=3600.0)
    retried = [r for r in lines.records if getattr(r, "event", None) == "CONNECT_RETRIED"]
    suppressed = [r for r in lines.records if "'CONNECT_RETRIED" in r.getMessage()]
    # At most 5 lines per 10 s window and one count line per window after it.
    windows = 3600 / 10 + 1
    assert len(retried) <= 5 * windows
    assert len(suppressed) <= windows
    assert len(retried) + len(suppressed) < 36_000 / 5
    total = len(retried) + sum(r.suppressed for r in suppressed)  # type: ignore[attr-defined]
    assert total >= 35_990  # every retry is written or counted


def test_inproc_and_ipc_are_logged_as_libzmq_reports_them() -> None:
    with captured() as lines, Simulation(seed=1, log_connections=True) as sim:
        node = sim.node("a")

        async def main() -> None:
            node.puller(bind="inproc://x")
            node.pusher(connect="inproc://x")
            pull = node.puller(bind="ipc:///tmp/connlog-sim")
            node.pusher(connect="ipc:///tmp/connlog-sim")
            await asyncio.sleep(0.1)
            pull.close()

        sim.run(main())
    assert {r.endpoint for r in lines.records} == {"ipc:///tmp/connlog-sim"}  # type: ignore[attr-defined]
    assert {r.peer for r in lines.records} == {None}  # type: ignore[attr-defined]


def test_log_connections_must_be_a_bool() -> None:
    with pytest.raises(OptionError, match="log_connections must be a bool"):
        Simulation(log_connections="yes")  # type: ignore[arg-type]
    assert SocketOptions().reconnect_ivl == 100  # the retry interval the tests above assume


def test_a_simulation_refused_for_a_bad_argument_is_collected_without_an_error() -> None:
    """On the old code its ``__del__`` raised AttributeError (no ``_closed`` yet),
    reported as an unraisable exception each time a bad ``seed`` was refused."""
    seen: list[object] = []
    old = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        with pytest.raises(OptionError, match="seed must be an int"):
            Simulation(seed="1")  # type: ignore[arg-type]
        gc.collect()
    finally:
        sys.unraisablehook = old
    assert seen == []
