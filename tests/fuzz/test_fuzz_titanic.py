"""Fuzz Titanic (9/TSP over 7/MDP) behind a broker: hostile clients, and a hostile worker."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import pytest
from _fuzz_helpers import (
    HOSTILE_RCVHWM,
    LIMIT,
    SLOW_TIMEOUT,
    TIMEOUT,
    Face,
    GoodHandler,
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
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_fuzz_majordomo import judge_for_broker

from transportkit import Message, ProtocolError, ServiceUnavailableError, SocketOptions, Timeout
from transportkit.patterns import Titanic, TitanicClient, TitanicError
from transportkit.patterns._limits import message_bytes
from transportkit.patterns.majordomo import MajordomoBroker, MajordomoWorker
from transportkit.sim_backend import Simulation

pytestmark = TIMEOUT

# The wire formats (7/MDP, 9/TSP), spelled out here rather than taken from the modules.
MDPC01, MDPW01 = b"MDPC01", b"MDPW01"
T_REQUEST, T_REPLY, T_CLOSE = b"titanic.request", b"titanic.reply", b"titanic.close"
OK, PENDING, UNKNOWN_UUID, ERROR = b"200", b"300", b"400", b"500"
HEX: Final = frozenset(b"0123456789abcdefABCDEF")

HEARTBEAT = 0.5
GOOD_SERVICE = b"fuzz.well-behaved.service"
MAX_REQUESTS = 64
"""Titanic's bound in these tests: above what one example stores, so that the
well-behaved client is never refused."""
MAX_REPLY_BYTES = 4096
UUID_SLOT = b"{uuid}"
"""Replaced, when sent, by the latest UUID Titanic gave the hostile client (a real one)."""

SERVICE_NAMES = [
    GOOD_SERVICE,
    b"echo",
    b"../x",
    b"../../../../../../tmp/titanic-escape",
    b"/tmp/titanic-escape",
    b"a\x00b",
    b"\x00",
    b"x" * 300,
    b"titanic.request",
    b"titanic.close",
    b"mmi.service",
    b"TITANIC.request",
    b"",
]
UUIDS = [
    UUID_SLOT,
    b"0" * 32,
    b"F" * 32,
    b"../" + b"a" * 29,
    b"../../../../../../tmp/titanic-esc",
    b"/" + b"a" * 31,
    b"a" * 31 + b"\x00",
    b"a" * 31,
    b"a" * 33,
    b"a" * 300,  # longer than a file name may be
    b"g" * 32,
    b"a" * 31 + b"\n",
    b"",
]
TOKENS = [T_REQUEST, T_REPLY, T_CLOSE, MDPC01, *SERVICE_NAMES[:8], *UUIDS[:8]]

tsp_bodies = st.lists(frame_values(TOKENS), min_size=1, max_size=3)

client_template = st.one_of(
    st.builds(
        lambda name, body: [b"", MDPC01, T_REQUEST, name, *body],
        st.sampled_from(SERVICE_NAMES),
        tsp_bodies,
    ),
    st.builds(
        lambda service, uuid: [b"", MDPC01, service, uuid],
        st.sampled_from([T_REPLY, T_CLOSE]),
        st.sampled_from(UUIDS),
    ),
)


def is_uuid(frame: bytes) -> bool:
    """9/TSP: 32 hexadecimal characters (the slot always becomes a real one)."""
    return frame == UUID_SLOT or (len(frame) == 32 and set(frame) <= HEX)


def tsp_verdict(service: bytes, body: Sequence[bytes]) -> Verdict:
    """What 9/TSP (and Titanic's documented choices) says about one request body."""
    if service == T_REQUEST:
        name = body[0] if body else b""
        if len(body) < 2 or not name or name.startswith((b"titanic.", b"mmi.")):
            return Verdict.INVALID  # answered 400
        return Verdict.VALID
    if len(body) != 1 or not is_uuid(body[0]):
        return Verdict.INVALID  # answered 400
    return Verdict.VALID


def forwarded(frames: Sequence[bytes]) -> bytes | None:
    """The Titanic service a message goes to, if the broker forwards it there."""
    if (
        len(frames) >= 4
        and frames[0] == b""
        and frames[1] == MDPC01
        and frames[2] in (T_REQUEST, T_REPLY, T_CLOSE)
        and message_bytes(frames) <= LIMIT
    ):
        return frames[2]
    return None


def judge_for_titanic(frames: tuple[bytes, ...]) -> Judgement:
    """A hostile client's message as the broker, then Titanic, sees it."""
    service = forwarded(frames)
    if service is None:
        return judge_for_broker(frames)
    return Judgement(tsp_verdict(service, frames[3:]))


def not_a_worker(frames: list[bytes]) -> bool:
    """The broker's worker side is fuzzed in test_fuzz_majordomo; here the hostile
    DEALER stays a client (a READY for titanic.request would make it Titanic's rival)."""
    return not (len(frames) > 1 and frames[1] == MDPW01)


def expected_answers(service: bytes, body: Sequence[bytes]) -> tuple[list[bytes], ...]:
    """Answers 9/TSP allows; a status frame is exactly three digits here."""
    verdict = tsp_verdict(service, body)
    if verdict is Verdict.INVALID:
        return ([UNKNOWN_UUID],)
    if service == T_REQUEST:
        return ([ERROR],)  # or [200, uuid]: checked apart
    if service == T_CLOSE:
        return ([OK],)
    return ([PENDING], [UNKNOWN_UUID], [ERROR])  # or [200, reply...]: checked apart


class TitanicServer(Server):
    """A broker, Titanic and a well-behaved worker; the hostile peer is an MDP client
    DEALER sending TSP requests; the well-behaved peer a TitanicClient."""

    name = "titanic"
    default_share = 0.25  # a broker, Titanic and three workers per example
    max_requests: ClassVar[int] = MAX_REQUESTS
    faces: ClassVar[Mapping[str, Face]] = {
        "client": Face(
            protocol_messages(client_template, TOKENS, keep=not_a_worker), judge_for_titanic
        )
    }

    async def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tk-fuzz-titanic-"))
        self.closing(lambda: shutil.rmtree(self.root, ignore_errors=True))
        self.store = self.root / "store"
        self.broker = MajordomoBroker(
            self.server_net, self.h.bind_endpoint(), heartbeat_interval=HEARTBEAT
        )
        self.closing(self.broker.stop)
        endpoint = self.broker.bind()
        self.broker_task = self.spawn(self.broker.run(), "broker")
        self.titanic = Titanic(
            self.h.network("titanic"),
            endpoint,
            self.store,
            dispatch_interval=0.1,
            request_timeout=0.5,
            heartbeat_interval=HEARTBEAT,
            max_requests=self.max_requests,
            max_reply_bytes=MAX_REPLY_BYTES,
            fsync=False,
        )
        self.closing(self.titanic.stop)
        self.titanic_task = self.spawn(self.titanic.run(), "titanic")
        self.handler = GoodHandler()
        worker = MajordomoWorker(
            self.h.network("worker"), endpoint, GOOD_SERVICE, heartbeat_interval=HEARTBEAT
        )
        self.closing(worker.aclose)
        self.spawn(worker.serve(self.handler), "good-worker")
        self.client = TitanicClient(self.good_net, endpoint, timeout=0.5, attempts=8)
        self.closing(self.client.close)
        options = SocketOptions(rcvhwm=HOSTILE_RCVHWM)
        self.hostile = self.peer(
            self.hostile_net.dealer(connect=endpoint, options=options), "hostile client"
        )
        self.answers: dict[bytes, list[list[bytes]]] = {T_REQUEST: [], T_REPLY: [], T_CLOSE: []}
        self.other_answers: list[Message] = []
        self.uuid = b"0123456789abcdef" * 2  # until Titanic gives one
        self.sent: list[tuple[bytes, list[bytes]]] = []  # forwarded, before any oversized
        self.disrupted = False
        self.spawn(self._read(), "hostile-reader")
        await eventually(
            lambda: all(self.broker.worker_count(s) == 1 for s in (T_REQUEST, T_REPLY, T_CLOSE)),
            2.0,
            "Titanic's READY",
        )
        await eventually(lambda: self.broker.worker_count(GOOD_SERVICE) == 1, 2.0, "READY")
        # The probe: a request only the adapter knows, answered by the good worker.
        self.probe_uuid = await self._probe_request()

    async def _read(self) -> None:
        while True:
            msg = await self.hostile.recv(3600.0)
            if msg is None:
                continue
            if len(msg) >= 4 and msg[:2] == [b"", MDPC01] and msg[2] in self.answers:
                self.answers[msg[2]].append(msg[3:])
                if msg[2] == T_REQUEST and msg[3:4] == [OK] and len(msg) == 5:
                    self.uuid = msg[4]
            else:
                self.other_answers.append(msg)

    async def _probe_request(self) -> bytes:
        await self.hostile.send([b"", MDPC01, T_REQUEST, GOOD_SERVICE, b"fuzz-probe-body"])
        await eventually(lambda: bool(self.answers[T_REQUEST]), 2.0, "the probe's UUID")
        (answer,) = self.answers[T_REQUEST]
        assert answer[0] == OK and len(answer) == 2, answer
        self.answers[T_REQUEST].clear()
        probe = answer[1]
        self.uuid = b"0123456789abcdef" * 2
        await eventually(lambda: self.titanic.status(probe.decode()) == OK, 2.0, "probe served")
        return probe

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        sent = [self.uuid if frame == UUID_SLOT else frame for frame in frames]
        if any(len(frame) > LIMIT for frame in sent):
            self.disrupted = True  # the broker's maxmsgsize drops the connection
        service = forwarded(sent)
        if service is not None and not self.disrupted:
            self.sent.append((service, sent[3:]))
        await self.hostile.send(sent)

    async def serve_check(self) -> None:
        try:
            reply = await self.client.call(GOOD_SERVICE, [b"order-1"], poll_interval=0.05)
        except (ServiceUnavailableError, TitanicError) as exc:
            raise AssertionError(f"{self.name}: the well-behaved client got {exc!r}") from exc
        assert reply == [b"good", b"order-1"], reply

    async def barrier(self) -> None:
        """Every forwarded message answered (counted per service: each Titanic service
        answers in order), then the probe's reply, unique to it."""
        await self._answered()
        probe_answer = [OK, b"good", b"fuzz-probe-body"]

        async def probed() -> None:
            while probe_answer not in self.answers[T_REPLY]:
                await self.hostile.send([b"", MDPC01, T_REPLY, self.probe_uuid])
                await asyncio.sleep(self.timing.resend)

        await asyncio.wait_for(probed(), self.timing.barrier)
        await asyncio.sleep(self.timing.settle)

    async def _answered(self) -> None:
        """Every forwarded message answered (unless an oversized one cut the line)."""
        want = {s: sum(1 for service, _ in self.sent if service == s) for s in self.answers}
        if not self.disrupted:
            await eventually(
                lambda: all(len(self.answers[s]) >= want[s] for s in want),
                self.timing.barrier,
                "an answer to every forwarded TSP request",
            )
        else:
            await asyncio.sleep(self.timing.settle * 4)

    def bad_input(self) -> int | None:
        return bad_input_of(self.broker) + bad_input_of(self.titanic)

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.broker_task, self.titanic_task]

    def largest_acted_on(self) -> int:
        return max(super().largest_acted_on(), self.handler.largest)

    def check_invariants(self) -> None:
        self._check_answers()
        self._check_storage()

    def _check_answers(self) -> None:
        """Each answer is 9/TSP's, and (before any disruption) the one its request is owed."""
        for service, answers in self.answers.items():
            for answer in answers:
                assert answer and len(answer[0]) == 3, (service, answer)
                if service == T_REQUEST and answer[0] == OK:
                    assert len(answer) == 2 and is_uuid(answer[1]), answer
                elif service == T_REPLY and answer[0] == OK:
                    pass  # the stored reply
                else:
                    assert len(answer) == 1 and answer[0] in (OK, PENDING, UNKNOWN_UUID, ERROR)
        if self.disrupted:
            return
        for service in self.answers:
            sent = [body for s, body in self.sent if s == service]
            answers = [a for a in self.answers[service] if not self._is_probe(service, a)]
            assert len(answers) == len(sent), (service, len(answers), len(sent))
            for body, answer in zip(sent, answers, strict=True):
                allowed = expected_answers(service, body)
                if tsp_verdict(service, body) is Verdict.VALID and answer[0] == OK:
                    continue  # a UUID, a stored reply, or a close
                assert answer in allowed, (service, body, answer)

    def _is_probe(self, service: bytes, answer: list[bytes]) -> bool:
        return service == T_REPLY and answer == [OK, b"good", b"fuzz-probe-body"]

    def _check_storage(self) -> None:
        """Only the storage directory was written to, and it holds what the bounds allow."""
        assert os.listdir(self.root) == ["store"], os.listdir(self.root)
        # Where the hostile names point (../../../../../../tmp/titanic-escape...).
        assert not list(Path(tempfile.gettempdir()).glob("titanic-esc*"))
        names = sorted(os.listdir(self.store))
        requests = [n for n in names if n.endswith(".req")]
        replies = [n for n in names if n.endswith(".rep")]
        assert len(requests) + len(replies) == len(names), names  # no leftover, no stray
        assert len(requests) == self.titanic.stored <= self.max_requests, names
        assert {n[:-4] for n in replies} <= {n[:-4] for n in requests}, names
        for name in names:
            stem = name[:-4]
            assert len(stem) == 32 and set(stem.encode()) <= set(b"0123456789abcdef"), name
            bound = LIMIT if name.endswith(".req") else MAX_REPLY_BYTES
            assert (self.store / name).stat().st_size <= bound + 1024, name


