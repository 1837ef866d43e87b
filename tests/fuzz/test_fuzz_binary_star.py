"""Fuzz the Binary Star server loop (as primary and as backup) with generated frames."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from _fuzz_helpers import (
    HOSTILE_RCVHWM,
    INVALID,
    NUMBERS,
    TIMEOUT,
    UNKNOWN,
    VALID,
    Face,
    FuzzHandler,
    Judgement,
    Server,
    bad_input_of,
    big,
    body_frames,
    case,
    eventually,
    fuzz_tests,
    handler_verdict,
    protocol_messages,
)
from hypothesis import strategies as st

from transportkit import ServiceUnavailableError, SocketOptions
from transportkit.patterns import BinaryStarClient, BinaryStarServer, BStarState

pytestmark = TIMEOUT

# The state messages, spelled out: one frame, the state's number in ASCII decimal.
PRIMARY, BACKUP, ACTIVE, PASSIVE = b"1", b"2", b"3", b"4"
# A peer's ACTIVE or PASSIVE is fatal in some states by design (split brain), so the
# hostile peer never sends them as such; it sends them in every other spelling.
STATE_SPELLINGS = [b" 3", b"+3", b"0_3", b"03", b"3 ", b"3\n", b"+4", b" 4", b"04", b"4\n"]
TOKENS = [PRIMARY, BACKUP, *STATE_SPELLINGS, b"5", b"0", b"-1", *NUMBERS]

HEARTBEAT = 0.1
PROBE_BODY = b"fuzz-probe-body"


frontend_template = st.builds(lambda body: [b"", *body], body_frames())
state_template = st.one_of(
    st.sampled_from([[PRIMARY], [BACKUP]]),
    st.sampled_from(STATE_SPELLINGS).map(lambda spelling: [spelling]),
)


def not_fatal(frames: list[bytes]) -> bool:
    return frames not in ([ACTIVE], [PASSIVE])


def judge_state(frames: tuple[bytes, ...]) -> Judgement:
    """A peer's state message: exactly one frame, b"1" to b"4" (3 and 4 never sent)."""
    return VALID if list(frames) in ([PRIMARY], [BACKUP]) else INVALID


def judge_request(frames: Sequence[bytes], handled: bool) -> Judgement:
    """A REQ client's request ``[b"", *body]`` as the front end ROUTER reads it."""
    if b"" not in frames:
        return INVALID  # no envelope delimiter: not a REQ client's message
    if frames[0] != b"" or len(frames) == 1:
        return UNKNOWN  # a longer envelope (a proxy), or an empty body
    return handler_verdict(frames[1:]) if handled else VALID


class BinaryStar(Server):
    """One Binary Star server; the hostile peer is its peer server (a PUB the server's
    state SUB connects to, and a SUB on its state PUB) and a DEALER client."""

    primary: ClassVar[bool]

    async def start(self) -> None:
        self.state_pub = self.peer(
            self.hostile_net.publisher(bind=self.h.bind_endpoint()), "the hostile peer's state PUB"
        )
        self.handler = FuzzHandler()
        self.server = BinaryStarServer(
            self.server_net,
            primary=self.primary,
            frontend=self.h.bind_endpoint(),
            state_pub=self.h.bind_endpoint(),
            state_sub=self.state_pub.sock.last_endpoint,
            handler=self.handler,
            heartbeat=HEARTBEAT,
        )
        self.closing(self.server.close)
        self.task = self.spawn(self.server.run(), "server")
        assert self.server.state_endpoint and self.server.frontend_endpoint
        self.state_sub = self.peer(
            self.hostile_net.subscriber(connect=self.server.state_endpoint),
            "the hostile peer's state SUB",
        )
        options = SocketOptions(routing_id=b"hostile", rcvhwm=HOSTILE_RCVHWM)
        self.fe = self.peer(
            self.hostile_net.dealer(connect=self.server.frontend_endpoint, options=options),
            "hostile client DEALER",
        )
        self.client = BinaryStarClient(
            self.good_net,
            (self.server.frontend_endpoint, self.server.frontend_endpoint),
            timeout=0.3,
            settle_delay=0.01,
            attempts=9,
        )
        self.closing(self.client.close)
        await self.prepare()

    async def prepare(self) -> None:
        """Bring the server to the state it is fuzzed in."""
        raise NotImplementedError

    async def publish_until(self, frames: list[bytes], done: Any, what: str) -> int:
        """Publish ``frames`` every 10 ms until ``done()``; return how many were sent."""
        sent = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.0
        while not done():
            if loop.time() > deadline:
                raise AssertionError(f"{self.name}: {what}: not done within 3 s")
            await self.state_pub.send(frames)
            sent += 1
            await asyncio.sleep(0.01)
        return sent

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        await (self.state_pub if face == "state" else self.fe).send(frames)

    async def served(self) -> None:
        try:
            reply = await self.client.request([b"ping"])
        except ServiceUnavailableError as exc:
            raise AssertionError(f"{self.name}: the well-behaved client got {exc!r}") from exc
        assert reply == [b"ok", b"ping"], reply

    async def heard(self, state: bytes) -> None:
        await self.state_sub.wait_for(
            lambda msg: list(msg) == [state], 3 * HEARTBEAT + 1.0, f"state {state!r}"
        )

    async def barrier(self) -> None:
        if self.sim:
            # In virtual time every state message delivered is processed at once.
            await asyncio.sleep(self.timing.settle)
        await self.fe.wait_for(
            lambda msg: list(msg) == [b"", b"ok", PROBE_BODY],
            self.timing.barrier,
            "the answer to the probe request",
            resend=lambda: self.fe.send([b"", PROBE_BODY]),
            every=self.timing.resend,
        )

    def bad_input(self) -> int | None:
        return bad_input_of(self.server)

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.task]

    def largest_acted_on(self) -> int:
        return max(super().largest_acted_on(), self.handler.largest)


