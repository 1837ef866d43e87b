"""Binary Star: one active server at most, failover on the client's vote, real crashes."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from transportkit import Message, Network, ServiceUnavailableError, SocketOptions
from transportkit.patterns.binary_star import (
    BinaryStarClient,
    BinaryStarServer,
    BStarEvent,
    BStarState,
    SplitBrainError,
    transition,
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
from transportkit.testing import ChildProcess, free_tcp_endpoint, open_harness
from transportkit.testing.strategies import fault_schedules
from transportkit.zmq_backend import ZmqNetwork

S, E = BStarState, BStarEvent

# -- the state machine --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "event", "expired", "expected"),
    [
        (S.PRIMARY, E.PEER_BACKUP, False, (S.ACTIVE, True)),
        (S.PRIMARY, E.PEER_ACTIVE, False, (S.PASSIVE, True)),
        (S.PRIMARY, E.CLIENT_REQUEST, False, (S.PRIMARY, False)),
        (S.PRIMARY, E.CLIENT_REQUEST, True, (S.ACTIVE, True)),
        (S.BACKUP, E.PEER_ACTIVE, False, (S.PASSIVE, True)),
        (S.BACKUP, E.CLIENT_REQUEST, True, (S.BACKUP, False)),
        (S.ACTIVE, E.PEER_PASSIVE, False, (S.ACTIVE, True)),
        (S.ACTIVE, E.CLIENT_REQUEST, False, (S.ACTIVE, True)),
        (S.PASSIVE, E.PEER_PRIMARY, False, (S.ACTIVE, True)),
        (S.PASSIVE, E.PEER_BACKUP, False, (S.ACTIVE, True)),
        (S.PASSIVE, E.CLIENT_REQUEST, False, (S.PASSIVE, False)),
        (S.PASSIVE, E.CLIENT_REQUEST, True, (S.ACTIVE, True)),
    ],
)
def test_the_state_machine_follows_the_guide(
    state: BStarState, event: BStarEvent, expired: bool, expected: tuple[BStarState, bool]
) -> None:
    assert transition(state, event, peer_expired=expired) == expected


@pytest.mark.parametrize(
    ("state", "event"), [(S.ACTIVE, E.PEER_ACTIVE), (S.PASSIVE, E.PEER_PASSIVE)]
)
def test_dual_active_or_dual_passive_is_fatal(state: BStarState, event: BStarEvent) -> None:
    with pytest.raises(SplitBrainError):
        transition(state, event, peer_expired=False)


@given(st.lists(st.tuples(st.sampled_from(list(E)), st.booleans()), max_size=30))
def test_only_a_client_request_after_peer_silence_makes_a_passive_server_serve(
    events: list[tuple[BStarEvent, bool]],
) -> None:
    state = S.PASSIVE
    for event, expired in events:
        try:
            new, accepted = transition(state, event, peer_expired=expired)
        except SplitBrainError:
            return
        if event is E.CLIENT_REQUEST and state in (S.PASSIVE, S.PRIMARY, S.BACKUP):
            assert accepted == (new is S.ACTIVE)
        state = new


# -- both backends ------------------------------------------------------------------------

HEARTBEAT = 0.1


def make_pair(
    net_p: Network, net_b: Network, endpoints: dict[str, str]
) -> tuple[BinaryStarServer, BinaryStarServer]:
    primary = BinaryStarServer(
        net_p,
        primary=True,
        frontend=endpoints["p_front"],
        state_pub=endpoints["p_state"],
        state_sub=endpoints["b_state"],
        heartbeat=HEARTBEAT,
    )
    backup = BinaryStarServer(
        net_b,
        primary=False,
        frontend=endpoints["b_front"],
        state_pub=endpoints["b_state"],
        state_sub=endpoints["p_state"],
        heartbeat=HEARTBEAT,
    )
    return primary, backup


def test_binary_star_request_reply_works_with_both_servers_up(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:
        names = ["p_front", "p_state", "b_front", "b_state"]
        if tk_backend == "zmq":
            eps = {name: free_tcp_endpoint() for name in names}
        else:
            eps = {name: f"tcp://{name[0]}:{7100 + i}" for i, name in enumerate(names)}
        primary, backup = make_pair(h.network("p"), h.network("b"), eps)

        async def main() -> None:
            async with primary, backup:
                client = BinaryStarClient(
                    h.network("c"),
                    (eps["p_front"], eps["b_front"]),
                    timeout=0.5,
                    settle_delay=0.1,
                    attempts=11,
                )
                with client:
                    for i in range(10):
                        assert await client.request([b"order-%d" % i, b"x"]) == [
                            b"order-%d" % i,
                            b"x",
                        ]
                assert primary.state is S.ACTIVE
                assert backup.state is S.PASSIVE
                assert primary.stats.served >= 10
                assert backup.stats.served == 0

        h.run(main(), timeout=20.0)


# -- simulation: faults -------------------------------------------------------------------

SIM_HEARTBEAT = 0.2


class Pair:
    """Primary ``p``, backup ``b`` and client ``c`` nodes, with every state watched."""

    def __init__(self, seed: int, *, requests: int, retries: int = 3) -> None:
        self.sim = Simulation(seed, latency=Constant(1e-3))
        self.servers: dict[str, BinaryStarServer] = {}
        self.violations: list[tuple[float, str]] = []
        self.transitions: list[tuple[float, str, str, str]] = []
        self.replies: list[tuple[float, str, bytes]] = []
        self.unavailable = 0
        self.sim.node("p", main=self.serve)
        self.sim.node("b", main=self.serve)
        self.requests, self.retries = requests, retries

    async def serve(self, node: Node) -> None:
        me, peer = ("p", "b") if node.name == "p" else ("b", "p")
        port = {"p": 7201, "b": 7202}

        def watch(old: BStarState, new: BStarState, event: BStarEvent) -> None:
            self.transitions.append((self.sim.now, me, old.name, new.name))
            self.check()

        server = BinaryStarServer(
            node,
            primary=me == "p",
            frontend=f"tcp://*:{port[me] + 10}",
            state_pub=f"tcp://*:{port[me]}",
            state_sub=f"tcp://{peer}:{port[peer]}",
            heartbeat=SIM_HEARTBEAT,
            on_state_change=watch,
        )
        self.servers[me] = server
        async with server:
            await asyncio.Event().wait()

    def check(self) -> None:
        active = [
            name
            for name, server in self.servers.items()
            if self.sim.nodes[name].alive and server.state is S.ACTIVE
        ]
        if len(active) > 1:
            self.violations.append((self.sim.now, ",".join(active)))
        for server in self.servers.values():
            if server.fatal is not None:
                self.violations.append((self.sim.now, repr(server.fatal)))

    async def client(self) -> None:
        client = BinaryStarClient(
            self.sim.node("c"),
            ("tcp://p:7211", "tcp://b:7212"),
            timeout=0.3,
            settle_delay=0.3,
            attempts=self.retries + 1,
        )
        with client:
            for i in range(self.requests):
                try:
                    reply = await client.request([b"%d" % i])
                except ServiceUnavailableError:
                    self.unavailable += 1
                else:
                    assert reply == [b"%d" % i]
                    self.replies.append((self.sim.now, client.endpoint, reply[0]))
                self.check()
                await asyncio.sleep(0.05)

    def run(self) -> None:
        self.sim.run(self.client())
        self.check()


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    schedule=fault_schedules(
        ["p", "b", "c"],
        crashable=["p", "b"],
        horizon=6.0,
        max_outage=8.0,
        max_faults=3,
        kinds=("crash", "drop_connection"),
    ),
)
def test_binary_star_never_has_two_active_servers(seed: int, schedule: FaultSchedule) -> None:
    pair = Pair(seed, requests=60)
    schedule_faults(pair.sim, schedule)
    pair.run()
    assert pair.violations == [], pair.transitions
    # Once the faults are over, the service answers again.
    quiet = max([when for when, _ in schedule], default=0.0)
    assert any(when > quiet for when, _, _ in pair.replies) or pair.sim.now <= quiet + 3.0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), crash_at=st.floats(1.0, 4.0))
@example(seed=0, crash_at=3.75)  # a reply in flight at the crash
def test_after_a_primary_crash_the_backup_becomes_active_and_serves_the_client(
    seed: int, crash_at: float
) -> None:
    pair = Pair(seed, requests=80)
    schedule_faults(pair.sim, [(crash_at, Crash("p"))])
    pair.run()
    assert pair.violations == []
    assert pair.servers["b"].state is S.ACTIVE
    assert pair.servers["b"].stats.failovers == 1
    # A reply the primary sent just before dying may still arrive after the crash (one
    # link delay, 1 ms); anything later comes from the backup.
    after = [ep for when, ep, _ in pair.replies if when > crash_at + 1e-3]
    assert after and all(ep == "tcp://b:7212" for ep in after)
    assert pair.unavailable == 0
    assert len(pair.replies) == 80


def test_a_restarted_primary_goes_passive_behind_the_active_backup() -> None:
    pair = Pair(seed=6, requests=120)
    schedule_faults(pair.sim, [(2.0, Crash("p")), (5.0, Restart("p"))])
    pair.run()
    assert pair.violations == []
    assert pair.servers["b"].state is S.ACTIVE
    assert pair.servers["p"].state is S.PASSIVE
    assert len(pair.replies) == 120


def test_a_lone_backup_never_serves() -> None:
    # The primary never came up: the backup must not take over without having seen it.
    pair = Pair(seed=1, requests=3, retries=2)
    schedule_faults(pair.sim, [(0.0, Crash("p"))])
    pair.run()
    assert pair.replies == []
    assert pair.unavailable == 3
    assert pair.servers["b"].state is S.BACKUP


# -- bad input: garbled states, failing handlers, oversized requests ----------------------


def lone_server(node: Node, **kwargs: object) -> BinaryStarServer:
    """A primary whose peer is a plain PUB the test drives (``inproc://peer-state``)."""
    return BinaryStarServer(
        node,
        primary=True,
        frontend="inproc://front",
        state_pub="inproc://my-state",
        state_sub="inproc://peer-state",
        heartbeat=SIM_HEARTBEAT,
        **kwargs,  # type: ignore[arg-type]
    )


GARBLED_ACTIVE = [b" 3\n", b"+3", b"0_3", b"03", b"3 ", b"\x003", b"3.0", b"\xd9\xa3", b"5", b""]


def test_only_the_exact_state_frames_are_states() -> None:
    sim = Simulation(seed=1)
    node = sim.node("p")

    async def main() -> None:
        with node.publisher(bind="inproc://peer-state") as peer:
            server = lone_server(node)
            async with server:
                await asyncio.sleep(0.05)
                await peer.send([b"2"])  # the backup: the primary goes active
                await asyncio.sleep(0.05)
                assert server.state is S.ACTIVE
                for garbled in GARBLED_ACTIVE:
                    await peer.send([garbled])
                await peer.send([b"3", b"3"])  # two frames
                await asyncio.sleep(0.05)
                # int() would have read most of these as 3 (ACTIVE): split brain, stop.
                assert server.fatal is None and server.state is S.ACTIVE
                assert server.stats.bad_states == len(GARBLED_ACTIVE) + 1
                assert server.stats.malformed == server.stats.bad_states
                await peer.send([b"3"])  # the real thing is still fatal
                await asyncio.sleep(0.05)
                assert isinstance(server.fatal, SplitBrainError)

    sim.run(main())


def test_a_failing_handler_is_counted_and_the_server_goes_on() -> None:
    sim = Simulation(seed=1)
    node = sim.node("p")

    def handler(request: Message) -> object:
        if request == [b"raise"]:
            raise RuntimeError("handler bug")
        return {
            b"text": "not bytes",
            b"none": None,
            b"empty": [],
            b"frame": b"a single frame, not a message",
            b"bad-frame": [b"ok", 3],
        }.get(request[0], request)

    async def main() -> None:
        server = lone_server(node, handler=handler)
        async with server:
            await asyncio.sleep(3 * SIM_HEARTBEAT)  # no peer: the first request activates
            with node.dealer(connect="inproc://front") as client:
                for bad in (b"raise", b"text", b"none", b"empty", b"frame", b"bad-frame"):
                    await client.send([b"", bad])
                await client.send([b"", b"order-1"])
                assert await client.recv(timeout=1.0) == [b"", b"order-1"]
                assert client.try_recv() is None
            assert server._task is not None and not server._task.done()
            assert server.stats.handler_errors == 6
            assert server.stats.served == 1

    sim.run(main())


def test_requests_over_max_message_bytes_are_dropped_and_counted() -> None:
    sim = Simulation(seed=1)
    node = sim.node("p")

    async def main() -> None:
        default = lone_server(node)
        assert default._frontend.options.maxmsgsize == 1 << 20
        await default.close()
        # The socket lets big messages in (inproc ignores maxmsgsize in libzmq): the
        # server's own check drops them.
        server = lone_server(node, max_message_bytes=100, options=SocketOptions(maxmsgsize=10_000))
        async with server:
            await asyncio.sleep(3 * SIM_HEARTBEAT)
            with node.dealer(connect="inproc://front") as client:
                await client.send([b"", b"x" * 200])
                await client.send([b"", b"small"])
                assert await client.recv(timeout=1.0) == [b"", b"small"]
            assert server.stats.over_limit == 1
            assert server.stats.served == 1

    sim.run(main())


def test_max_message_bytes_must_be_a_positive_int_or_none() -> None:
    sim = Simulation(seed=1)
    with pytest.raises(ValueError, match="max_message_bytes"):
        lone_server(sim.node("p"), max_message_bytes=0)


@pytest.mark.parametrize("hwm", ["sndhwm", "rcvhwm"])
def test_an_unlimited_front_end_hwm_is_refused(hwm: str) -> None:
    sim = Simulation(seed=1)
    with pytest.raises(ValueError, match="unlimited"):
        lone_server(sim.node("p"), options=SocketOptions(**{hwm: 0}))


# -- zmq: a real crash ---------------------------------------------------------------------


@pytest.fixture
def short_tmp(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, or a shorter directory when ipc paths would pass the 107-byte limit."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="tk-bstar-"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


def bstarsrv(role: str, front: str, pub: str, sub: str) -> ChildProcess:
    return ChildProcess(
        "-m",
        "transportkit.examples.bstarsrv",
        f"--{role}",
        "--frontend",
        front,
        "--state-pub",
        pub,
        "--state-sub",
        sub,
        "--heartbeat",
        "0.1",
    )


async def wait_for_line(child: ChildProcess, line: str, timeout: float) -> None:
    async def watch() -> None:
        while line not in child.lines:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(watch(), timeout)


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_a_killed_primary_process_is_replaced_by_the_backup(
    transport: str, short_tmp: Path
) -> None:
    names = ["p_front", "p_state", "b_front", "b_state"]
    if transport == "ipc":
        eps = {name: f"ipc://{short_tmp}/{name}.ipc" for name in names}
    else:
        eps = {name: free_tcp_endpoint() for name in names}

    async def scenario(net: ZmqNetwork, primary: ChildProcess, backup: ChildProcess) -> None:
        await wait_for_line(primary, "STATE PRIMARY ACTIVE PEER_BACKUP", 10.0)
        await wait_for_line(backup, "STATE BACKUP PASSIVE PEER_ACTIVE", 10.0)
        client = BinaryStarClient(
            net, (eps["p_front"], eps["b_front"]), timeout=0.5, settle_delay=0.3, attempts=7
        )
        with client:
            for i in range(5):
                assert await client.request([b"before-%d" % i]) == [b"before-%d" % i]
            assert client.endpoint == eps["p_front"]
            primary.kill()  # SIGKILL: no goodbye
            for i in range(5):
                assert await client.request([b"after-%d" % i]) == [b"after-%d" % i]
            assert client.endpoint == eps["b_front"]
            assert client.stats.failovers >= 1
        assert "STATE PASSIVE ACTIVE CLIENT_REQUEST" in backup.lines

    primary = bstarsrv("primary", eps["p_front"], eps["p_state"], eps["b_state"])
    backup = bstarsrv("backup", eps["b_front"], eps["b_state"], eps["p_state"])
    with ZmqNetwork(name="bstarcli") as net, primary, backup:
        asyncio.run(asyncio.wait_for(scenario(net, primary, backup), 30.0))