def judge_for_small_titanic(frames: tuple[bytes, ...]) -> Judgement:
    """As :func:`judge_for_titanic`; a valid titanic.request may meet max_requests."""
    judgement = judge_for_titanic(frames)
    if forwarded(frames) == T_REQUEST and judgement.verdict is Verdict.VALID:
        return Judgement(Verdict.VALID, refusable=True)
    return judgement


class SmallTitanicServer(TitanicServer):
    """Titanic with room for 3 requests (the probe takes one): past it, 500, counted
    in over_limit; the well-behaved client, refused, closes what the hostile one
    stored (as an operator would, from the directory) and asks again."""

    name = "titanic-small"
    default_share = 0.3
    max_requests = 3
    faces: ClassVar[Mapping[str, Face]] = {
        "client": Face(
            protocol_messages(client_template, TOKENS, keep=not_a_worker),
            judge_for_small_titanic,
        )
    }

    def refused(self) -> int:
        return self.titanic.stats.over_limit

    async def serve_check(self) -> None:
        try:
            await super().serve_check()
            return
        except AssertionError as exc:
            refused = exc.__cause__
            if not (isinstance(refused, TitanicError) and refused.status == ERROR):
                raise
            assert self.titanic.stored >= self.max_requests, refused
        await self._answered()  # what is still on its way takes room too
        # The operator's way: what is on disk (answers lost with a dropped connection
        # never told the hostile client some of the UUIDs).
        for name in sorted(os.listdir(self.store)):
            stem = name[:-4].encode()
            if name.endswith(".req") and stem != self.probe_uuid:
                await self.client.close_request(stem)
        await super().serve_check()


