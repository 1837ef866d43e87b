"""Machinery shared by the fuzz tests of the server loops (not a conftest).

Each server loop has one small adapter (a :class:`Server` subclass): how to start it on
a harness, which raw sockets the hostile peer uses (its *faces*, each with generated
messages and a classifier), how a well-behaved peer checks that it still works, how to
wait until it has processed what the hostile peer sent (a *barrier*), and where its
bad-input counters are. Everything else is here: the generated input, the peers, a
handler that fails on request, and the runner, which checks after each sequence that

- every server task is still running (not finished, not failed);
- a well-behaved peer is served within a bounded time;
- the bad input was counted: each message that an independent classifier, written
  from the protocol's specification, calls certainly invalid is counted (on the faces
  the barrier covers, up to the first message that may legitimately end that face's
  conversation), and the count never rises by more than the number of messages sent
  that are not certainly valid (oversized ones may always be counted; valid ones that
  a documented bound refuses, such as a second snapshot request from a client whose
  first is still being sent, are counted apart: :meth:`Server.refused`);
- nothing larger than the servers' default message limit was acted on (handed to a
  handler, forwarded, answered or applied), and the adapter's own invariants hold.

Oversized messages never have to be counted: once servers bound message size, the
transport may drop them before the server sees them. Where the server's socket on a
face binds with ``maxmsgsize`` (:attr:`Face.maxmsgsize`), libzmq drops a frame over it
together with the connection, and what is in flight behind it is lost; the simulator
models the same. The rest of that face's sequence is then not required to be counted
either.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import enum
import math
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

import pytest
from hypothesis import (
    HealthCheck,
    Phase,
    currently_in_test_context,
    example,
    given,
    note,
    settings,
)
from hypothesis import strategies as st

from transportkit import Frame, Message, Network, Receiver, Sender, Timeout
from transportkit.patterns._limits import DEFAULT_MAX_MESSAGE_BYTES, message_bytes
from transportkit.testing import Harness, SimHarness, ZmqHarness

T = TypeVar("T")

LIMIT: Final[int] = DEFAULT_MAX_MESSAGE_BYTES
"""The message size every server pattern refuses beyond, by default (1 MiB)."""

BAD_INPUT_COUNTERS: Final = ("malformed", "over_limit", "handler_errors")
"""Counters of bad input, with the meanings ``transportkit.patterns._limits`` gives them."""

OLDER_BAD_INPUT_COUNTERS: Final = ("bad_requests", "bad_states", "bad_messages")
"""Server-specific counters of bad input, read only where a server has no ``malformed``
(where it has, ``malformed`` already counts what they count)."""

HOSTILE_RCVHWM: Final = 10
"""The receive HWM of a hostile DEALER, which reads nothing until the barrier."""


# -- what the oracle says about a message -------------------------------------------------


class Verdict(enum.Enum):
    """What a protocol's specification says about one message (not what the code does)."""

    VALID = "valid"
    """It follows the protocol: it is never counted as bad input."""
    INVALID = "invalid"
    """It certainly breaks the protocol, or makes the handler fail: it must be counted."""
    UNKNOWN = "unknown"
    """The specification leaves it open, or the outcome depends on history."""


@dataclass(frozen=True, slots=True)
class Judgement:
    """A classifier's answer about one message.

    Attributes:
        verdict: What the specification says.
        disruptive: The message may legitimately end the conversation on its face, so
            later messages there may never be read.
        deferred: The message is judged after it is read (a request queued for a
            handler), so a disruptive message after it may legitimately void it too.
        refusable: A documented bound of the server (one snapshot per client at a
            time, a full queue) may refuse the message although it follows the
            protocol; the server then counts it (``over_limit``) in
            :meth:`Server.refused` as well.
    """

    verdict: Verdict
    disruptive: bool = False
    deferred: bool = False
    refusable: bool = False


VALID: Final = Judgement(Verdict.VALID)
INVALID: Final = Judgement(Verdict.INVALID)
UNKNOWN: Final = Judgement(Verdict.UNKNOWN)


