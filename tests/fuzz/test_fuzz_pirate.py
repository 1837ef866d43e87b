"""Fuzz the Paranoid Pirate queue and worker and the load-balancing broker and worker."""

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
    FuzzHandler,
    GoodHandler,
    Judgement,
    Peer,
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
from transportkit.patterns import (
    LazyPirateClient,
    LoadBalancingBroker,
    ParanoidPirateQueue,
    ParanoidPirateWorker,
    run_load_balancing_worker,
)
from transportkit.patterns.load_balancing import LoadBalancingWorkerStats

pytestmark = TIMEOUT

# Wire formats (the Guide's), spelled out here rather than taken from the modules.
PPP_READY, PPP_HEARTBEAT = b"\x01", b"\x02"
LB_READY, LB_READY_TEXT = b"\x01", b"READY"  # spworker's, and lbbroker's (both accepted)
TOKENS = [PPP_READY, PPP_HEARTBEAT, LB_READY_TEXT, b"hostile-fe", b"client-1"]

HEARTBEAT_INTERVAL = 0.5
FE_ID, BE_ID = b"hostile-fe", b"hostile-be"
PROBE_CLIENT = b"fuzz-probe-client"
PROBE_BODY = b"fuzz-probe-body"
FE_PROBE = b"fuzz-frontend-probe"

clients = st.sampled_from([b"client-1", FE_ID, b"\x00\x80\x00\x00\x29"])


def split(frames: Sequence[bytes]) -> tuple[list[bytes], list[bytes]] | None:
    """``(envelope, body)`` at the first empty frame (the delimiter), or None without one."""
    for i, frame in enumerate(frames):
        if not frame:
            return list(frames[: i + 1]), list(frames[i + 1 :])
    return None


def judge_request(frames: Sequence[bytes], handled: bool) -> Judgement:
    """A routed request ``[*envelope, b"", *body]``; ``handled``: by a FuzzHandler."""
    parts = split(frames)
    if parts is None:
        return INVALID  # no envelope delimiter: no request of any of these protocols
    envelope, body = parts
    if not body or envelope == [b""]:
        return UNKNOWN  # an empty body, or no return address
    return handler_verdict(body) if handled else VALID


def judge_reply(frames: Sequence[bytes]) -> Judgement:
    """A worker's reply ``[client, b"", *body]`` as a broker reads it."""
    return judge_request(frames, handled=False)


# -- Paranoid Pirate ----------------------------------------------------------------------

pp_worker_template = st.one_of(
    st.just([PPP_HEARTBEAT]),
    st.builds(lambda client, body: [client, b"", *body], clients, body_frames()),
)


def judge_for_pp_worker(frames: tuple[bytes, ...]) -> Judgement:
    """What a Paranoid Pirate worker's DEALER receives from its queue."""
    if list(frames) == [PPP_HEARTBEAT]:
        return VALID
    return judge_request(frames, handled=True)


pp_queue_backend_template = st.one_of(
    st.just([PPP_READY]),
    st.just([PPP_HEARTBEAT]),
    st.builds(lambda client, body: [client, b"", *body], clients, body_frames()),
)


def judge_for_pp_queue_backend(frames: tuple[bytes, ...]) -> Judgement:
    """What the queue's back end reads from a worker (after its routing id)."""
    if list(frames) in ([PPP_READY], [PPP_HEARTBEAT]):
        return VALID
    return judge_reply(frames)


frontend_template = st.builds(lambda body: [b"", *body], body_frames())


def judge_for_frontend(frames: tuple[bytes, ...]) -> Judgement:
    """What a broker's front end reads from a client, after its routing id (which is
    the return address: ``[b"", *body]`` is a REQ client's request)."""
    parts = split(frames)
    if parts is None:
        return INVALID  # no envelope delimiter
    return VALID if parts[1] else UNKNOWN  # an empty body is left open


