"""Heartbeats, the resilient subscriber and the Suicidal Snail: every backend, simulated
faults in virtual time, and real SIGKILL crashes on the zmq backend."""

from __future__ import annotations

import asyncio
import math
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from transportkit import Message, ProtocolError, StaleDataError
from transportkit.patterns.resilience import (
    HeartbeatMonitor,
    HeartbeatPublisher,
    ResilientSubscriber,
    StampedPublisher,
    SuicidalSubscriber,
    decode_timestamp,
)
from transportkit.sim_backend import (
    Constant,
    Crash,
    FaultSchedule,
    Node,
    Restart,
    Simulation,
    schedule_faults,
)
from transportkit.testing import ChildProcess, free_tcp_endpoint, open_harness, sync_subscribers
from transportkit.testing.strategies import fault_schedules
from transportkit.zmq_backend import ZmqNetwork

# -- heartbeats and the resilient subscriber on every backend ---------------------------


def test_resilient_subscriber_receives_data_and_hides_heartbeats(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:

        async def body() -> None:
            with ExitStack() as stack:
                net = h.network("pub")
                pub = stack.enter_context(net.publisher(bind=h.bind_endpoint()))
                assert pub.last_endpoint is not None
                beats = HeartbeatPublisher(pub, net.time_ns, interval=0.02)
                beating = asyncio.ensure_future(beats.run())
                stamped = StampedPublisher(pub, net.time_ns)
                sub = ResilientSubscriber(h.network("sub"), connect=pub.last_endpoint, silence=5.0)
                stack.callback(sub.close)

                async def publish() -> None:
                    while True:
                        await stamped.publish(b"DATA", b"%d" % stamped.published)
                        await asyncio.sleep(0.005)

                publishing = asyncio.ensure_future(publish())
                got = [await sub.recv() for _ in range(20)]
                assert all(m[0] == b"DATA" and len(m) == 3 for m in got)
                await asyncio.sleep(0.1)
                assert sub.monitor.heartbeats > 0
                assert sub.monitor.alive
                assert sub.reconnects == 0
                assert sub.received == 20
                publishing.cancel()
                beating.cancel()
                await asyncio.gather(publishing, beating, return_exceptions=True)

        h.run(body(), timeout=20)


def test_heartbeat_monitor_says_dead_after_timeout_of_silence() -> None:
    sim = Simulation()

    async def main() -> list[bool]:
        monitor = HeartbeatMonitor(timeout=3.0)
        seen = [monitor.alive]
        await asyncio.sleep(2.9)
        assert monitor.observe([b"HEARTBEAT", b"\0" * 8])
        assert not monitor.observe([b"DATA"])
        await asyncio.sleep(2.99)
        seen.append(monitor.alive)
        await asyncio.sleep(0.02)
        seen.append(monitor.alive)
        return seen

    assert sim.run(main()) == [True, True, False]


def test_a_heartbeat_is_exactly_topic_and_stamp() -> None:
    sim = Simulation()

    async def main() -> None:
        monitor = HeartbeatMonitor(timeout=3.0)
        for junk in ([b"HEARTBEAT"], [b"HEARTBEAT", b"7bytes!"], [b"HEARTBEAT", b"\0" * 8, b"x"]):
            assert monitor.observe(junk)  # never data
        assert monitor.heartbeats == 0
        assert monitor.malformed == 3
        assert monitor.observe([b"HEARTBEAT", b"\0" * 8])
        assert (monitor.heartbeats, monitor.malformed) == (1, 3)
        assert not monitor.observe([b"HEARTBEATS", b"\0" * 8])  # another topic: data

    sim.run(main())


def test_resilient_subscriber_hands_out_only_its_own_topics() -> None:
    sim = Simulation(latency=Constant(0.001))
    node = sim.node("n")

    async def main() -> Message:
        with node.publisher(bind="inproc://md") as pub:
            sub = ResilientSubscriber(node, connect="inproc://md", topics=[b"MARKET."])
            await asyncio.sleep(0.01)
            # The added heartbeat subscription is a prefix: it also lets these through.
            await pub.send([b"HEARTBEAT.fake", b"\0" * 8])
            await pub.send([b"HEARTBEAT", b"junk"])
            await pub.send([b"MARKET.AAPL", b"187.20"])
            got = await sub.recv()
            assert got == [b"MARKET.AAPL", b"187.20"]
            assert (sub.received, sub.monitor.heartbeats) == (1, 0)
            assert sub.malformed == 2
            sub.close()
            return got

    assert sim.run(main()) == [b"MARKET.AAPL", b"187.20"]


def test_decode_timestamp_of_an_empty_message_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="no frame 1"):
        decode_timestamp([])


