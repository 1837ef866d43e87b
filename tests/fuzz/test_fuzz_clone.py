"""Fuzz the Clone (12/CHP) server and client loops with generated frames."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from _fuzz_helpers import (
    HOSTILE_RCVHWM,
    INVALID,
    NUMBERS,
    SEQUENCES,
    TIMEOUT,
    UNKNOWN,
    Face,
    Judgement,
    Peer,
    Server,
    Verdict,
    bad_input_of,
    big,
    case,
    eventually,
    fuzz,
    fuzz_tests,
    protocol_messages,
)
from hypothesis import strategies as st

from transportkit import SocketKind, SocketOptions, Timeout
from transportkit.patterns import CloneClient, CloneServer
from transportkit.patterns.clone import CloneEvent

pytestmark = TIMEOUT

# CHP's frames, spelled out here rather than taken from the module.
ICANHAZ, KTHXBAI, HUGZ = b"ICANHAZ?", b"KTHXBAI", b"HUGZ"
TOKENS = [ICANHAZ, KTHXBAI, HUGZ, b"KEY.1", b"count=0\n", b"count=1\n", *SEQUENCES]

HEARTBEAT = 0.1
CLIENT_TIMEOUT = 1.0
PROBE_SUBTREE = b"fuzz-probe-subtree"


def seq(n: int) -> bytes:
    return n.to_bytes(8, "big")


def kv(
    key: bytes, sequence: int, uuid: bytes = b"", props: bytes = b"", body: bytes = b""
) -> list[bytes]:
    """The five frames of a CHP key-value message (built by hand, unchecked)."""
    return [key, seq(sequence), uuid, props, body]


def is_kvmsg(frames: Sequence[bytes]) -> bool:
    """Five frames whose sequence is 8 bytes: a key-value message's framing (12/CHP)."""
    return len(frames) == 5 and len(frames[1]) == 8


def properties_ok(frame: bytes) -> bool | None:
    """Whether ``frame`` is ``name=value`` lines; None when it is not even text."""
    try:
        text = frame.decode()
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return all(line.partition("=")[1] and line.partition("=")[0] for line in lines)


# -- the server: what a DEALER snapshot client sends it ------------------------------------

snapshot_request_template = st.builds(
    lambda subtree: [ICANHAZ, subtree],
    st.sampled_from([b"", b"KEY.", b"KEY.1", b"NOPE", b"\x00"]),
)


SNAPSHOT_REQUEST = Judgement(Verdict.VALID, refusable=True)
"""A valid request, which the server refuses (and counts) while the same client has a
snapshot in progress or waiting, as it documents: the hostile client reads nothing, so
its snapshots stall."""


def judge_for_clone_server(frames: tuple[bytes, ...]) -> Judgement:
    """A snapshot request is exactly ``[ICANHAZ?][subtree]`` (any subtree, b"" too)."""
    if len(frames) == 2 and frames[0] == ICANHAZ:
        return SNAPSHOT_REQUEST
    if list(frames) == [ICANHAZ]:
        return UNKNOWN  # no subtree frame: an error, or the whole map
    return INVALID


