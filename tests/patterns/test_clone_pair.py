"""Clone models 5 and 6: the collector, ephemeral values, the Binary Star server pair
and the client that fails over between two servers."""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from transportkit import StateError
from transportkit.patterns import BStarState
from transportkit.patterns.clone import CloneClient, ClonePairServer, CloneServer, KVMsg
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
from transportkit.testing import free_tcp_endpoint, open_harness
from transportkit.testing.strategies import fault_schedules
from transportkit.zmq_backend import ZmqNetwork


async def set_until_seen(
    client: CloneClient, key: bytes, body: bytes, *, ttl: float | None = None, tries: int = 50
) -> bytes:
    """``client.set`` until the server republished it (a PUB drops before connecting)."""
    for _ in range(tries):
        uid = await client.set(key, body, ttl=ttl)
        try:
            await client.wait_for(
                lambda c, uid=uid: key in c.messages and c.messages[key].uuid == uid, 0.2
            )
            return uid
        except TimeoutError:
            continue
    raise AssertionError(f"{key!r} never came back from the server")


# -- the collector and TTL, both backends -----------------------------------------------


def test_collector_updates_are_sequenced_republished_and_expire(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:
        srv_net, cli_net = h.network("srv"), h.network("cli")

        async def main() -> None:
            server = CloneServer(
                srv_net,
                publisher=h.bind_endpoint(),
                snapshot=h.bind_endpoint(),
                collector=h.bind_endpoint(),
                heartbeat=0.05,
                max_keys=3,
            )
            async with server:
                await server.set(b"KEY.0", b"from the application")
                assert server.snapshot_endpoint and server.publisher_endpoint
                assert server.collector_endpoint
                client = CloneClient(
                    cli_net,
                    snapshot=server.snapshot_endpoint,
                    updates=server.publisher_endpoint,
                    collector=server.collector_endpoint,
                    timeout=1.0,
                    heartbeat=0.5,  # no stall rule (a loaded machine must not resync)
                )
                async with client:
                    await client.wait_for(lambda c: c.synced, 5.0)
                    await set_until_seen(client, b"KEY.1", b"one")
                    await set_until_seen(client, b"EPHEMERAL", b"brief", ttl=0.2)
                    assert b"EPHEMERAL" in server.ephemeral
                    assert server.state[b"EPHEMERAL"].properties == {"ttl": "0.200"}
                    await client.wait_for(lambda c: b"EPHEMERAL" not in c.state, 3.0)
                    assert server.stats.expired >= 1
                    assert not server.ephemeral
                    # max_keys=3: a third key fits, a fourth new key is refused.
                    await set_until_seen(client, b"KEY.2", b"two")
                    before = server.stats.over_limit
                    await client.set(b"KEY.3", b"one too many")
                    await set_until_seen(client, b"KEY.1", b"one, again")  # after it
                    assert server.stats.over_limit == before + 1
                    assert client.state == server.values
                    assert client.state == {
                        b"KEY.0": b"from the application",
                        b"KEY.1": b"one, again",
                        b"KEY.2": b"two",
                    }
                    assert client.stats.resyncs == 0
                    await client.delete(b"KEY.2")
                    await client.wait_for(lambda c: b"KEY.2" not in c.state, 3.0)

        h.run(main(), timeout=20.0)


def test_application_ttl_and_an_overwrite_cancel_each_other_correctly() -> None:
    sim = Simulation(1)
    node = sim.node("srv")

    async def main() -> None:
        server = CloneServer(node, publisher="tcp://*:7001", snapshot="tcp://*:7002")
        async with server:
            await server.set(b"A", b"1", ttl=1.0)
            await server.set(b"B", b"1", ttl=1.0)
            await server.set(b"B", b"2")  # no TTL any more
            await server.set(b"C", b"1", ttl=2.0)
            await server.set(b"C", b"2", ttl=0.5)  # the later TTL wins
            await asyncio.sleep(0.75)
            assert server.values == {b"A": b"1", b"B": b"2"}
            await asyncio.sleep(0.5)
            assert server.values == {b"B": b"2"}
            assert server.stats.expired == 2
            # Snapshots count the TTL that remains.
            await server.set(b"D", b"1", ttl=10.0)
            await asyncio.sleep(4.0)
            (snap,) = [m for m in server._snapshot(b"D") if m[0] == b"D"]
            assert snap[3] == b"ttl=6.000\n"
            for _ in range(500):  # overwriting one key many times keeps the heap small
                await server.set(b"E", b"x", ttl=100.0)
            assert len(server._expiries) <= 2 * len(server.ephemeral) + 65
            with pytest.raises(ValueError):
                await server.set(b"F", b"x", ttl=math.nan)
            with pytest.raises(ValueError):
                await server.set(b"F", b"x", properties={"ttl": "soon"})

    try:
        sim.run(main())
    finally:
        sim.close()


def test_set_without_a_collector_is_refused() -> None:
    sim = Simulation(1)
    node = sim.node("cli")

    async def main() -> None:
        client = CloneClient(node, snapshot="tcp://cli:1", updates="tcp://cli:2")
        with pytest.raises(StateError):
            await client.set(b"K", b"v")
        await client.close()
        client = CloneClient(node, snapshot="tcp://cli:1", updates="tcp://cli:2", collector=[])
        with pytest.raises(ValueError):
            await client.set(b"HUGZ", b"v")
        with pytest.raises(ValueError):
            await client.set(b"K", b"v", ttl=-1.0)
        await client.close()

    try:
        sim.run(main())
    finally:
        sim.close()


# -- the Binary Star pair and the failover client, sim ----------------------------------

HB = 0.1
BSTAR_HB = 0.2
TIMEOUT = 1.0


class Pair:
    """Primary ``a``, backup ``b``, one client ``cli`` that writes a key every 50 ms."""

    def __init__(self, seed: int) -> None:
        self.sim = Simulation(seed, latency=Constant(1e-3))
        self.servers: dict[str, ClonePairServer] = {}
        self.client: CloneClient | None = None
        self.written: dict[bytes, bytes] = {}
        self.written_at: dict[bytes, float] = {}
        self.writing = True
        for name, peer in (("a", "b"), ("b", "a")):
            self.sim.node(name, main=lambda node, peer=peer: self.serve(node, peer))
        self.sim.node("cli", main=self.follow)

    async def serve(self, node: Node, peer: str) -> None:
        server = ClonePairServer(
            node,
            primary=node.name == "a",
            publisher="tcp://*:7001",
            snapshot="tcp://*:7002",
            collector="tcp://*:7003",
            state_pub="tcp://*:7004",
            state_sub=f"tcp://{peer}:7004",
            peer_snapshot=f"tcp://{peer}:7002",
            peer_publisher=f"tcp://{peer}:7001",
            heartbeat=HB,
            bstar_heartbeat=BSTAR_HB,
            mirror_timeout=TIMEOUT,
        )
        self.servers[node.name] = server
        async with server:
            await asyncio.Event().wait()

    async def follow(self, node: Node) -> None:
        client = CloneClient(
            node,
            snapshot="tcp://a:7002",
            updates="tcp://a:7001",
            backups=[("tcp://b:7002", "tcp://b:7001")],
            collector=["tcp://a:7003", "tcp://b:7003"],
            timeout=TIMEOUT,
            heartbeat=HB,
        )
        self.client = client
        async with client:
            await client.wait_for(lambda c: c.synced, 10.0)
            n = 0
            while self.writing:
                key, body = b"KEY.%d" % (n % 20), b"v%d" % n
                await client.set(key, body)
                self.written[key] = body
                self.written_at[key] = self.sim.now
                n += 1
                await asyncio.sleep(0.05)
            await asyncio.Event().wait()

    def run_until(self, t: float) -> None:
        self.sim.run(asyncio.sleep(t - self.sim.now))

    def active(self) -> list[str]:
        return sorted(name for name, s in self.servers.items() if s.active)


def test_the_backup_takes_over_with_the_primarys_map_and_the_client_follows_it() -> None:
    pair = Pair(seed=3)
    try:
        schedule_faults(pair.sim, [(3.0, Crash("a")), (8.0, Restart("a"))])
        pair.run_until(2.9)
        a, b, client = pair.servers["a"], pair.servers["b"], pair.client
        assert client is not None
        assert pair.active() == ["a"] and b.state is BStarState.PASSIVE
        assert client.server_index == 0 and client.synced
        assert b.stats.matched > 0  # the backup saw the primary publish what it held
        # (At start-up the primary may refuse a first request, as Binary Star's PRIMARY
        # does until it hears the backup: the client then tried the backup once.)
        failovers = client.stats.failovers
        pair.run_until(7.9)
        b = pair.servers["b"]
        assert b.active and b.stats.takeovers == 1
        assert client.server_index == 1 and client.stats.failovers == failovers + 1
        # Updates sent only to the backup while the primary was dead and the backup
        # passive were held, then published on taking over.
        assert b.stats.applied >= 1
        pair.writing = False
        pair.run_until(12.0)
        a = pair.servers["a"]  # restarted: passive, following the backup
        assert a.state is BStarState.PASSIVE and not a.active and b.active
        assert client.synced and client.server_index == 1
        assert client.state == b.server.values == pair.written
        assert client.stats.gaps == 0
        # The restarted primary's mirror holds the active map too.
        assert a._mirror is not None and a._mirror.state == b.server.values
    finally:
        pair.sim.close()


def test_a_client_cut_off_from_the_primary_cannot_make_the_backup_active() -> None:
    pair = Pair(seed=4)
    try:
        schedule_faults(pair.sim, [(2.0, Partition("cli", "a")), (6.0, Repair("cli", "a"))])
        pair.run_until(5.9)
        client = pair.client
        assert client is not None
        assert client.stats.failovers >= 1  # it tried the backup ...
        assert pair.active() == ["a"]  # ... which refused: the primary is alive
        assert pair.servers["b"].server.stats.refused >= 1
        pair.writing = False
        pair.run_until(12.0)
        assert pair.active() == ["a"] and client.server_index == 0 and client.synced
        assert client.state == pair.servers["a"].server.values
        assert set(pair.written) <= set(client.state)
    finally:
        pair.sim.close()


def pair_faults() -> st.SearchStrategy[FaultSchedule]:
    """Crashes of either server; the client cut off from either (not the servers from
    each other: Binary Star assumes their link is the reliable one, see its module)."""
    crashes = fault_schedules(
        ["a", "b"], horizon=4.0, max_faults=2, max_outage=4.0, kinds=("crash",)
    )
    cuts = [
        fault_schedules(
            ["cli", server],
            crashable=[],
            horizon=4.0,
            max_faults=1,
            max_outage=4.0,
            kinds=("partition",),
        )
        for server in ("a", "b")
    ]
    return st.tuples(crashes, *cuts).map(
        lambda parts: sorted((f for part in parts for f in part), key=lambda f: f[0])
    )


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), schedule=pair_faults())
# The primary back within 0.06 s, passive: its client never noticed, and followed a
# server that published nothing (before passive servers republished their peer's
# updates).
@example(seed=0, schedule=[(2.625, Crash("a")), (2.6875, Restart("a"))])
def test_once_faults_stop_one_server_is_active_and_the_client_has_its_map(
    seed: int, schedule: FaultSchedule
) -> None:
    pair = Pair(seed)
    schedule_faults(pair.sim, schedule)
    quiet = max([when for when, _ in schedule], default=0.0)
    try:
        pair.run_until(quiet + 8.0)
        pair.writing = False
        pair.run_until(quiet + 12.0)
        fatal = [s.bstar.fatal for s in pair.servers.values() if s.bstar.fatal is not None]
        assert not fatal, fatal
        (name,) = pair.active()
        active, client = pair.servers[name], pair.client
        assert client is not None and client.synced, client and client.stats
        assert client.state == active.server.values
        # What the client wrote once the faults had stopped (and a client timeout and
        # a failover or two had passed) is all there, at its latest value.
        late = {k: v for k, v in pair.written.items() if pair.written_at[k] > quiet + 4.0}
        assert late and all(active.server.values.get(k) == v for k, v in late.items())
    finally:
        pair.sim.close()


