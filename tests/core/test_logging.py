"""Logging: what an operator needs is logged once, floods are rate-limited, sims log in
virtual time and the same seed logs the same lines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

import transportkit
from transportkit import Network, ServiceUnavailableError, SocketOptions
from transportkit._log import (
    DEFAULT_BURST,
    DEFAULT_INTERVAL,
    OVERFLOW_KEY,
    RateLimitedLog,
    peer,
)
from transportkit.patterns.binary_star import BinaryStarClient, BinaryStarServer
from transportkit.patterns.lazy_pirate import LazyPirateClient
from transportkit.patterns.paranoid_pirate import ParanoidPirateQueue, ParanoidPirateWorker
from transportkit.sim_backend import Crash, Node, Simulation, schedule_faults
from transportkit.zmq_backend import ZmqNetwork

SHIPPED = Path(transportkit.__file__).parent / "scenarios"  # the scenario files in the package

PP = "transportkit.patterns.paranoid_pirate"
BSTAR = "transportkit.patterns.binary_star"
LP = "transportkit.patterns.lazy_pirate"


def records(caplog: pytest.LogCaptureFixture, name: str, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == name and text in r.getMessage()]


# -- the rate limiter, on its own -------------------------------------------------------


def test_the_limiter_writes_burst_records_per_window_then_a_suppressed_count() -> None:
    now = [0.0]
    logger = logging.getLogger("transportkit.test.limiter")
    logger.setLevel(logging.DEBUG)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    logger.addHandler(handler)
    try:
        limiter = RateLimitedLog(logger, burst=3, interval=10.0, clock=lambda: now[0])
        written = [limiter.log(logging.WARNING, "bad", "bad %d", i) for i in range(100)]
        assert written == [True] * 3 + [False] * 97
        assert limiter.suppressed == 97
        now[0] = 10.0
        assert limiter.log(logging.WARNING, "bad", "bad %d", 100)
        assert [r.getMessage() for r in seen] == [
            "bad 0",
            "bad 1",
            "bad 2",
            "suppressed 97 more 'bad' records in the last 10.000 s",
            "bad 100",
        ]
        assert seen[3].suppressed == 97  # type: ignore[attr-defined]
        # Another key has a rate of its own; flush reports what is pending.
        assert limiter.log(logging.WARNING, "other", "other")
        for _ in range(5):
            limiter.log(logging.WARNING, "other", "other")
        assert limiter.flush() == 3
        assert seen[-1].getMessage().startswith("suppressed 3 more 'other'")
        # The records point at the caller, not at the limiter.
        assert {r.filename for r in seen} == {"test_logging.py"}
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_the_limiter_keeps_state_for_a_bounded_number_of_keys() -> None:
    logger = logging.getLogger("transportkit.test.keys")
    logger.setLevel(logging.DEBUG)
    try:
        limiter = RateLimitedLog(logger, burst=1, max_keys=4, clock=lambda: 0.0)
        for i in range(1000):
            limiter.log(logging.WARNING, f"key{i}", "event %d", i)
        assert len(limiter._windows) == 4
        # Four keys of their own; then the overflow key takes the oldest's slot and
        # every new key shares it: 5 records written.
        assert limiter.suppressed == 1000 - 5
        assert list(limiter._windows)[-1] == OVERFLOW_KEY
    finally:
        logger.setLevel(logging.NOTSET)


def test_peer_is_hex_and_truncated() -> None:
    assert peer(b"\x00\x01ab") == "00016162"
    assert peer(bytes(range(40))) == bytes(range(16)).hex() + "..."
    assert peer(None) == "-"


@pytest.mark.parametrize("bad", [{"burst": 0}, {"interval": 0.0}, {"max_keys": True}])
def test_the_limiter_refuses_bad_bounds(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RateLimitedLog(logging.getLogger("transportkit.test"), **bad)  # type: ignore[arg-type]


# -- what the patterns log, on the sim ---------------------------------------------------


def test_a_lazy_pirate_give_up_logs_once_and_each_retry_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="transportkit")
    sim = Simulation(seed=1)
    cli = sim.node("cli")
    sim.node("srv")  # nobody answers

    async def main() -> None:
        async with LazyPirateClient(cli, "tcp://srv:5555", timeout=0.5, attempts=3) as client:
            with pytest.raises(ServiceUnavailableError):
                await client.request([b"order"])

    sim.run(main())
    give_ups = records(caplog, LP, "giving up on request 1")
    assert len(give_ups) == 1
    assert give_ups[0].levelno == logging.WARNING
    assert give_ups[0].endpoint == "tcp://srv:5555"  # type: ignore[attr-defined]
    retries = records(caplog, LP, "retrying")
    assert [r.levelno for r in retries] == [logging.INFO, logging.INFO]


class _Queue:
    def __init__(self, sim: Simulation) -> None:
        self.queue: ParanoidPirateQueue | None = None
        sim.node("queue", main=self._run)

    async def _run(self, node: Node) -> None:
        with ParanoidPirateQueue(node, frontend="tcp://*:5555", backend="tcp://*:5556") as q:
            self.queue = q
            await q.run()


def test_a_paranoid_pirate_purge_logs_once_with_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="transportkit")
    sim = Simulation(seed=4)
    _Queue(sim)

    async def worker(node: Node) -> None:
        options = SocketOptions(routing_id=b"w1")
        await ParanoidPirateWorker(node, "tcp://queue:5556", lambda b: b, options=options).run()

    sim.node("w1", main=worker)
    schedule_faults(sim, [(2.5, Crash("w1"))])
    sim.run(asyncio.sleep(8.0))
    [fault] = records(caplog, "transportkit.sim_backend._faults", "fault")
    assert fault.getMessage() == "fault: Crash(node='w1')"
    assert fault.sim_time == 2.5  # type: ignore[attr-defined]
    purges = records(caplog, PP, "purged")
    assert len(purges) == 1
    assert purges[0].levelno == logging.WARNING
    assert purges[0].peer == peer(b"w1")  # type: ignore[attr-defined]
    assert purges[0].getMessage() == "worker 7731 purged: no heartbeat for 3 s"


async def _send_garbage(node: Network, count: int, pause_after: float | None = None) -> None:
    with node.dealer(
        connect="tcp://queue:5556", options=SocketOptions(routing_id=b"\xfe\xedbad", sndhwm=0)
    ) as dealer:
        await asyncio.sleep(0.1)  # connected
        for i in range(count):
            await dealer.send([b"garbage %d" % i])
            if i % 500 == 0:
                await asyncio.sleep(0)
        if pause_after is not None:
            await asyncio.sleep(pause_after)
            await dealer.send([b"garbage again"])
        await asyncio.sleep(0.5)  # delivered


def test_a_malformed_message_logs_once_with_its_peer_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="transportkit")
    sim = Simulation(seed=2)
    world = _Queue(sim)
    sim.run(_send_garbage(sim.node("bad"), 1))
    assert world.queue is not None and world.queue.stats.malformed == 1
    [record] = records(caplog, PP, "malformed")
    assert record.levelno == logging.WARNING
    assert record.peer == "feed626164"  # type: ignore[attr-defined]
    assert record.reason == "not a heartbeat, READY or reply"  # type: ignore[attr-defined]
    assert "feed626164" in record.getMessage()


def test_a_flood_of_malformed_messages_writes_a_bounded_number_of_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """10,000 malformed messages in well under one window: DEFAULT_BURST (5) records;
    one more after the window: the suppressed-count line and that record. 7 in all."""
    caplog.set_level(logging.INFO, logger="transportkit")
    sim = Simulation(seed=3)
    world = _Queue(sim)
    sim.run(_send_garbage(sim.node("bad"), 10_000, pause_after=DEFAULT_INTERVAL))
    assert world.queue is not None and world.queue.stats.malformed == 10_001
    lines = [r.getMessage() for r in caplog.records if r.name == PP]
    assert len(lines) == DEFAULT_BURST + 2 == 7
    assert lines[DEFAULT_BURST] == (
        f"suppressed {10_000 - DEFAULT_BURST} more 'malformed' records in the last "
        f"{DEFAULT_INTERVAL:.3f} s"
    )
    assert "garbage" not in " ".join(lines)  # the content is not logged, the peer is
    assert all("feed626164" in line for i, line in enumerate(lines) if i != DEFAULT_BURST)


def test_a_binary_star_failover_logs_once_on_the_backup(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="transportkit")
    sim = Simulation(seed=6)
    servers: dict[str, BinaryStarServer] = {}

    async def serve(node: Node) -> None:
        me, other = ("p", "b") if node.name == "p" else ("b", "p")
        port = {"p": 7201, "b": 7202}
        server = BinaryStarServer(
            node,
            primary=me == "p",
            frontend=f"tcp://*:{port[me] + 10}",
            state_pub=f"tcp://*:{port[me]}",
            state_sub=f"tcp://{other}:{port[other]}",
            heartbeat=0.2,
        )
        servers[me] = server
        async with server:
            await asyncio.Event().wait()

    sim.node("p", main=serve)
    sim.node("b", main=serve)
    schedule_faults(sim, [(2.0, Crash("p"))])

    async def main() -> int:
        with BinaryStarClient(
            sim.node("c"), ("tcp://p:7211", "tcp://b:7212"), timeout=0.3, settle_delay=0.3
        ) as client:
            for i in range(40):
                assert await client.request([b"%d" % i]) == [b"%d" % i]
                await asyncio.sleep(0.1)
            return client.stats.failovers

    client_failovers = sim.run(main())
    assert servers["b"].stats.failovers == 1
    [failover] = records(caplog, BSTAR, "failover: PASSIVE -> ACTIVE")
    assert failover.levelno == logging.WARNING
    assert failover.reason == "CLIENT_REQUEST"  # type: ignore[attr-defined]
    assert 2.0 < failover.sim_time < 3.0  # type: ignore[attr-defined]
    # The states it went through are logged too, and the client's switch.
    states = [r.getMessage() for r in records(caplog, BSTAR, "Binary Star state")]
    assert "Binary Star state PRIMARY -> ACTIVE on PEER_BACKUP" in states
    assert "Binary Star state BACKUP -> PASSIVE on PEER_ACTIVE" in states
    switches = records(caplog, BSTAR, "failing over to")
    assert len(switches) == client_failovers >= 1
    assert switches[-1].getMessage() == "no reply in 0.3 s: failing over to tcp://b:7212"


# -- virtual time --------------------------------------------------------------------------


def test_a_record_made_inside_a_sim_run_carries_its_virtual_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="transportkit")
    sim = Simulation(seed=0)

    async def main() -> float:
        await asyncio.sleep(12.5)
        logging.getLogger("transportkit.test").warning("at %s", "12.5")
        return sim.now

    now = sim.run(main())
    [record] = [r for r in caplog.records if r.name == "transportkit.test"]
    assert record.sim_time == now == 12.5  # type: ignore[attr-defined]
    assert record.created == pytest.approx(1_767_225_600 + 12.5, abs=1e-6)
    assert record.relativeCreated == 12_500.0
    formatter = logging.Formatter("%(asctime)s")
    formatter.converter = time.gmtime
    assert formatter.format(record) == "2026-01-01 00:00:12,500"


def _purge_run(seed: int) -> list[tuple[float, float, str, str]]:
    """A sim run with retries, a purge and a give-up; its records as (sim_time, created,
    logger, message)."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root = logging.getLogger("transportkit")
    handler = Keep(logging.INFO)
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    try:
        sim = Simulation(seed=seed)
        _Queue(sim)

        async def worker(node: Node) -> None:
            options = SocketOptions(routing_id=b"w1")
            await ParanoidPirateWorker(node, "tcp://queue:5556", lambda b: b, options=options).run()

        sim.node("w1", main=worker)
        cli = sim.node("cli")
        schedule_faults(sim, [(1.5, Crash("w1"))])

        async def main() -> None:
            await asyncio.sleep(1.0)
            async with LazyPirateClient(cli, "tcp://queue:5555", timeout=1.0, attempts=3) as c:
                await c.request([b"before"])
                await asyncio.sleep(5.0)  # w1 crashes at 1.5 s and is purged
                with pytest.raises(ServiceUnavailableError):
                    await c.request([b"after the crash"])
            await _send_garbage(sim.node("bad"), 20)

        sim.run(main())
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    out = []
    for r in seen:
        assert isinstance(r.sim_time, float), r  # type: ignore[attr-defined]
        out.append((r.sim_time, r.created, r.name, r.getMessage()))  # type: ignore[attr-defined]
    return out


