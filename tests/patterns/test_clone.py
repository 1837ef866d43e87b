"""Clone (13/CHP): clients converge to the server's map, and never miss a gap unnoticed."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit import ProtocolError, SocketOptions
from transportkit.patterns.clone import (
    HUGZ,
    ICANHAZ,
    KTHXBAI,
    CloneClient,
    CloneEvent,
    CloneServer,
    KVMsg,
)
from transportkit.patterns.examples.clonesrv import DEFAULT_SYMBOLS, expected_state
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
from transportkit.testing import ChildProcess, free_tcp_endpoint, open_harness
from transportkit.testing.strategies import fault_schedules
from transportkit.zmq_backend import ZmqNetwork

SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "TSLA"]


def key(i: int) -> bytes:
    return f"MARKET.{SYMBOLS[i % len(SYMBOLS)]}".encode()


# -- the message --------------------------------------------------------------------------


@given(
    key=st.binary(min_size=1, max_size=20),
    sequence=st.integers(0, 2**64 - 1),
    uuid=st.binary(max_size=16),
    properties=st.dictionaries(
        st.text(st.characters(blacklist_characters="=\n", codec="utf-8"), min_size=1),
        st.text(st.characters(blacklist_characters="\n", codec="utf-8")),
        max_size=3,
    ),
    body=st.binary(max_size=32),
)
def test_kvmsg_frames_decode_to_the_same_message(
    key: bytes, sequence: int, uuid: bytes, properties: dict[str, str], body: bytes
) -> None:
    msg = KVMsg(key, sequence, uuid, properties, body)
    frames = msg.encode()
    assert len(frames) == 5
    assert frames[0] == key
    assert frames[1] == sequence.to_bytes(8, "big")
    assert KVMsg.decode(frames) == msg


@pytest.mark.parametrize(
    "frames",
    [
        [b"k", b"\0" * 8, b"", b""],
        [b"k", b"\0" * 7, b"", b"", b"v"],
        [b"k", b"\0" * 8, b"", b"no-equals-sign\n", b"v"],
        [b"k", b"\0" * 8, b"", b"\xff=1\n", b"v"],
    ],
)
def test_malformed_kvmsg_frames_raise_protocol_error(frames: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        KVMsg.decode(frames)


def test_reserved_or_empty_keys_are_refused() -> None:
    sim = Simulation()
    node = sim.node("srv")

    async def main() -> None:
        server = CloneServer(node, publisher="inproc://pub", snapshot="inproc://snap")
        for bad in (b"", HUGZ, KTHXBAI, ICANHAZ):
            with pytest.raises(ValueError):
                await server.set(bad, b"x")
        await server.close()

    sim.run(main())


# -- both backends ------------------------------------------------------------------------


def test_clone_client_converges_to_the_server_state(backend: str) -> None:
    with open_harness(backend) as h:
        srv_net, cli_net = h.network("srv"), h.network("cli")

        async def main() -> None:
            server = CloneServer(
                srv_net, publisher=h.endpoint(), snapshot=h.endpoint(), heartbeat=0.05
            )
            async with server:
                for i in range(12):  # state before the client joins: from the snapshot
                    await server.set(key(i), b"before-%d" % i)
                assert server.publisher_endpoint and server.snapshot_endpoint
                client = CloneClient(
                    cli_net,
                    snapshot=server.snapshot_endpoint,
                    updates=server.publisher_endpoint,
                    timeout=1.0,
                )
                async with client:
                    await client.wait_for(lambda c: c.synced, 5.0)
                    for i in range(30):  # and after: from the updates
                        await server.set(key(i * 7), b"after-%d" % i)
                        await asyncio.sleep(0.002)
                    await server.delete(key(1))
                    await client.wait_for(lambda c: c.sequence == server.sequence, 5.0)
                    assert client.state == server.values
                    assert key(1) not in client.state
                    assert client.stats.snapshots >= 1
                    assert client.stats.resyncs >= client.stats.gaps

        h.run(main(), timeout=20.0)


# -- simulation: faults -------------------------------------------------------------------

HEARTBEAT = 0.2
TIMEOUT = 1.0


class Cluster:
    """A Clone server node and a client node; the latest objects of each kept here."""

    def __init__(
        self,
        seed: int,
        bursts: list[int],
        *,
        sndhwm: int = 4,
        rcvhwm: int = 4,
        latency: float = 1e-3,
    ) -> None:
        self.sim = Simulation(seed, latency=Constant(latency))
        self.server: CloneServer | None = None
        self.client: CloneClient | None = None
        self.events: list[list[CloneEvent]] = []
        self.bursts = bursts
        self.sndhwm, self.rcvhwm = sndhwm, rcvhwm
        self.publishing_done = False
        self.sim.node("srv", main=self.serve)
        self.sim.node("cli", main=self.follow)

    async def serve(self, node: Node) -> None:
        server = CloneServer(
            node,
            publisher="tcp://*:7001",
            snapshot="tcp://*:7002",
            heartbeat=HEARTBEAT,
            publisher_options=SocketOptions(sndhwm=self.sndhwm),
            instance_id=b"run-%d" % node.crashes,
        )
        self.server = server
        async with server:
            self.publishing_done = False
            for n, burst in enumerate(self.bursts):
                for i in range(burst):  # a burst: all at one virtual instant
                    await server.set(key(n + i), b"%d:%d:%d" % (node.crashes, n, i))
                await asyncio.sleep(0.05)
            self.publishing_done = True
            await asyncio.Event().wait()

    async def follow(self, node: Node) -> None:
        events: list[CloneEvent] = []
        self.events.append(events)
        client = CloneClient(
            node,
            snapshot="tcp://srv:7002",
            updates="tcp://srv:7001",
            timeout=TIMEOUT,
            subscriber_options=SocketOptions(rcvhwm=self.rcvhwm),
            on_event=events.append,
        )
        self.client = client
        async with client:
            await asyncio.Event().wait()

    def run_until(self, until: float) -> None:
        self.sim.run(asyncio.sleep(until - self.sim.now))

    def converged(self) -> bool:
        assert self.server is not None and self.client is not None
        return self.client.synced and self.client.state == self.server.values


def assert_no_gap_went_unnoticed(events: list[CloneEvent]) -> None:
    """Applied sequences are consecutive after each snapshot; every gap leads to one."""
    current: int | None = None
    awaiting_snapshot = False
    for event in events:
        if event.kind == "snapshot":
            current, awaiting_snapshot = event.sequence, False
        elif event.kind == "apply":
            assert not awaiting_snapshot, f"applied {event} after a gap, before a snapshot"
            assert current is not None and event.sequence == current + 1, (current, event)
            current = event.sequence
        elif event.kind == "gap":
            assert current is not None and event.sequence > current + 0
            assert event.expected == current + 1
            awaiting_snapshot = True
    assert not awaiting_snapshot, "a gap was never followed by a snapshot"


def check_cluster(cluster: Cluster) -> None:
    assert cluster.converged(), (cluster.client and cluster.client.stats, cluster.sim.now)
    client = cluster.client
    assert client is not None
    for events in cluster.events:
        assert_no_gap_went_unnoticed(events)
    gaps = sum(e.kind == "gap" for events in cluster.events for e in events)
    assert gaps == client.stats.gaps or len(cluster.events) > 1
    assert client.stats.resyncs >= client.stats.gaps


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    bursts=st.lists(st.integers(1, 30), min_size=1, max_size=40),
    schedule=fault_schedules(
        ["srv", "cli"],
        horizon=4.0,
        max_outage=30.0,
        max_faults=3,
        kinds=("crash", "partition", "drop", "spike"),
    ),
)
def test_clone_client_state_equals_the_server_state_after_faults_stop(
    seed: int, bursts: list[int], schedule: FaultSchedule
) -> None:
    cluster = Cluster(seed, bursts)
    schedule_faults(cluster.sim, schedule)
    quiet = max([when for when, _ in schedule], default=0.0)
    # Faults stop at `quiet`, publishing by about 0.05 s per burst; a few timeouts more.
    cluster.run_until(max(quiet, 0.05 * len(bursts)) + 6 * TIMEOUT)
    check_cluster(cluster)


def test_hwm_drops_at_a_slow_client_are_detected_as_gaps_and_resynced() -> None:
    # Tiny HWMs and a slow link: bursts overflow the path and the PUB drops updates.
    cluster = Cluster(seed=7, bursts=[40] * 10, sndhwm=2, rcvhwm=2, latency=0.02)
    cluster.run_until(10.0)
    assert cluster.server is not None and cluster.client is not None
    assert cluster.server.publisher_dropped
    assert cluster.client.stats.gaps >= 1
    assert cluster.client.stats.resyncs >= cluster.client.stats.gaps
    check_cluster(cluster)


def test_losses_at_the_tail_are_revealed_by_the_heartbeat() -> None:
    # One big last burst: the final updates are dropped and nothing follows them but
    # HUGZ, whose sequence number gives the loss away.
    cluster = Cluster(seed=3, bursts=[1, 1, 60], sndhwm=2, rcvhwm=2, latency=0.02)
    cluster.run_until(5.0)
    gaps_seen = [e for e in cluster.events[0] if e.kind == "gap"]
    assert gaps_seen, "the tail loss went unnoticed"
    check_cluster(cluster)


def test_a_30_second_partition_is_healed_by_a_resync() -> None:
    cluster = Cluster(seed=1, bursts=[5] * 200)  # publishes for 10 s
    schedule_faults(cluster.sim, [(1.0, Partition("cli", "srv")), (31.0, Repair("cli", "srv"))])
    cluster.run_until(40.0)
    assert cluster.client is not None
    assert cluster.client.stats.timeouts >= 1
    check_cluster(cluster)


def test_a_restarted_server_is_noticed_and_its_new_state_taken() -> None:
    cluster = Cluster(seed=2, bursts=[3] * 20)
    schedule_faults(cluster.sim, [(2.0, Crash("srv")), (2.1, Restart("srv"))])
    cluster.run_until(8.0)
    assert cluster.client is not None and cluster.server is not None
    assert cluster.server.instance_id == b"run-1"
    assert cluster.client.server_id == b"run-1"
    assert cluster.client.stats.restarts + cluster.client.stats.timeouts >= 1
    check_cluster(cluster)


def test_bad_snapshot_requests_are_counted_and_do_not_stop_the_server() -> None:
    cluster = Cluster(seed=4, bursts=[2] * 5)
    stray = cluster.sim.node("stray")

    async def main() -> None:
        await asyncio.sleep(0.01)
        with stray.dealer(connect="tcp://srv:7002") as dealer:
            await dealer.send([b"GIMME"])
            await dealer.send([ICANHAZ, b"", b"extra"])
            await asyncio.sleep(2.0)

    cluster.sim.run(main())
    assert cluster.server is not None
    assert cluster.server.stats.bad_requests == 2
    check_cluster(cluster)


# -- zmq: a real crash ---------------------------------------------------------------------


def endpoints(transport: str, tmp_path: Path) -> tuple[str, str]:
    if transport == "ipc":
        return f"ipc://{tmp_path}/snap.ipc", f"ipc://{tmp_path}/pub.ipc"
    return free_tcp_endpoint(), free_tcp_endpoint()


def clonesrv(snapshot: str, publisher: str, seed: int) -> ChildProcess:
    return ChildProcess(
        "-m",
        "transportkit.patterns.examples.clonesrv",
        "--snapshot",
        snapshot,
        "--publisher",
        publisher,
        "--heartbeat",
        "0.1",
        "--interval",
        "0.005",
        "--count",
        "25",
        "--seed",
        str(seed),
    )


@pytest.fixture
def tmp_ipc(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, or a shorter directory when ipc paths would pass the 107-byte limit."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="tk-clone-"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_a_killed_and_restarted_clone_server_is_resynced_to_its_new_state(
    transport: str, tmp_ipc: Path
) -> None:
    snapshot, publisher = endpoints(transport, tmp_ipc)
    first, second = expected_state(1, 25, DEFAULT_SYMBOLS), expected_state(2, 25, DEFAULT_SYMBOLS)
    assert first != second

    async def scenario(net: ZmqNetwork, child: ChildProcess) -> None:
        client = CloneClient(
            net,
            snapshot=snapshot,
            updates=publisher,
            timeout=0.5,
        )
        async with client:
            await client.wait_for(lambda c: c.state == first, 10.0)
            server_id = client.server_id
            child.kill()  # SIGKILL: no goodbye
            replacement = clonesrv(snapshot, publisher, seed=2)
            await asyncio.to_thread(replacement.start)
            try:
                await client.wait_for(lambda c: c.state == second, 10.0)
            finally:
                replacement.kill()
            assert client.server_id != server_id
            assert client.stats.restarts + client.stats.timeouts >= 1
            assert client.stats.resyncs >= 1

    with ZmqNetwork(name="clonecli") as net, clonesrv(snapshot, publisher, seed=1) as child:
        asyncio.run(asyncio.wait_for(scenario(net, child), 30.0))