# -- the pair on real sockets -----------------------------------------------------------


def test_zmq_pair_fails_over_to_the_backup_when_the_primary_closes() -> None:
    ep = {name: free_tcp_endpoint() for name in ("a_pub", "a_snap", "a_col", "a_bs")}
    ep |= {name: free_tcp_endpoint() for name in ("b_pub", "b_snap", "b_col", "b_bs")}

    def pair_server(net: ZmqNetwork, me: str, peer: str) -> ClonePairServer:
        return ClonePairServer(
            net,
            primary=me == "a",
            publisher=ep[f"{me}_pub"],
            snapshot=ep[f"{me}_snap"],
            collector=ep[f"{me}_col"],
            state_pub=ep[f"{me}_bs"],
            state_sub=ep[f"{peer}_bs"],
            peer_snapshot=ep[f"{peer}_snap"],
            peer_publisher=ep[f"{peer}_pub"],
            heartbeat=0.05,
            bstar_heartbeat=0.1,
            mirror_timeout=0.3,
        )

    async def main(na: ZmqNetwork, nb: ZmqNetwork, nc: ZmqNetwork) -> None:
        a, b = pair_server(na, "a", "b"), pair_server(nb, "b", "a")
        client = CloneClient(
            nc,
            snapshot=ep["a_snap"],
            updates=ep["a_pub"],
            backups=[(ep["b_snap"], ep["b_pub"])],
            collector=[ep["a_col"], ep["b_col"]],
            timeout=0.3,
            heartbeat=0.05,
        )
        try:
            async with b:
                a.start()
                client.start()
                await client.wait_for(lambda c: c.synced, 10.0)
                assert a.active and not b.active
                await set_until_seen(client, b"KEY.1", b"one")
                await set_until_seen(client, b"KEY.2", b"two")
                for _ in range(100):  # the backup follows the primary
                    if b._mirror is not None and b._mirror.state == a.server.values:
                        break
                    await asyncio.sleep(0.05)
                assert b._mirror is not None and b._mirror.state == a.server.values
                await a.close()  # the primary goes away: the client fails over
                await client.wait_for(lambda c: c.server_index == 1 and c.synced, 10.0)
                assert b.active and b.stats.takeovers == 1
                assert client.state == {b"KEY.1": b"one", b"KEY.2": b"two"}
                await set_until_seen(client, b"KEY.3", b"three")
                assert client.state == b.server.values
        finally:
            await client.close()
            await a.close()

    with ZmqNetwork(name="a") as na, ZmqNetwork(name="b") as nb, ZmqNetwork(name="c") as nc:
        asyncio.run(asyncio.wait_for(main(na, nb, nc), 30.0))