class Broker(Server):
    """Shared by the two brokers: a hostile DEALER on each face, a well-behaved worker
    and a Lazy Pirate client. The back-end DEALER's replies addressed to the front-end
    DEALER are the back end's barrier; a front-end request echoed back (by whichever
    worker gets it) is the front end's."""

    handler: GoodHandler

    def connect_hostile(self, frontend: str, backend: str) -> None:
        options = SocketOptions(rcvhwm=HOSTILE_RCVHWM)
        self.fe = self.peer(
            self.hostile_net.dealer(connect=frontend, options=options.replace(routing_id=FE_ID)),
            "hostile front-end DEALER",
        )
        self.be = self.peer(
            self.hostile_net.dealer(connect=backend, options=options.replace(routing_id=BE_ID)),
            "hostile back-end DEALER",
        )
        # The hostile back end may be the next worker in line: its request is lost and
        # the client retries (the next attempt goes to the well-behaved worker).
        self.client = LazyPirateClient(self.good_net, frontend, timeout=0.1, attempts=20)
        self.closing(self.client.close)

    def reply_via_backend(self, body: bytes) -> list[bytes]:
        """What the back-end DEALER sends to answer the front-end DEALER with ``body``."""
        raise NotImplementedError

    def echo(self, request: Sequence[bytes]) -> list[bytes] | None:
        """The back end's answer to a front-end probe it was given, else None."""
        raise NotImplementedError

    async def _backend_probe(self, timeout: float) -> None:
        await self.fe.wait_for(
            lambda msg: list(msg) == [b"", PROBE_BODY],
            timeout,
            "reply forwarded from the back end",
            resend=lambda: self.be.send(self.reply_via_backend(PROBE_BODY)),
            every=self.timing.resend,
        )

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        await (self.fe if face == "frontend" else self.be).send(frames)

    async def serve_check(self) -> None:
        try:
            reply = await self.client.request([b"order-1"])
        except ServiceUnavailableError as exc:
            raise AssertionError(f"{self.name}: the well-behaved client got {exc!r}") from exc
        assert reply == [b"good", b"order-1"], reply

    async def barrier(self) -> None:
        await self._backend_probe(self.timing.barrier)

        async def echo_probes(peer: Peer) -> None:
            while True:
                msg = await peer.recv(1.0)
                answer = None if msg is None else self.echo(msg)
                if answer is not None:
                    await peer.send(answer)

        echoing = self.spawn(echo_probes(self.be), "echo")
        try:
            await self.fe.wait_for(
                # Echoed by the hostile back end, or answered by the good worker.
                lambda msg: list(msg) in ([b"", FE_PROBE], [b"", b"good", FE_PROBE]),
                self.timing.barrier,
                "answer to a front-end request",
                resend=lambda: self.fe.send([b"", FE_PROBE]),
                every=self.timing.resend,
            )
        finally:
            echoing.cancel()

    def largest_acted_on(self) -> int:
        return max(super().largest_acted_on(), self.handler.largest)


class ParanoidPirateQueueServer(Broker):
    name = "pp-queue"
    faces: ClassVar[Mapping[str, Face]] = {
        "backend": Face(
            protocol_messages(pp_queue_backend_template, TOKENS), judge_for_pp_queue_backend
        ),
        "frontend": Face(protocol_messages(frontend_template, TOKENS), judge_for_frontend),
    }

    async def start(self) -> None:
        self.queue = ParanoidPirateQueue(
            self.server_net,
            frontend=self.h.bind_endpoint(),
            backend=self.h.bind_endpoint(),
            heartbeat_interval=HEARTBEAT_INTERVAL,
        )
        self.closing(self.queue.close)
        self.task = self.spawn(self.queue.run(), "queue")
        self.handler = GoodHandler()
        worker = ParanoidPirateWorker(
            self.good_net,
            self.queue.backend_endpoint,
            self.handler,
            heartbeat_interval=HEARTBEAT_INTERVAL,
        )
        self.closing(worker.close)
        self.spawn(worker.run(), "good-worker")
        self.connect_hostile(self.queue.frontend_endpoint, self.queue.backend_endpoint)
        await eventually(lambda: len(self.queue.workers) >= 1, 2.0, "the worker's READY")
        await self._backend_probe(self.timing.serve)

    def reply_via_backend(self, body: bytes) -> list[bytes]:
        return [FE_ID, b"", body]

    def echo(self, request: Sequence[bytes]) -> list[bytes] | None:
        return list(request) if list(request) == [FE_ID, b"", FE_PROBE] else None

    def bad_input(self) -> int | None:
        return bad_input_of(self.queue)

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.task]


