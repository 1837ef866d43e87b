"""Majordomo (7/MDP): exact wire frames, service routing, heartbeats, expiry and crashes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _mdp_helpers import (
    cancel,
    eventually,
    example_argv,
    real_endpoint,
    recv_frames,
    run_real,
    running_broker,
    serving_worker,
)
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from transportkit import (
    FrameError,
    Message,
    ProtocolError,
    ServiceUnavailableError,
    StateError,
)
from transportkit.patterns import majordomo
from transportkit.patterns.majordomo import (
    MDP_HEARTBEAT_INTERVAL,
    MDP_HEARTBEAT_LIVENESS,
    MDP_RECONNECT_INTERVAL,
    MajordomoBroker,
    MajordomoClient,
    MajordomoWorker,
)
from transportkit.sim_backend import (
    Constant,
    Crash,
    FaultSchedule,
    Node,
    Partition,
    Repair,
    Restart,
    Simulation,
    schedule_faults,
)
from transportkit.testing import ChildProcess, open_harness
from transportkit.testing.strategies import fault_schedules
from transportkit.zmq_backend import ZmqNetwork

# The wire format is spelled out as literals here, not taken from the module under test.
HEARTBEAT_FRAMES = [b"", b"MDPW01", b"\x04"]
DISCONNECT_FRAMES = [b"", b"MDPW01", b"\x05"]

INTERVAL, LIVENESS, RECONNECT = (
    MDP_HEARTBEAT_INTERVAL,
    MDP_HEARTBEAT_LIVENESS,
    MDP_RECONNECT_INTERVAL,
)
BROKER = "tcp://broker:5555"


def tagged(name: bytes) -> majordomo.MajordomoHandler:
    """A handler answering ``[name, *request]``: replies say who served them."""
    return lambda request: [name, *request]


# -- constants and arguments ----------------------------------------------------------


def test_protocol_constants_are_the_specs_bytes_and_the_guides_timings() -> None:
    assert (majordomo.MDPC01, majordomo.MDPW01) == (b"MDPC01", b"MDPW01")
    commands = [
        majordomo.MDPW_READY,
        majordomo.MDPW_REQUEST,
        majordomo.MDPW_REPLY,
        majordomo.MDPW_HEARTBEAT,
        majordomo.MDPW_DISCONNECT,
    ]
    assert commands == [b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"]
    assert (LIVENESS, INTERVAL, RECONNECT) == (3, 2.5, 2.5)
    assert all(hasattr(majordomo, name) for name in majordomo.__all__)


def test_bad_arguments_are_refused_with_clear_errors() -> None:
    with open_harness("sim") as h:
        net = h.network()
        with pytest.raises(ValueError, match="heartbeat_interval"):
            MajordomoBroker(net, "tcp://*:1", heartbeat_interval=0)
        with pytest.raises(ValueError, match="heartbeat_liveness"):
            MajordomoWorker(net, BROKER, b"echo", heartbeat_liveness=0)
        with pytest.raises(ValueError, match="retries"):
            MajordomoClient(net, BROKER, retries=0)
        with pytest.raises(ValueError, match="timeout"):
            MajordomoClient(net, BROKER, timeout=float("nan"))
        with pytest.raises(FrameError, match="encode"):
            MajordomoWorker(net, BROKER, "echo")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="mmi"):
            MajordomoWorker(net, BROKER, b"mmi.service")

        async def main() -> None:
            client = MajordomoClient(net, BROKER)
            with pytest.raises(FrameError, match="service name"):
                await client.request(b"", [b"x"])
            with pytest.raises(FrameError):
                await client.request(b"echo", [])
            worker = MajordomoWorker(net, BROKER, b"echo")
            with pytest.raises(StateError, match="recv first"):
                await worker.send([b"x"])
            await worker.aclose()
            client.close()

        h.run(main())


# -- wire format: raw sockets against our broker, our peers against raw sockets -------


def test_broker_relays_spec_frames_between_a_raw_req_client_and_a_raw_dealer_worker(
    backend: str,
) -> None:
    with open_harness(backend) as h:

        async def main() -> None:
            async with running_broker(h.network("broker"), h.endpoint()) as (broker, ep):
                with (
                    h.network("worker").dealer(connect=ep) as worker,
                    h.network("client").requester(connect=ep) as client,
                ):
                    await worker.send([b"", b"MDPW01", b"\x01", b"echo"])
                    await eventually(lambda: broker.worker_count(b"echo") == 1, 5.0)
                    await client.send([b"MDPC01", b"echo", b"hello", b"world"])
                    request = await recv_frames(worker)
                    assert request[:3] == [b"", b"MDPW01", b"\x02"]
                    address = request[3]
                    assert address
                    assert request[4:] == [b"", b"hello", b"world"]
                    await worker.send([b"", b"MDPW01", b"\x03", address, b"", b"HELLO", b"!"])
                    assert await recv_frames(client) == [b"MDPC01", b"echo", b"HELLO", b"!"]
                assert broker.stats.replies == 1
                assert broker.stats.malformed == 0

        h.run(main())


def test_a_raw_dealer_client_sends_and_gets_the_empty_delimiter_and_mmi_answers(
    backend: str,
) -> None:
    with open_harness(backend) as h:

        async def main() -> None:
            async with running_broker(h.network("broker"), h.endpoint()) as (broker, ep):
                with (
                    h.network("worker").dealer(connect=ep) as worker,
                    h.network("client").dealer(connect=ep) as client,
                ):

                    async def ask(service: bytes, *body: bytes) -> Message:
                        await client.send([b"", b"MDPC01", service, *body])
                        return await recv_frames(client)

                    mmi = b"mmi.service"
                    assert await ask(mmi, b"echo") == [b"", b"MDPC01", mmi, b"404"]
                    await worker.send([b"", b"MDPW01", b"\x01", b"echo"])
                    await eventually(lambda: broker.worker_count(b"echo") == 1, 5.0)
                    assert await ask(mmi, b"echo") == [b"", b"MDPC01", mmi, b"200"]
                    assert await ask(mmi, b"nope") == [b"", b"MDPC01", mmi, b"404"]
                    assert await ask(b"mmi.vers", b"x") == [b"", b"MDPC01", b"mmi.vers", b"501"]
                    await client.send([b"", b"MDPC01", b"echo", b"ping"])
                    request = await recv_frames(worker)
                    await worker.send([b"", b"MDPW01", b"\x03", request[3], b"", b"pong"])
                    assert await recv_frames(client) == [b"", b"MDPC01", b"echo", b"pong"]
                    assert broker.stats.mmi == 4

        h.run(main())


def test_our_worker_sends_spec_frames_to_a_raw_router_broker(backend: str) -> None:
    with open_harness(backend) as h:

        async def main() -> None:
            with h.network("broker").router() as router:
                ep = router.bind(h.endpoint())
                worker = MajordomoWorker(h.network("worker"), ep, b"echo", heartbeat_interval=0.2)
                await worker.start()
                wid, *ready = await recv_frames(router)
                assert ready == [b"", b"MDPW01", b"\x01", b"echo"]
                await router.send([wid, b"", b"MDPW01", b"\x02", b"client-7", b"", b"ping", b"2"])
                assert await worker.recv() == [b"ping", b"2"]
                await worker.send([b"pong"])
                reply = await recv_frames(router)
                while reply[1:] == HEARTBEAT_FRAMES:
                    reply = await recv_frames(router)
                assert reply == [wid, b"", b"MDPW01", b"\x03", b"client-7", b"", b"pong"]
                # Heartbeats follow, one per interval, while the broker is heard.
                await router.send([wid, *HEARTBEAT_FRAMES])
                assert await recv_frames(router, timeout=1.0) == [wid, *HEARTBEAT_FRAMES]
                await worker.aclose()
                assert worker.stats.replies == 1

        h.run(main())


def test_our_client_sends_spec_frames_and_rejects_malformed_replies(backend: str) -> None:
    with open_harness(backend) as h:

        async def main() -> None:
            with h.network("broker").router() as router:
                ep = router.bind(h.endpoint())
                client = MajordomoClient(h.network("client"), ep, timeout=5.0, retries=1)

                async def exchange(reply: list[bytes]) -> Message:
                    task = asyncio.ensure_future(client.request(b"echo", [b"q", b"2"]))
                    cid, *request = await recv_frames(router)
                    assert request == [b"", b"MDPC01", b"echo", b"q", b"2"]
                    await router.send([cid, b"", *reply])
                    return await task

                assert await exchange([b"MDPC01", b"echo", b"a", b"b"]) == [b"a", b"b"]
                for bad in (
                    [b"MDPC02", b"echo", b"a"],  # wrong protocol version
                    [b"MDPC01", b"other", b"a"],  # another service's reply
                    [b"MDPC01", b"echo"],  # no body
                ):
                    with pytest.raises(ProtocolError):
                        await exchange(bad)
                client.close()

        h.run(main())


def test_broker_disconnects_workers_that_send_invalid_or_unexpected_commands(
    backend: str,
) -> None:
    violations = [
        [[b"", b"MDPW01", b"\x04"]],  # HEARTBEAT before READY
        [[b"", b"MDPW01", b"\x01", b"echo"], [b"", b"MDPW01", b"\x01", b"echo"]],  # READY twice
        [[b"", b"MDPW01", b"\x01", b"mmi.echo"]],  # the mmi namespace is the broker's
        [[b"", b"MDPW01", b"\x01"]],  # READY without a service
        [[b"", b"MDPW01", b"\x01", b"echo"], [b"", b"MDPW01", b"\x03", b"c", b"", b"r"]],  # idle
        [[b"", b"MDPW01", b"\x01", b"echo"], [b"", b"MDPW01", b"\x02", b"c", b"", b"r"]],  # REQUEST
        [[b"", b"MDPW01", b"\x01", b"echo"], [b"", b"MDPW01", b"\x09"]],  # unknown command
        [[b"", b"MDPW01", b"\x01", b"echo"], [b"", b"MDPW01", b"\x04", b"extra"]],
    ]
    with open_harness(backend) as h:

        async def main() -> None:
            # A long heartbeat interval: nothing but the DISCONNECT comes back.
            async with running_broker(
                h.network("broker"), h.endpoint(), heartbeat_interval=60.0
            ) as (broker, ep):
                for i, commands in enumerate(violations):
                    with h.network(f"w{i}").dealer(connect=ep) as worker:
                        for command in commands:
                            await worker.send(command)
                        assert await recv_frames(worker) == DISCONNECT_FRAMES, commands
                assert broker.stats.disconnects == len(violations)
                assert broker.stats.malformed == len(violations)
                assert broker.worker_count(b"echo") == 0
                # A worker's own DISCONNECT is obeyed silently: it is simply forgotten.
                with h.network("polite").dealer(connect=ep) as worker:
                    await worker.send([b"", b"MDPW01", b"\x01", b"echo"])
                    await eventually(lambda: broker.worker_count(b"echo") == 1, 5.0)
                    await worker.send(DISCONNECT_FRAMES)
                    await eventually(lambda: broker.worker_count(b"echo") == 0, 5.0)
                    assert broker.stats.disconnects == len(violations)

        h.run(main())


MDP_WORDS = [b"", b"MDPC01", b"MDPW01", b"\x01", b"\x02", b"\x03", b"\x04", b"\x05", b"echo"]
junk_frames = st.one_of(
    st.sampled_from([*MDP_WORDS, b"mmi.service", b"mmi.x"]), st.binary(max_size=6)
)


@settings(max_examples=40, deadline=None)
@given(junk=st.lists(st.lists(junk_frames, min_size=1, max_size=7), min_size=1, max_size=12))
def test_malformed_messages_are_counted_and_never_stop_the_broker(
    junk: list[list[bytes]],
) -> None:
    sim = Simulation(seed=2)
    broker_node, rogue_node, client_node = sim.node("broker"), sim.node("rogue"), sim.node("cli")

    async def main() -> Message:
        async with (
            running_broker(broker_node, "tcp://*:5555") as (broker, _),
            serving_worker(sim.node("worker"), BROKER, b"echo", tagged(b"w")),
        ):
            with rogue_node.dealer(connect=BROKER) as rogue:
                for frames in junk:
                    await rogue.send(frames)
                await asyncio.sleep(0.1)
                assert broker.stats.malformed <= len(junk)
                async with MajordomoClient(client_node, BROKER) as client:
                    # The rogue may have registered as an echo worker that never answers:
                    # the request then goes to the real worker once the rogue expires.
                    return await client.request(b"echo", [b"still here"])

    assert sim.run(main(), timeout=60.0) == [b"w", b"still here"]


# -- routing, on both backends --------------------------------------------------------


def test_clients_get_the_reply_of_the_service_they_asked_for(backend: str) -> None:
    with open_harness(backend) as h:

        async def main() -> None:
            async with (
                running_broker(h.network("broker"), h.endpoint()) as (broker, ep),
                serving_worker(h.network("w1"), ep, b"echo", tagged(b"echo-1")),
                serving_worker(h.network("w2"), ep, b"echo", tagged(b"echo-2")),
                serving_worker(h.network("w3"), ep, b"upper", lambda r: [f.upper() for f in r]),
            ):
                await eventually(lambda: broker.services() == {b"echo": 2, b"upper": 1}, 5.0)
                async with (
                    MajordomoClient(h.network("c1"), ep) as c1,
                    MajordomoClient(h.network("c2"), ep) as c2,
                ):

                    async def use(client: MajordomoClient, name: bytes) -> list[bytes]:
                        servers = []
                        for i in range(6):
                            body = b"%s-%d" % (name, i)
                            reply = await client.request(b"echo", [body])
                            assert reply[1:] == [body]
                            servers.append(reply[0])
                            assert await client.request(b"upper", [body, b"x"]) == [
                                body.upper(),
                                b"X",
                            ]
                        return servers

                    one, two = await asyncio.gather(use(c1, b"a"), use(c2, b"b"))
                # Requests for a service are shared among its workers.
                assert set(one + two) == {b"echo-1", b"echo-2"}
                assert c1.stats.timeouts == c2.stats.timeouts == 0
                assert broker.stats.replies == 24

        h.run(main(), timeout=20.0)


# -- heartbeats, expiry and retries in virtual time -----------------------------------


class Deployment:
    """A broker node, worker nodes serving ``echo`` (replies tagged with the node's
    name) and a client node, in a simulation; the nodes' mains rerun after a restart.
    """

    def __init__(self, sim: Simulation, workers: list[str], **broker_args: Any) -> None:
        self.sim = sim
        self.brokers: list[MajordomoBroker] = []
        self.workers: dict[str, list[MajordomoWorker]] = {name: [] for name in workers}
        self._broker_args = broker_args
        sim.node("broker", main=self._broker)
        for name in workers:
            sim.node(name, main=self._worker)
        self.client = sim.node("cli")

    @property
    def broker(self) -> MajordomoBroker:
        return self.brokers[-1]

    async def _broker(self, node: Node) -> None:
        broker = MajordomoBroker(node, "tcp://*:5555", **self._broker_args)
        self.brokers.append(broker)
        await broker.run()

    async def _worker(self, node: Node) -> None:
        worker = MajordomoWorker(node, BROKER, b"echo")
        self.workers[node.name].append(worker)
        await worker.serve(tagged(node.name.encode()))


def test_a_crashed_worker_expires_within_liveness_intervals_and_requests_go_to_the_live_one() -> (
    None
):
    sim = Simulation(seed=5, latency=Constant(0.001))
    world = Deployment(sim, ["w1", "w2"])
    crash_at = 10.3
    schedule_faults(sim, [(crash_at, Crash("w1"))])

    async def watch() -> float:
        while world.broker.worker_count(b"echo") == 2 or sim.now < crash_at:
            await asyncio.sleep(0.01)
        return sim.now

    async def main() -> tuple[float, list[bytes], MajordomoClient]:
        watcher = world.client.spawn(watch())
        await asyncio.sleep(crash_at + INTERVAL * LIVENESS + INTERVAL)
        async with MajordomoClient(world.client, BROKER) as client:
            served = [(await client.request(b"echo", [b"%d" % i]))[0] for i in range(6)]
        return await watcher, served, client

    expired_at, served, client = sim.run(main(), timeout=100.0)
    # w1 was last heard at most one interval before the crash.
    assert crash_at + INTERVAL * (LIVENESS - 1) <= expired_at <= crash_at + INTERVAL * LIVENESS
    assert world.broker.stats.expired_workers == 1
    assert served == [b"w2"] * 6
    assert client.stats.timeouts == 0


def test_a_request_whose_worker_dies_mid_request_is_given_to_another_worker() -> None:
    sim = Simulation(seed=1, latency=Constant(0.001))
    broker_node, client_node = sim.node("broker"), sim.node("cli")
    slow, fast = sim.node("slow"), sim.node("fast")

    async def never(request: Message) -> list[bytes]:
        await asyncio.sleep(3600)
        return request

    async def main() -> tuple[Message, float]:
        async with running_broker(broker_node, "tcp://*:5555") as (broker, _):
            slow.spawn(MajordomoWorker(slow, BROKER, b"echo").serve(never))
            await asyncio.sleep(1.0)
            client = MajordomoClient(client_node, BROKER, timeout=30.0, retries=1)
            task = asyncio.ensure_future(client.request(b"echo", [b"job"]))
            await asyncio.sleep(1.0)
            assert broker.stats.dispatched == 1  # the slow worker has it
            sim.crash("slow")
            fast.spawn(MajordomoWorker(fast, BROKER, b"echo").serve(tagged(b"fast")))
            reply = await task
            assert broker.stats.requeued == 1
            return reply, sim.now

    reply, answered_at = sim.run(main(), timeout=100.0)
    assert reply == [b"fast", b"job"]
    # Not a client retry: the broker requeued it once the slow worker expired.
    assert answered_at <= 2.0 + INTERVAL * LIVENESS + 0.1


def test_a_worker_reconnects_after_broker_silence_and_after_disconnect() -> None:
    sim = Simulation(seed=3, latency=Constant(0.001))
    broker_node, worker_node = sim.node("broker"), sim.node("w")
    seen: list[tuple[float, bytes, list[bytes]]] = []

    async def main() -> MajordomoWorker:
        with broker_node.router(bind="tcp://*:5555") as router:

            async def hear() -> bytes:
                rid, *frames = await router.recv(timeout=20.0)
                seen.append((round(sim.now, 3), rid, frames))
                return rid

            worker = MajordomoWorker(worker_node, BROKER, b"echo")
            await worker.start()
            while sim.now < 12.0:  # a broker that never speaks
                rid = await hear()
            # A DISCONNECT ending a conversation: a new connection at once.
            await router.send([rid, *HEARTBEAT_FRAMES])
            await router.send([rid, *DISCONNECT_FRAMES])
            rid = await hear()
            # A DISCONNECT answering READY, and nothing else: a pause first.
            await router.send([rid, *DISCONNECT_FRAMES])
            await hear()
            await worker.aclose()
            return worker

    worker = sim.run(main(), timeout=100.0)
    assert (worker.stats.connects, worker.stats.disconnects) == (4, 2)
    ready = [
        (when, rid) for when, rid, frames in seen if frames == [b"", b"MDPW01", b"\x01", b"echo"]
    ]
    beats = [when for when, _, frames in seen if frames == HEARTBEAT_FRAMES]
    assert len(ready) == 4 and len({rid for _, rid in ready}) == 4  # a new connection each time
    first, silent, ended, refused = (when for when, _ in ready)
    assert first == pytest.approx(0.002)  # connect, then READY: one link delay each
    assert beats[:2] == pytest.approx([INTERVAL + 0.001, 2 * INTERVAL + 0.001])
    # Silent for liveness x interval, a pause of reconnect_interval, READY again.
    assert silent == pytest.approx(INTERVAL * LIVENESS + RECONNECT + 0.002)
    disconnected_at = 12.5 + 0.001  # the second connection's heartbeat, answered at once
    assert ended == pytest.approx(disconnected_at + 0.003, abs=0.002)
    assert refused == pytest.approx(ended + 0.001 + RECONNECT + 0.002, abs=0.002)


def test_a_client_gives_up_after_retries_times_timeout_and_a_late_reply_is_not_taken() -> None:
    sim = Simulation(seed=1, latency=Constant(0.001))
    broker_node, client_node, worker_node = sim.node("broker"), sim.node("cli"), sim.node("w")
    calls: list[bytes] = []

    async def first_one_slow(request: Message) -> list[bytes]:
        calls.append(request[0])
        if len(calls) == 1:
            await asyncio.sleep(3.0)  # longer than the client's timeout
        return [b"done", *request]

    async def main() -> None:
        async with (
            running_broker(broker_node, "tcp://*:5555") as (broker, _),
            MajordomoClient(client_node, BROKER, timeout=2.5, retries=3) as client,
        ):
            start = sim.now
            with pytest.raises(ServiceUnavailableError, match="3 attempts"):
                await client.request(b"nobody", [b"hello"])
            assert sim.now - start == pytest.approx(7.5)
            assert (client.stats.attempts, client.stats.failures) == (3, 1)
            worker_node.spawn(MajordomoWorker(worker_node, BROKER, b"echo").serve(first_one_slow))
            await asyncio.sleep(0.5)
            assert await client.request(b"echo", [b"A"]) == [b"done", b"A"]
            assert await client.request(b"echo", [b"B"]) == [b"done", b"B"]
            assert client.stats.timeouts == 4  # 3 for "nobody", 1 for the slow "A"
            assert calls == [b"A", b"A", b"B"]
            assert broker.stats.replies == 3  # the late first reply went to a closed socket

    sim.run(main(), timeout=100.0)


def test_requests_wait_for_a_worker_and_expire_after_the_request_ttl() -> None:
    sim = Simulation(seed=1, latency=Constant(0.001))
    broker_node, client_node, worker_node = sim.node("broker"), sim.node("cli"), sim.node("w")

    async def main() -> None:
        async with (
            running_broker(broker_node, "tcp://*:5555", request_ttl=5.0) as (broker, _),
            MajordomoClient(client_node, BROKER, timeout=60.0, retries=1) as client,
        ):

            async def worker_arrives(after: float) -> None:
                await asyncio.sleep(after)
                worker = MajordomoWorker(worker_node, BROKER, b"late")
                worker_node.spawn(worker.serve(tagged(b"w")))

            client_node.spawn(worker_arrives(3.0))
            start = sim.now
            assert await client.request(b"late", [b"x"]) == [b"w", b"x"]
            assert sim.now - start == pytest.approx(3.0, abs=0.01)
            task = asyncio.ensure_future(client.request(b"nobody", [b"y"]))
            await asyncio.sleep(5.5)
            assert broker.stats.expired_requests == 1
            assert broker.queued(b"nobody") == 0
            await cancel(task)

    sim.run(main(), timeout=100.0)


@settings(max_examples=40, deadline=None)
@given(
    schedule=fault_schedules(
        ["cli", "broker", "w1", "w2"],
        crashable=["w1", "w2"],
        kinds=("crash", "partition"),
        horizon=20.0,
        max_faults=3,
        max_outage=12.0,
    ),
    seed=st.integers(0, 3),
)
# Outages long enough to exhaust the client's retries, whatever the draw:
@example(schedule=[(1.0, Partition("cli", "broker")), (13.0, Repair("cli", "broker"))], seed=0)
@example(
    schedule=[(1.0, Crash("w1")), (1.5, Crash("w2")), (13.0, Restart("w1")), (20.0, Restart("w2"))],
    seed=1,
)
@example(
    schedule=[(2.0, Partition("broker", "w1", both_ways=False)), (14.0, Crash("w2")),
              (14.5, Repair("broker", "w1", both_ways=False)), (16.0, Restart("w2"))],
    seed=2,
)  # fmt: skip
def test_under_worker_crashes_and_partitions_every_request_ends_once_and_service_recovers(
    schedule: FaultSchedule, seed: int
) -> None:
    sim = Simulation(seed=seed, latency=Constant(0.002))
    world = Deployment(sim, ["w1", "w2"])
    schedule_faults(sim, schedule)
    calm_from = max((when for when, _ in schedule), default=0.0)
    settle = INTERVAL * LIVENESS + RECONNECT + 2 * INTERVAL

    async def main() -> tuple[list[tuple[bytes, Message | None]], list[Message]]:
        outcomes: list[tuple[bytes, Message | None]] = []
        async with MajordomoClient(world.client, BROKER) as client:
            n = 0
            while sim.now < calm_from:
                body = b"req-%d" % n
                n += 1
                try:
                    outcomes.append((body, await client.request(b"echo", [body])))
                except ServiceUnavailableError:
                    outcomes.append((body, None))
                await asyncio.sleep(0.7)
            await asyncio.sleep(max(calm_from + settle - sim.now, 0.0))
            after = [await client.request(b"echo", [b"after-%d" % i]) for i in range(4)]
        return outcomes, after

    outcomes, after = sim.run(main(), timeout=500.0)
    event(f"faults: {len(schedule) // 2}")
    event(f"gave up on some requests: {any(reply is None for _, reply in outcomes)}")
    event(f"broker expired workers: {world.broker.stats.expired_workers > 0}")
    event(f"broker requeued requests: {world.broker.stats.requeued > 0}")
    for body, reply in outcomes:
        # Exactly one outcome per request: its own reply, or ServiceUnavailableError.
        assert reply is None or (reply[0] in (b"w1", b"w2") and reply[1:] == [body])
    assert [reply[1:] for reply in after] == [[b"after-%d" % i] for i in range(4)]
    # Once calm, each worker is registered exactly once (stale entries have expired).
    assert world.broker.worker_count(b"echo") == 2


def test_a_thirty_second_outage_costs_no_wall_time_to_wait_out() -> None:
    sim = Simulation(seed=1)
    world = Deployment(sim, ["w1"])
    schedule_faults(sim, [(1.0, Crash("w1"))])

    async def main() -> float:
        await asyncio.sleep(31.0)
        sim.restart("w1")
        async with MajordomoClient(world.client, BROKER, timeout=2.5, retries=5) as client:
            assert (await client.request(b"echo", [b"x"]))[1:] == [b"x"]
        return sim.now

    assert sim.run(main(), timeout=100.0) >= 31.0
    assert world.broker.stats.expired_workers == 1


# -- real processes: SIGKILL and restart ----------------------------------------------


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_real_crashes_a_killed_worker_expires_and_restarted_processes_serve_again(
    transport: str, tmp_path: Path
) -> None:
    endpoint = real_endpoint(transport, tmp_path)
    interval, liveness = 0.1, 3
    timing = ("--heartbeat-interval", str(interval), "--liveness", str(liveness))
    broker_argv = (*example_argv("mdbroker"), "--bind", endpoint, *timing)
    worker_argv = (*example_argv("mdworker"), "--broker", endpoint, *timing, "--reconnect", "0.1")

    async def mmi(client: MajordomoClient) -> bytes:
        return (await client.request(b"mmi.service", [b"echo"]))[0]

    async def main() -> None:
        with (
            ZmqNetwork(name="test") as net,
            ChildProcess(*broker_argv) as broker,
            ChildProcess(*worker_argv, "--quiet") as worker,
        ):
            async with MajordomoClient(net, endpoint, timeout=1.0, retries=5) as client:
                assert await client.request(b"echo", [b"1"]) == [b"1"]
                await asyncio.to_thread(worker.kill)
                killed = asyncio.get_running_loop().time()
                while await mmi(client) != b"404":
                    await asyncio.sleep(0.02)
                took = asyncio.get_running_loop().time() - killed
                # Forgotten within liveness x interval (+ one interval, + scheduling slack).
                assert took < interval * liveness + interval + 0.5
                await asyncio.to_thread(worker.restart)
                assert await client.request(b"echo", [b"2"]) == [b"2"]
                # The broker dies too: the worker finds the new one and registers again.
                await asyncio.to_thread(broker.restart)
                assert await client.request(b"echo", [b"3"]) == [b"3"]
                assert await mmi(client) == b"200"

    run_real(main(), timeout=30.0)


def test_examples_show_their_help() -> None:
    for name in ("mdbroker", "mdworker", "mdclient"):
        result = subprocess.run(
            [sys.executable, *example_argv(name), "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert result.stdout.startswith(f"usage: python -m transportkit.patterns.examples.{name}")


def test_example_client_prints_replies_from_an_example_worker(tmp_path: Path) -> None:
    endpoint = real_endpoint("ipc", tmp_path)
    timing = ("--heartbeat-interval", "0.2")
    with (
        ChildProcess(*example_argv("mdbroker"), "--bind", endpoint, *timing),
        ChildProcess(*example_argv("mdworker"), "--broker", endpoint, *timing, "--quiet"),
    ):
        result = subprocess.run(
            [sys.executable, *example_argv("mdclient"), "--broker", endpoint,
             "--requests", "3", "--body", "hi {n}"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
    assert result.stdout.splitlines()[:3] == [
        "REPLY 1 [b'hi 1']",
        "REPLY 2 [b'hi 2']",
        "REPLY 3 [b'hi 3']",
    ]
