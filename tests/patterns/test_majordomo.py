"""Majordomo (7/MDP): exact wire frames, service routing, heartbeats, expiry and crashes."""

from __future__ import annotations

import asyncio
import contextlib
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
    SocketOptions,
    StateError,
)
from transportkit.patterns import majordomo
from transportkit.patterns.majordomo import (
    MDP_HEARTBEAT_INTERVAL,
    MDP_HEARTBEAT_LIVENESS,
    MDP_MAX_REQUEUES,
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
        with pytest.raises(ValueError, match="attempts"):
            MajordomoClient(net, BROKER, attempts=0)
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
    tk_backend: str,
) -> None:
    with open_harness(tk_backend) as h:

        async def main() -> None:
            async with running_broker(h.network("broker"), h.bind_endpoint()) as (broker, ep):
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
    tk_backend: str,
) -> None:
    with open_harness(tk_backend) as h:

        async def main() -> None:
            async with running_broker(h.network("broker"), h.bind_endpoint()) as (broker, ep):
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


def test_our_worker_sends_spec_frames_to_a_raw_router_broker(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:

        async def main() -> None:
            with h.network("broker").router() as router:
                ep = router.bind(h.bind_endpoint())
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


def test_our_client_sends_spec_frames_and_rejects_malformed_replies(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:

        async def main() -> None:
            with h.network("broker").router() as router:
                ep = router.bind(h.bind_endpoint())
                client = MajordomoClient(h.network("client"), ep, timeout=5.0, attempts=1)

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
    tk_backend: str,
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
    with open_harness(tk_backend) as h:

        async def main() -> None:
            # A long heartbeat interval: nothing but the DISCONNECT comes back.
            async with running_broker(
                h.network("broker"), h.bind_endpoint(), heartbeat_interval=60.0
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
    st.sampled_from([*MDP_WORDS, b"mmi.service", b"mmi.x", b"n" * 300]), st.binary(max_size=6)
)
junk_message = st.one_of(
    st.lists(junk_frames, min_size=1, max_size=7),
    # A command's head, then thousands of frames.
    st.tuples(st.lists(junk_frames, min_size=1, max_size=4), st.integers(1000, 3000)).map(
        lambda head_count: [*head_count[0], *[b""] * head_count[1]]
    ),
)


@settings(max_examples=40, deadline=None)
@given(junk=st.lists(junk_message, min_size=1, max_size=12), mandatory=st.booleans())
def test_malformed_messages_are_counted_and_never_stop_the_broker(
    junk: list[list[bytes]], mandatory: bool
) -> None:
    sim = Simulation(seed=2)
    broker_node, rogue_node, client_node = sim.node("broker"), sim.node("rogue"), sim.node("cli")
    options = SocketOptions(router_mandatory=mandatory)

    async def main() -> Message:
        async with (
            running_broker(broker_node, "tcp://*:5555", request_ttl=5.0, options=options) as (
                broker,
                _,
            ),
            serving_worker(sim.node("worker"), BROKER, b"echo", tagged(b"w")),
        ):
            with rogue_node.dealer(connect=BROKER) as rogue:
                for frames in junk:
                    await rogue.send(frames)
                await asyncio.sleep(0.1)
                refused = broker.stats.malformed + broker.stats.over_limit
                assert refused <= len(junk)
                async with MajordomoClient(client_node, BROKER) as client:
                    # The rogue may have registered as an echo worker that never answers:
                    # the request then goes to the real worker once the rogue expires.
                    reply = await client.request(b"echo", [b"still here"])
            # Once every request is answered or expired and the rogue is forgotten, the
            # broker holds nothing for anyone.
            await asyncio.sleep(5.0 + INTERVAL * LIVENESS + INTERVAL)
            assert broker.pending_requests == broker.pending_bytes == 0
            assert broker.services() == {b"echo": 1}
            return reply

    assert sim.run(main(), timeout=60.0) == [b"w", b"still here"]


# -- routing, on both backends --------------------------------------------------------


def test_clients_get_the_reply_of_the_service_they_asked_for(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:

        async def main() -> None:
            async with (
                running_broker(h.network("broker"), h.bind_endpoint()) as (broker, ep),
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
            client = MajordomoClient(client_node, BROKER, timeout=30.0, attempts=1)
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
            MajordomoClient(client_node, BROKER, timeout=2.5, attempts=3) as client,
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
            MajordomoClient(client_node, BROKER, timeout=60.0, attempts=1) as client,
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
        async with MajordomoClient(world.client, BROKER, timeout=2.5, attempts=5) as client:
            assert (await client.request(b"echo", [b"x"]))[1:] == [b"x"]
        return sim.now

    assert sim.run(main(), timeout=100.0) >= 31.0
    assert world.broker.stats.expired_workers == 1


# -- handler errors, poison requests and empty bodies ---------------------------------


def test_a_failing_handler_is_counted_the_worker_serves_on_and_its_client_fails_in_time() -> None:
    sim = Simulation(seed=1, latency=Constant(0.001))
    broker_node, client_node, worker_node = sim.node("broker"), sim.node("cli"), sim.node("w")
    calls: list[bytes] = []

    def handler(request: Message) -> Any:
        calls.append(request[0])
        if request[0] == b"raise":
            raise RuntimeError("boom")
        if request[0] == b"empty":
            return []  # 7/MDP: a reply body has at least one frame
        if request[0] == b"text":
            return "not frames"
        return [b"ok", *request]

    async def main() -> None:
        async with (
            running_broker(broker_node, "tcp://*:5555") as (broker, _),
            serving_worker(worker_node, BROKER, b"echo", handler) as worker,
            MajordomoClient(client_node, BROKER, timeout=1.0, attempts=2) as client,
        ):
            await eventually(lambda: broker.worker_count(b"echo") == 1, 5.0)
            for bad in (b"raise", b"empty", b"text"):
                start = sim.now
                with pytest.raises(ServiceUnavailableError):
                    await client.request(b"echo", [bad])
                assert sim.now - start == pytest.approx(2.0)  # retries x timeout, no more
                # The worker is registered and idle again: answered at once, not after
                # the broker forgets a worker it thought busy.
                start = sim.now
                assert await client.request(b"echo", [b"fine"]) == [b"ok", b"fine"]
                assert sim.now - start < 0.05
                assert broker.worker_count(b"echo") == 1
            # Each attempt went to the worker 1 + max_requeues times, then was dropped.
            tries = 1 + MDP_MAX_REQUEUES
            assert calls.count(b"raise") == calls.count(b"empty") == 2 * tries
            assert worker.stats.handler_errors == worker.stats.abandoned == 3 * 2 * tries
            assert broker.stats.poisoned == 3 * 2
            assert broker.stats.requeued == 3 * 2 * MDP_MAX_REQUEUES
            assert broker.pending_requests == broker.pending_bytes == 0

    sim.run(main(), timeout=100.0)


def test_on_error_turns_a_handler_error_into_a_reply_and_abandon_hands_the_request_back(
    tk_backend: str,
) -> None:
    def handler(request: Message) -> list[bytes]:
        raise ValueError("bad order")

    def on_error(request: Message, exc: Exception) -> list[bytes]:
        if len(request) > 1:
            raise RuntimeError("the error reply fails too")
        return [b"ERROR", type(exc).__name__.encode()]

    with open_harness(tk_backend) as h:

        async def main() -> None:
            async with running_broker(h.network("broker"), h.bind_endpoint()) as (broker, ep):
                w1 = MajordomoWorker(h.network("w1"), ep, b"echo")
                task = asyncio.ensure_future(w1.serve(handler, on_error=on_error))
                async with MajordomoClient(h.network("c"), ep, timeout=1.0, attempts=1) as c:
                    await eventually(lambda: broker.worker_count(b"echo") == 1, 5.0)
                    assert await c.request(b"echo", [b"one"]) == [b"ERROR", b"ValueError"]
                    assert (w1.stats.handler_errors, w1.stats.error_replies) == (1, 1)
                    # on_error fails too: the request is given back, 1 + max_requeues
                    # times, then dropped by the broker.
                    with pytest.raises(ServiceUnavailableError):
                        await c.request(b"echo", [b"two", b"2"])
                    tries = 1 + MDP_MAX_REQUEUES
                    assert w1.stats.handler_errors == 1 + 2 * tries
                    assert w1.stats.abandoned == tries
                    assert (broker.stats.requeued, broker.stats.poisoned) == (tries - 1, 1)
                    # Each DISCONNECT reached the broker (it left before its socket was
                    # closed): none of w1's connections had to expire.
                    assert broker.stats.expired_workers == 0
                    await w1.aclose()
                    await cancel(task)
                    # abandon() from the recv/send side: the request comes back.
                    async with MajordomoWorker(h.network("w2"), ep, b"echo") as w2:
                        await eventually(lambda: broker.worker_count(b"echo") == 1, 5.0)
                        reply = asyncio.ensure_future(c.request(b"echo", [b"three"]))
                        assert await w2.recv() == [b"three"]
                        w2.abandon()
                        with pytest.raises(StateError, match="abandon"):
                            w2.abandon()
                        assert await w2.recv() == [b"three"]
                        await w2.send([b"done"])
                        assert await reply == [b"done"]
                        assert (w2.stats.abandoned, w2.stats.connects) == (1, 2)
                        assert broker.stats.requeued == tries

        h.run(main(), timeout=20.0)


def test_a_request_that_kills_every_worker_it_reaches_is_dropped_after_max_requeues() -> None:
    sim = Simulation(seed=1, latency=Constant(0.001))
    broker_node, client_node = sim.node("broker"), sim.node("cli")
    names = ["w1", "w2", "w3", "w4"]
    killed: list[str] = []
    interval = 0.2

    def handler_for(name: str) -> majordomo.MajordomoHandler:
        async def handle(request: Message) -> list[bytes]:
            if request == [b"poison"]:
                killed.append(name)
                sim.crash(name)
                await asyncio.sleep(3600)  # cancelled by the crash
            return [name.encode(), *request]

        return handle

    async def main() -> None:
        async with running_broker(broker_node, "tcp://*:5555", heartbeat_interval=interval) as (
            broker,
            _,
        ):
            for name in names:
                node = sim.node(name)
                worker = MajordomoWorker(node, BROKER, b"echo", heartbeat_interval=interval)
                node.spawn(worker.serve(handler_for(name)))
            await eventually(lambda: broker.worker_count(b"echo") == 4, 5.0)
            async with MajordomoClient(client_node, BROKER, timeout=30.0, attempts=1) as client:
                with pytest.raises(ServiceUnavailableError):
                    await client.request(b"echo", [b"poison"])
                # The survivor still serves.
                assert (await client.request(b"echo", [b"x"]))[1:] == [b"x"]
            assert len(killed) == 1 + MDP_MAX_REQUEUES == 3
            assert broker.stats.poisoned == 1
            assert broker.stats.requeued == MDP_MAX_REQUEUES
            assert broker.worker_count(b"echo") == 1
            assert broker.pending_requests == 0

    sim.run(main(), timeout=200.0)


def test_a_body_of_one_empty_frame_is_a_valid_request_and_reply_and_no_frame_is_malformed(
    tk_backend: str,
) -> None:
    with open_harness(tk_backend) as h:

        async def main() -> None:
            async with (
                running_broker(h.network("broker"), h.bind_endpoint()) as (broker, ep),
                serving_worker(h.network("w"), ep, b"echo", lambda request: request),
                MajordomoClient(h.network("c"), ep, timeout=5.0, attempts=1) as client,
            ):
                await eventually(lambda: broker.worker_count(b"echo") == 1, 5.0)
                assert await client.request(b"echo", [b""]) == [b""]
                assert await client.request(b"echo", [b"", b""]) == [b"", b""]
                with h.network("raw").dealer(connect=ep) as raw:
                    await raw.send([b"", b"MDPC01", b"echo"])  # a REQUEST without a body
                    await eventually(lambda: broker.stats.malformed == 1, 5.0)
                    await raw.send([b"", b"MDPC01", b"echo", b""])
                    assert await recv_frames(raw) == [b"", b"MDPC01", b"echo", b""]
                assert broker.stats.replies == 3

        h.run(main())


# -- nothing a peer does wedges or ends the broker's loop -----------------------------


def test_with_router_mandatory_a_reply_to_a_vanished_client_is_dropped_and_counted(
    tk_backend: str,
) -> None:
    async def slow(request: Message) -> Message:
        await asyncio.sleep(0.3)
        return request

    with open_harness(tk_backend) as h:

        async def main() -> None:
            mandatory = SocketOptions(router_mandatory=True)
            async with (
                running_broker(h.network("broker"), h.bind_endpoint(), options=mandatory) as (
                    broker,
                    ep,
                ),
                serving_worker(h.network("w"), ep, b"echo", slow),
            ):
                await eventually(lambda: broker.worker_count(b"echo") == 1, 5.0)
                gone = h.network("gone").dealer(connect=ep)
                await gone.send([b"", b"MDPC01", b"echo", b"hello"])
                await eventually(lambda: broker.stats.dispatched == 1, 5.0)
                gone.close()
                await eventually(lambda: broker.stats.replies == 1, 5.0)
                async with MajordomoClient(h.network("c"), ep, timeout=5.0, attempts=1) as c:
                    assert await c.request(b"echo", [b"still here"]) == [b"still here"]
                assert broker.stats.undeliverable == 1

        h.run(main())


@pytest.mark.parametrize("sndtimeo", [-1, 200])
def test_with_router_mandatory_a_worker_that_never_reads_neither_wedges_nor_ends_the_broker(
    sndtimeo: int,
) -> None:
    # The HWMs alone decide: tcp's kernel buffers (megabytes on Linux) are off.
    sim = Simulation(seed=1, latency=Constant(0.001), kernel_buffers=False)
    interval = 0.1

    async def main() -> None:
        options = SocketOptions(router_mandatory=True, sndhwm=2, sndtimeo=sndtimeo)
        async with (
            running_broker(
                sim.node("broker"), "tcp://*:5555", heartbeat_interval=interval, options=options
            ) as (broker, _),
            serving_worker(
                sim.node("good"), BROKER, b"echo", tagged(b"good"), heartbeat_interval=interval
            ),
        ):
            rogue = sim.node("rogue")
            with rogue.dealer(connect=BROKER, options=SocketOptions(rcvhwm=2)) as stuck:
                await stuck.send([b"", b"MDPW01", b"\x01", b"stuck"])

                async def beat() -> None:  # alive, as far as heartbeats go; never reads
                    while True:
                        await asyncio.sleep(interval)
                        stuck.try_send(HEARTBEAT_FRAMES)

                beating = rogue.spawn(beat())
                await asyncio.sleep(2.0)  # its 4 places (sndhwm + rcvhwm) filled long ago
                async with MajordomoClient(sim.node("c"), BROKER, timeout=1.0, attempts=1) as c:
                    assert await c.request(b"echo", [b"x"]) == [b"good", b"x"]
                await cancel(beating)
            assert broker.worker_count(b"stuck") == 0
            assert broker.stats.undeliverable >= 1

    sim.run(main(), timeout=60.0)


def test_a_worker_whose_broker_stops_reading_still_notices_the_silence_and_reconnects() -> None:
    # The HWMs alone decide: tcp's kernel buffers (megabytes on Linux) are off.
    sim = Simulation(seed=1, latency=Constant(0.001), kernel_buffers=False)

    async def main() -> MajordomoWorker:
        options = SocketOptions(rcvhwm=1)
        with sim.node("broker").router(bind="tcp://*:5555", options=options):
            worker = MajordomoWorker(
                sim.node("w"),
                BROKER,
                b"echo",
                heartbeat_interval=0.1,
                reconnect_interval=0.1,
                options=SocketOptions(sndhwm=1),
            )
            await worker.start()
            await asyncio.sleep(2.0)  # a broker that reads nothing and says nothing
            await worker.aclose()
            return worker

    worker = sim.run(main(), timeout=60.0)
    # Silent for 3 x 0.1 s, a pause of 0.1 s: a new connection about every 0.4 s.
    assert worker.stats.connects >= 4
    assert worker.stats.unsent >= 1


def test_a_worker_whose_broker_is_gone_never_waits_to_send_and_keeps_reconnecting(
    tk_backend: str,
) -> None:
    """With ``immediate`` a DEALER has no pipe until its connection is made: a blocking
    heartbeat or READY would then wait for ever. The worker's sends never wait."""

    async def main(h: Any) -> MajordomoWorker:
        gone = h.network("broker").router(bind=h.bind_endpoint())
        endpoint = gone.last_endpoint
        gone.close()
        worker = MajordomoWorker(
            h.network("w"),
            endpoint,
            b"echo",
            heartbeat_interval=0.05,
            reconnect_interval=0.05,
            options=SocketOptions(immediate=True, sndhwm=1),
        )
        await worker.start()
        await asyncio.sleep(1.0)
        await worker.aclose()
        return worker

    with open_harness(tk_backend) as h:
        worker = h.run(main(h), timeout=20.0)
    # Silent for 3 x 0.05 s, a pause of 0.05 s: a new connection about every 0.2 s.
    assert worker.stats.connects >= 4
    assert worker.stats.unsent >= 4  # each READY and heartbeat, dropped at once


def test_a_worker_holds_one_request_and_drops_malformed_requests_from_its_broker() -> None:
    sim = Simulation(seed=1, latency=Constant(0.001))
    bad = [
        [b"", b"MDPW01", b"\x02", b"", b"", b"no client"],  # an empty client address
        [b"", b"MDPW01", b"\x02", b"c", b""],  # no body
        [b"", b"MDPW01", b"\x02", b"c", b"x", b"bad delimiter"],
        [b"", b"MDPW01", b"\x04", b""],  # HEARTBEAT with a frame too many
        [b"", b"MDPW01", b"\x06"],  # no such command
        [b"", b"MDPW01", b"\x02 "],
        [b"", b"MDPW02", b"\x04"],
        [b"x", b"MDPW01", b"\x04"],
        [b""],
    ]

    async def main() -> MajordomoWorker:
        with sim.node("broker").router(bind="tcp://*:5555") as router:
            worker = MajordomoWorker(sim.node("w"), BROKER, b"echo", heartbeat_interval=60.0)
            await worker.start()
            wid, *_ = await recv_frames(router)
            for frames in bad:
                await router.send([wid, *frames])
            # A broker that breaks the lockstep: only the first request is held.
            for i in range(3):
                await router.send([wid, b"", b"MDPW01", b"\x02", b"c%d" % i, b"", b"r%d" % i])
            await asyncio.sleep(0.1)  # all three have arrived
            assert await worker.recv() == [b"r0"]
            await worker.send([b"a0"])
            assert await recv_frames(router) == [wid, b"", b"MDPW01", b"\x03", b"c0", b"", b"a0"]
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(worker.recv(), 1.0)
            await worker.aclose()
            return worker

    worker = sim.run(main(), timeout=60.0)
    assert worker.stats.requests == 1
    assert worker.stats.malformed == len(bad) + 2


# -- bounds ---------------------------------------------------------------------------


def _cost(routing_id: bytes, body: list[bytes]) -> int:
    """What the broker charges for a request (as its docstring says)."""
    return len(routing_id) + 48 + sum(len(frame) + 48 for frame in body)


KB = [b"k" * 1000]
KB_COST = _cost(b"flood", KB)

BOUND_CASES: dict[str, tuple[dict[str, int], list[tuple[str, bytes, list[bytes], int, int]]]] = {
    # name: (broker bounds, [(client, service, body, sent, accepted), ...])
    "count per client": (
        {"max_pending_per_client": 5},
        [("flood", b"a", KB, 20, 5), ("calm", b"a", KB, 1, 1)],
    ),
    "bytes per client": (
        {"max_pending_bytes_per_client": 5 * KB_COST},
        [("flood", b"a", KB, 20, 5), ("calm", b"a", KB, 1, 1)],
    ),
    "count per service": (
        {"max_pending_per_service": 3},
        [("flood", b"a", KB, 3, 3), ("calm", b"a", KB, 3, 0), ("other", b"b", KB, 1, 1)],
    ),
    "bytes per service": (
        {"max_pending_bytes_per_service": 3 * KB_COST},
        [("flood", b"a", KB, 3, 3), ("calm", b"a", KB, 3, 0), ("other", b"b", KB, 1, 1)],
    ),
    "count in all": (
        {"max_pending": 4},
        [("flood", b"a", KB, 2, 2), ("calm", b"b", KB, 2, 2), ("other", b"c", KB, 2, 0)],
    ),
    "bytes in all": (
        {"max_pending_bytes": 4 * KB_COST},
        [("flood", b"a", KB, 2, 2), ("calm", b"b", KB, 2, 2), ("other", b"c", KB, 2, 0)],
    ),
    "many empty frames are not free": (
        {"max_pending_bytes_per_client": 100_000},
        [("flood", b"a", [b""] * 5000, 3, 0), ("calm", b"a", [b""], 1, 1)],
    ),
}


@pytest.mark.parametrize("case", list(BOUND_CASES))
def test_pending_requests_are_bounded_and_what_is_refused_is_counted(case: str) -> None:
    bounds, plan = BOUND_CASES[case]
    sim = Simulation(seed=1, latency=Constant(0.001))

    async def main() -> None:
        async with running_broker(sim.node("broker"), "tcp://*:5555", **bounds) as (broker, _):
            clients = {
                name: sim.node(name).dealer(
                    connect=BROKER, options=SocketOptions(routing_id=name.encode().ljust(5, b"."))
                )
                for name in dict.fromkeys(name for name, *_ in plan)
            }
            expected_bytes = 0
            for name, service, body, sent, accepted in plan:
                for _ in range(sent):
                    await clients[name].send([b"", b"MDPC01", service, *body])
                expected_bytes += accepted * _cost(name.encode().ljust(5, b"."), body)
            await asyncio.sleep(0.5)
            accepted_in_all = sum(accepted for *_, accepted in plan)
            assert broker.pending_requests == accepted_in_all
            assert broker.pending_bytes == expected_bytes
            assert broker.stats.over_limit == sum(sent - accepted for *_, sent, accepted in plan)
            # Workers arrive: every accepted request is answered, and the books balance.
            services = dict.fromkeys(service for _, service, *_ in plan)
            async with contextlib.AsyncExitStack() as stack:
                for service in services:
                    node = sim.node(f"worker-{service.decode()}")
                    await stack.enter_async_context(
                        serving_worker(node, BROKER, service, lambda r: [b"done"])
                    )
                for name, *_ in plan:
                    expect = sum(a for n, *_, a in plan if n == name)
                    for _ in range(expect):
                        reply = await recv_frames(clients[name])
                        assert reply[0:2] == [b"", b"MDPC01"] and reply[3:] == [b"done"]
                await eventually(lambda: broker.pending_requests == 0, 5.0)
                assert broker.pending_bytes == 0
            for sock in clients.values():
                assert sock.try_recv() is None
                sock.close()

    sim.run(main(), timeout=60.0)


def test_services_workers_and_service_names_are_bounded() -> None:
    sim = Simulation(seed=1, latency=Constant(0.001))

    async def main() -> None:
        async with running_broker(
            sim.node("broker"),
            "tcp://*:5555",
            max_services=10,
            max_workers=3,
            max_service_name=16,
            request_ttl=1.0,
            heartbeat_interval=60.0,
        ) as (broker, _):
            with sim.node("client").dealer(connect=BROKER) as client:
                # Every unknown service a client asks for would be an entry.
                for i in range(30):
                    await client.send([b"", b"MDPC01", b"svc-%d" % i, b"x"])
                await asyncio.sleep(0.1)
                assert len(broker.services()) == 10
                assert broker.stats.over_limit == 20
                # Names longer than max_service_name: dropped, MMI's too.
                for name in (b"n" * 17, b"mmi.service" + b"x" * 6):
                    await client.send([b"", b"MDPC01", name, b"x"])
                await asyncio.sleep(0.1)
                assert broker.stats.over_limit == 22
                assert broker.stats.mmi == 0
            # Workers: a READY for a new service while 10 are known, a 1 MB service
            # name, and more workers than max_workers are refused with DISCONNECT.
            refused = [b"svc-new", b"s" * 1_000_000]
            for i, name in enumerate(refused):
                with sim.node(f"r{i}").dealer(connect=BROKER) as worker:
                    await worker.send([b"", b"MDPW01", b"\x01", name])
                    assert await recv_frames(worker) == DISCONNECT_FRAMES
            assert broker.stats.over_limit == 24
            await asyncio.sleep(1.5)  # the requests expire: their services are forgotten
            assert broker.services() == {}
            dealers = [sim.node(f"w{i}").dealer(connect=BROKER) for i in range(5)]
            for dealer in dealers:
                await dealer.send([b"", b"MDPW01", b"\x01", b"s" * 16])
            await asyncio.sleep(0.1)
            assert broker.worker_count(b"s" * 16) == 3
            assert broker.stats.over_limit == 26
            for dealer in dealers[3:]:
                assert await recv_frames(dealer) == DISCONNECT_FRAMES
            for dealer in dealers:
                dealer.close()

    sim.run(main(), timeout=60.0)


def test_a_message_over_max_message_bytes_is_refused_by_the_socket_and_in_process() -> None:
    sim = Simulation(seed=1, latency=Constant(0.001))
    limit = 10_000

    async def main() -> None:
        node = sim.node("broker")
        async with running_broker(node, "tcp://*:5555", max_message_bytes=limit) as (broker, _):
            assert broker.options.maxmsgsize == limit
            with sim.node("c").dealer(connect=BROKER) as client:
                await client.send([b"", b"MDPC01", b"a", b"x" * limit])
                await asyncio.sleep(0.1)
                assert broker.pending_requests == broker.stats.requests == 0
        # The caller's own maxmsgsize wins for the socket; the broker still checks.
        loose = SocketOptions(maxmsgsize=10 * limit)
        async with running_broker(node, "tcp://*:5555", max_message_bytes=limit, options=loose) as (
            broker,
            _,
        ):
            assert broker.options.maxmsgsize == 10 * limit
            with sim.node("c").dealer(connect=BROKER) as client:
                await client.send([b"", b"MDPC01", b"a", b"x" * limit])
                # Exactly max_message_bytes with its 7 bytes of header: accepted.
                await client.send([b"", b"MDPC01", b"a", b"x" * (limit - 7)])
                await asyncio.sleep(0.1)
                assert broker.stats.over_limit == 1
                assert broker.pending_requests == broker.stats.requests == 1
            # A worker's reply over the limit: refused, and the worker DISCONNECTed.
            with sim.node("w").dealer(connect=BROKER) as worker:
                await worker.send([b"", b"MDPW01", b"\x01", b"a"])
                request = await recv_frames(worker)
                await worker.send([b"", b"MDPW01", b"\x03", request[3], b"", b"y" * limit])
                assert await recv_frames(worker) == DISCONNECT_FRAMES
            assert broker.stats.over_limit == 2
            assert broker.stats.requeued == 1 and broker.queued(b"a") == 1

    sim.run(main(), timeout=60.0)


@pytest.mark.parametrize("transport", ["tcp", "inproc"])
def test_real_sockets_a_ten_megabyte_request_never_reaches_the_brokers_queues(
    transport: str,
) -> None:
    with open_harness("zmq") as h:

        async def main() -> None:
            async with (
                running_broker(h.network("main"), h.bind_endpoint(transport)) as (broker, ep),
                serving_worker(h.network("main"), ep, b"echo", lambda r: r),
            ):
                await eventually(lambda: broker.worker_count(b"echo") == 1, 5.0)
                net = h.network("main")
                with net.dealer(connect=ep) as flood:
                    await flood.send([b"", b"MDPC01", b"echo", b"x" * 10_000_000])
                    async with MajordomoClient(net, ep, timeout=5.0, attempts=1) as client:
                        assert await client.request(b"echo", [b"small"]) == [b"small"]
                    await asyncio.sleep(0.2)
                assert broker.stats.requests == 1  # the small one only
                assert broker.pending_requests == broker.pending_bytes == 0
                # Over tcp libzmq refused the frame (maxmsgsize) and dropped the
                # connection: the broker never saw it. inproc has no maxmsgsize: the
                # broker's own check refused it.
                assert broker.stats.over_limit == (0 if transport == "tcp" else 1)

        h.run(main(), timeout=20.0)


def test_a_worker_gives_back_a_request_over_its_max_message_bytes() -> None:
    sim = Simulation(seed=1, latency=Constant(0.001))

    async def main() -> MajordomoWorker:
        with sim.node("broker").router(bind="tcp://*:5555") as router:
            worker = MajordomoWorker(
                sim.node("w"), BROKER, b"echo", heartbeat_interval=60.0, max_message_bytes=100
            )
            assert worker.options.maxmsgsize == -1  # its one peer is the broker
            await worker.start()
            wid, *_ = await recv_frames(router)
            # The limit is on the whole message: 8 bytes of header and envelope here.
            await router.send([wid, b"", b"MDPW01", b"\x02", b"c", b"", b"x" * 93])
            assert await recv_frames(router) == [wid, *DISCONNECT_FRAMES]
            new, *ready = await recv_frames(router)
            assert new != wid and ready == [b"", b"MDPW01", b"\x01", b"echo"]
            await router.send([new, b"", b"MDPW01", b"\x02", b"c", b"", b"x" * 92])
            assert await worker.recv() == [b"x" * 92]
            await worker.aclose()
            return worker

    worker = sim.run(main(), timeout=60.0)
    assert (worker.stats.over_limit, worker.stats.requests, worker.stats.connects) == (1, 1, 2)


def test_a_worker_never_takes_or_echoes_a_client_address_over_its_max_message_bytes() -> None:
    """The client address goes back in the reply: it counts towards the limit, so a
    broker cannot make the worker hold, and send, a message over it."""
    sim = Simulation(seed=1, latency=Constant(0.001))
    limit = 1000
    served: list[Message] = []

    def handler(body: Message) -> list[bytes]:
        served.append(body)
        return [b"ok"]

    async def main() -> MajordomoWorker:
        with sim.node("broker").router(bind="tcp://*:5555") as router:
            worker = MajordomoWorker(
                sim.node("w"), BROKER, b"echo", heartbeat_interval=60.0, max_message_bytes=limit
            )
            serving = asyncio.ensure_future(worker.serve(handler))
            wid, *_ = await recv_frames(router)
            huge = b"c" * limit  # the body is one byte: only the address is too large
            await router.send([wid, b"", b"MDPW01", b"\x02", huge, b"", b"x"])
            assert await recv_frames(router) == [wid, *DISCONNECT_FRAMES]
            new, *ready = await recv_frames(router)
            assert ready == [b"", b"MDPW01", b"\x01", b"echo"]
            # A message over the limit that is no request is dropped and counted too.
            await router.send([new, b"", b"MDPW01", b"\x04", huge])
            await router.send([new, b"", b"MDPW01", b"\x02", b"c", b"", b"y"])
            assert await recv_frames(router) == [new, b"", b"MDPW01", b"\x03", b"c", b"", b"ok"]
            await worker.aclose()
            await cancel(serving)
            return worker

    worker = sim.run(main(), timeout=60.0)
    assert served == [[b"y"]]
    assert (worker.stats.over_limit, worker.stats.malformed, worker.stats.requests) == (2, 0, 1)


def test_unlimited_high_water_marks_and_bad_bounds_are_refused() -> None:
    with open_harness("sim") as h:
        net = h.network()
        for options in (SocketOptions(sndhwm=0), SocketOptions(rcvhwm=0)):
            with pytest.raises(ValueError, match="hwm"):
                MajordomoBroker(net, "tcp://*:1", options=options)
            with pytest.raises(ValueError, match="hwm"):
                MajordomoWorker(net, BROKER, b"echo", options=options)
        for name in ("max_pending", "max_services", "max_service_name", "max_workers"):
            with pytest.raises(ValueError, match=name):
                MajordomoBroker(net, "tcp://*:1", **{name: 0})
        with pytest.raises(ValueError, match="max_requeues"):
            MajordomoBroker(net, "tcp://*:1", max_requeues=-1)
        with pytest.raises(ValueError, match="max_message_bytes"):
            MajordomoWorker(net, BROKER, b"echo", max_message_bytes=0)
        MajordomoBroker(net, "tcp://*:1", max_requeues=0, max_message_bytes=None)


def test_peers_with_routing_ids_of_one_and_of_255_bytes_are_served() -> None:
    sim = Simulation(seed=1, latency=Constant(0.001))

    async def main() -> None:
        async with running_broker(sim.node("broker"), "tcp://*:5555") as (broker, _):
            short, long = SocketOptions(routing_id=b"w"), SocketOptions(routing_id=b"\xff" * 255)
            with (
                sim.node("w").dealer(connect=BROKER, options=short) as worker,
                sim.node("c").dealer(connect=BROKER, options=long) as client,
            ):
                await worker.send([b"", b"MDPW01", b"\x01", b"echo"])
                await eventually(lambda: broker.worker_count(b"echo") == 1, 5.0)
                await client.send([b"", b"MDPC01", b"echo", b"x"])
                request = await recv_frames(worker)
                assert request == [b"", b"MDPW01", b"\x02", b"\xff" * 255, b"", b"x"]
                await worker.send([b"", b"MDPW01", b"\x03", b"\xff" * 255, b"", b"y"])
                assert await recv_frames(client) == [b"", b"MDPC01", b"echo", b"y"]
            assert broker.stats.malformed == broker.stats.over_limit == 0

    sim.run(main(), timeout=60.0)


# -- exact parsing --------------------------------------------------------------------


def test_mmi_service_answers_200_only_for_exactly_one_registered_service_name() -> None:
    sim = Simulation(seed=1, latency=Constant(0.001))

    async def main() -> None:
        async with (
            running_broker(sim.node("broker"), "tcp://*:5555") as (broker, _),
            serving_worker(sim.node("w"), BROKER, b"echo", lambda r: r),
        ):
            await eventually(lambda: broker.worker_count(b"echo") == 1, 5.0)
            with sim.node("c").dealer(connect=BROKER) as client:
                for body, code in (
                    ([b"echo"], b"200"),
                    ([b"echo", b""], b"404"),
                    ([b"echo", b"echo"], b"404"),
                    ([b"echo "], b"404"),
                    ([b"ech"], b"404"),
                    ([b""], b"404"),
                ):
                    await client.send([b"", b"MDPC01", b"mmi.service", *body])
                    assert await recv_frames(client) == [b"", b"MDPC01", b"mmi.service", code]

    sim.run(main(), timeout=60.0)


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
            async with MajordomoClient(net, endpoint, timeout=1.0, attempts=5) as client:
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
    for name in ("mdbroker", "mdworker", "mdclient", "mdclient2"):
        result = subprocess.run(
            [sys.executable, *example_argv(name), "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert result.stdout.startswith(f"usage: python -m transportkit.examples.{name}")


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
