"""Load-balancing broker and Simple Pirate: one worker per request, each reply home."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from _pirate_helpers import cancel, example, real_endpoint, run_real
from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit import Message, Network, ServiceUnavailableError, SocketOptions
from transportkit.examples import lbbroker, spqueue, spworker
from transportkit.patterns.lazy_pirate import Handler, LazyPirateClient
from transportkit.patterns.load_balancing import (
    LoadBalancingBroker,
    SimplePirateQueue,
    run_load_balancing_worker,
    split_envelope,
)
from transportkit.sim_backend import (
    DropConnection,
    FaultSchedule,
    LatencyModel,
    Node,
    Simulation,
    schedule_faults,
)
from transportkit.testing import ChildProcess, open_harness
from transportkit.testing.strategies import fault_schedules, latency_models
from transportkit.zmq_backend import ZmqNetwork

FRONTEND, BACKEND = "tcp://broker:5555", "tcp://broker:5556"


def tagging(name: str, seen: list[tuple[str, bytes]]) -> Handler:
    """A worker handler that records what it got and signs its reply."""

    def work(body: Message) -> Message:
        seen.append((name, body[0]))
        return [name.encode(), *body]

    return work


async def broker_main(node: Node) -> None:
    with LoadBalancingBroker(node, frontend="tcp://*:5555", backend="tcp://*:5556") as broker:
        await broker.run()


@settings(max_examples=30, deadline=None)
@given(
    workers=st.integers(1, 3),
    clients=st.integers(1, 3),
    requests=st.integers(1, 8),
    latency=latency_models(0.01),
)
def test_each_request_reaches_exactly_one_worker_and_each_reply_its_own_client(
    workers: int, clients: int, requests: int, latency: LatencyModel
) -> None:
    sim = Simulation(seed=5, latency=latency)
    sim.node("broker", main=broker_main)
    seen: list[tuple[str, bytes]] = []
    for w in range(workers):
        name = f"w{w}"
        handler = tagging(name, seen)
        sim.node(name, main=lambda n, h=handler: run_load_balancing_worker(n, BACKEND, h))

    async def client(node: Network) -> None:
        with node.requester(connect=FRONTEND) as req:
            for r in range(requests):
                body = f"{node.name}/{r}".encode()
                reply = await req.request([body], timeout=10.0)
                assert reply[1:] == [body], f"{node.name} got {reply!r} for {body!r}"
                assert reply[0].decode() in {f"w{w}" for w in range(workers)}

    async def main() -> None:
        await asyncio.gather(*(client(sim.node(f"c{c}")) for c in range(clients)))

    sim.run(main(), timeout=120.0)
    handled = Counter(body for _, body in seen)
    expected = {f"c{c}/{r}".encode() for c in range(clients) for r in range(requests)}
    assert set(handled) == expected
    assert set(handled.values()) == {1}


def test_workers_are_used_least_recently_used_first() -> None:
    sim = Simulation(seed=1)
    sim.node("broker", main=broker_main)
    seen: list[tuple[str, bytes]] = []
    for name in ("w0", "w1", "w2"):
        handler = tagging(name, seen)
        sim.node(name, main=lambda n, h=handler: run_load_balancing_worker(n, BACKEND, h))
    cli = sim.node("cli")

    async def main() -> list[bytes]:
        await asyncio.sleep(0.1)  # every worker has said READY
        with cli.requester(connect=FRONTEND) as req:
            return [(await req.request([b"%d" % i], timeout=5.0))[0] for i in range(6)]

    order = sim.run(main(), timeout=60.0)
    assert order[:3] == order[3:]
    assert sorted(order[:3]) == [b"w0", b"w1", b"w2"]


def test_requests_wait_in_the_clients_pipes_while_no_worker_is_ready() -> None:
    sim = Simulation(seed=1)
    box: dict[str, LoadBalancingBroker] = {}

    async def broker(node: Node) -> None:
        with LoadBalancingBroker(node, frontend="tcp://*:5555", backend="tcp://*:5556") as b:
            box["broker"] = b
            await b.run()

    sim.node("broker", main=broker)
    cli, wrk = sim.node("cli"), sim.node("wrk")

    async def main() -> Message:
        with cli.requester(connect=FRONTEND) as req:
            await req.send([b"early"])
            await asyncio.sleep(5.0)
            assert box["broker"].stats.requests == 0  # not read: nobody could take it
            wrk.spawn(run_load_balancing_worker(wrk, BACKEND, lambda body: [b"late", *body]))
            return await req.recv(timeout=5.0)

    assert sim.run(main(), timeout=60.0) == [b"late", b"early"]


def test_malformed_messages_are_counted_and_never_stop_the_broker() -> None:
    sim = Simulation(seed=1)
    box: dict[str, LoadBalancingBroker] = {}

    async def broker(node: Node) -> None:
        with LoadBalancingBroker(node, frontend="tcp://*:5555", backend="tcp://*:5556") as b:
            box["broker"] = b
            await b.run()

    sim.node("broker", main=broker)
    sim.node("w", main=lambda n: run_load_balancing_worker(n, BACKEND, lambda b: b))
    cli = sim.node("cli")

    async def main() -> Message:
        with cli.dealer(connect=FRONTEND) as bad, cli.dealer(connect=BACKEND) as rogue:
            await bad.send([b"no delimiter"])
            await rogue.send([b"not", b"a", b"protocol"])
            await asyncio.sleep(1.0)
        with cli.requester(connect=FRONTEND) as req:
            return await req.request([b"fine"], timeout=5.0)

    assert sim.run(main(), timeout=60.0) == [b"fine"]
    assert box["broker"].stats.malformed == 2


def test_split_envelope_finds_the_first_empty_frame() -> None:
    assert split_envelope([b"id", b"", b"a", b"b"]) == ([b"id", b""], [b"a", b"b"])
    assert split_envelope([b"id", b"x"]) is None
    assert split_envelope([b"id", b""]) is None


# Crashes, partitions, holds and spikes: not dropped connections, which Simple Pirate
# cannot survive (a worker whose connection drops with a request on the wire is lost
# for good: see the test below, found by this property when "drop_connection" was among the kinds).
SP_FAULTS = fault_schedules(
    ["broker", "w0", "w1"],
    crashable=["w0", "w1"],
    horizon=15.0,
    max_outage=6.0,
    max_faults=3,
    kinds=("crash", "partition", "hold", "set_latency"),
)


@settings(max_examples=25, deadline=None)
@given(schedule=SP_FAULTS)
def test_simple_pirate_clients_get_their_own_answers_through_worker_crashes(
    schedule: FaultSchedule,
) -> None:
    sim = Simulation(seed=9)
    sim.node("broker", main=broker_main)
    seen: list[tuple[str, bytes]] = []
    for name in ("w0", "w1"):
        handler = tagging(name, seen)
        opts = SocketOptions(routing_id=name.encode())  # a restarted worker keeps its id
        sim.node(
            name,
            main=lambda n, h=handler, o=opts: run_load_balancing_worker(n, BACKEND, h, options=o),
        )
    cli = sim.node("cli")
    schedule_faults(sim, schedule)
    quiet = max((when for when, _ in schedule), default=0.0)

    async def main() -> list[tuple[float, str]]:
        log = []
        async with LazyPirateClient(cli, FRONTEND, timeout=1.0, attempts=4) as client:
            i = 0
            while sim.now <= quiet + 5.0:
                start = sim.now
                try:
                    reply = await client.request([b"%d" % i])
                    assert reply[1:] == [b"%d" % i]
                    log.append((start, "reply"))
                except ServiceUnavailableError:
                    log.append((start, "unavailable"))
                i += 1
                await asyncio.sleep(0.25)
        return log

    log = sim.run(main(), timeout=quiet + 200.0)
    assert {kind for start, kind in log if start > quiet} == {"reply"}


def test_a_worker_whose_connection_drops_mid_request_is_lost_for_good() -> None:
    """Simple Pirate's known limit (the Guide's, and why Paranoid Pirate exists): the
    shrunk schedule Hypothesis found, both workers' connections dropped while they
    held requests, leaves no worker: every later request fails although both live.
    """
    sim = Simulation(seed=9)
    sim.node("broker", main=broker_main)
    for name in ("w0", "w1"):
        opts = SocketOptions(routing_id=name.encode())
        sim.node(
            name,
            main=lambda n, o=opts: run_load_balancing_worker(n, BACKEND, lambda b: b, options=o),
        )
    cli = sim.node("cli")
    schedule_faults(
        sim, [(1.0, DropConnection("broker", "w0")), (2.0, DropConnection("broker", "w1"))]
    )

    async def main() -> list[str]:
        log = []
        async with LazyPirateClient(cli, FRONTEND, timeout=1.0, attempts=4) as client:
            while sim.now <= 7.0:
                try:
                    await client.request([b"x"])
                    log.append("reply")
                except ServiceUnavailableError:
                    log.append("unavailable")
                await asyncio.sleep(0.25)
        return log

    log = sim.run(main(), timeout=200.0)
    assert log[0] == "reply"
    assert log[-1] == "unavailable"


def test_load_balancing_broker_request_reply(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:
        net = h.network("main")

        async def main() -> list[Message]:
            with LoadBalancingBroker(
                net, frontend=h.bind_endpoint("tcp"), backend=h.bind_endpoint("tcp")
            ) as broker:
                tasks = [
                    asyncio.ensure_future(broker.run()),
                    *(
                        asyncio.ensure_future(
                            run_load_balancing_worker(
                                h.network(f"w{w}"),
                                broker.backend_endpoint,
                                lambda body, w=w: [b"w%d" % w, *body],
                            )
                        )
                        for w in range(2)
                    ),
                ]
                try:
                    clients = [h.network(f"c{c}") for c in range(2)]

                    async def ask(cli: Network, body: bytes) -> Message:
                        with cli.requester(connect=broker.frontend_endpoint) as req:
                            reply = await req.request([body], timeout=5.0)
                            return reply[1:]

                    return list(await asyncio.gather(*(ask(c, c.name.encode()) for c in clients)))
                finally:
                    await cancel(*tasks)

        assert h.run(main(), timeout=20.0) == [[b"c0"], [b"c1"]]


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_simple_pirate_survives_a_real_worker_kill(transport: str, tmp_path: Path) -> None:
    front = real_endpoint(transport, tmp_path, "front")
    back = real_endpoint(transport, tmp_path, "back")
    argv = (*example("spworker"), "--connect", back)

    async def main() -> list[str]:
        outcomes = []
        with (
            ZmqNetwork(name="test") as net,
            SimplePirateQueue(net, frontend=front, backend=back) as queue,
        ):
            task = asyncio.ensure_future(queue.run())
            try:
                with (
                    ChildProcess(*argv, "--identity", "A") as a,
                    ChildProcess(*argv, "--identity", "B"),
                ):
                    async with LazyPirateClient(net, front, timeout=0.5, attempts=3) as client:
                        for i in range(4):
                            assert await client.request([b"%d" % i]) == [b"%d" % i]
                        a.kill()  # SIGKILL: a dead worker stays in the queue
                        for i in range(4, 8):
                            assert await client.request([b"%d" % i]) == [b"%d" % i]
                        outcomes.append(f"retries={client.stats.retries}")
            finally:
                await cancel(task)
        return outcomes

    # One request went to the dead worker and was retried; all were answered.
    assert run_real(main()) == ["retries=1"]


@pytest.mark.parametrize("module", [lbbroker, spqueue, spworker])
def test_example_programs_explain_themselves(
    module: object, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])  # type: ignore[attr-defined]
    assert exit_info.value.code == 0
    assert "usage: python -m transportkit.examples." in capsys.readouterr().out


def test_lbbroker_demo_serves_a_real_client(tmp_path: Path) -> None:
    front, back = real_endpoint("ipc", tmp_path, "f"), real_endpoint("ipc", tmp_path, "b")
    with ChildProcess(*example("lbbroker"), "--frontend", front, "--backend", back,
                      "--workers", "2") as broker:  # fmt: skip
        assert broker.ready_line == f"READY {front} {back}"

        async def main() -> Message:
            with ZmqNetwork(name="test") as net:
                async with LazyPirateClient(net, front, timeout=2.0) as client:
                    return await client.request([b"hello"])

        assert run_real(main()) == [b"hello"]