def test_a_passive_servers_pending_list_is_bounded_and_drops_the_oldest() -> None:
    sim = Simulation(2)
    node, cli = sim.node("b"), sim.node("cli")

    async def main() -> None:
        # A backup alone: it never becomes active, so every update is held.
        server = ClonePairServer(
            node,
            primary=False,
            publisher="tcp://*:7001",
            snapshot="tcp://*:7002",
            collector="tcp://*:7003",
            state_pub="tcp://*:7004",
            state_sub="tcp://a:7004",
            peer_snapshot="tcp://a:7002",
            peer_publisher="tcp://a:7001",
            max_pending_updates=3,
        )
        pub = cli.publisher(connect="tcp://b:7003")
        async with server:
            await asyncio.sleep(0.5)  # connected
            for i in range(5):
                await pub.send(KVMsg(b"KEY.%d" % i, 0, b"u%d" % i, {}, b"v").encode())
            await pub.send([b"HUGZ", b"\0" * 8, b"", b"", b""])  # no KVSET: counted
            await asyncio.sleep(0.5)
            assert [m.key for m in server.pending] == [b"KEY.2", b"KEY.3", b"KEY.4"]
            assert server.stats.held == 5 and server.stats.over_limit == 2
            assert server.server.stats.malformed == 1
            assert not server.active and server.state is BStarState.BACKUP
            assert server.server.values == {}
        pub.close()

    try:
        sim.run(main())
    finally:
        sim.close()