def test_heartbeats_carry_the_publisher_clock_at_the_set_interval() -> None:
    sim = Simulation(latency=Constant(0.001))
    node = sim.node("n")

    async def main() -> list[int]:
        with (
            node.publisher(bind="inproc://hb") as pub,
            node.subscriber(connect="inproc://hb") as sub,
        ):
            beating = asyncio.ensure_future(HeartbeatPublisher(pub, node.time_ns).run())
            got = [decode_timestamp(await sub.recv(timeout=2.0)) for _ in range(4)]
            beating.cancel()
            return got

    assert sim.run(main()) == [0, 1_000_000_000, 2_000_000_000, 3_000_000_000]


# -- reconnecting on silence, in virtual time --------------------------------------------

SILENCE = 2.0


async def _scripted_publisher(node: Node, gaps: list[float]) -> None:
    """Publish one message at 0.5 s, then one after each gap."""
    pub = node.publisher(bind="tcp://*:7500")
    await asyncio.sleep(0.5)
    await pub.send([b"DATA", b"0"])
    for i, gap in enumerate(gaps, start=1):
        await asyncio.sleep(gap)
        await pub.send([b"DATA", b"%d" % i])


def _silence_run(gaps: list[float], silence: float) -> tuple[int, int, list[float]]:
    sim = Simulation(7, latency=Constant(0.001))
    sim.node("pub", main=lambda node: _scripted_publisher(node, gaps))
    sub_node = sim.node("sub")
    silences: list[float] = []

    async def main() -> tuple[int, int]:
        sub = ResilientSubscriber(
            sub_node, connect="tcp://pub:7500", silence=silence, on_reconnect=silences.append
        )
        for _ in range(len(gaps) + 1):
            await sub.recv()
        sub.close()
        return sub.reconnects, sub.received

    reconnects, received = sim.run(main(), timeout=sum(gaps) + 60)
    return reconnects, received, silences


@settings(max_examples=30, deadline=None)
@given(
    outages=st.lists(
        st.tuples(st.integers(0, 4), st.floats(0.05, SILENCE - 0.05)), min_size=1, max_size=4
    )
)
def test_resilient_subscriber_reconnects_exactly_when_silence_exceeds_the_threshold(
    outages: list[tuple[int, float]],
) -> None:
    # A gap of m whole thresholds plus a part needs exactly m reconnects: one each time
    # the silence reaches the threshold, none once the next message is heard.
    gaps = [periods * SILENCE + part for periods, part in outages]
    reconnects, received, silences = _silence_run(gaps, SILENCE)
    assert reconnects == sum(periods for periods, _ in outages)
    assert received == len(gaps) + 1  # no message lost to a reconnect
    assert all(math.isclose(s, SILENCE, abs_tol=1e-9) for s in silences)


def test_ten_minutes_of_silence_take_sixty_reconnects_and_no_wall_time() -> None:
    reconnects, received, silences = _silence_run([600.25], 10.0)
    assert (reconnects, received) == (60, 2)
    assert len(silences) == 60