class CloneServerServer(Server):
    """The server's snapshot loop; the hostile peer is a DEALER that asks for snapshots
    and reads nothing until the barrier (a slow client)."""

    name = "clone-server"
    faces: ClassVar[Mapping[str, Face]] = {
        "dealer": Face(protocol_messages(snapshot_request_template, TOKENS), judge_for_clone_server)
    }

    async def start(self) -> None:
        self.server = CloneServer(
            self.server_net,
            publisher=self.h.bind_endpoint(),
            snapshot=self.h.bind_endpoint(),
            heartbeat=HEARTBEAT,
        )
        self.closing(self.server.close)
        # Enough state that a few snapshots fill a slow client's pipe in the simulator.
        for i in range(400 if self.sim else 20):
            await self.server.set(b"KEY.%d" % i, b"value-%d" % i)
        self.task = self.spawn(self.server.run(), "server")
        options = SocketOptions(routing_id=b"hostile", rcvhwm=HOSTILE_RCVHWM)
        self.hostile = self.peer(
            self.hostile_net.dealer(connect=self.server.snapshot_endpoint, options=options),
            "hostile snapshot DEALER",
        )
        await self._probe()

    async def _probe(self, counted: bool = False) -> None:
        """A snapshot of a subtree with no key: just KTHXBAI, after everything before.

        The server refuses (and counts) a probe while one of the hostile client's
        snapshots is in progress; so each probe sent after the hostile messages
        (``counted``) may be counted.
        """

        async def send() -> None:
            self.extra_sends += counted
            await self.hostile.send([ICANHAZ, PROBE_SUBTREE])

        await self.hostile.wait_for(
            lambda msg: len(msg) == 5 and msg[0] == KTHXBAI and msg[4] == PROBE_SUBTREE,
            self.timing.barrier,
            "the end of the probe's snapshot",
            resend=send,
            every=self.timing.resend,
        )

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        await self.hostile.send(frames)

    async def serve_check(self) -> None:
        """A well-behaved client takes a snapshot and follows an update."""
        assert self.server.publisher_endpoint and self.server.snapshot_endpoint
        client = CloneClient(
            self.good_net,
            snapshot=self.server.snapshot_endpoint,
            updates=self.server.publisher_endpoint,
            timeout=CLIENT_TIMEOUT,
        )
        self.closing(client.close)
        self.spawn(client.run(), "good-client")
        try:
            await client.wait_for(lambda c: c.synced and c.state == self.server.values, 60)
            await self.server.set(b"KEY.new", b"after the hostile client")
            await client.wait_for(lambda c: c.state == self.server.values, 60)
        except Timeout as exc:
            raise AssertionError(f"{self.name}: the well-behaved client: {exc}") from exc

    async def barrier(self) -> None:
        await self._probe(counted=True)

    def bad_input(self) -> int | None:
        return bad_input_of(self.server)

    def refused(self) -> int:
        return self.server.stats.snapshots_refused

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.task]


# -- the client: what its PUB and ROUTER servers send it -----------------------------------

SERVER_ID = b"clone-server-before"
NEW_SERVER_ID = b"clone-server-after"
FIRST_SEQUENCE = 10
STATE = {b"KEY.1": b"one", b"KEY.2": b"two"}
NEW_STATE = {b"KEY.3": b"three", b"KEY.4": b"four"}

sequences = st.sampled_from(
    [FIRST_SEQUENCE, FIRST_SEQUENCE + 1, FIRST_SEQUENCE + 2, 0, 1, 2**63, 2**64 - 1]
)
uuids = st.sampled_from([SERVER_ID, b"", b"another-server"])
props = st.sampled_from([b"", b"ttl=1\n", b"count=1\n", b"count=x\n", b"bad", b"\xff\n"])
update_template = st.one_of(
    st.builds(
        kv,
        st.sampled_from([b"KEY.1", b"KEY.5", b"\x00"]),
        sequences,
        uuids,
        props,
        st.sampled_from([b"v", b""]),
    ),
    st.builds(lambda s, u: kv(HUGZ, s, u), sequences, uuids),
    st.builds(lambda s, u, p: kv(KTHXBAI, s, u, p), sequences, uuids, props),
)
snapshot_reply_template = update_template


def judge_for_clone_client(frames: tuple[bytes, ...]) -> Judgement:
    """A key-value message (12/CHP), as the client receives it on either socket."""
    if not is_kvmsg(frames) or properties_ok(frames[3]) is False:
        return INVALID  # not five frames, a sequence not 8 bytes, or no name=value lines
    # Anything well framed may make the client resync (a gap, a new server): what
    # follows on its socket may then be dropped with the socket, unread.
    return Judgement(Verdict.UNKNOWN, disruptive=True)