# Not bugs found: inputs every run covers (a service name and a UUID that would leave
# the directory if used as paths; a request over the broker's limit after them).
TITANIC_EXAMPLES = [
    case(
        ("client", [b"", MDPC01, T_REQUEST, b"../x", b"body"]),
        ("client", [b"", MDPC01, T_CLOSE, b"../../../../../../tmp/titanic-esc"]),
        ("client", [b"", MDPC01, T_REQUEST, GOOD_SERVICE, big(b"order-1")]),
    ),
]

test_titanic_survives_and_counts_bad_input, test_titanic_long_run = fuzz_tests(
    (TitanicServer, TITANIC_EXAMPLES),
    (SmallTitanicServer, []),
)


# -- the dispatcher facing a hostile worker -----------------------------------------------

HOSTILE_SERVICE = b"fuzz.hostile.service"
READY, REQUEST, REPLY, HEARTBEAT_CMD, DISCONNECT = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"

worker_actions = st.one_of(
    st.tuples(st.just("reply"), st.lists(frame_values(TOKENS), min_size=1, max_size=3)),
    st.tuples(st.just("twice"), st.lists(frame_values(TOKENS), min_size=1, max_size=3)),
    st.tuples(st.just("late"), st.lists(frame_values(TOKENS), min_size=1, max_size=3)),
    st.tuples(st.just("big"), st.just([b"{big}"])),
    st.tuples(st.just("silent"), st.just([])),
    st.tuples(st.just("no-body"), st.just([])),
    st.tuples(st.just("other-client"), st.lists(frame_values(TOKENS), min_size=1, max_size=2)),
    st.tuples(st.just("disconnect"), st.just([])),
)
"""What the hostile worker does with each request it gets: answer it (once, twice, too
late for the dispatcher), answer over Titanic's reply bound, never, with no body, for
another client address, or DISCONNECT."""


