"""Fuzz the Majordomo (7/MDP) broker and worker loops with generated frames."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from _fuzz_helpers import (
    HOSTILE_RCVHWM,
    INVALID,
    LIMIT,
    TIMEOUT,
    UNKNOWN,
    VALID,
    Face,
    FuzzHandler,
    GoodHandler,
    Judgement,
    Sent,
    Server,
    Verdict,
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
from transportkit.patterns._limits import message_bytes
from transportkit.patterns.majordomo import MajordomoBroker, MajordomoClient, MajordomoWorker

pytestmark = TIMEOUT

# The wire format is spelled out here, from the specification, not taken from the module.
MDPC01, MDPW01 = b"MDPC01", b"MDPW01"
READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"
TOKENS = [MDPC01, MDPW01, READY, REQUEST, REPLY, HEARTBEAT, DISCONNECT, b"echo", b"mmi.service"]

HEARTBEAT_INTERVAL = 0.5
GOOD_SERVICE = b"fuzz.well-behaved.service"
PROBE_SERVICE = b"mmi.fuzz-probe"
PROBE_CLIENT = b"fuzz-probe-client"
PROBE_BODY = b"fuzz-probe-body"

client_ids = st.sampled_from([b"\x00\x80\x00\x00\x29", b"client-1", b""])


# -- the broker: what a DEALER peer sends it ----------------------------------------------

broker_template = st.one_of(
    st.builds(
        lambda service, body: [b"", MDPC01, service, *body],
        st.sampled_from([b"echo", b"risk", b"mmi.service", b"mmi.nope", GOOD_SERVICE]),
        body_frames(TOKENS),
    ),
    st.builds(
        lambda service: [b"", MDPW01, READY, service],
        st.sampled_from([b"echo", b"risk", b"mmi.worker"]),
    ),
    st.just([b"", MDPW01, HEARTBEAT]),
    st.just([b"", MDPW01, DISCONNECT]),
    st.builds(
        lambda client, body: [b"", MDPW01, REPLY, client, b"", *body], client_ids, body_frames()
    ),
)


def judge_for_broker(frames: tuple[bytes, ...]) -> Judgement:
    """7/MDP, as the broker's ROUTER sees a DEALER peer's message (after its id)."""
    if len(frames) < 2 or frames[0] != b"":
        return INVALID  # a DEALER peer must send the empty delimiter first
    header, rest = frames[1], frames[2:]
    if header == MDPC01:
        if not rest:
            return INVALID  # no service name
        if not rest[0] or len(rest) == 1:
            return UNKNOWN  # an empty service name, or an empty body
        return VALID
    if header != MDPW01 or not rest:
        return INVALID  # no such protocol, or no command
    command, args = rest[0], rest[1:]
    if command == READY:
        if len(args) != 1 or args[0].startswith(b"mmi."):
            return INVALID  # READY names one service, never in the broker's mmi. space
        return UNKNOWN  # a second READY from the same worker is a protocol error
    if command in (HEARTBEAT, DISCONNECT):
        return INVALID if args else UNKNOWN  # heartbeats before READY are errors too
    if command == REPLY:
        if len(args) < 2 or args[1] != b"":
            return INVALID
        return UNKNOWN  # valid only from the worker serving that client
    return INVALID  # REQUEST goes broker to worker only; anything else is no command


class MajordomoBrokerServer(Server):
    """The broker; the hostile peer is a DEALER that plays client and worker at once."""

    name = "mdp-broker"
    faces: ClassVar[Mapping[str, Face]] = {
        "dealer": Face(protocol_messages(broker_template, TOKENS), judge_for_broker)
    }

    async def start(self) -> None:
        self.broker = MajordomoBroker(
            self.server_net, self.h.bind_endpoint(), heartbeat_interval=HEARTBEAT_INTERVAL
        )
        self.closing(self.broker.stop)
        endpoint = self.broker.bind()
        self.task = self.spawn(self.broker.run(), "broker")
        self.handler = GoodHandler()
        worker = MajordomoWorker(
            self.good_net, endpoint, GOOD_SERVICE, heartbeat_interval=HEARTBEAT_INTERVAL
        )
        self.closing(worker.aclose)
        await worker.start()
        self.spawn(worker.serve(self.handler), "good-worker")
        # A hostile READY for the same service may take a request: the client retries.
        self.client = MajordomoClient(self.good_net, endpoint, timeout=0.25, attempts=8)
        self.closing(self.client.close)
        options = SocketOptions(routing_id=b"hostile", rcvhwm=HOSTILE_RCVHWM)
        self.hostile = self.peer(
            self.hostile_net.dealer(connect=endpoint, options=options), "hostile DEALER"
        )
        await eventually(lambda: self.broker.worker_count(GOOD_SERVICE) == 1, 2.0, "READY")
        await self._probe()

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        await self.hostile.send(frames)

    async def serve_check(self) -> None:
        try:
            reply = await self.client.request(GOOD_SERVICE, [b"ping"])
        except ServiceUnavailableError as exc:
            raise AssertionError(f"{self.name}: the well-behaved client got {exc!r}") from exc
        assert reply == [b"good", b"ping"], reply

    async def _probe(self) -> None:
        """An mmi request of the hostile DEALER's own, answered 501 (after the rest)."""
        answer = [b"", MDPC01, PROBE_SERVICE, b"501"]
        await self.hostile.wait_for(
            lambda msg: msg == answer,
            self.timing.barrier,
            "answer to the mmi probe",
            resend=lambda: self.hostile.send([b"", MDPC01, PROBE_SERVICE, b"?"]),
            every=self.timing.resend,
        )

    async def barrier(self) -> None:
        await self._probe()

    def bad_input(self) -> int | None:
        return bad_input_of(self.broker)

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.task]

    def largest_acted_on(self) -> int:
        return max(super().largest_acted_on(), self.handler.largest)


