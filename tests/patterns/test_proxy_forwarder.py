"""The forwarder (XSUB/XPUB proxy): updates go down, subscriptions go up, on both
backends; and the ``mdforwarder`` example as a real process."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import zmq

from transportkit import Publisher, SocketOptions, Subscriber
from transportkit.patterns.proxy import ProxyStats, forwarder, parse_statistics
from transportkit.scenario import ScenarioError, load, report_dict, run_scenario
from transportkit.scenario._context import RunContext
from transportkit.scenario._invariants import CUSTOM_CHECKS
from transportkit.scenario._metrics import Metrics
from transportkit.sim_backend import Constant, Simulation
from transportkit.testing import ChildProcess, Harness

OPTS = SocketOptions(linger=0)


def endpoint_of(sock: object) -> str:
    endpoint = getattr(sock, "last_endpoint", None)
    assert endpoint is not None
    return str(endpoint)


async def joined(pub: Publisher, sub: Subscriber, topic: bytes, settle: float) -> None:
    """Publish ``topic`` until ``sub`` receives it (the slow joiner, twice over: the
    subscription must reach the forwarder, then the publisher)."""
    for _ in range(200):
        await pub.send([topic, b"prime"])
        if await sub.poll(settle / 4):
            while sub.try_recv() is not None:
                pass
            return
    raise AssertionError("the subscription never reached the publisher")


async def drained(sub: Subscriber, last: list[bytes]) -> list[list[bytes]]:
    got = []
    while True:
        message = await sub.recv(timeout=5.0)
        got.append(message)
        if message == last:
            return got


def test_updates_flow_down_and_subscriptions_up(tk_harness: Harness) -> None:
    net = tk_harness.network()

    async def main() -> None:
        with (
            net.publisher(bind=tk_harness.bind_endpoint(), options=OPTS) as pub,
            forwarder(
                net,
                upstream=endpoint_of(pub),
                backend=tk_harness.bind_endpoint(),
                capture=tk_harness.bind_endpoint(),
                options=OPTS,
            ) as proxy,
            net.subscriber(connect=endpoint_of(proxy.capture), options=OPTS) as tap,
        ):
            running = asyncio.ensure_future(proxy.run())
            await asyncio.sleep(tk_harness.settle)
            with net.subscriber(
                connect=endpoint_of(proxy.backend), topics=[b"A."], options=OPTS
            ) as sub:
                await joined(pub, sub, b"A.prime", tk_harness.settle)
                before = proxy.stats.forwarded
                for i in range(10):
                    await pub.send([b"B.%d" % i, b"not wanted"])
                    await pub.send([b"A.%d" % i, b"x", b"y"])  # multipart kept whole
                got = await drained(sub, [b"A.9", b"x", b"y"])
                assert got == [[b"A.%d" % i, b"x", b"y"] for i in range(10)]
                # B was filtered at the publisher: it never reached the forwarder.
                assert proxy.stats.forwarded - before == 10
                assert proxy.stats.returned >= 1  # the subscription went up
                captured = []
                while await tap.poll(tk_harness.settle):
                    while (message := tap.try_recv()) is not None:
                        captured.append(message)
                assert [b"\x01A."] in captured  # the subscription, as XSUB sent it
                assert not any(m[0].startswith(b"B.") for m in captured)

                sub.unsubscribe(b"A.")
                await asyncio.sleep(tk_harness.settle)
                assert proxy.stats.returned >= 2  # the unsubscription went up too
                before = proxy.stats.frontend_received
                for i in range(5):
                    await pub.send([b"A.late%d" % i, b"x"])
                await asyncio.sleep(tk_harness.settle)
                assert proxy.stats.frontend_received == before  # filtered at the publisher
            proxy.stop()
            await asyncio.wait_for(running, 5.0)

    tk_harness.run(main(), timeout=30.0)


def test_publishers_that_connect_to_a_bound_frontend(tk_harness: Harness) -> None:
    net = tk_harness.network()

    async def main() -> None:
        with forwarder(
            net,
            frontend=tk_harness.bind_endpoint(),
            backend=tk_harness.bind_endpoint(),
            options=OPTS,
        ) as proxy:
            running = asyncio.ensure_future(proxy.run())
            with (
                net.publisher(connect=endpoint_of(proxy.frontend), options=OPTS) as one,
                net.publisher(connect=endpoint_of(proxy.frontend), options=OPTS) as two,
                net.subscriber(connect=endpoint_of(proxy.backend), options=OPTS) as sub,
            ):
                await joined(one, sub, b"one", tk_harness.settle)
                await joined(two, sub, b"two", tk_harness.settle)
                await one.send([b"one", b"1"])
                await two.send([b"two", b"2"])
                got = {tuple(await sub.recv(timeout=5.0)) for _ in range(2)}
                assert got == {(b"one", b"1"), (b"two", b"2")}
            proxy.stop()
            await asyncio.wait_for(running, 5.0)

    tk_harness.run(main(), timeout=30.0)


def test_a_forwarder_needs_somewhere_to_read_from(tk_harness: Harness) -> None:
    with pytest.raises(ValueError, match="frontend"):
        forwarder(tk_harness.network(), backend="inproc://nowhere")


@pytest.mark.timeout(60)
def test_the_mdforwarder_example_forwards_and_terminates_on_command() -> None:
    ctx = zmq.Context()
    socks: list[zmq.Socket[bytes]] = []

    def sock(kind: int) -> zmq.Socket[bytes]:
        s: zmq.Socket[bytes] = ctx.socket(kind)
        s.linger = 0
        s.rcvtimeo = s.sndtimeo = 5000
        socks.append(s)
        return s

    try:
        pub = sock(zmq.PUB)
        pub.bind("tcp://127.0.0.1:*")
        upstream = pub.last_endpoint.decode()
        child = ChildProcess(
            "-m",
            "transportkit.examples.mdforwarder",
            "--upstream",
            upstream,
            "--backend",
            "tcp://127.0.0.1:*",
            "--control",
            "tcp://127.0.0.1:*",
        )
        with child:
            assert child.ready_line is not None
            _, frontend, backend, control = child.ready_line.split()
            assert frontend == upstream  # its XSUB's endpoint: connected, here
            sub = sock(zmq.SUB)
            sub.subscribe(b"MARKET.AAPL")
            sub.connect(backend)
            for _ in range(100):  # until the subscription reached the publisher
                pub.send_multipart([b"MARKET.AAPL", b"prime"])
                if sub.poll(100):
                    break
            else:
                raise AssertionError("no update came through the forwarder")
            while sub.poll(100):
                sub.recv_multipart()
            pub.send_multipart([b"MARKET.MSFT", b"nobody wants this"])
            pub.send_multipart([b"MARKET.AAPL", b"189.5", b"200"])
            assert sub.recv_multipart() == [b"MARKET.AAPL", b"189.5", b"200"]
            ctl = sock(zmq.REQ)
            ctl.connect(control)
            ctl.send(b"STATISTICS")
            counters = parse_statistics(ctl.recv_multipart())
            assert counters[0] == counters[6] >= 3  # frontend frames in == backend frames out
            ctl.send(b"TERMINATE")
            assert ctl.recv_multipart() == [b""]
            deadline = time.monotonic() + 10.0
            while child.running and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not child.running
            assert any(line.startswith("STATISTICS ") for line in child.lines)
    finally:
        for s in socks:
            s.close()
        ctx.term()


# -- the scenario component ----------------------------------------------------------------

SCENARIO = (
    Path(__file__).resolve().parents[2]
    / "src"
    / "transportkit"
    / "scenarios"
    / "market_data_forwarder.toml"
)


def test_the_forwarder_scenario_passes_on_the_sim() -> None:
    report = report_dict(run_scenario(load(SCENARIO)))
    assert report["passed"], [i for i in report["invariants"] if not i["passed"]]
    counters = report["streams"]["feed"]["counters"]
    # Only AAPL and MSFT (half the feed) went through: GOOG and AMZN never left it.
    assert counters["forwarder forwarded"] <= report["streams"]["feed"]["sent"] / 2


def test_the_forwarder_check_fails_when_unwanted_topics_came_through() -> None:
    ctx = RunContext(metrics=Metrics(), duration=1.0, seed=0)
    assert CUSTOM_CHECKS["forwarder_filtered"](ctx)[0] is False  # no forwarder at all
    stream = ctx.metrics.stream("feed", "PUB/SUB")
    stream.sent_by_topic.update({b"MARKET.AAPL": 10, b"MARKET.GOOG": 10})
    stream.sent = 20
    ctx.objects["feed.topics"] = [b"MARKET.AAPL"]
    ctx.objects["forwarder.pairs"] = [("fwd", "feed")]
    ctx.objects["fwd"] = SimpleNamespace(stats=ProxyStats(forwarded=10, returned=1))
    assert CUSTOM_CHECKS["forwarder_filtered"](ctx)[0] is True
    ctx.objects["fwd"] = SimpleNamespace(stats=ProxyStats(forwarded=15, returned=1))
    ok, detail = CUSTOM_CHECKS["forwarder_filtered"](ctx)
    assert not ok and "forwarded 15" in detail
    ctx.objects["fwd"] = SimpleNamespace(stats=ProxyStats(forwarded=10, returned=0))
    assert CUSTOM_CHECKS["forwarder_filtered"](ctx)[0] is False


def test_a_forwarder_component_needs_an_upstream_or_a_frontend(tmp_path: Path) -> None:
    text = SCENARIO.read_text(encoding="utf-8").replace('upstream = "tcp://exchange:5686"\n', "")
    broken = tmp_path / "broken.toml"
    broken.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError, match="upstream"):
        load(broken)


# -- the cost of a wait ----------------------------------------------------------------


def test_an_idle_side_costs_nothing_per_message_on_the_other() -> None:
    """Updates one at a time through a forwarder whose XPUB side is idle: the proxy
    polls the idle side once for the whole stream, not once or more per update. It
    used to make and cancel a poll task per socket on every wait, which cost a
    forwarder at 2,000 updates/s about 0.35 ms of CPU per update on real sockets."""
    sim = Simulation(seed=1, latency=Constant(0.0001))
    updates = 200

    async def main() -> tuple[int, int]:
        pub = sim.node("exchange").publisher(bind="tcp://*:7000", options=OPTS)
        proxy = forwarder(
            sim.node("proxy"), upstream="tcp://exchange:7000", backend="tcp://*:7001", options=OPTS
        )
        polls = 0
        idle_poll = proxy.backend.poll

        async def counted(timeout: float = math.inf) -> bool:
            nonlocal polls
            polls += 1
            return await idle_poll(timeout)

        running = asyncio.ensure_future(proxy.run())
        sub = sim.node("desk").subscriber(connect="tcp://proxy:7001", topics=[b"A"], options=OPTS)
        await joined(pub, sub, b"A", 0.2)
        await asyncio.sleep(0.1)  # the subscription was read: the XPUB side is idle now
        proxy.backend.poll = counted  # type: ignore[method-assign]
        got = 0
        for i in range(updates):
            await pub.send([b"A", b"%d" % i])
            await sub.recv(timeout=1.0)
            got += 1
            await asyncio.sleep(0.001)
        proxy.stop()
        await asyncio.wait_for(running, 1.0)
        for sock in (pub, sub, proxy):
            sock.close()
        return got, polls

    with sim:
        got, polls = sim.run(main(), timeout=60)
    assert got == updates
    assert polls <= 2  # one poll task, kept from wait to wait