def _short(frame: bytes) -> str:
    return f"<{len(frame)} bytes {frame[:8]!r}...>" if len(frame) > 48 else repr(frame)


@dataclass(frozen=True, slots=True)
class Sent:
    """One generated message: the frames the hostile peer sends on ``face``."""

    face: str
    frames: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"{self.face}:[{', '.join(_short(f) for f in self.frames)}]"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # Hypothesis's printer: oversized frames stay short


@dataclass(frozen=True, slots=True)
class Case:
    """One example: a simulation seed and the hostile peer's messages, in order."""

    seed: int
    messages: tuple[Sent, ...]

    def __repr__(self) -> str:
        lines = ",\n    ".join(repr(m) for m in self.messages)
        return f"Case(seed={self.seed}, messages=[\n    {lines}])"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def case(*messages: tuple[str, Sequence[bytes]]) -> Case:
    """An explicit example: ``case(("dealer", [b"", b"MDPC01"]), ...)``, seed 0."""
    return Case(0, tuple(Sent(face, tuple(frames)) for face, frames in messages))


def big(prefix: bytes = b"") -> bytes:
    """A frame one byte over :data:`LIMIT`, starting with ``prefix``."""
    return prefix + b"\x00" * (LIMIT + 1 - len(prefix))


# -- generated input ----------------------------------------------------------------------

ROUTING_IDS: Final = (b"\x00\x80\x00\x00\x29", b"\x00k\x8bEg", b"hostile-fe", b"\x00")
"""Frames that look like routing ids (libzmq's generated ones start with a zero byte)."""

NUMBERS: Final = (
    b"3",
    b" 3",
    b"+3",
    b"0_3",
    b"03",
    b"3 ",
    b"3\n",
    b"-3",
    b"-0",
    b"0x3",
    b"3.0",
    b"1e3",
    b"nan",
    b"9" * 30,
    b"\xd9\xa3",  # ARABIC-INDIC DIGIT THREE in UTF-8
)
"""Numbers in odd spellings (what ``int()`` accepts and the protocols do not)."""

SEQUENCES: Final = (
    (0).to_bytes(8, "big"),
    (1).to_bytes(8, "big"),
    (2**63).to_bytes(8, "big"),
    (2**64 - 1).to_bytes(8, "big"),  # -1 in two's complement
    b"\x00" * 7,
    b"\x00" * 9,
)
"""Sequence-number frames: huge, "negative", and of the wrong width."""

TOKENS: Final = (
    b"",
    b"\x00",
    b"\x01",
    b"\x02",
    b"\x03",
    b"\x04",
    b"\x05",
    b"\xff",
    *ROUTING_IDS,
    *NUMBERS,
    *SEQUENCES,
    b"count=5\n",
    b"count=abc\n",
    b"=\n",
    b"\xff\xfe",
    b"RAISE",
    b"NOTMSG",
    b"EMPTY",
)
"""Interesting frames that every protocol's generator mixes in."""


def frame_values(tokens: Sequence[bytes] = ()) -> st.SearchStrategy[bytes]:
    """One frame: a protocol token, a generic interesting frame, or arbitrary bytes."""
    choices: list[st.SearchStrategy[bytes]] = [st.sampled_from(TOKENS), st.binary(max_size=24)]
    if tokens:
        choices.insert(0, st.sampled_from(list(tokens)))
    return st.one_of(choices)


def arbitrary_messages(tokens: Sequence[bytes] = ()) -> st.SearchStrategy[list[bytes]]:
    """A message of one to six frames of anything."""
    return st.lists(frame_values(tokens), min_size=1, max_size=6)


_MUTATIONS: Final = (
    "replace",
    "delete",
    "insert",
    "truncate",
    "duplicate",
    "swap",
    "cut-frame",
    "grow-frame",
    "flip-byte",
    "append",
)


