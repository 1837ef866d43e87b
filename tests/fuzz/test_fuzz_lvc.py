"""Fuzz the last-value cache's loop with generated frames (snapshot requests, updates)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from _fuzz_helpers import (
    HOSTILE_RCVHWM,
    INVALID,
    TIMEOUT,
    UNKNOWN,
    VALID,
    Face,
    Judgement,
    Server,
    Verdict,
    bad_input_of,
    big,
    case,
    eventually,
    frame_values,
    fuzz_tests,
    protocol_messages,
)
from hypothesis import strategies as st

from transportkit import SocketOptions, Timeout
from transportkit.patterns import LastValueCache, LastValueSubscriber
from transportkit.sim_backend._kernel import capacity, wire_bytes

pytestmark = TIMEOUT

# The cache's snapshot protocol, spelled out here rather than taken from the module.
REQUEST, VALUE, END = b"LVC?", b"LVC", b"LVC."
SYNC_TOPIC = b"\x00transportkit.lvc.sync"
TOKENS = [REQUEST, VALUE, END, SYNC_TOPIC, b"BULK.", b"MARKET.AAPL"]

GOOD_PREFIX = b"fuzz.well-behaved."
GOOD_TOPIC = GOOD_PREFIX + b"AAPL"
PROBE_PREFIX = b"fuzz-probe-prefix"
PROBE_TOKEN = b"fuzz-probe-token"
DEFAULT_SNDHWM = 1000  # every transportkit socket's default, libzmq's too

request_template = st.builds(
    lambda prefix, token: [REQUEST, prefix, token],
    st.sampled_from([b"", b"BULK.", b"B", b"MARKET.", GOOD_PREFIX]),
    st.binary(max_size=12),
)
update_template = st.builds(
    lambda topic, rest: [topic, *rest],
    st.sampled_from([b"MARKET.AAPL", b"BULK.1", b"", SYNC_TOPIC]),
    st.lists(frame_values(), max_size=3),
)


SNAPSHOT_REQUEST = Judgement(Verdict.VALID, refusable=True)
"""A valid request, which the cache refuses (and counts) while the same subscriber has a
snapshot in progress or waiting, as it documents: the hostile one reads nothing until
the barrier, so its snapshots stall."""


def judge_request(frames: tuple[bytes, ...]) -> Judgement:
    """A snapshot request is exactly ``[b"LVC?", prefix, token]``."""
    return SNAPSHOT_REQUEST if len(frames) == 3 and frames[0] == REQUEST else INVALID


def judge_update(frames: tuple[bytes, ...]) -> Judgement:
    """Upstream, any message is an update of its topic (frame 0)."""
    return UNKNOWN if frames[0] == SYNC_TOPIC else VALID  # the cache's own marker topic


class LastValueCacheServer(Server):
    """The cache; the hostile peer is its upstream publisher and a snapshot DEALER that
    reads nothing until the barrier. A SUB on the downstream PUB records what is
    forwarded; a LastValueSubscriber is the well-behaved peer."""

    name = "lvc"
    default_share = 0.3  # big snapshots: 0.1 s an example in the simulator
    faces: ClassVar[Mapping[str, Face]] = {
        "snapshot": Face(protocol_messages(request_template, TOKENS), judge_request),
        "upstream": Face(
            protocol_messages(update_template, TOKENS), judge_update, maxmsgsize=False
        ),
    }

    async def start(self) -> None:
        # Enough topics that three snapshots overflow a slow client's pipe in the simulator.
        self.bulk = 600 if self.sim else 20
        # The kernel's smallest tcp buffers between the cache and the hostile peer
        # (6,912 bytes), which hold some messages of the smallest snapshot reply too.
        buffers = SocketOptions(sndbuf=0, rcvbuf=0)
        in_kernel = capacity("tcp", 0, 0) // wire_bytes([b"BULK.0", b"value"]) + 1
        self.held_bound = DEFAULT_SNDHWM + HOSTILE_RCVHWM + in_kernel + self.bulk + 1
        self.upstream = self.peer(
            self.hostile_net.publisher(bind=self.h.bind_endpoint()), "hostile upstream PUB"
        )
        self.lvc = LastValueCache(
            self.server_net,
            upstream=self.upstream.sock.last_endpoint,
            downstream=self.h.bind_endpoint(),
            snapshots=self.h.bind_endpoint(),
            options=buffers,
        )
        self.closing(self.lvc.close)
        self.task = self.spawn(self.lvc.run(), "cache")
        self.downstream = self.lvc.downstream.last_endpoint
        self.snapshots = self.lvc.snapshots.last_endpoint
        self.recorder = self.peer(
            self.good_net.subscriber(connect=self.downstream), "downstream recorder SUB"
        )
        # Subscribed both ways once an update comes through.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        first = [GOOD_TOPIC, b"v0"]
        while await self.recorder.recv(0.02) != first:
            assert loop.time() < deadline, "the cache never forwarded an update"
            await self.upstream.send(first)
        for i in range(self.bulk):
            await self.upstream.send([b"BULK.%d" % i, b"value"])
        await eventually(lambda: len(self.lvc.values) == self.bulk + 1, 3.0, "bulk cached")
        options = buffers.replace(routing_id=b"hostile", rcvhwm=HOSTILE_RCVHWM)
        self.hostile = self.peer(
            self.hostile_net.dealer(connect=self.snapshots, options=options),
            "hostile snapshot DEALER",
        )
        await self._probe()

    async def _probe(self, counted: bool = False) -> None:
        """A snapshot of a prefix with no topic: just its end, after everything before.

        The cache refuses (and counts) a probe while one of the hostile subscriber's
        snapshots is in progress; so each probe sent after the hostile messages
        (``counted``) may be counted.
        """

        async def send() -> None:
            self.extra_sends += counted
            await self.hostile.send([REQUEST, PROBE_PREFIX, PROBE_TOKEN])

        await self.hostile.wait_for(
            lambda msg: list(msg) == [END, PROBE_PREFIX, PROBE_TOKEN],
            self.timing.barrier,
            "the end of the probe's snapshot",
            resend=send,
            every=self.timing.resend,
        )

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        await (self.upstream if face == "upstream" else self.hostile).send(frames)

    async def serve_check(self) -> None:
        """A late joiner gets the current value, then a live update (sent after every
        hostile update on the same pipe, so it also shows they were processed)."""
        sub = LastValueSubscriber(
            self.good_net, updates=self.downstream, snapshots=self.snapshots, prefix=GOOD_PREFIX
        )
        self.closing(sub.close)
        try:
            snapshot = await sub.sync(timeout=60, retry=0.05)
            assert snapshot == {GOOD_TOPIC: [GOOD_TOPIC, b"v0"]}, snapshot
            await self.upstream.send([GOOD_TOPIC, b"v1"])
            assert await sub.recv(timeout=60) == [GOOD_TOPIC, b"v1"]
        except Timeout as exc:
            raise AssertionError(f"{self.name}: the well-behaved subscriber: {exc}") from exc

    async def barrier(self) -> None:
        if self.sim:
            self.held = await self.hostile.drain(self.timing.quiet)
        await self._probe(counted=True)
        await self.recorder.wait_for(
            lambda msg: list(msg) == [GOOD_TOPIC, b"v1"],
            self.timing.barrier,
            "the live update, downstream",
        )

    def bad_input(self) -> int | None:
        return bad_input_of(self.lvc)

    def refused(self) -> int:
        return self.lvc.snapshots_refused

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.task]


# Shrunk inputs of bugs found on the code these tests were first written against (all
# fixed since): they run first on every run, so a regression fails for certain.
BUGS = [
    case(*[("snapshot", [REQUEST, b"", b""])] * 3),  # all held: the ROUTER's HWM is 0
    case(("snapshot", [REQUEST, b"", big()])),  # no size bound: answered
]


test_last_value_cache_survives_and_counts_bad_input, test_last_value_cache_long_run = fuzz_tests(
    (LastValueCacheServer, BUGS),
)