class ParanoidPirateWorkerServer(Server):
    """The worker; the hostile peer is the ROUTER it connects to, playing its queue."""

    name = "pp-worker"
    faces: ClassVar[Mapping[str, Face]] = {
        "router": Face(
            protocol_messages(pp_worker_template, TOKENS), judge_for_pp_worker, maxmsgsize=False
        )
    }

    async def start(self) -> None:
        self.router = self.peer(
            self.hostile_net.router(bind=self.h.bind_endpoint()), "hostile queue"
        )
        self.handler = FuzzHandler()
        worker = ParanoidPirateWorker(
            self.server_net,
            self.router.sock.last_endpoint,
            self.handler,
            heartbeat_interval=HEARTBEAT_INTERVAL,
            reconnect_initial=0.05,
            reconnect_max=0.2,
        )
        self.worker = worker
        self.closing(worker.close)
        self.task = self.spawn(worker.run(), "worker")
        ready = await self.router.wait_for(lambda m: list(m[1:]) == [PPP_READY], 2.0, "READY")
        self.identity = ready[0]

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        await self.router.send([self.identity, *frames])

    async def serve_check(self) -> None:
        """The hostile queue turns well-behaved: its request is answered correctly (after
        every hostile message; following the worker if it reconnected)."""

        def seen(msg: Sequence[bytes]) -> None:
            if list(msg[1:]) == [PPP_READY]:
                self.identity = msg[0]

        await self.router.wait_for(
            lambda msg: list(msg[1:]) == [PROBE_CLIENT, b"", b"ok", PROBE_BODY],
            self.timing.serve,
            "reply to a well-formed request",
            resend=lambda: self.router.send([self.identity, PROBE_CLIENT, b"", PROBE_BODY]),
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


# -- load balancing -----------------------------------------------------------------------

lb_backend_template = st.one_of(
    st.just([b"", LB_READY]),
    st.just([b"", LB_READY_TEXT]),
    st.builds(lambda client, body: [b"", client, b"", *body], clients, body_frames()),
)


def judge_for_lb_backend(frames: tuple[bytes, ...]) -> Judgement:
    """What the broker's back end reads from a (REQ) worker, after its routing id."""
    if not frames or frames[0] != b"":
        return INVALID  # a REQ worker's messages start with the empty delimiter
    content = frames[1:]
    if list(content) in ([LB_READY], [LB_READY_TEXT]):
        return VALID
    return judge_reply(content)


lb_worker_template = st.builds(lambda client, body: [client, b"", *body], clients, body_frames())


def judge_for_lb_worker(frames: tuple[bytes, ...]) -> Judgement:
    """What a load-balancing worker's REQ hands on, after its own empty delimiter."""
    return judge_request(frames, handled=True)


class LoadBalancingBrokerServer(Broker):
    name = "lb-broker"
    faces: ClassVar[Mapping[str, Face]] = {
        "backend": Face(protocol_messages(lb_backend_template, TOKENS), judge_for_lb_backend),
        "frontend": Face(protocol_messages(frontend_template, TOKENS), judge_for_frontend),
    }

    async def start(self) -> None:
        self.broker = LoadBalancingBroker(
            self.server_net, frontend=self.h.bind_endpoint(), backend=self.h.bind_endpoint()
        )
        self.closing(self.broker.close)
        self.task = self.spawn(self.broker.run(), "broker")
        self.handler = GoodHandler()
        self.spawn(
            run_load_balancing_worker(self.good_net, self.broker.backend_endpoint, self.handler),
            "good-worker",
        )
        self.connect_hostile(self.broker.frontend_endpoint, self.broker.backend_endpoint)
        await eventually(lambda: len(self.broker.workers) >= 1, 2.0, "the worker's READY")
        await self._backend_probe(self.timing.serve)

    def reply_via_backend(self, body: bytes) -> list[bytes]:
        return [b"", FE_ID, b"", body]

    def echo(self, request: Sequence[bytes]) -> list[bytes] | None:
        return list(request) if list(request) == [b"", FE_ID, b"", FE_PROBE] else None

    def bad_input(self) -> int | None:
        return bad_input_of(self.broker)

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.task]


