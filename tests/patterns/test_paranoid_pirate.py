"""Paranoid Pirate: heartbeats both ways, dead workers purged, lost queues reconnected."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from _pirate_helpers import cancel, example, real_endpoint, run_real
from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit import Message, Network, SocketOptions
from transportkit.examples import ppqueue, ppworker
from transportkit.patterns.lazy_pirate import Handler, LazyPirateClient
from transportkit.patterns.paranoid_pirate import ParanoidPirateQueue, ParanoidPirateWorker
from transportkit.sim_backend import Constant, Crash, Node, Restart, Simulation, schedule_faults
from transportkit.testing import ChildProcess, open_harness
from transportkit.zmq_backend import ZmqNetwork

FRONTEND, BACKEND = "tcp://queue:5555", "tcp://queue:5556"
INTERVAL, LIVENESS = 1.0, 3


def signing(name: bytes) -> Handler:
    return lambda body: [name, *body]


class Deployment:
    """A queue node, worker nodes (fixed routing ids) and a client node, in a sim."""

    def __init__(self, sim: Simulation, workers: list[str]) -> None:
        self.sim = sim
        self.queues: list[ParanoidPirateQueue] = []
        self.workers: dict[str, ParanoidPirateWorker] = {}
        sim.node("queue", main=self._queue)
        for name in workers:
            sim.node(name, main=self._worker)
        self.client = sim.node("cli")

    async def _queue(self, node: Node) -> None:
        with ParanoidPirateQueue(node, frontend="tcp://*:5555", backend="tcp://*:5556") as q:
            self.queues.append(q)
            await q.run()

    async def _worker(self, node: Node) -> None:
        worker = ParanoidPirateWorker(
            node,
            BACKEND,
            signing(node.name.encode()),
            options=SocketOptions(routing_id=node.name.encode()),
        )
        self.workers[node.name] = worker
        await worker.run()


@settings(max_examples=25, deadline=None)
@given(
    crash_at=st.floats(2.0, 10.0),
    latency_ms=st.integers(1, 50),
    gap=st.sampled_from([0.1, 0.7, 2.0, 6.0]),
)
def test_a_dead_worker_is_purged_within_liveness_plus_one_interval_and_the_other_does_its_work(
    crash_at: float, latency_ms: int, gap: float
) -> None:
    sim = Simulation(seed=4, latency=Constant(latency_ms / 1000))
    world = Deployment(sim, ["w1", "w2"])
    schedule_faults(sim, [(crash_at, Crash("w1"))])
    deadline = crash_at + INTERVAL * LIVENESS + INTERVAL
    listed_at_deadline: list[bool] = []

    async def check() -> None:
        await asyncio.sleep(deadline)
        listed_at_deadline.append(b"w1" in world.queues[-1].workers)

    async def main() -> list[tuple[float, bytes]]:
        checker = world.client.spawn(check())
        signed = []
        async with LazyPirateClient(world.client, FRONTEND, timeout=2.5, attempts=3) as client:
            while sum(when > deadline for when, _ in signed) < 3:
                reply = await client.request([b"%d" % len(signed)])  # w2 lives: never fails
                assert reply[1:] == [b"%d" % len(signed)]
                signed.append((sim.now, reply[0]))
                await asyncio.sleep(gap)
        await checker
        return signed

    signed = sim.run(main(), timeout=200.0)
    queue = world.queues[-1]
    assert listed_at_deadline == [False]
    # A dead worker leaves the list by a purge, or by being handed a request (which
    # its client retried); a purge comes after the crash and in time.
    for when, wid in queue.purged:
        assert wid == b"w1"
        assert crash_at < when <= deadline
    assert {who for when, who in signed if when > deadline} == {b"w2"}
    assert {who for when, who in signed if when < crash_at} <= {b"w1", b"w2"}


def test_an_idle_dead_worker_is_purged_exactly_liveness_intervals_after_its_last_word() -> None:
    sim = Simulation(seed=4)
    world = Deployment(sim, ["w1", "w2"])
    schedule_faults(sim, [(5.5, Crash("w1"))])
    sim.run(asyncio.sleep(12.0))
    queue = world.queues[-1]
    [(when, wid)] = queue.purged
    assert wid == b"w1"
    # w1's last heartbeat left it at 5.0 s (and took one link delay to arrive).
    assert when == pytest.approx(5.0 + INTERVAL * LIVENESS, abs=0.01)
    assert queue.workers == (b"w2",)


def test_a_worker_reconnects_with_doubling_backoff_and_is_used_after_the_queue_restarts() -> None:
    sim = Simulation(seed=8)
    world = Deployment(sim, ["w1"])
    crash_at, restart_at = 5.0, 130.0
    schedule_faults(sim, [(crash_at, Crash("queue")), (restart_at, Restart("queue"))])

    async def main() -> tuple[float, Message]:
        await asyncio.sleep(restart_at)
        async with LazyPirateClient(world.client, FRONTEND, timeout=2.5, attempts=30) as client:
            reply = await client.request([b"back"])
            return sim.now, reply

    answered_at, reply = sim.run(main(), timeout=400.0)
    worker = world.workers["w1"]
    assert reply == [b"w1", b"back"]
    # Doubling from 1 s, capped at 32 s (the Guide's schedule), in virtual time.
    assert worker.backoffs[:7] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 32.0]
    # Each new socket waits out `liveness` silent intervals, then the backoff.
    gaps = [b - a for a, b in zip(worker.connections[1:], worker.connections[2:], strict=False)]
    for gap, backoff in zip(gaps, worker.backoffs[1:], strict=False):
        assert gap == pytest.approx(INTERVAL * LIVENESS + backoff)
    # Silence counts from the queue's last heartbeat, up to one interval before the crash.
    first = worker.connections[1] - crash_at
    assert INTERVAL * (LIVENESS - 1) + 1.0 <= first <= INTERVAL * LIVENESS + 1.0 + 0.01
    # Used again within one backoff cap (plus liveness) of the queue's return.
    assert answered_at - restart_at <= 32.0 + INTERVAL * LIVENESS + 2 * 2.5
    assert world.queues[-1].stats.replies >= 1


def test_the_queue_and_an_idle_worker_heartbeat_each_other() -> None:
    sim = Simulation(seed=1)
    world = Deployment(sim, ["w1"])
    sim.run(asyncio.sleep(10.5))
    queue, worker = world.queues[-1], world.workers["w1"]
    assert queue.workers == (b"w1",)
    assert 9 <= queue.stats.heartbeats_sent <= 11
    assert 9 <= worker.stats.heartbeats_sent <= 11
    assert worker.stats.heartbeats_received == queue.stats.heartbeats_sent
    assert worker.stats.reconnects == 0
    assert queue.expiries[b"w1"] <= sim.now + INTERVAL * LIVENESS


def test_bad_timings_are_refused() -> None:
    with open_harness("sim") as h:
        net = h.network()
        with pytest.raises(ValueError, match="liveness"):
            ParanoidPirateWorker(net, BACKEND, lambda b: b, liveness=0)
        with pytest.raises(ValueError, match="reconnect_initial"):
            ParanoidPirateWorker(net, BACKEND, lambda b: b, reconnect_initial=5, reconnect_max=1)
        with pytest.raises(ValueError, match="heartbeat_interval"):
            ParanoidPirateQueue(
                net, frontend="tcp://*:1", backend="tcp://*:2", heartbeat_interval=0
            )


def test_paranoid_pirate_request_reply(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:
        net = h.network("main")

        async def main() -> list[Message]:
            with ParanoidPirateQueue(
                net, frontend=h.bind_endpoint("tcp"), backend=h.bind_endpoint("tcp")
            ) as queue:
                workers = [
                    ParanoidPirateWorker(
                        h.network(f"w{w}"),
                        queue.backend_endpoint,
                        signing(b"w%d" % w),
                    )
                    for w in range(2)
                ]
                tasks = [
                    asyncio.ensure_future(queue.run()),
                    *(asyncio.ensure_future(w.run()) for w in workers),
                ]
                try:
                    cli: Network = h.network("cli")
                    async with LazyPirateClient(cli, queue.frontend_endpoint, timeout=5.0) as c:
                        return [(await c.request([b"%d" % i]))[1:] for i in range(4)]
                finally:
                    await cancel(*tasks)

        assert h.run(main(), timeout=30.0) == [[b"0"], [b"1"], [b"2"], [b"3"]]


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_a_killed_worker_process_is_purged_and_the_other_serves(
    transport: str, tmp_path: Path
) -> None:
    front = real_endpoint(transport, tmp_path, "front")
    back = real_endpoint(transport, tmp_path, "back")
    hb = ("--heartbeat-interval", "0.1", "--liveness", "3")

    async def main() -> None:
        with (
            ZmqNetwork(name="test") as net,
            ParanoidPirateQueue(
                net, frontend=front, backend=back, heartbeat_interval=0.1, liveness=3
            ) as queue,
        ):
            task = asyncio.ensure_future(queue.run())
            try:
                argv = (*example("ppworker"), "--connect", back, "--tag", *hb)
                with ChildProcess(*argv, "--name", "A") as a, ChildProcess(*argv, "--name", "B"):
                    while len(queue.workers) < 2:
                        await asyncio.sleep(0.05)
                    async with LazyPirateClient(net, front, timeout=0.5, attempts=3) as client:
                        a.kill()
                        killed = asyncio.get_running_loop().time()
                        while len(queue.workers) > 1 or queue.stats.purged == 0:
                            await asyncio.sleep(0.02)
                        # Purged within liveness x interval + one interval (+ slack).
                        assert asyncio.get_running_loop().time() - killed < 0.4 + 0.3
                        for i in range(4):
                            reply = await client.request([b"%d" % i])
                            assert reply == [b"B", b"%d" % i]
            finally:
                await cancel(task)

    run_real(main())


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_a_worker_reconnects_to_a_restarted_queue_process(transport: str, tmp_path: Path) -> None:
    front = real_endpoint(transport, tmp_path, "front")
    back = real_endpoint(transport, tmp_path, "back")
    argv = (*example("ppqueue"), "--frontend", front, "--backend", back,
            "--heartbeat-interval", "0.1")  # fmt: skip

    async def main() -> None:
        with ZmqNetwork(name="test") as net, ChildProcess(*argv) as queue:
            worker = ParanoidPirateWorker(
                net, back, signing(b"me"),
                heartbeat_interval=0.1, reconnect_initial=0.1, reconnect_max=0.4,
            )  # fmt: skip
            task = asyncio.ensure_future(worker.run())
            try:
                async with LazyPirateClient(net, front, timeout=0.5, attempts=4) as client:
                    assert await client.request([b"1"]) == [b"me", b"1"]
                    await asyncio.to_thread(queue.kill)
                    await asyncio.sleep(1.5)  # several silent periods: backing off
                    assert worker.backoffs[:3] == [0.1, 0.2, 0.4]
                    await asyncio.to_thread(queue.restart)
                    assert await client.request([b"2"]) == [b"me", b"2"]
            finally:
                worker.close()
                await cancel(task)

    run_real(main())


@pytest.mark.parametrize("module", [ppqueue, ppworker])
def test_example_programs_explain_themselves(
    module: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])  # type: ignore[attr-defined]
    assert exit_info.value.code == 0
    assert "usage: python -m transportkit.examples." in capsys.readouterr().out