class BinaryStarPrimaryServer(BinaryStar):
    """The primary, made ACTIVE (its peer says BACKUP) before the hostile messages: it
    serves them all, so the handler's failures count. ACTIVE stays ACTIVE on every
    state message the hostile peer may send."""

    name = "bstar-primary"
    primary = True
    faces: ClassVar[Mapping[str, Face]] = {
        "frontend": Face(
            protocol_messages(frontend_template, TOKENS),
            lambda frames: judge_request(frames, handled=True),
        ),
        "state": Face(
            protocol_messages(state_template, TOKENS, keep=not_fatal),
            judge_state,
            maxmsgsize=False,
        ),
    }

    def exact_faces(self) -> set[str]:
        # No state message changes an ACTIVE server, so on real sockets nothing shows
        # when the last one was processed; in virtual time a pause is exact.
        return {"frontend", "state"} if self.sim else {"frontend"}

    async def prepare(self) -> None:
        await self.publish_until([BACKUP], lambda: self.server.active, "going ACTIVE")

    async def serve_check(self) -> None:
        if self.server.state is not BStarState.ACTIVE:
            raise AssertionError(
                f"{self.name}: the hostile messages made it {self.server.state.name}"
            )
        await self.served()
        await self.heard(ACTIVE)


class BinaryStarBackupServer(BinaryStar):
    """The backup, left BACKUP during the hostile messages (it refuses every request);
    then its peer says ACTIVE (it goes PASSIVE), falls silent, and a client's request
    makes it fail over and serve."""

    name = "bstar-backup"
    primary = False
    faces: ClassVar[Mapping[str, Face]] = {
        "frontend": Face(
            protocol_messages(frontend_template, TOKENS),
            lambda frames: judge_request(frames, handled=False),
        ),
        "state": Face(
            protocol_messages(state_template, TOKENS, keep=not_fatal),
            judge_state,
            maxmsgsize=False,
        ),
    }

    async def prepare(self) -> None:
        # A BACKUP shows no sign of hearing its peer but the count of bad state
        # messages: send bad ones until one is counted, so the subscription is live.
        start = self.server.stats.bad_states
        sent = await self.publish_until(
            [b"not a state"], lambda: self.server.stats.bad_states > start, "subscribing"
        )
        self.extra_sends = sent - 1  # those still in flight may be counted later

    async def serve_check(self) -> None:
        if self.sim:
            await asyncio.sleep(self.timing.settle)  # every state message is processed
        if self.server.state is not BStarState.BACKUP:
            raise AssertionError(
                f"{self.name}: the hostile messages made it {self.server.state.name}"
            )
        await self.publish_until(
            [ACTIVE], lambda: self.server.state is BStarState.PASSIVE, "going PASSIVE"
        )
        await self.heard(PASSIVE)
        await asyncio.sleep(2.5 * HEARTBEAT)  # the peer is now silent: failover is allowed
        await self.served()
        await eventually(lambda: self.server.active, 1.0, "ACTIVE after failover")
        await self.heard(ACTIVE)


# -- the tests ----------------------------------------------------------------------------

# Shrunk inputs of bugs found on the code these tests were first written against (all
# fixed since): they run first on every run, so a regression fails for certain.
PRIMARY_BUGS = [
    case(("state", [b" 3"])),  # int() takes it for ACTIVE: fatal split brain
    case(("state", [b"+4"])),  # int() takes it for PASSIVE: not counted
    case(("frontend", [b"", b"RAISE"])),
    case(("frontend", [b"", b"NOTMSG"])),
    case(("frontend", [b"", big(b"order-1")])),  # no size bound: handled
]
BACKUP_BUGS = [
    case(("state", [b" 3"])),  # taken for ACTIVE: the backup goes PASSIVE, uncounted
    case(("state", [b" 3"]), ("state", [b"+4"])),  # then PASSIVE: fatal
]


test_binary_star_survives_and_counts_bad_input, test_binary_star_long_run = fuzz_tests(
    (BinaryStarPrimaryServer, PRIMARY_BUGS),
    (BinaryStarBackupServer, BACKUP_BUGS),
)