def _body(frames: Sequence[bytes]) -> list[bytes]:
    return [b"\x00" * (MAX_REPLY_BYTES + 1) if f == b"{big}" else f for f in frames]


def run_hostile_worker(seed: int, actions: list[tuple[str, list[bytes]]], requests: int) -> None:
    """Titanic dispatches ``requests`` requests to a hostile worker that does
    ``actions`` in turn (then answers ``[b"last"]``): Titanic keeps running, stores for
    each request only a reply the worker gave to *that* request (or 500 past its
    bound), within the storage bounds, and still serves a well-behaved request."""
    sim = Simulation(seed=seed)
    root = Path(tempfile.mkdtemp(prefix="tk-fuzz-titanic-worker-"))
    given_replies: dict[bytes, list[list[bytes]]] = {}  # request body -> replies sent

    async def hostile_worker(endpoint: str) -> None:
        node = sim.node("hostile")
        with node.dealer(connect=endpoint) as sock:
            await sock.send([b"", MDPW01, READY, HOSTILE_SERVICE])
            todo = list(actions)
            beat_at = sim.now
            while True:
                if sim.now >= beat_at:
                    await sock.send([b"", MDPW01, HEARTBEAT_CMD])
                    beat_at = sim.now + HEARTBEAT
                try:
                    msg = await sock.recv(timeout=max(beat_at - sim.now, 0.001))
                except Timeout:
                    continue
                if msg[1:3] == [MDPW01, DISCONNECT]:
                    await sock.send([b"", MDPW01, READY, HOSTILE_SERVICE])
                    continue
                if msg[1:3] != [MDPW01, REQUEST]:
                    continue
                client, body = msg[3], msg[5:]
                how, frames = todo.pop(0) if todo else ("reply", [b"last"])
                reply = [b"", MDPW01, REPLY, client, b"", *_body(frames)]
                if how in ("reply", "twice", "big", "late"):
                    given_replies.setdefault(body[0], []).append(_body(frames))
                if how == "late":
                    await asyncio.sleep(1.0)  # past the dispatcher's request_timeout
                if how in ("reply", "twice", "big", "late"):
                    await sock.send(reply)
                if how == "twice":
                    await sock.send([*reply[:-1], b"second"])
                elif how == "no-body":
                    await sock.send([b"", MDPW01, REPLY, client, b""])
                elif how == "other-client":
                    await sock.send([b"", MDPW01, REPLY, client + b"x", b"", *frames])
                elif how == "disconnect":
                    await sock.send([b"", MDPW01, DISCONNECT])
                    await sock.send([b"", MDPW01, READY, HOSTILE_SERVICE])

    async def main() -> None:
        broker = MajordomoBroker(sim.node("broker"), "tcp://*:5555", heartbeat_interval=HEARTBEAT)
        endpoint = "tcp://broker:5555"
        broker.bind()
        sim.node("broker").spawn(broker.run())
        titanic = Titanic(
            sim.node("titanic"),
            endpoint,
            root / "store",
            dispatch_interval=0.1,
            request_timeout=0.5,
            heartbeat_interval=HEARTBEAT,
            max_reply_bytes=MAX_REPLY_BYTES,
            fsync=False,
        )
        running = sim.node("titanic").spawn(titanic.run())
        sim.node("hostile").spawn(hostile_worker(endpoint))
        good = sim.node("worker")
        good.spawn(
            MajordomoWorker(good, endpoint, GOOD_SERVICE, heartbeat_interval=HEARTBEAT).serve(
                lambda body: [b"good", *body]
            )
        )
        cli = sim.node("cli")
        async with TitanicClient(cli, endpoint, timeout=0.5, attempts=8) as client:
            uuids = {}
            for n in range(requests):
                body = b"request-%d" % n
                uuids[body] = await client.request(HOSTILE_SERVICE, [body])
            good_uuid = await client.request(GOOD_SERVICE, [b"order-1"])
            await asyncio.sleep(2.0 + 1.2 * len(actions))
            assert not running.done(), running
            assert await client.reply(good_uuid) == [b"good", b"order-1"]
            for body, uuid in uuids.items():
                try:
                    reply = await client.reply(uuid)
                except TitanicError as exc:
                    assert exc.status == ERROR, exc
                    given = given_replies.get(body, [])
                    assert any(message_bytes(r) > MAX_REPLY_BYTES for r in given), (body, given)
                    continue
                if reply is not None:
                    assert reply in given_replies.get(body, []), (body, reply, given_replies)
        names = os.listdir(root)
        assert names == ["store"], names
        for name in os.listdir(root / "store"):
            assert name.endswith((".req", ".rep")), name
            if name.endswith(".rep"):
                assert (root / "store" / name).stat().st_size <= MAX_REPLY_BYTES + 1024
        titanic.stop()
        broker.stop()

    try:
        sim.run(main(), timeout=600.0)
    finally:
        shutil.rmtree(root, ignore_errors=True)