@st.composite
def mutated(
    draw: st.DrawFn, template: st.SearchStrategy[list[bytes]], tokens: Sequence[bytes] = ()
) -> list[bytes]:
    """A valid message with one to three mutations: frames replaced, removed, added,
    repeated or swapped, the message truncated, a frame cut short, grown or with a byte
    flipped."""
    frames = list(draw(template))
    values = frame_values(tokens)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(_MUTATIONS))
        i = draw(st.integers(0, max(len(frames) - 1, 0)))
        if not frames:
            frames = [draw(values)]
        elif op == "replace":
            frames[i] = draw(values)
        elif op == "delete":
            del frames[i]
        elif op == "insert":
            frames.insert(i, draw(values))
        elif op == "truncate":
            frames = frames[:i]
        elif op == "duplicate":
            frames.insert(i, frames[i])
        elif op == "swap":
            j = draw(st.integers(0, len(frames) - 1))
            frames[i], frames[j] = frames[j], frames[i]
        elif op == "cut-frame":
            frames[i] = frames[i][: draw(st.integers(0, max(len(frames[i]) - 1, 0)))]
        elif op == "grow-frame":
            frames[i] = frames[i] + draw(st.binary(min_size=1, max_size=8))
        elif op == "flip-byte" and frames[i]:
            k = draw(st.integers(0, len(frames[i]) - 1))
            flipped = frames[i][k] ^ draw(st.integers(1, 255))
            frames[i] = frames[i][:k] + bytes([flipped]) + frames[i][k + 1 :]
        elif op == "append":
            frames.append(draw(values))
    return frames or [b""]


