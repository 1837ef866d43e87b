"""Fuzz the risk server (serve_risk on REP, and risk_handler behind serve_lazy_pirate).

serve_lazy_pirate is fuzzed in its opt-in sequenced wire format, the one with an
envelope to get wrong; its plain default hands the request to risk_handler as
serve_risk's REP loop does.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from _fuzz_helpers import (
    INVALID,
    LIMIT,
    NUMBERS,
    TIMEOUT,
    VALID,
    Face,
    Judgement,
    Server,
    bad_input_of,
    big,
    case,
    fuzz_tests,
    protocol_messages,
)
from google.protobuf.message import DecodeError
from hypothesis import strategies as st

from transportkit import ServiceUnavailableError, Timeout
from transportkit.patterns import LazyPirateClient, LazyPirateWire, serve_lazy_pirate
from transportkit.patterns.lazy_pirate import ServeStats
from transportkit.trading._pb.trading_pb2 import SIDE_SELL, Order, ValidationResult
from transportkit.trading._risk import (
    RiskBook,
    RiskClient,
    RiskLimits,
    RiskServerStats,
    risk_handler,
    serve_risk,
    verdict_for,
)

pytestmark = TIMEOUT

LIMITS = RiskLimits(capital=1_000_000.0, max_position={"AAPL": 500}, default_max_position=1000)
GOOD_ORDER = Order(id="well-behaved-1", symbol="GOOD", side=SIDE_SELL, quantity=1, price=1.0)
PROBE_ID = "fuzz-probe-order"
PROBE_ORDER = Order(id=PROBE_ID, symbol="PROBE", side=SIDE_SELL, quantity=1, price=1.0)
PROBE_SEQUENCE = b"4242424242"


@st.composite
def orders(draw: st.DrawFn) -> bytes:
    """An Order whose fields take odd values: out-of-range sides, zero, negative and
    huge quantities, NaN, infinite, negative, denormal and huge prices."""
    order = Order(
        id=draw(st.sampled_from(["o-1", "o-2", "", "\u00e9"])),
        symbol=draw(st.sampled_from(["AAPL", "MSFT", "", "X" * 40])),
        side=draw(st.sampled_from([1, 2, 0, 3, 99, -1])),
        quantity=draw(st.sampled_from([1, 10, 500, 1000, 1001, 0, -1, 2**31, 2**63 - 1, -(2**63)])),
        price=draw(
            st.sampled_from(
                [187.2, 1.0, 0.0, -1.0, 5e-324, 1e308, 1.7976931348623157e308, math.nan, math.inf]
            )
        ),
    )
    data: bytes = order.SerializeToString()
    return data


OVERSIZED_ID = "oversized-order"
oversized_order = st.integers(1, 64).map(
    lambda extra: Order(
        id=OVERSIZED_ID, symbol="X" * (LIMIT + extra), side=SIDE_SELL, quantity=1, price=1.0
    ).SerializeToString()
)
# A valid order, sometimes one larger than the servers' message limit.
order_request = st.one_of(orders(), orders(), orders(), oversized_order).map(lambda data: [data])
TOKENS = [b"\x08", b"\x0a\x03o-1", b"\x07", b"\x00", b"\x80", b"\xff\xff\xff\xff", *NUMBERS]


def decodes(data: bytes) -> bool:
    """Whether ``data`` is a valid encoding of an Order (protobuf's own judgement)."""
    try:
        Order.FromString(data)
    except DecodeError:
        return False
    return True


def judge_order_request(frames: Sequence[bytes]) -> Judgement:
    """The risk protocol: a request is exactly one frame, an encoded Order."""
    return VALID if len(frames) == 1 and decodes(frames[0]) else INVALID


def judge_lazy_pirate_request(frames: tuple[bytes, ...]) -> Judgement:
    """Sequenced Lazy Pirate's ``[sequence, *body]``: a sequence number (1 to 20 ASCII
    digits), then a body that must be the risk protocol's."""
    if not frames or not (0 < len(frames[0]) <= 20 and frames[0].isdigit()):
        return INVALID
    return judge_order_request(frames[1:])


class Risk(Server):
    """A risk server on a REP socket; the hostile peer is a DEALER (it adds the empty
    delimiter a REQ would), whose replies come back in order: the probe order's verdict
    is the barrier."""

    task: asyncio.Task[Any]

    def book_setup(self) -> None:
        self.book = RiskBook(LIMITS)
        self.stats = RiskServerStats()
        self.rep = self.server_net.worker(bind=self.h.bind_endpoint())
        self.closing(self.rep.close)
        self.endpoint = self.rep.last_endpoint
        self.hostile = self.peer(self.hostile_net.dealer(connect=self.endpoint), "hostile DEALER")
        self.judged: set[str] = set()

    def verdict(self, msg: Sequence[bytes]) -> ValidationResult | None:
        """The ValidationResult in a reply to the hostile DEALER, if it decodes."""
        raise NotImplementedError

    def probe(self) -> list[bytes]:
        raise NotImplementedError

    def _seen(self, msg: Sequence[bytes]) -> None:
        result = self.verdict(msg)
        if result is not None:
            self.judged.add(result.order_id)

    async def _probe(self) -> None:
        await self.hostile.wait_for(
            lambda msg: (result := self.verdict(msg)) is not None and result.order_id == PROBE_ID,
            self.timing.barrier,
            "the probe order's verdict",
            resend=lambda: self.hostile.send(self.probe()),
            every=self.timing.resend,
            seen=self._seen,
        )

    async def barrier(self) -> None:
        await self._probe()

    def bad_input(self) -> int | None:
        return bad_input_of(self.stats)

    def server_tasks(self) -> list[asyncio.Task[Any]]:
        return [self.task]

    def check_invariants(self) -> None:
        if OVERSIZED_ID in self.judged:
            raise AssertionError(f"{self.name}: judged an order larger than {LIMIT} bytes")
        capital = self.book.available_capital
        if not math.isfinite(capital):
            raise AssertionError(f"{self.name}: the risk book's capital became {capital}")
        for symbol, position in self.book.positions.items():
            limit = LIMITS.max_position_for(symbol)
            if abs(position) > limit:
                raise AssertionError(f"{self.name}: position {position} in {symbol!r} > {limit}")


def parse_result(frame: bytes) -> ValidationResult | None:
    try:
        return ValidationResult.FromString(frame)
    except DecodeError:
        return None


class RiskRepServer(Risk):
    name = "risk-rep"
    faces: ClassVar[Mapping[str, Face]] = {
        "dealer": Face(
            protocol_messages(order_request, TOKENS), judge_order_request, maxmsgsize=False
        )
    }

    async def start(self) -> None:
        self.book_setup()
        self.task = self.spawn(serve_risk(self.rep, self.book, stats=self.stats), "serve_risk")
        await self._probe()

    def verdict(self, msg: Sequence[bytes]) -> ValidationResult | None:
        return parse_result(msg[1]) if len(msg) == 2 and msg[0] == b"" else None

    def probe(self) -> list[bytes]:
        return [b"", PROBE_ORDER.SerializeToString()]

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        await self.hostile.send([b"", *frames])

    async def serve_check(self) -> None:
        with self.good_net.requester(connect=self.endpoint) as req:
            try:
                result = await RiskClient(req).validate(GOOD_ORDER, timeout=2.0)
            except Timeout as exc:
                raise AssertionError(f"{self.name}: no verdict for a well-formed order") from exc
        assert result.approved and result.order_id == GOOD_ORDER.id, result


lazy_pirate_request = st.builds(
    lambda sequence, body: [sequence, *body],
    st.sampled_from([b"1", b"2", b"", b" 3", b"+3"]),
    order_request,
)


class RiskLazyPirateServer(Risk):
    name = "risk-lazy-pirate"
    faces: ClassVar[Mapping[str, Face]] = {
        "dealer": Face(
            protocol_messages(lazy_pirate_request, TOKENS),
            judge_lazy_pirate_request,
            maxmsgsize=False,
        )
    }

    async def start(self) -> None:
        self.book_setup()
        handler = risk_handler(self.book, stats=self.stats)
        self.serving = ServeStats()
        self.task = self.spawn(
            serve_lazy_pirate(self.rep, handler, stats=self.serving, wire=LazyPirateWire.SEQUENCED),
            "serve_lazy_pirate",
        )
        await self._probe()

    def verdict(self, msg: Sequence[bytes]) -> ValidationResult | None:
        return parse_result(msg[2]) if len(msg) == 3 and msg[0] == b"" else None

    def probe(self) -> list[bytes]:
        return [b"", PROBE_SEQUENCE, PROBE_ORDER.SerializeToString()]

    def bad_input(self) -> int | None:
        # A request without a sequence frame never reaches risk_handler: it is counted
        # by the Lazy Pirate loop.
        return bad_input_of(self.stats) + self.serving.malformed

    async def send(self, face: str, frames: Sequence[bytes]) -> None:
        await self.hostile.send([b"", *frames])

    async def serve_check(self) -> None:
        client = LazyPirateClient(
            self.good_net, self.endpoint, timeout=0.5, attempts=4, wire=LazyPirateWire.SEQUENCED
        )
        self.closing(client.close)
        try:
            result = verdict_for(GOOD_ORDER, await client.request([GOOD_ORDER.SerializeToString()]))
        except ServiceUnavailableError as exc:
            raise AssertionError(f"{self.name}: no verdict for a well-formed order") from exc
        assert result.approved and result.order_id == GOOD_ORDER.id, result


# Shrunk inputs of bugs found on the code these tests were first written against (all
# fixed since): they run first on every run, so a regression fails for certain.
BIG_ORDER = Order(
    id=OVERSIZED_ID, symbol="X" * (LIMIT + 1), side=SIDE_SELL, quantity=1, price=1.0
).SerializeToString()
HUGE_SELL = Order(
    id="o-1", symbol="MSFT", side=SIDE_SELL, quantity=1000, price=1.7976931348623157e308
).SerializeToString()
REP_BUGS = [case(("dealer", [BIG_ORDER])), case(("dealer", [HUGE_SELL]))]
LAZY_PIRATE_BUGS = [
    case(("dealer", [b"1", BIG_ORDER])),
    case(("dealer", [big(b"1"), HUGE_SELL])),  # the sequence frame is echoed
    case(("dealer", [b"1", HUGE_SELL])),
]


test_risk_server_survives_and_counts_bad_input, test_risk_server_long_run = fuzz_tests(
    (RiskRepServer, REP_BUGS),
    (RiskLazyPirateServer, LAZY_PIRATE_BUGS),
)