hostile_worker_plans = st.tuples(
    st.integers(0, 2**16), st.lists(worker_actions, min_size=1, max_size=6), st.integers(1, 4)
)

# Not a bug found: a worker that answers twice, too late and over the bound, every run.
WORKER_EXAMPLES: list[tuple[int, list[tuple[str, list[bytes]]], int]] = [
    (0, [("twice", [b"first"]), ("late", [b"late"]), ("big", [b"{big}"])], 3),
]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=hostile_worker_plans)
@example(plan=WORKER_EXAMPLES[0])
def test_titanic_dispatcher_facing_a_hostile_worker(
    plan: tuple[int, list[tuple[str, list[bytes]]], int],
) -> None:
    run_hostile_worker(*plan)


@pytest.mark.slow
@SLOW_TIMEOUT
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=hostile_worker_plans)
def test_titanic_dispatcher_facing_a_hostile_worker_long_run(
    plan: tuple[int, list[tuple[str, list[bytes]]], int],
) -> None:
    run_hostile_worker(*plan)


# -- the client facing a hostile broker (or Titanic) --------------------------------------

STATUSES = [OK, PENDING, UNKNOWN_UUID, ERROR, b"200 OK", b"400 no such", b"2000", b"20"]
STATUSES += [b"600", b"", b"+20", b"200\n", b"\xd9\xa2\xd9\xa0\xd9\xa0", b"300 later"]