# -- the worker: what a ROUTER broker sends it --------------------------------------------

worker_template = st.one_of(
    st.builds(
        lambda client, body: [b"", MDPW01, REQUEST, client, b"", *body], client_ids, body_frames()
    ),
    st.just([b"", MDPW01, HEARTBEAT]),
    st.just([b"", MDPW01, DISCONNECT]),
)


def judge_for_worker(frames: tuple[bytes, ...]) -> Judgement:
    """7/MDP, as a worker's DEALER sees a message from its broker."""
    if len(frames) < 3 or frames[0] != b"" or frames[1] != MDPW01:
        return INVALID
    command, args = frames[2], frames[3:]
    if command == REQUEST:
        if len(args) < 2 or args[1] != b"" or not args[0]:
            # No client address (no peer of a ROUTER has an empty routing id), or no
            # empty frame after it.
            return INVALID
        verdict = handler_verdict(args[2:]).verdict
        # Queued for the handler: a DISCONNECT read before it is handled voids it. A
        # request the worker does not answer (the handler fails, or it is over the
        # limit) is given back: DISCONNECT, and READY on a new connection, so what
        # follows on the old one may never be read.
        gives_back = verdict is not Verdict.VALID or message_bytes(frames) > LIMIT
        return Judgement(verdict, deferred=True, disruptive=gives_back)
    if command == HEARTBEAT:
        return INVALID if args else VALID
    if command == DISCONNECT:
        # The worker then reconnects: what follows on the old connection is lost.
        return INVALID if args else Judgement(Verdict.VALID, disruptive=True)
    return INVALID  # READY and REPLY go worker to broker; anything else is no command


def is_ready(msg: Sequence[bytes]) -> bool:
    return list(msg[1:]) == [b"", MDPW01, READY, b"fuzz"]