async def _market(node: Node) -> None:
    """A publisher process: heartbeats every second and data every half second."""
    pub = node.publisher(bind="tcp://*:7600")
    beating = asyncio.ensure_future(HeartbeatPublisher(pub, node.time_ns, interval=1.0).run())
    stamped = StampedPublisher(pub, node.time_ns)
    try:
        while True:
            await stamped.publish(b"DATA")
            await asyncio.sleep(0.5)
    finally:
        beating.cancel()


def _down_intervals(schedule: FaultSchedule) -> list[tuple[float, float]]:
    """The merged intervals during which the publisher node was down."""
    intervals: list[tuple[float, float]] = []
    down_since: float | None = None
    depth = 0
    for when, fault in schedule:
        if type(fault).__name__ == "Crash":
            if depth == 0:
                down_since = when
            depth += 1
        elif depth and type(fault).__name__ == "Restart":
            # A restart revives the node whatever the number of crashes before it.
            assert down_since is not None
            intervals.append((down_since, when))
            depth = 0
    return intervals


@settings(max_examples=20, deadline=None)
@given(
    schedule=fault_schedules(["pub"], kinds=("crash",), horizon=10.0, max_outage=6.0, max_faults=3)
)
@example(schedule=[(1.0, Crash("pub")), (7.0, Restart("pub"))])
def test_resilient_subscriber_reconnects_through_crashes_and_hears_the_restarted_publisher(
    schedule: FaultSchedule,
) -> None:
    silence = 2.5
    sim = Simulation(3, latency=Constant(0.001))
    sim.node("pub", main=_market)
    sub_node = sim.node("sub")
    schedule_faults(sim, [(1.0 + when, fault) for when, fault in schedule])
    end = 1.0 + max([when for when, _ in schedule], default=0.0)

    async def main() -> tuple[int, list[float]]:
        heard: list[float] = []
        sub = ResilientSubscriber(sub_node, connect="tcp://pub:7600", silence=silence)

        async def listen() -> None:
            async for _ in sub:
                heard.append(sim.now)

        listening = asyncio.ensure_future(listen())
        await asyncio.sleep(end + 3.0)
        sub.close()
        await listening
        return sub.reconnects, heard

    reconnects, heard = sim.run(main(), timeout=60)
    intervals = _down_intervals([(1.0 + w, f) for w, f in schedule])
    assert heard and heard[-1] > end + 2.0, "no data after the last restart"
    assert reconnects >= sum(1 for a, b in intervals if b - a > silence)
    if len(intervals) == 1 and intervals[0][1] - intervals[0][0] < silence - 1.2:
        # Silence is at most the outage plus the time to reconnect and hear again.
        assert reconnects == 0


# -- the Suicidal Snail -------------------------------------------------------------------