@st.composite
def oversized(draw: st.DrawFn, template: st.SearchStrategy[list[bytes]]) -> list[bytes]:
    """A valid message made larger than :data:`LIMIT`: its last frame (the payload, in
    most protocols) or another one grown past it, or two frames added that are each
    below it."""
    frames = list(draw(template))
    extra = draw(st.integers(1, 64))
    how = draw(st.sampled_from(["last", "any", "split"]))
    if how == "split":
        frames += [b"\x00" * (LIMIT // 2 + extra)] * 2
    else:
        i = len(frames) - 1 if how == "last" else draw(st.integers(0, len(frames) - 1))
        frames[i] = frames[i] + b"\x00" * (LIMIT + extra)
    return frames


def protocol_messages(
    template: st.SearchStrategy[list[bytes]],
    tokens: Sequence[bytes] = (),
    *,
    keep: Callable[[list[bytes]], bool] | None = None,
) -> st.SearchStrategy[tuple[bytes, ...]]:
    """Messages for one face: valid ones, mutated ones (twice as often), arbitrary ones
    and oversized ones.

    Args:
        template: Valid messages of the face's protocol.
        tokens: The protocol's own interesting frames (headers, commands).
        keep: Drop generated messages for which this is False (and draw again).
    """

    @st.composite
    def one(draw: st.DrawFn) -> tuple[bytes, ...]:
        kind = draw(st.sampled_from(["valid", "mutated", "mutated", "arbitrary", "oversized"]))
        if kind == "valid":
            frames = draw(template)
        elif kind == "mutated":
            frames = draw(mutated(template, tokens))
        elif kind == "arbitrary":
            frames = draw(arbitrary_messages(tokens))
        else:
            frames = draw(oversized(template))
        return tuple(frames)

    messages = one()
    return messages if keep is None else messages.filter(lambda m: keep(list(m)))


def cases(
    faces: Mapping[str, st.SearchStrategy[tuple[bytes, ...]]], *, max_messages: int
) -> st.SearchStrategy[Case]:
    """A seed and a sequence of one to ``max_messages`` messages (uniformly: Hypothesis's
    own list sizes favour short lists), each on some face."""

    def on(face: str) -> st.SearchStrategy[Sent]:
        return faces[face].map(lambda frames: Sent(face, frames))

    sent = st.one_of([on(face) for face in sorted(faces)])
    sequences = st.integers(1, max_messages).flatmap(
        lambda n: st.lists(sent, min_size=n, max_size=n)
    )
    return st.builds(
        lambda seed, messages: Case(seed, tuple(messages)), st.integers(0, 2**16), sequences
    )


def body_frames(tokens: Sequence[bytes] = ()) -> st.SearchStrategy[list[bytes]]:
    """A request body of one to three frames, often starting with a handler trigger."""
    first = st.one_of(
        st.sampled_from([b"order-1", b"RAISE", b"NOTMSG", b"EMPTY", b""]),
        frame_values(tokens),
    )
    return st.builds(lambda f, rest: [f, *rest], first, st.lists(frame_values(tokens), max_size=2))


# -- handlers -----------------------------------------------------------------------------


class HandlerFailure(Exception):
    """What the fuzz handler raises for a request whose body starts with ``RAISE``."""


class FuzzHandler:
    """A request handler (a plain function) that fails on request.

    A body whose first frame starts with ``RAISE`` makes it raise, ``NOTMSG`` makes it
    return a string (not a message), ``EMPTY`` makes it return an empty list; any other
    body is answered ``[b"ok", *body]``. It remembers the largest body it was given.
    """

    def __init__(self) -> None:
        self.largest = 0

    def __call__(self, body: Message) -> Sequence[Frame]:
        self.largest = max(self.largest, message_bytes(body))
        first = body[0] if body else b""
        if first.startswith(b"RAISE"):
            raise HandlerFailure(f"the fuzz handler was asked to fail ({len(body)} frames)")
        if first.startswith(b"NOTMSG"):
            return "not a message"  # a str is a Sequence, but not of frames
        if first.startswith(b"EMPTY"):
            return []
        return [b"ok", *body]


def handler_verdict(body: Sequence[bytes]) -> Judgement:
    """The verdict on a well-formed request whose body a :class:`FuzzHandler` gets."""
    first = body[0] if body else b""
    if first.startswith((b"RAISE", b"NOTMSG")):
        return INVALID  # a handler error: it must be counted
    if first.startswith(b"EMPTY") or not body:
        return UNKNOWN  # an empty reply or request: an error, or an empty body
    return VALID


class GoodHandler:
    """The well-behaved workers' handler: ``[b"good", *body]``; remembers the largest."""

    def __init__(self) -> None:
        self.largest = 0

    def __call__(self, body: Message) -> Sequence[Frame]:
        self.largest = max(self.largest, message_bytes(body))
        return [b"good", *body]


# -- peers --------------------------------------------------------------------------------


class Peer:
    """A raw socket of a test peer that remembers the largest message it received.

    Every wait is bounded; running out of time is an AssertionError saying what was
    awaited.
    """

    def __init__(self, sock: Any, name: str) -> None:
        self.sock = sock
        self.name = name
        self.largest = 0

    def _got(self, msg: Message) -> Message:
        self.largest = max(self.largest, message_bytes(msg))
        return msg

    async def send(self, frames: Sequence[bytes], timeout: float = 5.0) -> None:
        """Send, waiting at most ``timeout`` seconds (a DEALER at its HWM blocks)."""
        sender: Sender = self.sock
        try:
            # Not asyncio.wait_for: on Python 3.11 it can swallow a cancellation.
            async with asyncio.timeout(timeout):
                await sender.send(list(frames))
        except TimeoutError as exc:
            raise AssertionError(f"{self.name}: a send blocked for {timeout} s") from exc

    async def recv(self, timeout: float) -> Message | None:
        """The next message, or None after ``timeout`` seconds."""
        receiver: Receiver = self.sock
        try:
            return self._got(await receiver.recv(timeout=max(timeout, 0.0)))
        except Timeout:
            return None

    async def drain(self, quiet: float) -> int:
        """Read until nothing came for ``quiet`` seconds; return how many were read."""
        receiver: Receiver = self.sock
        count = 0
        while True:
            while (msg := receiver.try_recv()) is not None:
                self._got(msg)
                count += 1
            if await self.recv(quiet) is None:
                return count
            count += 1

    async def wait_for(
        self,
        predicate: Callable[[Message], bool],
        timeout: float,
        what: str,
        *,
        resend: Callable[[], Awaitable[None]] | None = None,
        every: float = math.inf,
        seen: Callable[[Message], None] | None = None,
    ) -> Message:
        """Read until a message satisfies ``predicate``, and return it.

        Args:
            predicate: What the awaited message satisfies.
            timeout: Seconds to give up after (AssertionError naming ``what``).
            what: What is awaited, for the error.
            resend: Called first and then every ``every`` seconds (an idempotent probe,
                which a full pipe may have dropped).
            every: Seconds between calls of ``resend``.
            seen: Called with every message read (the awaited one included).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_resend = loop.time() if resend is not None else math.inf
        while True:
            now = loop.time()
            if resend is not None and now >= next_resend:
                await resend()
                next_resend = now + every
            if now >= deadline:
                raise AssertionError(f"{self.name}: no {what} within {timeout} s")
            msg = await self.recv(min(deadline, next_resend) - now)
            if msg is None:
                continue
            if seen is not None:
                seen(msg)
            if predicate(msg):
                return msg


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until ``check()`` holds (polled every 5 ms); AssertionError after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() >= deadline:
            raise AssertionError(f"{what}: still false after {timeout} s")
        await asyncio.sleep(0.005)


async def bounded(awaitable: Awaitable[T], timeout: float, what: str) -> T:
    """``await awaitable`` for at most ``timeout`` seconds; AssertionError naming ``what``."""
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError as exc:
        raise AssertionError(f"{what}: not done within {timeout} s") from exc


def bad_input_of(source: object) -> int:
    """The sum of the bad-input counters of ``source`` (or of its ``stats``)."""
    stats = getattr(source, "stats", source)
    names = BAD_INPUT_COUNTERS if hasattr(stats, "malformed") else OLDER_BAD_INPUT_COUNTERS
    total = 0
    for name in names:
        value = getattr(stats, name, 0)
        if isinstance(value, int) and not isinstance(value, bool):
            total += value
    return total


# -- adapters -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timing:
    """The time bounds of one backend (virtual seconds on the sim, real ones on zmq).

    Attributes:
        serve: Bound on the well-behaved peer's check.
        barrier: Bound on the wait until the hostile messages are processed.
        resend: Seconds between repeats of an idempotent probe.
        quiet: Silence that ends a drain.
        settle: In virtual time, a pause after which everything sent was processed.
        step: Bound on the answer to one lockstep message.
    """

    serve: float
    barrier: float
    resend: float
    quiet: float
    settle: float
    step: float


SIM_TIMING: Final = Timing(serve=4.0, barrier=6.0, resend=0.5, quiet=0.05, settle=0.05, step=1.0)
ZMQ_TIMING: Final = Timing(serve=4.0, barrier=6.0, resend=0.1, quiet=0.05, settle=0.3, step=1.0)


@dataclass(frozen=True, slots=True)
class Face:
    """One way the hostile peer reaches the server: its generated messages and the
    classifier that judges each of them by the protocol's specification."""

    messages: st.SearchStrategy[tuple[bytes, ...]]
    judge: Callable[[tuple[bytes, ...]], Judgement]
    maxmsgsize: bool = True
    """The server's socket on this face binds with ``maxmsgsize`` (:data:`LIMIT`): over
    tcp and ipc (and in the simulator) a frame larger than that drops the hostile peer's
    connection with everything sent behind it. False where the server's socket connects
    (it gets no ``maxmsgsize``, so an oversized message arrives and is refused in
    process)."""


class Server(abc.ABC):
    """An adapter: one server loop with its hostile and well-behaved peers, for one
    example. Subclasses set :attr:`name` and :attr:`faces` and fill in the rest."""

    name: ClassVar[str]
    faces: ClassVar[Mapping[str, Face]]

    default_share: ClassVar[float] = 1.0
    """The share of the default suite's examples this server gets (a slow one, less)."""

    held_bound: int | None = None
    """Sim only: at most this many messages may wait for the silent hostile peer (the
    barrier's drain sets :attr:`held`)."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness
        self.sim = harness.virtual_time
        self.timing = SIM_TIMING if self.sim else ZMQ_TIMING
        self.server_net: Network = harness.network("server")
        self.hostile_net: Network = harness.network("hostile")
        self.good_net: Network = harness.network("good")
        self.tasks: list[asyncio.Task[Any]] = []
        self.peers: list[Peer] = []
        self._closers: list[Callable[[], object]] = []
        self.held = 0
        # Messages the adapter sent besides the generated ones that the server may
        # count (or a bound refuse): probes that may break a lockstep or meet a bound,
        # warm-up messages still in flight when the count is first read.
        self.extra_sends = 0

    # -- each adapter's own -----------------------------------------------------------

    @abc.abstractmethod
    async def start(self) -> None:
        """Start the server and the peers; return once the hostile peer reaches it."""

    @abc.abstractmethod
    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        """Send one generated message on ``face``."""

    @abc.abstractmethod
    async def serve_check(self) -> None:
        """The well-behaved peer is served correctly (AssertionError otherwise)."""

    @abc.abstractmethod
    async def barrier(self) -> None:
        """Return once every hostile message on :meth:`exact_faces` was processed."""

    @abc.abstractmethod
    def bad_input(self) -> int | None:
        """The server's bad-input count (None: it keeps none)."""

    @abc.abstractmethod
    def server_tasks(self) -> list[asyncio.Task[Any]]:
        """The tasks of the server loop (they must still be running at the end)."""

    def exact_faces(self) -> set[str]:
        """The faces whose messages the barrier covers (default: all)."""
        return set(self.faces)

    @classmethod
    def judgements(cls, messages: Sequence[Sent]) -> list[Judgement]:
        """Each message's judgement, in order. By default each face's classifier judges
        each message alone; an adapter overrides this where the protocol makes a
        message's verdict depend on what came before it."""
        return [cls.faces[m.face].judge(m.frames) for m in messages]

    def refused(self) -> int:
        """How many messages that follow the protocol a documented bound refused (they
        are in :meth:`bad_input` too, as ``over_limit``); 0 where no bound can refuse a
        valid message of the hostile peer's."""
        return 0

    def largest_acted_on(self) -> int:
        """The largest message the server handed on, forwarded, answered or applied."""
        return max((peer.largest for peer in self.peers), default=0)

    def check_invariants(self) -> None:  # noqa: B027 (most adapters have none)
        """The adapter's own invariants (AssertionError when one breaks)."""

    # -- shared -----------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in a task that :meth:`close` cancels."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.name}.{name}")
        self.tasks.append(task)
        return task

    def closing(self, close: Callable[[], object]) -> None:
        """Call ``close`` (awaiting what it returns) in :meth:`close`, last in first."""
        self._closers.append(close)

    def peer(self, sock: Any, name: str) -> Peer:
        """Wrap ``sock`` as a :class:`Peer`; :meth:`close` closes the socket."""
        peer = Peer(sock, name)
        self.peers.append(peer)
        self.closing(sock.close)
        return peer

    async def close(self) -> None:
        """Close everything and cancel the tasks, whatever happened."""
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                result = close()
                if asyncio.iscoroutine(result):
                    async with asyncio.timeout(5.0):
                        await result
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def check_running(self, when: str) -> None:
        """Every server task is still running (AssertionError saying how one ended)."""
        for task in self.server_tasks():
            if not task.done():
                continue
            if task.cancelled():
                how = "was cancelled"
            elif task.exception() is not None:
                how = f"failed: {task.exception()!r}"
            else:
                how = f"returned {task.result()!r}"
            raise AssertionError(f"{self.name}: the server task {how} ({when})")


# -- the runner ---------------------------------------------------------------------------


def _note(text: str) -> None:
    if currently_in_test_context():
        note(text)


def expected_counts(server: Server, messages: Sequence[Sent]) -> tuple[int, int, list[Verdict]]:
    """How many of ``messages`` the server must count as bad, how many it may count (all
    but the valid ones that are not oversized: a bound counts those), and the verdicts.

    Valid messages that a bound may refuse (:attr:`Judgement.refusable`) are not among
    those it may count: the runner takes :meth:`Server.refused` off the count first.
    """
    exact = server.exact_faces()
    counting = {face: face in exact for face in server.faces}
    must = dict.fromkeys(server.faces, 0)
    deferred = dict.fromkeys(server.faces, 0)
    judgements = server.judgements(messages)
    for m, judgement in zip(messages, judgements, strict=True):
        frame_too_large = any(len(f) > LIMIT for f in m.frames)
        disruptive = judgement.disruptive or (frame_too_large and server.faces[m.face].maxmsgsize)
        if disruptive:
            # What was queued for a handler may never be handled, even after the
            # face's window closed (it may have been read before this message).
            deferred[m.face] = 0
        if (
            counting[m.face]
            and judgement.verdict is Verdict.INVALID
            and message_bytes(m.frames) <= LIMIT
        ):
            if judgement.deferred:
                deferred[m.face] += 1
            else:
                must[m.face] += 1
        if disruptive:
            counting[m.face] = False
    may = sum(
        j.verdict is not Verdict.VALID or message_bytes(m.frames) > LIMIT
        for m, j in zip(messages, judgements, strict=True)
    )
    return sum(must.values()) + sum(deferred.values()), may, [j.verdict for j in judgements]


def refusable_count(server: Server, messages: Sequence[Sent]) -> int:
    """How many of ``messages`` a documented bound may refuse although they are valid."""
    return sum(j.refusable for j in server.judgements(messages))


async def _step(server: Server, step: Awaitable[None], timeout: float, what: str) -> None:
    """Run one bounded step; a server task that ends meanwhile fails it at once."""
    work = asyncio.ensure_future(bounded(step, timeout, f"{server.name}: {what}"))
    try:
        await asyncio.wait([work, *server.server_tasks()], return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not work.done():
            work.cancel()
        await asyncio.gather(work, return_exceptions=True)
    server.check_running(f"during {what}")
    work.result()


async def scenario(cls: type[Server], harness: Harness, plan: Case) -> None:
    """One example: start, send the hostile messages, check everything, close."""
    server = cls(harness)
    timing = server.timing
    try:
        await bounded(server.start(), timing.serve, f"{cls.name}: starting")
        before = server.bad_input()
        refused_before = server.refused()
        for m in plan.messages:
            await server.send(m.face, m.frames)
        await _step(server, server.serve_check(), timing.serve, "the well-behaved peer's check")
        await _step(server, server.barrier(), timing.barrier, "the barrier")
        after = server.bad_input()
        must, may, verdicts = expected_counts(server, plan.messages)
        may += server.extra_sends
        _note(f"verdicts: {[v.value for v in verdicts]}")
        if before is None or after is None:
            if must:
                raise AssertionError(
                    f"{cls.name}: {must} certainly invalid message(s), and the server keeps "
                    "no bad-input count"
                )
        else:
            counted = after - before
            refused = server.refused() - refused_before
            refusable = refusable_count(server, plan.messages) + server.extra_sends
            _note(
                f"counted {counted} ({refused} valid ones refused by a bound), must count "
                f"{must}, may count {may} (and refuse {refusable})"
            )
            if counted < must:
                raise AssertionError(
                    f"{cls.name}: counted {counted} bad message(s), but {must} of those sent "
                    "are certainly invalid"
                )
            if refused > refusable:
                raise AssertionError(
                    f"{cls.name}: a bound refused {refused} valid message(s), but only "
                    f"{refusable} of those sent may be refused"
                )
            if counted - refused > may:
                besides = f" besides {refused} valid one(s) a bound refused" if refused else ""
                raise AssertionError(
                    f"{cls.name}: counted {counted - refused} bad message(s){besides}, but "
                    f"only {may} of those sent are not valid"
                )
        largest = server.largest_acted_on()
        if largest > LIMIT:
            raise AssertionError(
                f"{cls.name}: acted on a {largest}-byte message (limit {LIMIT} bytes)"
            )
        if server.sim and server.held_bound is not None and server.held > server.held_bound:
            raise AssertionError(
                f"{cls.name}: {server.held} messages waited for one silent peer "
                f"(bound {server.held_bound})"
            )
        server.check_invariants()
    finally:
        await server.close()


def run_case(cls: type[Server], backend: str, plan: Case) -> str | None:
    """Run one example on ``backend`` (a seeded simulation, or real sockets), and close
    everything afterwards; return the simulation's trace hash (None on zmq)."""
    harness: Harness = (
        SimHarness(plan.seed, shuffle_ties=True) if backend == "sim" else ZmqHarness()
    )
    try:
        harness.run(scenario(cls, harness, plan), timeout=60.0 if backend == "sim" else 30.0)
    finally:
        harness.close()
    return harness.sim.trace.hash if isinstance(harness, SimHarness) else None


@dataclass(frozen=True, slots=True)
class Budget:
    """How much one fuzz test generates: examples, and messages at most per example."""

    examples: int
    messages: int


DEFAULT_BUDGET: Final = {"sim": Budget(examples=30, messages=24), "zmq": Budget(4, 16)}
"""The default suite's budget per server and backend, on top of the explicit examples
(times :attr:`Server.default_share`)."""

SLOW_BUDGET: Final = {"sim": Budget(examples=100, messages=40), "zmq": Budget(70, 40)}
"""The slow run's budget per server and backend: about 1700 and 1000 messages."""


def fuzz(
    cls: type[Server], backend: str, *, slow: bool = False, examples: Sequence[Case] = ()
) -> None:
    """Fuzz ``cls``'s server loop on ``backend`` with Hypothesis.

    ``examples`` run first, every time (shrunk inputs of bugs found before). The default
    suite does not shrink, to stay fast; the slow run does.
    """
    budget = (SLOW_BUDGET if slow else DEFAULT_BUDGET)[backend]
    share = 1.0 if slow else cls.default_share
    faces = {name: face.messages for name, face in cls.faces.items()}

    @settings(
        max_examples=max(1, round(budget.examples * share)),
        deadline=None,
        phases=tuple(Phase) if slow else (Phase.explicit, Phase.reuse, Phase.generate),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(plan=cases(faces, max_messages=budget.messages))
    def run(plan: Case) -> None:
        run_case(cls, backend, plan)

    for explicit in reversed(examples):
        run = example(plan=explicit)(run)
    # One database entry per server, backend and budget (the function is the same).
    run._hypothesis_internal_add_digest = f"{cls.name}/{backend}/{slow}".encode()  # type: ignore[attr-defined]
    run()


# A run that spins without advancing virtual time cannot be stopped from within: and
# pytest-timeout's signal fires once, which Hypothesis takes for one example's failure
# before it runs (and shrinks) the next. So these tests time out with a thread, which
# ends the process: a lost run, never a hung one.
TIMEOUT: Final = pytest.mark.timeout(60, method="thread")
"""The default suite's fuzz tests' timeout (each takes seconds)."""

SLOW_TIMEOUT: Final = pytest.mark.timeout(900, method="thread")
"""The slow run's timeout."""


BACKENDS: Final = ("sim", "zmq")
"""Every fuzz test runs on both backends."""


def fuzz_tests(
    *servers: tuple[type[Server], Sequence[Case]],
) -> tuple[Callable[..., None], Callable[..., None]]:
    """A test file's two tests of its servers, each on both backends: the default
    suite's and the slow run's (assign them to ``test_...`` names to collect them).

    Each server's cases (shrunk inputs of bugs found before) run first, every time.
    """
    names = ("server", "examples", "backend_name")
    params = [
        pytest.param(cls, tuple(examples), backend, id=f"{cls.name}-{backend}")
        for cls, examples in servers
        for backend in BACKENDS
    ]

    @pytest.mark.parametrize(names, params)
    def survives_and_counts_bad_input(
        server: type[Server], examples: Sequence[Case], backend_name: str
    ) -> None:
        fuzz(server, backend_name, examples=examples)

    @pytest.mark.slow
    @SLOW_TIMEOUT
    @pytest.mark.parametrize(names, params)
    def long_run(server: type[Server], examples: Sequence[Case], backend_name: str) -> None:
        fuzz(server, backend_name, slow=True, examples=examples)

    return survives_and_counts_bad_input, long_run
