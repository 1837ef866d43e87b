"""Fuzz the Freelance (10/FLP) server loop, and the client facing a hostile server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest
from _fuzz_helpers import (
    HOSTILE_RCVHWM,
    INVALID,
    SLOW_TIMEOUT,
    TIMEOUT,
    VALID,
    Face,
    FuzzHandler,
    Judgement,
    Server,
    arbitrary_messages,
    bad_input_of,
    big,
    body_frames,
    case,
    fuzz_tests,
    handler_verdict,
    protocol_messages,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from transportkit import (
    HostUnreachableError,
    Message,
    ServiceUnavailableError,
    SocketOptions,
    Timeout,
)
from transportkit.patterns import FreelanceClient, FreelanceServer
from transportkit.testing import Harness, SimHarness, ZmqHarness, free_tcp_endpoint

pytestmark = TIMEOUT

# The wire format (10/FLP), spelled out here rather than taken from the module.
PING, PONG = b"PING", b"PONG"
TOKENS = [PING, PONG, b"1", b"2", b"0", b"01"]


def server_endpoints(harness: Harness) -> tuple[str, str]:
    """``(bind, public endpoint)`` of a Freelance server: a fixed port (the identity)."""
    if harness.virtual_time:
        return "tcp://*:5555", "tcp://server:5555"
    endpoint = free_tcp_endpoint()
    return endpoint, endpoint


# -- the server: what a client's ROUTER sends it ------------------------------------------

server_template = st.one_of(
    st.just([PING]),
    st.builds(
        lambda ccf, body: [ccf, *body],
        st.sampled_from([b"1", b"2", b"17", b"", b"ccf"]),
        body_frames(TOKENS),
    ),
)


def judge_for_server(frames: tuple[bytes, ...]) -> Judgement:
    """10/FLP, as the server's ROUTER sees a client's message (after its routing id)."""
    if list(frames) == [PING]:
        return VALID
    if len(frames) < 2:
        return INVALID  # one frame that is not PING: no FLP command
    return handler_verdict(frames[1:])  # [ccf, *body]: any frame is a CCF


class FreelanceServerAdapter(Server):
    """The server; the hostile peer is a client's ROUTER (as 10/FLP requires)."""

    name = "flp-server"
    barriers = 0
    """Barrier requests sent so far (each has its own sequence frame)."""
    faces: ClassVar[Mapping[str, Face]] = {
        "router": Face(protocol_messages(server_template, TOKENS), judge_for_server)
    }

    async def start(self) -> None:
        bind, self.endpoint = server_endpoints(self.h)
        self.server_net = self.h.network("server")
        self.handler = FuzzHandler()
        self.server = FreelanceServer(
            self.server_net, bind=bind, endpoint=self.endpoint, handler=self.handler
        )
        self.closing(self.server.close)
        self.task = self.spawn(self.server.run(), "server")
        self.client = FreelanceClient(
            self.good_net, [self.endpoint], timeout=2.0, ping_interval=0.2, server_ttl=1.0
        )
        self.closing(self.client.close)
        options = SocketOptions(router_mandatory=True, rcvhwm=HOSTILE_RCVHWM)
        self.hostile = self.peer(
            self.hostile_net.router(connect=self.endpoint, options=options), "hostile ROUTER"
        )
        await self.barrier()

    async def _send(self, frames: Sequence[bytes]) -> None:
        # No connection (yet, or any more after an oversized frame): nothing is sent.
        with contextlib.suppress(HostUnreachableError):
            await self.hostile.send([self.endpoint.encode(), *frames])

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        await self._send(frames)

    async def serve_check(self) -> None:
        try:
            reply = await self.client.request([b"order-1"])
        except ServiceUnavailableError as exc:
            raise AssertionError(f"{self.name}: the well-behaved client got {exc!r}") from exc
        assert reply == [b"ok", b"order-1"], reply

    async def barrier(self) -> None:
        """A request with a sequence frame of its own, answered: the server handles its
        messages in order, and only the reply to this request ends the wait. (It was a
        PING answered PONG, which a PING of the hostile plan could answer: on zmq, with
        the plan's later messages delayed by the reconnect after an oversized one, the
        barrier passed before they were handled and the count looked short.)
        """
        self.barriers += 1
        token = b"barrier-%d" % self.barriers
        await self.hostile.wait_for(
            lambda msg: len(msg) > 1 and msg[1] == token,
            self.timing.barrier,
            "the barrier request's reply",
            resend=lambda: self._send([token, b"barrier"]),
            every=self.timing.resend,
        )

    def bad_input(self) -> int | None:
        return bad_input_of(self.server)

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.task]

    def largest_acted_on(self) -> int:
        return max(super().largest_acted_on(), self.handler.largest)