class MajordomoWorkerServer(Server):
    """The worker; the hostile peer is the ROUTER it connects to, playing its broker."""

    name = "mdp-worker"

    @classmethod
    def judgements(cls, messages: Sequence[Sent]) -> list[Judgement]:
        """A REQUEST after another one may come before the worker sent the first one's
        reply: 7/MDP forbids that (the broker sends a worker one request at a time), and
        the worker drops it as malformed. The hostile broker does not wait for replies,
        so whether it did is left open."""
        judged = super().judgements(messages)
        earlier = False
        for i, m in enumerate(messages):
            if list(m.frames[:3]) != [b"", MDPW01, REQUEST]:
                continue
            if earlier and judged[i].verdict is Verdict.VALID:
                judged[i] = dataclasses.replace(judged[i], verdict=Verdict.UNKNOWN)
            earlier = True
        return judged

    faces: ClassVar[Mapping[str, Face]] = {
        "router": Face(
            protocol_messages(worker_template, TOKENS), judge_for_worker, maxmsgsize=False
        )
    }

    async def start(self) -> None:
        self.router = self.peer(
            self.hostile_net.router(bind=self.h.bind_endpoint()), "hostile broker"
        )
        endpoint = self.router.sock.last_endpoint
        self.handler = FuzzHandler()
        self.worker = MajordomoWorker(
            self.server_net,
            endpoint,
            b"fuzz",
            heartbeat_interval=HEARTBEAT_INTERVAL,
            reconnect_interval=0.05,
        )
        self.closing(self.worker.aclose)
        self.task = self.spawn(self.worker.serve(self.handler), "serve")
        ready = await self.router.wait_for(is_ready, 2.0, "READY")
        self.identity = ready[0]

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        await self.router.send([self.identity, *frames])

    async def serve_check(self) -> None:
        """The hostile broker turns well-behaved: its request is answered correctly.

        It follows the worker to a new connection (told to DISCONNECT, or dropped by
        the transport); the reply also proves that everything before was processed.
        """
        reply = [b"", MDPW01, REPLY, PROBE_CLIENT, b"", b"ok", PROBE_BODY]

        def seen(msg: Sequence[bytes]) -> None:
            if list(msg[1:3]) == [b"", MDPW01]:
                self.identity = msg[0]  # READY on a new connection, or a heartbeat

        async def probe() -> None:
            # The worker may still hold a hostile request (or an earlier probe) when the
            # probe comes: it then drops the probe as a second REQUEST, and counts it.
            self.extra_sends += 1
            await self.router.send(
                [self.identity, b"", MDPW01, REQUEST, PROBE_CLIENT, b"", PROBE_BODY]
            )

        await self.router.wait_for(
            lambda msg: list(msg[1:]) == reply,
            self.timing.serve,
            "reply to a well-formed request",
            resend=probe,
            every=self.timing.resend,
            seen=seen,
        )

    async def barrier(self) -> None:
        return  # the well-behaved request came after every hostile message

    def bad_input(self) -> int | None:
        return bad_input_of(self.worker)

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.task]

    def largest_acted_on(self) -> int:
        return max(super().largest_acted_on(), self.handler.largest)


# -- the tests ----------------------------------------------------------------------------

# Shrunk inputs of bugs found on the code these tests were first written against (all
# fixed since): they run first on every run, so a regression fails for certain.
BROKER_BUGS = [
    case(("dealer", [b"", MDPC01, GOOD_SERVICE, big(b"order-1")])),  # no size bound
]
WORKER_BUGS = [
    case(("router", [b"", MDPW01, REQUEST, b"client-1", b"", b"RAISE"])),
    case(("router", [b"", MDPW01, REQUEST, b"client-1", b"", b"EMPTY"])),
    case(("router", [b"", MDPW01, REQUEST, b"client-1", b"", b"NOTMSG"])),
    case(("router", [b"", MDPW01, REQUEST, b"client-1", b"", big(b"order-1")])),
    # Only the body was bounded: a 1 MiB client address was taken, and sent back.
    case(("router", [b"", MDPW01, REQUEST, big(b"client-1"), b"", b"order-1"])),
]


test_majordomo_survives_and_counts_bad_input, test_majordomo_long_run = fuzz_tests(
    (MajordomoBrokerServer, BROKER_BUGS),
    (MajordomoWorkerServer, WORKER_BUGS),
)