@st.composite
def hostile_answers(draw: st.DrawFn) -> list[bytes]:
    """What a hostile broker answers a TitanicClient's REQ: a TSP answer with an odd
    status or body, or an MDP reply that is wrong (header, service, length)."""
    header = draw(st.sampled_from([MDPC01, MDPC01, MDPC01, b"MDPC02", b""]))
    service = draw(st.sampled_from([b"{service}", b"{service}", b"{service}", b"echo"]))
    status = draw(st.sampled_from(STATUSES))
    body = draw(
        st.lists(st.sampled_from([b"0123456789abcdef" * 2, b"A" * 32, b"x" * 32, b""]), max_size=2)
    )
    return [header, service, status, *body][: draw(st.integers(1, 5))]


def status_code(frame: bytes) -> bytes | None:
    """9/TSP: three digits, optionally a space and text; the code, or None."""
    if len(frame) < 3 or not all(48 <= c <= 57 for c in frame[:3]):
        return None
    if len(frame) > 3 and frame[3:4] != b" ":
        return None
    return frame[:3]


def run_titanic_client(seed: int, calls: list[tuple[str, list[bytes]]]) -> None:
    sim = Simulation(seed=seed)
    broker, cli = sim.node("broker"), sim.node("cli")

    async def main() -> None:
        with broker.router(bind="tcp://*:5555") as router:
            async with TitanicClient(cli, "tcp://broker:5555", timeout=0.5, attempts=1) as client:
                for method, template in calls:
                    service = {"request": T_REQUEST, "reply": T_REPLY, "close": T_CLOSE}[method]
                    answer = [service if f == b"{service}" else f for f in template]
                    if method == "request":
                        call = client.request(b"echo", [b"body"])
                    elif method == "reply":
                        call = client.reply(b"0" * 32)
                    else:
                        call = client.close_request(b"0" * 32)
                    task = asyncio.ensure_future(call)
                    msg = await router.recv(timeout=1.0)
                    assert msg[1:4] == [b"", MDPC01, service], msg
                    await router.send([msg[0], b"", *answer])
                    outcome: object
                    try:
                        outcome = await task
                    except (TitanicError, ProtocolError) as exc:
                        outcome = exc
                    expected = _expected_outcome(method, service, answer)
                    if isinstance(expected, type):
                        assert isinstance(outcome, expected), (answer, outcome)
                    elif isinstance(expected, bytes) and isinstance(outcome, TitanicError):
                        assert outcome.status == expected, (answer, outcome)
                    else:
                        assert outcome == expected, (answer, outcome, expected)

    sim.run(main(), timeout=60.0)