# Not bugs found: inputs every run covers (a body over the limit, handler failures and
# a one-frame message that is no FLP command).
HALF = b"\x00" * 524_298  # two of them make a message over the 1 MiB limit

SERVER_EXAMPLES = [
    case(("router", [b"1", big(b"order-1")])),
    case(("router", [b"1", b"RAISE"]), ("router", [b"2", b"NOTMSG"]), ("router", [b"x"])),
    # A PING of the plan first, then an oversized message (the server drops the
    # connection) and bad input after the reconnect: a PONG-answered barrier passed on
    # that first PONG before the rest was handled (2 runs in 10 failed on zmq; a slow
    # long run found it). Not a server bug: the barrier now waits for its own request.
    case(
        *(
            ("router", frames)
            for frames in (
                [PING],
                [b"", b"0_3", b"\xe9\xcfT/dR\x07\xe8\x0e\xfa", b"1", HALF, HALF],
                [b"\x02\xe4\xff\xb8\xdd\x8f\xdd\x90\xa7"],
                [b""],
                [b"PIN"],
                [b"", b"0_3", b"\xcf\x1fr\x84\x12", b"1", HALF, HALF],
                [b"2", b"\xff" * 8, b"1", b""],
                [b"hostile-fe", b"\x00", b"\xa0z\x06\x0eW\xc0b\x82\x9f\x96WB"],
                [PING],
                [b"PIN\x83", b"PIN\x83"],
                [b"-3", b"\xff" * 8, b"\xe9\xcfT/dR\x07\xe8\x0e\xfa"],
                [b"", b"order-1"],
                [b""],
                [PING],
            )
        )
    ),
]

test_freelance_survives_and_counts_bad_input, test_freelance_long_run = fuzz_tests(
    (FreelanceServerAdapter, SERVER_EXAMPLES),
)


# -- the client: what a hostile server sends it -------------------------------------------

HOSTILE_ENDPOINT = "tcp://hostile:5555"
GOOD_ENDPOINT = "tcp://good:5555"


@st.composite
def hostile_replies(draw: st.DrawFn) -> list[bytes]:
    """What a hostile server sends back: PONGs, replies with the right, an earlier, a
    later or an odd control frame, anything at all, and oversized replies."""
    kind = draw(st.sampled_from(["pong", "current", "earlier", "later", "odd", "any", "big"]))
    if kind == "pong":
        return [PONG]
    if kind == "any":
        return draw(arbitrary_messages(TOKENS))
    ccf = {
        "current": b"{ccf}",
        "earlier": b"{earlier}",
        "later": b"{later}",
        "odd": draw(st.sampled_from([b"", b"01", b" 1", b"1 ", b"+1", b"\xd9\xa1", b"9" * 30])),
        "big": b"{ccf}",
    }[kind]
    body = draw(st.lists(st.binary(max_size=8), min_size=0, max_size=3))
    if kind == "big":
        body = [b"{big}"]  # 1 MiB and a byte, made by _fill (the repr stays short)
    return [ccf, *body]


def _fill(template: Sequence[bytes], sequence: int) -> list[bytes]:
    values = {
        b"{ccf}": b"%d" % sequence,
        b"{earlier}": b"%d" % max(sequence - 1, 0),
        b"{later}": b"%d" % (sequence + 1),
        b"{big}": b"\x00" * ((1 << 20) + 1),
    }
    return [values.get(frame, frame) for frame in template]


@st.composite
def client_plans(draw: st.DrawFn) -> tuple[int, list[list[list[bytes]]], bool]:
    """A seed; per request, what the hostile server sends meanwhile; and whether a
    well-behaved second server is there."""
    seed = draw(st.integers(0, 2**16))
    rounds = draw(st.lists(st.lists(hostile_replies(), max_size=6), min_size=1, max_size=4))
    return seed, rounds, draw(st.booleans())