class ProperServer:
    """The hostile pair turned well-behaved: answers every ICANHAZ with a snapshot of
    ``state`` and publishes HUGZ every heartbeat; :meth:`update` publishes a change."""

    def __init__(self, pub: Peer, router: Peer, uuid: bytes, state: dict[bytes, bytes]) -> None:
        self.pub, self.router, self.uuid = pub, router, uuid
        self.state = dict(state)
        self.sequence = FIRST_SEQUENCE if uuid == SERVER_ID else 5 * FIRST_SEQUENCE
        self.client: bytes | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        beat = loop.time()
        while True:
            if loop.time() >= beat:
                await self.pub.send(kv(HUGZ, self.sequence, self.uuid))
                beat = loop.time() + HEARTBEAT
            msg = await self.router.recv(beat - loop.time())
            if msg is not None and len(msg) == 3 and msg[1] == ICANHAZ:
                self.client = msg[0]
                for key, body in sorted(self.state.items()):
                    await self.router.send([msg[0], *kv(key, self.sequence, b"", b"", body)])
                count = b"count=%d\n" % len(self.state)
                end = kv(KTHXBAI, self.sequence, self.uuid, count, msg[2])
                await self.router.send([msg[0], *end])

    async def update(self, key: bytes, body: bytes) -> None:
        self.sequence += 1
        self.state[key] = body
        await self.pub.send(kv(key, self.sequence, b"", b"", body))


class CloneClientServer(Server):
    """The client; the hostile peer is its server: a PUB for updates and a ROUTER for
    snapshots, well-behaved before the hostile messages and after them (as a new
    server instance, which the client must notice and resync to)."""

    name = "clone-client"
    faces: ClassVar[Mapping[str, Face]] = {
        "updates": Face(
            protocol_messages(update_template, TOKENS), judge_for_clone_client, maxmsgsize=False
        ),
        "snapshot": Face(
            protocol_messages(snapshot_reply_template, [*TOKENS, *NUMBERS]),
            judge_for_clone_client,
            maxmsgsize=False,
        ),
    }

    def exact_faces(self) -> set[str]:
        # Snapshot replies are read only while a snapshot is taken, and dropped with the
        # socket on a resync: only the update stream is read in order, for certain.
        return {"updates"}

    async def start(self) -> None:
        self.pub = self.peer(self.hostile_net.publisher(bind=self.h.bind_endpoint()), "hostile PUB")
        self.router = self.peer(
            self.hostile_net.router(bind=self.h.bind_endpoint()), "hostile ROUTER"
        )
        self.largest_state = 0
        self.client = CloneClient(
            self.server_net,
            snapshot=self.router.sock.last_endpoint,
            updates=self.pub.sock.last_endpoint,
            timeout=CLIENT_TIMEOUT,
            on_event=self._event,
        )
        self.closing(self.client.close)
        self.task = self.spawn(self.client.run(), "client")
        proper = ProperServer(self.pub, self.router, SERVER_ID, STATE)
        serving = self.spawn(proper.run(), "proper-server")
        await eventually(
            lambda: self.client.synced and self.client.server_id == SERVER_ID, 3.0, "first sync"
        )
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        assert proper.client is not None
        self.client_id = proper.client

    def _event(self, event: CloneEvent) -> None:
        sizes = [len(msg.body) for msg in self.client.messages.values()]
        self.largest_state = max([self.largest_state, *sizes])

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        if face == "updates":
            await self.pub.send(frames)
        else:
            await self.router.send([self.client_id, *frames])

    async def serve_check(self) -> None:
        """A new, well-behaved server instance: the client must resync to it and follow."""
        proper = ProperServer(self.pub, self.router, NEW_SERVER_ID, NEW_STATE)
        self.spawn(proper.run(), "new-proper-server")
        client = self.client
        await eventually(
            lambda: (
                client.synced and client.server_id == NEW_SERVER_ID and client.state == proper.state
            ),
            self.timing.serve,
            "resync to the new server",
        )
        await proper.update(b"KEY.5", b"five")
        await eventually(
            lambda: client.state == proper.state and client.sequence == proper.sequence,
            self.timing.serve,
            "an update after the resync",
        )

    async def barrier(self) -> None:
        return  # the new server's update came after every hostile update, on one pipe

    def bad_input(self) -> int | None:
        return bad_input_of(self.client)

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.task]

    def largest_acted_on(self) -> int:
        return max(super().largest_acted_on(), self.largest_state)