def test_sim_records_carry_virtual_time_and_two_runs_of_a_seed_log_the_same() -> None:
    first = _purge_run(seed=5)
    second = _purge_run(seed=5)
    assert first == second
    names = {name for _, _, name, _ in first}
    assert {PP, LP} <= names
    messages = [m for _, _, _, m in first]
    assert any("purged" in m for m in messages)
    assert any("giving up" in m for m in messages)
    assert sum("malformed" in m for m in messages) == DEFAULT_BURST
    for sim_time, created, _, _ in first:
        assert 0.0 < sim_time < 60.0
        assert created == pytest.approx(1_767_225_600 + sim_time, abs=1e-3)
    # After the run the factory is logging's own again: no virtual time.
    record = logging.getLogger("transportkit").makeRecord("x", logging.INFO, "f", 1, "m", (), None)
    assert not hasattr(record, "sim_time")
    assert abs(record.created - time.time()) < 60


# -- the zmq backend ----------------------------------------------------------------------


def test_zmq_a_real_malformed_message_is_logged_with_wall_clock_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="transportkit")

    async def main(net: ZmqNetwork) -> int:
        with ParanoidPirateQueue(
            net, frontend="tcp://127.0.0.1:*", backend="tcp://127.0.0.1:*"
        ) as queue:
            backend = str(queue.backend.last_endpoint)
            task = asyncio.create_task(queue.run())
            try:
                options = SocketOptions(routing_id=b"\xfe\xedbad", linger=0)
                with net.dealer(connect=backend, options=options) as dealer:
                    await dealer.send([b"garbage"])
                    for _ in range(500):
                        if queue.stats.malformed:
                            break
                        await asyncio.sleep(0.01)
            finally:
                queue.close()
                await asyncio.wait_for(task, 5.0)
            return queue.stats.malformed

    with ZmqNetwork() as net:
        assert asyncio.run(main(net)) == 1
    [record] = records(caplog, PP, "malformed")
    assert record.peer == "feed626164"  # type: ignore[attr-defined]
    assert not hasattr(record, "sim_time")
    assert abs(record.created - time.time()) < 60


# -- the command line ---------------------------------------------------------------------


def test_transportkit_run_log_level_writes_records_with_virtual_time_to_stderr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from transportkit.scenario._cli import main  # noqa: PLC0415

    package = logging.getLogger("transportkit")
    handlers = list(package.handlers)
    scenario = str(SHIPPED / "risk_server_crash.toml")
    status = main([scenario, "--log-level", "WARNING", "--no-progress"])
    err = capsys.readouterr().err.splitlines()
    assert status == 0
    give_ups = [line for line in err if "giving up" in line]
    assert give_ups and give_ups[0].startswith(
        "t=4.500000 WARNING transportkit.patterns.lazy_pirate:"
    )
    assert not [line for line in err if " INFO " in line]
    assert package.handlers == handlers  # the handler was removed after the run