def test_snail_raises_stale_data_when_the_consumer_sleeps_past_max_delay(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:

        async def body() -> None:
            with ExitStack() as stack:
                net = h.network("pub")
                pub = stack.enter_context(net.publisher(bind=h.bind_endpoint()))
                assert pub.last_endpoint is not None
                sub_net = h.network("sub")
                sub = stack.enter_context(sub_net.subscriber(connect=pub.last_endpoint))
                await sync_subscribers(pub, [sub])
                snail = SuicidalSubscriber(sub, sub_net.time_ns, max_delay=0.1)
                stamped = StampedPublisher(pub, net.time_ns)
                await stamped.publish(b"PX", b"fresh")
                fresh = await snail.recv(timeout=5.0)
                assert fresh[0] == b"PX"
                assert not snail.dead
                await stamped.publish(b"PX", b"stale")
                await asyncio.sleep(0.3)  # the consumer is busy for longer than max_delay
                with pytest.raises(StaleDataError, match="max_delay"):
                    await snail.recv(timeout=5.0)
                assert snail.dead and sub.closed
                with pytest.raises(StaleDataError):
                    snail.try_recv()

        h.run(body(), timeout=20)


@settings(max_examples=40, deadline=None)
@given(
    max_delay=st.floats(0.05, 2.0),
    nap=st.floats(0.0, 3.0),
    count=st.integers(1, 20),
)
def test_snail_dies_iff_the_consumer_delay_exceeds_max_delay(
    max_delay: float, nap: float, count: int
) -> None:
    latency = 0.001
    if abs(nap - max_delay) < 2 * latency:
        nap = max_delay + 0.01  # keep clear of the boundary the latency blurs
    sim = Simulation(5, latency=Constant(latency))
    pub_node, sub_node = sim.node("pub"), sim.node("sub")

    async def main() -> tuple[bool, int]:
        pub = pub_node.publisher(bind="tcp://*:7700")
        sub = sub_node.subscriber(connect="tcp://pub:7700")
        await sync_subscribers(pub, [sub])
        snail = SuicidalSubscriber(sub, sub_node.time_ns, max_delay=max_delay)
        stamped = StampedPublisher(pub, pub_node.time_ns)

        async def publish() -> None:
            for i in range(count):
                await stamped.publish(b"PX", b"%d" % i)
                await asyncio.sleep(0.001)

        publishing = asyncio.ensure_future(publish())
        await asyncio.sleep(nap)  # the consumer is busy
        await publishing
        try:
            while snail.received < count:
                await snail.recv(timeout=1.0)
        except StaleDataError:
            assert sub.closed
            return True, snail.received
        return False, snail.received

    died, received = sim.run(main(), timeout=30)
    assert died == (nap > max_delay)
    if not died:
        assert received == count


def test_snail_skips_messages_without_a_timestamp() -> None:
    sim = Simulation()
    node = sim.node("n")

    async def main() -> Message:
        with node.publisher(bind="inproc://s") as pub, node.subscriber(connect="inproc://s") as sub:
            snail = SuicidalSubscriber(sub, node.time_ns)
            await pub.send([b"PX"])
            await StampedPublisher(pub, node.time_ns).publish(b"PX", b"ok")
            got = await snail.recv(timeout=1.0)
            assert snail.malformed == 1
            return got

    assert sim.run(main())[2] == b"ok"


# -- real crashes: SIGKILL the heartbeat publisher ---------------------------------------


def _hbpublisher(endpoint: str) -> ChildProcess:
    return ChildProcess(
        "-m",
        "transportkit.examples.hbpublisher",
        "--bind",
        endpoint,
        "--interval",
        "0.05",
        "--data-interval",
        "0.02",
    )


async def _crash_and_recover(child: ChildProcess, endpoint: str) -> None:
    async with ZmqNetwork(name="resilient") as net:
        reconnected = asyncio.Event()
        arrived = asyncio.Event()
        sub = ResilientSubscriber(
            net, connect=endpoint, silence=0.3, on_reconnect=lambda _: reconnected.set()
        )
        got: list[Message] = []

        async def consume() -> None:
            async for message in sub:
                got.append(message)
                arrived.set()

        consuming = asyncio.ensure_future(consume())
        try:
            await asyncio.wait_for(arrived.wait(), 10.0)
            assert got[0][0] == b"DATA" and sub.reconnects == 0
            await asyncio.to_thread(child.kill)
            await asyncio.wait_for(reconnected.wait(), 5.0)
            assert sub.reconnects >= 1
            await asyncio.to_thread(child.restart)
            arrived.clear()
            before = len(got)
            await asyncio.wait_for(arrived.wait(), 10.0)
            assert len(got) > before and got[-1][0] == b"DATA"
        finally:
            sub.close()
            await asyncio.wait_for(consuming, 5.0)  # the iterator ends at close


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_resilient_subscriber_survives_a_sigkilled_heartbeat_publisher(
    transport: str, tmp_path: Path
) -> None:
    endpoint = f"ipc://{tmp_path}/hb.ipc" if transport == "ipc" else free_tcp_endpoint()
    with _hbpublisher(endpoint) as child:
        asyncio.run(asyncio.wait_for(_crash_and_recover(child, endpoint), 30.0))