def _expected_outcome(method: str, service: bytes, answer: list[bytes]) -> object:
    """What 9/TSP makes of ``answer``: a result, a TitanicError's status, or ProtocolError."""
    if len(answer) < 3 or answer[0] != MDPC01 or answer[1] != service:
        return ProtocolError
    code, rest = status_code(answer[2]), answer[3:]
    if code in (UNKNOWN_UUID, ERROR):
        return code
    if code == OK:
        if method == "request":
            return rest[0] if len(rest) == 1 and is_uuid(rest[0]) else ProtocolError
        return rest if method == "reply" else None
    if code == PENDING and method == "reply":
        return None
    return ProtocolError


titanic_client_plans = st.tuples(
    st.integers(0, 2**16),
    st.lists(
        st.tuples(st.sampled_from(["request", "reply", "close"]), hostile_answers()),
        min_size=1,
        max_size=8,
    ),
)

# Shrunk inputs of bugs found (fixed since): they run first, every time.
# b"2000" is no 9/TSP status (three digits, then a space and text or nothing), yet
# the client read its first three characters and took it for 200.
TITANIC_CLIENT_BUGS = [(0, [("close", [MDPC01, b"{service}", b"2000"])])]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=titanic_client_plans)
@example(plan=TITANIC_CLIENT_BUGS[0])
def test_titanic_client_facing_a_hostile_broker(
    plan: tuple[int, list[tuple[str, list[bytes]]]],
) -> None:
    run_titanic_client(*plan)


@pytest.mark.slow
@SLOW_TIMEOUT
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=titanic_client_plans)
def test_titanic_client_facing_a_hostile_broker_long_run(
    plan: tuple[int, list[tuple[str, list[bytes]]]],
) -> None:
    run_titanic_client(*plan)