# -- the server's collector: what a client's PUB sends it (KVSET, 12/CHP) ----------------

COLLECTOR_KEYS = [b"KEY.1", b"KEY.2", b"", HUGZ, KTHXBAI, ICANHAZ, b"\x00"]
COLLECTOR_PROPS = [
    b"",
    b"ttl=1\n",
    b"ttl=0\n",
    b"ttl=0.25\n",
    b"ttl=86401\n",
    b"ttl=-1\n",
    b"ttl=nan\n",
    b"ttl=inf\n",
    b"ttl=1e3\n",
    b"ttl= 1\n",
    b"ttl=soon\n",
    b"ttl=1\nttl=2\n",
    b"a=b\n",
    b"a=b",
    b"noequals\n",
    b"\xff=1\n",
]
kvset_template = st.builds(
    kv,
    st.sampled_from(COLLECTOR_KEYS),
    st.sampled_from([0, 1, 2**64 - 1]),
    st.sampled_from([b"", b"u" * 16, b"x"]),
    st.sampled_from(COLLECTOR_PROPS),
    st.sampled_from([b"v", b""]),
)
_PLAIN_TTL = re.compile(r"[0-9]+(\.[0-9]+)?")


def judge_for_collector(frames: tuple[bytes, ...]) -> Judgement:
    """A KVSET: five frames, an 8-byte sequence, a non-empty key that is no command,
    ``name=value<newline>`` properties, a ``ttl`` of seconds (at most a day here)."""
    if not is_kvmsg(frames) or frames[0] in (b"", HUGZ, KTHXBAI, ICANHAZ):
        return INVALID
    props = frames[3]
    if properties_ok(props) is not True or (props and not props.endswith(b"\n")):
        return INVALID
    lines = props.decode().split("\n")[:-1] if props else []
    names = [line.partition("=")[0] for line in lines]
    if len(set(names)) != len(names):
        return UNKNOWN  # CHP does not say whether a property may come twice
    ttls = [line.partition("=")[2] for line in lines if line.partition("=")[0] == "ttl"]
    if ttls:
        if not _PLAIN_TTL.fullmatch(ttls[0]):
            try:
                float(ttls[0])
            except ValueError:
                return INVALID  # not a number of seconds at all
            return UNKNOWN  # a spelling CHP does not settle ("1e3", " 1", "-1", "inf")
        if float(ttls[0]) > 86_400:
            return UNKNOWN  # past the documented max_ttl: refused by a bound
    return Judgement(Verdict.VALID)


