"""Titanic (9/TSP): exact frames, requests on disk served later, crashes, bad input, bounds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _mdp_helpers import (
    EXAMPLES,
    GuideBroker,
    eventually,
    example_argv,
    guide_ticlient,
    real_endpoint,
    run_real,
    running_broker,
    serving_worker,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st

from transportkit import Message, Network, Requester
from transportkit.examples import ticlient as ticlient_example
from transportkit.examples import titanic as titanic_example
from transportkit.patterns import Titanic, TitanicClient, TitanicError
from transportkit.patterns.majordomo import MajordomoBroker, MajordomoWorker
from transportkit.sim_backend import Constant, Crash, Node, Restart, Simulation, schedule_faults
from transportkit.testing import ChildProcess, open_harness
from transportkit.zmq_backend import ZmqNetwork

BROKER = "tcp://broker:5555"
UUID = re.compile(rb"[0-9a-f]{32}")
BEAT = {"heartbeat_interval": 0.25}
FAST = {"dispatch_interval": 0.1, "request_timeout": 0.5, "heartbeat_interval": 0.25}


def upper(request: Message) -> list[bytes]:
    return [frame.upper() for frame in request]


async def tsp(req: Requester, service: bytes, *body: bytes) -> list[bytes]:
    """One 7/MDP request on a raw REQ socket; the reply body (after header and service)."""
    await req.send([b"MDPC01", service, *body])
    reply = await req.recv(timeout=5.0)
    assert reply[:2] == [b"MDPC01", service]
    return reply[2:]


@contextlib.asynccontextmanager
async def running_titanic(
    net: Network, endpoint: str, directory: Path, **kwargs: Any
) -> AsyncIterator[Titanic]:
    """A Titanic running in a task (stopped on exit; its failure fails the test)."""
    titanic = Titanic(net, endpoint, directory, **{**FAST, **kwargs})
    task = asyncio.ensure_future(titanic.run())
    try:
        yield titanic
    finally:
        titanic.stop()
        await task


def test_the_tsp_services_answer_the_specs_frames_and_a_request_waits_for_its_worker(
    tk_backend: str, tmp_path: Path
) -> None:
    with open_harness(tk_backend) as h:

        async def main() -> None:
            async with running_broker(h.network("broker"), h.bind_endpoint(), **BEAT) as (
                broker,
                ep,
            ):
                async with (
                    running_titanic(h.network("titanic"), ep, tmp_path) as titanic,
                    h.network("client").requester(connect=ep) as req,
                ):
                    await eventually(lambda: broker.worker_count(b"titanic.close") == 1, 5.0)
                    status, uuid = await tsp(req, b"titanic.request", b"upper", b"hello", b"")
                    assert status == b"200" and UUID.fullmatch(uuid)
                    # No worker for "upper" yet: pending, however long we wait.
                    assert await tsp(req, b"titanic.reply", uuid) == [b"300"]
                    await asyncio.sleep(0.5)
                    assert await tsp(req, b"titanic.reply", uuid) == [b"300"]
                    assert titanic.stats.unavailable >= 1
                    assert titanic.stats.dispatched == 0
                    async with serving_worker(
                        h.network("worker"), ep, b"upper", upper, heartbeat_interval=0.25
                    ):
                        while (reply := await tsp(req, b"titanic.reply", uuid)) == [b"300"]:
                            await asyncio.sleep(0.05)
                    assert reply == [b"200", b"HELLO", b""]
                    # Idempotent: asked again, the same reply.
                    assert await tsp(req, b"titanic.reply", uuid) == [b"200", b"HELLO", b""]
                    assert await tsp(req, b"titanic.reply", uuid.upper()) == reply
                    assert await tsp(req, b"titanic.close", uuid) == [b"200"]
                    assert await tsp(req, b"titanic.reply", uuid) == [b"400"]
                    assert await tsp(req, b"titanic.close", uuid) == [b"200"]  # idempotent
                assert os.listdir(tmp_path) == []
                stats = titanic.stats
                assert (stats.requests, stats.replies, stats.closed, stats.malformed) == (
                    1,
                    1,
                    2,
                    0,
                )

        h.run(main(), timeout=20.0)


def test_a_request_stored_while_no_worker_exists_is_served_ten_minutes_later(
    tmp_path: Path,
) -> None:
    sim = Simulation(seed=3, latency=Constant(0.001))
    broker_node, titanic_node = sim.node("broker"), sim.node("titanic")
    worker_node, client_node = sim.node("worker"), sim.node("cli")

    async def main() -> tuple[Message, float]:
        async with running_broker(broker_node, "tcp://*:5555"):
            titanic = Titanic(titanic_node, BROKER, tmp_path)
            titanic_node.spawn(titanic.run())
            await asyncio.sleep(1.0)
            worker_node.spawn(_serve_later(worker_node, 600.0))
            async with TitanicClient(client_node, BROKER) as client:
                reply = await client.call(b"upper", [b"order-1"], poll_interval=30.0)
            assert titanic.stored == 0
            titanic.stop()
            return reply, sim.now

    reply, done_at = sim.run(main(), timeout=1000.0)
    assert reply == [b"ORDER-1"]
    assert 601.0 < done_at < 601.0 + 30.0 + 5.0


async def _serve_later(node: Node, delay: float) -> None:
    await asyncio.sleep(delay)
    await MajordomoWorker(node, BROKER, b"upper").serve(upper)


class TitanicWorld:
    """A broker, a Titanic node (main reruns after Restart, same directory), a client."""

    def __init__(self, sim: Simulation, directory: Path, **kwargs: Any) -> None:
        self.directory = directory
        self.titanics: list[Titanic] = []
        self.kwargs = kwargs
        sim.node("broker", main=self._broker)
        sim.node("titanic", main=self._titanic)
        self.worker = sim.node("worker")
        self.client = sim.node("cli")

    async def _broker(self, node: Node) -> None:
        await MajordomoBroker(node, "tcp://*:5555").run()

    async def _titanic(self, node: Node) -> None:
        titanic = Titanic(node, BROKER, self.directory, **self.kwargs)
        self.titanics.append(titanic)
        await titanic.run()


def test_a_titanic_crash_and_restart_loses_no_accepted_request(tmp_path: Path) -> None:
    sim = Simulation(seed=11, latency=Constant(0.001))
    world = TitanicWorld(sim, tmp_path)
    schedule_faults(sim, [(5.0, Crash("titanic")), (20.0, Restart("titanic"))])
    served: list[bytes] = []

    def record(request: Message) -> list[bytes]:
        served.append(request[0])
        return upper(request)

    async def main() -> list[Message]:
        await asyncio.sleep(1.0)
        async with TitanicClient(world.client, BROKER, timeout=1.0, attempts=30) as client:
            uuids = [await client.request(b"upper", [b"job-%d" % i]) for i in range(8)]
            await asyncio.sleep(10.0)  # Titanic is down now; the worker comes up after
            assert sim.now > 5.0 and len(world.titanics) == 1
            world.worker.spawn(MajordomoWorker(world.worker, BROKER, b"upper").serve(record))
            replies = []
            for uuid in uuids:  # the client's retries cover Titanic's outage
                while (reply := await client.reply(uuid)) is None:
                    await asyncio.sleep(1.0)
                replies.append(reply)
                await client.close_request(uuid)
            return replies

    replies = sim.run(main(), timeout=120.0)
    assert replies == [[b"JOB-%d" % i] for i in range(8)]
    # Served after the restart, by the second Titanic, in the order they were accepted.
    assert served == [b"job-%d" % i for i in range(8)]
    first, second = world.titanics
    assert (first.stats.requests, first.stats.replies) == (8, 0)
    assert (second.stats.loaded, second.stats.replies) == (8, 8)
    assert os.listdir(tmp_path) == []


def test_a_crash_while_a_request_is_being_served_resends_it_after_the_restart(
    tmp_path: Path,
) -> None:
    sim = Simulation(seed=2, latency=Constant(0.001))
    world = TitanicWorld(sim, tmp_path, request_timeout=10.0)
    schedule_faults(sim, [(4.0, Crash("titanic")), (6.0, Restart("titanic"))])
    seen: list[float] = []

    async def slow(request: Message) -> list[bytes]:
        seen.append(sim.now)
        await asyncio.sleep(5.0)
        return upper(request)

    async def main() -> Message:
        world.worker.spawn(MajordomoWorker(world.worker, BROKER, b"upper").serve(slow))
        await asyncio.sleep(1.0)
        async with TitanicClient(world.client, BROKER, timeout=1.0, attempts=30) as client:
            return await client.call(b"upper", [b"x"], poll_interval=1.0)

    assert sim.run(main(), timeout=120.0) == [b"X"]
    # Sent once before the crash (its reply went to a dead Titanic), once after.
    assert len(seen) == 2 and seen[0] < 4.0 < 6.0 < seen[1]


@settings(max_examples=8, deadline=None)
@given(
    crash_at=st.floats(1.0, 12.0),
    down_for=st.floats(0.1, 8.0),
    worker_at=st.floats(0.0, 25.0),
    seed=st.integers(0, 2**16),
)
def test_under_a_crash_at_any_time_every_accepted_request_gets_its_reply(
    crash_at: float, down_for: float, worker_at: float, seed: int, tmp_path_factory: Any
) -> None:
    directory = tmp_path_factory.mktemp("titanic")
    sim = Simulation(seed=seed, latency=Constant(0.001), scheduler="random")
    world = TitanicWorld(sim, directory)
    schedule_faults(sim, [(crash_at, Crash("titanic")), (crash_at + down_for, Restart("titanic"))])

    async def main() -> dict[bytes, Message]:
        world.worker.spawn(_serve_later(world.worker, worker_at))
        await asyncio.sleep(0.5)
        replies: dict[bytes, Message] = {}
        async with TitanicClient(world.client, BROKER, timeout=1.0, attempts=20) as client:
            uuids = []
            for i in range(6):
                uuids.append((await client.request(b"upper", [b"job-%d" % i]), i))
                await asyncio.sleep(1.0)
            for uuid, i in uuids:
                while (reply := await client.reply(uuid)) is None:
                    await asyncio.sleep(0.5)
                assert reply == [b"JOB-%d" % i]
                replies[uuid] = reply
                await client.close_request(uuid)
        return replies

    replies = sim.run(main(), timeout=300.0)
    assert len(replies) == 6
    event(f"{len(world.titanics)} Titanic runs")


def test_malformed_tsp_requests_are_answered_400_and_counted(
    tk_backend: str, tmp_path: Path
) -> None:
    with open_harness(tk_backend) as h:

        async def main() -> None:
            async with running_broker(h.network("broker"), h.bind_endpoint(), **BEAT) as (
                broker,
                ep,
            ):
                async with (
                    running_titanic(h.network("titanic"), ep, tmp_path) as titanic,
                    h.network("client").requester(connect=ep) as req,
                ):
                    await eventually(lambda: broker.worker_count(b"titanic.close") == 1, 5.0)
                    bad = [
                        (b"titanic.request", [b"upper"]),  # no body
                        (b"titanic.request", [b"", b"x"]),  # no service
                        (b"titanic.request", [b"titanic.reply", b"x"]),
                        (b"titanic.request", [b"mmi.service", b"upper"]),
                        (b"titanic.reply", [b"not-a-uuid"]),
                        (b"titanic.reply", [b"0" * 31]),
                        (b"titanic.reply", [b"g" * 32]),
                        (b"titanic.reply", [b"0" * 32, b"extra"]),
                        (b"titanic.close", [b""]),
                        (b"titanic.close", [b"0" * 33]),
                    ]
                    for service, body in bad:
                        assert await tsp(req, service, *body) == [b"400"], (service, body)
                    assert titanic.stats.malformed == len(bad)
                    # Well-formed and unknown: reply 400, close 200 (9/TSP).
                    assert await tsp(req, b"titanic.reply", b"a" * 32) == [b"400"]
                    assert await tsp(req, b"titanic.close", b"A" * 32) == [b"200"]
                    assert titanic.stats.malformed == len(bad)
                    assert titanic.stored == 0
                assert os.listdir(tmp_path) == []

        h.run(main(), timeout=20.0)


def test_stored_requests_and_their_sizes_are_bounded_and_refusals_counted(tmp_path: Path) -> None:
    sim = Simulation(seed=1, latency=Constant(0.001))
    world = TitanicWorld(sim, tmp_path, max_requests=2, max_request_bytes=100, max_reply_bytes=50)

    def big(request: Message) -> list[bytes]:
        return [request[0] * 10]

    async def main() -> None:
        await asyncio.sleep(1.0)
        async with TitanicClient(world.client, BROKER) as client:
            with pytest.raises(TitanicError) as too_big:
                await client.request(b"big", [b"x" * 100])  # 103 bytes with the service
            assert too_big.value.status == b"400"
            first = await client.request(b"big", [b"x" * 4])
            second = await client.request(b"big", [b"y" * 20])
            with pytest.raises(TitanicError) as full:
                await client.request(b"big", [b"z"])
            assert full.value.status == b"500"
            titanic = world.titanics[0]
            assert titanic.stats.over_limit == 2 and titanic.stored == 2
            world.worker.spawn(MajordomoWorker(world.worker, BROKER, b"big").serve(big))
            while titanic.pending:
                await asyncio.sleep(0.5)
            assert await client.reply(first) == [b"x" * 40]
            # A 200-byte reply is over max_reply_bytes: not stored, answered 500.
            with pytest.raises(TitanicError) as over:
                await client.reply(second)
            assert over.value.status == b"500"
            assert titanic.stats.over_limit == 3
            await client.close_request(first)
            assert len(await client.request(b"big", [b"z"])) == 32  # room again

    sim.run(main(), timeout=120.0)


def test_files_are_written_atomically_and_a_restart_cleans_up_and_skips_corrupt_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = Simulation(seed=4, latency=Constant(0.001))
    world = TitanicWorld(sim, tmp_path)
    schedule_faults(sim, [(10.0, Crash("titanic")), (11.0, Restart("titanic"))])
    real_replace = os.replace

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    async def main() -> None:
        await asyncio.sleep(1.0)
        async with TitanicClient(world.client, BROKER, timeout=1.0, attempts=10) as client:
            kept = await client.request(b"upper", [b"kept"])
            monkeypatch.setattr(os, "replace", failing_replace)
            with pytest.raises(TitanicError) as refused:
                await client.request(b"upper", [b"lost"])
            monkeypatch.setattr(os, "replace", real_replace)
            assert refused.value.status == b"500"
            assert world.titanics[0].stats.storage_errors == 1
            # Only the accepted request is on disk; the temporary file was removed.
            assert sorted(os.listdir(tmp_path)) == [kept.decode() + ".req"]
            # What a crash in the middle of a write or a close would leave:
            (tmp_path / ("b" * 32 + ".req.tmp")).write_bytes(b"half")
            (tmp_path / ("c" * 32 + ".rep")).write_bytes(b"orphan")
            (tmp_path / ("d" * 32 + ".req")).write_bytes(b"not ours")
            (tmp_path / "notes.txt").write_text("left alone")
            await asyncio.sleep(12.0)  # the crash and the restart
            second = world.titanics[1]
            assert (second.stats.loaded, second.stats.corrupt) == (1, 1)
            assert sorted(os.listdir(tmp_path)) == sorted(
                [kept.decode() + ".req", "d" * 32 + ".req", "notes.txt"]
            )
            assert second.status(kept.decode()) == b"300"

    sim.run(main(), timeout=60.0)


def test_uuids_are_hex_uuid4_and_the_same_seed_gives_the_same_run(tmp_path: Path) -> None:
    def run(seed: int, directory: Path) -> tuple[list[bytes], str]:
        directory.mkdir()
        sim = Simulation(seed=seed, latency=Constant(0.001))
        world = TitanicWorld(sim, directory)

        async def main() -> list[bytes]:
            await asyncio.sleep(1.0)
            async with TitanicClient(world.client, BROKER) as client:
                return [await client.request(b"upper", [b"%d" % i]) for i in range(5)]

        return sim.run(main(), timeout=60.0), sim.trace.hash

    first, again, other = run(5, tmp_path / "a"), run(5, tmp_path / "b"), run(6, tmp_path / "c")
    assert first == again
    assert first[0] != other[0]
    for uuid in first[0]:
        assert UUID.fullmatch(uuid)
        assert uuid[12:13] == b"4"  # version 4
        assert uuid[16:17] in b"89ab"  # RFC 4122 variant


def test_our_titanic_between_the_guides_broker_and_a_guide_style_ticlient(tmp_path: Path) -> None:
    async def main(endpoint: str) -> tuple[Message, list[bytes]]:
        with ZmqNetwork() as net:
            titanic = Titanic(net, endpoint, tmp_path, **FAST)
            task = asyncio.ensure_future(titanic.run())
            try:
                async with TitanicClient(net, endpoint, timeout=1.0, attempts=10) as client:
                    uuid = await client.request(b"upper", [b"via", b"guide"])
                    async with serving_worker(
                        net, endpoint, b"upper", upper, heartbeat_interval=0.25
                    ):
                        while (reply := await client.reply(uuid)) is None:
                            await asyncio.sleep(0.05)
                        await client.close_request(uuid)
                        seen = await asyncio.to_thread(
                            guide_ticlient, endpoint, b"upper", b"Hello world"
                        )
                    return reply, seen
            finally:
                titanic.stop()
                await asyncio.gather(task, return_exceptions=True)

    with GuideBroker() as broker:
        reply, seen = run_real(main(broker.endpoint), timeout=30.0)
        mmi = [r for r in broker.requests if r[1] == b"mmi.service"]
    assert reply == [b"VIA", b"GUIDE"]
    assert mmi and all(r == [b"MDPC01", b"mmi.service", b"upper"] for r in mmi)
    # The Guide's dialogue: 200 and a uuid; 300 while pending; 200 and the reply; 200.
    assert seen[0] == b"200" and UUID.fullmatch(seen[1])
    assert seen[2:] in ([b"200", b"HELLO WORLD", b"200"], [b"300", b"200", b"HELLO WORLD", b"200"])
    assert os.listdir(tmp_path) == []


def test_a_broker_crash_loses_no_stored_request(tmp_path: Path) -> None:
    sim = Simulation(seed=8, latency=Constant(0.001))
    world = TitanicWorld(sim, tmp_path)
    schedule_faults(sim, [(3.0, Crash("broker")), (30.0, Restart("broker"))])

    async def main() -> list[Message]:
        await asyncio.sleep(1.0)
        async with TitanicClient(world.client, BROKER, timeout=1.0, attempts=60) as client:
            uuids = [await client.request(b"upper", [b"%d" % i]) for i in range(3)]
            await asyncio.sleep(5.0)  # the broker is gone; the worker comes meanwhile
            world.worker.spawn(MajordomoWorker(world.worker, BROKER, b"upper").serve(upper))
            replies = []
            for uuid in uuids:
                while (reply := await client.reply(uuid)) is None:
                    await asyncio.sleep(1.0)
                replies.append(reply)
            return replies

    assert sim.run(main(), timeout=200.0) == [[b"0"], [b"1"], [b"2"]]
    assert len(world.titanics) == 1 and world.titanics[0].stats.replies == 3


# -- the examples, as processes: a SIGKILLed Titanic restarted on its directory ---------


@pytest.mark.parametrize("module", [titanic_example, ticlient_example])
def test_examples_show_their_help(module: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        module.main(["--help"])
    assert done.value.code == 0
    name = module.__name__.rsplit(".", 1)[1]
    assert capsys.readouterr().out.startswith(f"usage: python -m {EXAMPLES}.{name}")


def test_real_processes_a_killed_titanic_restarted_on_its_directory_serves_what_it_took(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = real_endpoint("ipc", tmp_path)
    store = tmp_path / "store"
    timing = ("--heartbeat-interval", "0.2")
    titanic_argv = (*example_argv("titanic"), "--broker", endpoint, "--directory", str(store))

    async def main(titanic: ChildProcess) -> tuple[list[Message], str]:
        with ZmqNetwork(name="test") as net:
            async with TitanicClient(net, endpoint, timeout=1.0, attempts=10) as client:
                uuids = [await client.request(b"echo", [b"%d" % i]) for i in range(3)]
                await asyncio.to_thread(titanic.kill)
                await asyncio.to_thread(titanic.restart)
                with ChildProcess(
                    *example_argv("mdworker"), "--broker", endpoint, *timing, "--quiet"
                ):
                    replies = []
                    for uuid in uuids:
                        while (reply := await client.reply(uuid)) is None:
                            await asyncio.sleep(0.05)
                        replies.append(reply)
                        await client.close_request(uuid)
                    argv = ["--broker", endpoint, "--poll", "0.1"]
                    capsys.readouterr()
                    # The example's main, in a thread (its own event loop), not a process.
                    assert await asyncio.to_thread(ticlient_example.main, argv) == 0
                return replies, capsys.readouterr().out

    with (
        ChildProcess(*example_argv("mdbroker"), "--bind", endpoint, *timing),
        ChildProcess(*titanic_argv, *timing, "--dispatch-interval", "0.1") as titanic,
    ):
        replies, ticlient_out = run_real(main(titanic), timeout=30.0)
    assert replies == [[b"0"], [b"1"], [b"2"]]
    lines = ticlient_out.splitlines()
    assert re.fullmatch(r"I: request UUID [0-9a-f]{32}", lines[0])
    assert lines[-1] == "I: reply: [b'Hello world']"
    assert os.listdir(store) == []