class LoadBalancingWorkerServer(Server):
    """The worker (a REQ); the hostile peer is the ROUTER broker it connects to. REQ
    keeps a lockstep, so each message waits for the worker's answer (READY again or a
    reply): that answer is also the proof that it was processed."""

    name = "lb-worker"
    faces: ClassVar[Mapping[str, Face]] = {
        "router": Face(
            protocol_messages(lb_worker_template, TOKENS), judge_for_lb_worker, maxmsgsize=False
        )
    }

    async def start(self) -> None:
        self.router = self.peer(
            self.hostile_net.router(bind=self.h.bind_endpoint()), "hostile broker"
        )
        self.handler = FuzzHandler()
        self.stats = LoadBalancingWorkerStats()
        self.task = self.spawn(
            run_load_balancing_worker(
                self.server_net, self.router.sock.last_endpoint, self.handler, stats=self.stats
            ),
            "worker",
        )
        ready = await self.router.wait_for(lambda m: list(m[1:]) == [b"", LB_READY], 2.0, "READY")
        self.identity = ready[0]
        self.stalled = False

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        await self.router.send([self.identity, b"", *frames])
        if self.stalled:
            return  # lockstep was lost: no answer is owed any more
        # Wait for READY again, or the reply; or for the worker to end.
        answer = asyncio.ensure_future(self.router.recv(self.timing.step))
        await asyncio.wait([answer, self.task], return_when=asyncio.FIRST_COMPLETED)
        answer.cancel()
        await asyncio.gather(answer, return_exceptions=True)
        # No answer: the message was dropped on the way (oversized), or the worker is
        # stuck or dead (the checks will say).
        self.stalled = (
            not answer.cancelled() and answer.exception() is None and answer.result() is None
        )

    async def serve_check(self) -> None:
        await self.router.send([self.identity, b"", PROBE_CLIENT, b"", PROBE_BODY])
        await self.router.wait_for(
            lambda msg: list(msg[1:]) == [b"", PROBE_CLIENT, b"", b"ok", PROBE_BODY],
            self.timing.serve,
            "reply to a well-formed request",
        )

    async def barrier(self) -> None:
        return  # lockstep: every message was answered before the next one was sent

    def bad_input(self) -> int | None:
        return bad_input_of(self.stats)

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.task]

    def largest_acted_on(self) -> int:
        return max(super().largest_acted_on(), self.handler.largest)


# -- the tests ----------------------------------------------------------------------------

# Shrunk inputs of bugs found on the code these tests were first written against (all
# fixed since): they run first on every run, so a regression fails for certain.
QUEUE_BUGS = [case(("frontend", [b"", big(b"order-1")]))]  # forwarded: no size bound
HANDLER_BUGS = [
    [b"client-1", b"", b"RAISE"],
    [b"client-1", b"", b"EMPTY"],
    [b"client-1", b"", b"NOTMSG"],
    [b"client-1", b"", big(b"order-1")],
]
PP_WORKER_BUGS = [case(("router", frames)) for frames in HANDLER_BUGS]
LB_WORKER_BUGS = [
    case(("router", [b"client-1", b"order-1"])),  # no envelope: READY again, uncounted
    *PP_WORKER_BUGS,
]


test_pirate_survives_and_counts_bad_input, test_pirate_long_run = fuzz_tests(
    (ParanoidPirateQueueServer, QUEUE_BUGS),
    (ParanoidPirateWorkerServer, PP_WORKER_BUGS),
    (LoadBalancingBrokerServer, QUEUE_BUGS),
    (LoadBalancingWorkerServer, LB_WORKER_BUGS),
)