def run_client_plan(
    seed: int, rounds: list[list[list[bytes]]], with_good: bool, backend: str = "sim"
) -> None:
    """A FreelanceClient over a hostile server (and maybe a good one after it): every
    request ends within its timeout, with an answer to *that* request (from a server it
    was sent to, carrying its control frame) or ServiceUnavailableError; every message
    it reads and drops is counted."""
    harness: Harness = SimHarness(seed, shuffle_ties=True) if backend == "sim" else ZmqHarness()
    slack = 0.05 if backend == "sim" else 0.5
    timeout = 0.5
    if backend == "sim":
        hostile_bind, hostile_ep = "tcp://*:5555", HOSTILE_ENDPOINT
        good_bind, good_ep = "tcp://*:5555", GOOD_ENDPOINT
    else:
        hostile_bind = hostile_ep = free_tcp_endpoint()
        good_bind = good_ep = free_tcp_endpoint()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        servers = []
        if with_good:
            server = FreelanceServer(
                harness.network("good"),
                bind=good_bind,
                endpoint=good_ep,
                handler=lambda body: [b"good", *body],
            )
            servers.append((server, loop.create_task(server.run())))
        options = SocketOptions(routing_id=hostile_ep.encode(), linger=0)
        endpoints = [hostile_ep, *([good_ep] if with_good else [])]
        try:
            with (
                harness.network("hostile").router(bind=hostile_bind, options=options) as hostile,
                FreelanceClient(
                    harness.network("cli"),
                    endpoints,
                    timeout=timeout,
                    ping_interval=0.1,
                    server_ttl=0.3,
                ) as client,
            ):
                await _client_rounds(client, hostile, rounds, timeout + slack)
        finally:
            for server, task in servers:
                server.close()
                await asyncio.gather(task, return_exceptions=True)

    try:
        harness.run(main(), timeout=60.0)
    finally:
        harness.close()


async def _client_rounds(
    client: FreelanceClient, hostile: Any, rounds: list[list[list[bytes]]], bound: float
) -> None:
    loop = asyncio.get_running_loop()
    for number, replies in enumerate(rounds, start=1):
        body = [b"request-%d" % number]
        start = loop.time()
        task = asyncio.ensure_future(client.request(body))
        # Read until the request comes (PINGs before it), or 0.3 s pass.
        peer, got_request = None, False
        while not got_request and loop.time() - start < 0.3:
            try:
                msg = await hostile.recv(timeout=max(0.3 - (loop.time() - start), 0.0))
            except Timeout:
                break
            peer = msg[0]
            got_request = msg[1:] == [b"%d" % number, *body]
        ccf = b"%d" % number
        answers = []
        for template in replies:
            frames = _fill(template, number)
            if frames[:1] == [ccf] and len(frames) >= 2:
                answers.append(frames[1:])
            if peer is not None:
                await hostile.send([peer, *frames])
        try:
            reply: Message | None = await task
        except ServiceUnavailableError:
            reply = None
        assert loop.time() - start <= bound, loop.time() - start
        # Whether the request was sent to the hostile server (it may come after the
        # replies the hostile server sent: it guessed the number).
        while True:
            try:
                msg = await hostile.recv(timeout=0.05)
            except Timeout:
                break
            got_request = got_request or msg[1:] == [ccf, *body]
        if reply is not None and reply != [b"good", *body]:
            assert got_request and reply in answers, (reply, answers, got_request)
        # Every message the client read is the reply, or counted as dropped.
        stats = client.stats
        read = client._router.stats.received
        counted = stats.pongs + stats.late + stats.malformed + stats.replies
        assert counted == read, (stats, read)
    stats = client.stats
    assert stats.requests == stats.replies + stats.failures == len(rounds)


# Shrunk inputs of bugs found (fixed since): they run first, every time.
# The hostile server, taken for dead (silent for server_ttl), was never sent request 2,
# yet its reply with control frame b"2" (an easy guess) was returned as the answer.
# On zmq, two answers to request 2 read in one drain: the second replaced the first,
# counted nowhere (tests/patterns/test_freelance.py has the deterministic version).
CLIENT_BUGS = [
    (0, [[], [[b"{ccf}", b"forged"]]], False),
    (0, [[[b"{ccf}", b"a"]], [[b"{ccf}", b"b"], [b"{ccf}", b"c"]]], False),
]


@pytest.mark.parametrize("backend", ["sim", "zmq"])
def test_freelance_client_facing_a_hostile_server(backend: str) -> None:
    examples = 30 if backend == "sim" else 1

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(plan=client_plans())
    def run(plan: tuple[int, list[list[list[bytes]]], bool]) -> None:
        run_client_plan(*plan, backend=backend)

    # Each shrunk input on the backend it was found on (the forgery is the agent's
    # logic, the same on both; the two answers in one drain need real sockets).
    run = example(plan=CLIENT_BUGS[0] if backend == "sim" else CLIENT_BUGS[1])(run)
    run()


@pytest.mark.slow
@SLOW_TIMEOUT
@pytest.mark.parametrize("backend", ["sim", "zmq"])
def test_freelance_client_facing_a_hostile_server_long_run(backend: str) -> None:
    examples = 300 if backend == "sim" else 60

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(plan=client_plans())
    def run(plan: tuple[int, list[list[list[bytes]]], bool]) -> None:
        run_client_plan(*plan, backend=backend)

    run()