class CloneCollectorServer(Server):
    """The server's collector; the hostile peer is a client's PUB sending KVSETs."""

    name = "clone-collector"
    default_share = 0.3  # each example waits for a real TTL to run out
    faces: ClassVar[Mapping[str, Face]] = {
        "collector": Face(protocol_messages(kvset_template, TOKENS), judge_for_collector)
    }

    collector_kind: ClassVar[SocketKind] = SocketKind.SUB
    client_kind: ClassVar[SocketKind] = SocketKind.PUB

    async def start(self) -> None:
        self.server = CloneServer(
            self.server_net,
            publisher=self.h.bind_endpoint(),
            snapshot=self.h.bind_endpoint(),
            collector=self.h.bind_endpoint(),
            collector_kind=self.collector_kind,
            heartbeat=HEARTBEAT,
        )
        self.closing(self.server.close)
        self.task = self.spawn(self.server.run(), "server")
        endpoint = self.server.collector_endpoint
        assert endpoint
        if self.client_kind is SocketKind.PUSH:
            self.hostile = self.peer(self.hostile_net.pusher(connect=endpoint), "hostile PUSH")
        else:
            self.hostile = self.peer(self.hostile_net.publisher(connect=endpoint), "hostile PUB")
        self.probes = 0
        await self._probe()

    async def _probe(self) -> None:
        """A valid KVSET of a fresh key, resent until the server has it: everything the
        hostile PUB sent before it was processed (one pipe, in order)."""
        self.probes += 1
        key = b"PROBE.%d" % self.probes
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timing.barrier
        while key not in self.server.values:
            assert loop.time() < deadline, f"{self.name}: the probe {key!r} never landed"
            await self.hostile.send(kv(key, 0, b"", b"", b"probe"))
            await asyncio.sleep(self.timing.resend)

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        await self.hostile.send(frames)

    async def serve_check(self) -> None:
        """A well-behaved client's update is sequenced and republished; its TTL runs out."""
        assert self.server.snapshot_endpoint and self.server.publisher_endpoint
        client = CloneClient(
            self.good_net,
            snapshot=self.server.snapshot_endpoint,
            updates=self.server.publisher_endpoint,
            collector=self.server.collector_endpoint,
            collector_kind=self.client_kind,
            timeout=CLIENT_TIMEOUT,
        )
        self.closing(client.close)
        self.spawn(client.run(), "good-client")
        try:
            await client.wait_for(lambda c: c.synced, 60)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while client.state.get(b"GOOD") != b"good":
                assert loop.time() < deadline, f"{self.name}: the good update never landed"
                await client.set(b"GOOD", b"good", ttl=0.1)
                with contextlib.suppress(Timeout):
                    await client.wait_for(lambda c: c.state.get(b"GOOD") == b"good", 0.2)
            await client.wait_for(lambda c: b"GOOD" not in c.state, 60)
        except Timeout as exc:
            raise AssertionError(f"{self.name}: the well-behaved client: {exc}") from exc

    async def barrier(self) -> None:
        await self._probe()

    def bad_input(self) -> int | None:
        return bad_input_of(self.server)

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.task]


class CloneCollectorPullServer(CloneCollectorServer):
    """The same collector as a PULL (opt-in, the Guide's model 5); the hostile peer is a
    client's PUSH. Parsing and bounds are the SUB collector's, so a smaller share."""

    name = "clone-collector-pull"
    default_share = 0.5
    collector_kind = SocketKind.PULL
    client_kind = SocketKind.PUSH


# -- the tests ----------------------------------------------------------------------------

# Shrunk inputs of bugs found on the code these tests were first written against (all
# fixed since): they run first on every run, so a regression fails for certain.
SERVER_BUGS = [
    case(*[("dealer", [ICANHAZ, b""])] * 3),  # a slow client blocks the snapshot loop
    case(("dealer", [ICANHAZ, big()])),  # no size bound: answered
]
CLIENT_BUGS = [
    case(("updates", kv(b"KEY.1", FIRST_SEQUENCE + 1, body=big(b"v")))),
    # A snapshot at the top sequence, then a new server far below it that publishes
    # nothing: only the HUGZ sequences below the snapshot's, past the backlog, show it.
    case(
        ("snapshot", kv(KTHXBAI, 2**64 - 1, b"", b"", b"")),
        ("updates", kv(b"KEY.1", 2**63, b"", b"", b"v")),
    ),
]
COLLECTOR_BUGS = [  # first examples written by hand for the collector's bad input
    case(("collector", kv(HUGZ, 0, b"", b"", b"v")), ("collector", kv(b"K", 0, b"", b"ttl=x\n"))),
    case(("collector", kv(b"K", 0, b"", b"ttl=nan\n", b"v"))),
]


test_clone_survives_and_counts_bad_input, test_clone_long_run = fuzz_tests(
    (CloneServerServer, SERVER_BUGS),
    (CloneClientServer, CLIENT_BUGS),
    (CloneCollectorServer, COLLECTOR_BUGS),
)
# The PULL collector (opt-in) parses and bounds as the SUB one, whose zmq run is in the
# default suite: its own default run is on the sim only (a few ms; on zmq it would add
# over a second), its slow run on both backends.
_, test_clone_pull_collector_long_run = fuzz_tests((CloneCollectorPullServer, COLLECTOR_BUGS))


def test_clone_pull_collector_survives_and_counts_bad_input() -> None:
    fuzz(CloneCollectorPullServer, "sim", examples=COLLECTOR_BUGS)
