"""The risk server never dies of a request, bounds what a peer can make it hold, and
keeps serving well-behaved clients after bad ones."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Sequence

import pytest
from conftest import System
from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit import Message, Network, SocketOptions, Timeout
from transportkit.patterns import serve_lazy_pirate
from transportkit.patterns.lazy_pirate import EMPTY_ANSWER, ServeStats
from transportkit.scenario._components import COMPONENTS, RiskServerParams
from transportkit.scenario._context import RunContext
from transportkit.scenario._metrics import Metrics
from transportkit.sim_backend import Node, Simulation
from transportkit.trading import (
    INVALID_ORDER_PREFIX,
    MALFORMED_ORDER,
    NOTIONAL_LIMIT_EXCEEDED,
    REQUEST_TOO_LARGE,
    RISK_CHECK_FAILED,
    SIDE_BUY,
    SIDE_SELL,
    SYMBOL_TOO_LONG,
    Order,
    ReliableRiskClient,
    RiskBook,
    RiskClient,
    RiskLimits,
    RiskServerStats,
    ValidationResult,
    judge,
    risk_handler,
    risk_server_options,
    run_risk_example,
    serve_risk,
)

LIMITS = RiskLimits(capital=1e6)
MIB = 1 << 20
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def buy(order_id: str, symbol: str = "AAPL") -> Order:
    return Order(id=order_id, symbol=symbol, side=SIDE_BUY, quantity=1, price=10.0)


def encoded(order: Order) -> bytes:
    return order.SerializeToString()


# --- judge: any frames in, one counted verdict out ---------------------------------------

NASTY_FRAMES = [
    b"",  # an empty Order
    b"\x0a\x02\xff\xfe",  # id that is not UTF-8
    b"\x12\x03\xef\xbc\xa1",  # symbol U+FF21 (full-width A)
    b"\x0b" * 200 + b"\x0c" * 200,  # groups nested deeper than the parser allows
    b"\xff" * 11,  # a varint longer than ten bytes
    b"\x0a\xff\xff\xff\xff\x0f",  # a length far past the end
    b"\x20" + b"\xff" * 9 + b"\x01",  # quantity = uint64 max, i.e. int64 -1
    b"\x20" + b"\x80" * 9 + b"\x01",  # quantity = int64 min
    b"\x29" + b"\x00" * 7 + b"\x80",  # price = -0.0
    b"\x29" + b"\x00" * 6 + b"\xf8\x7f",  # price = NaN
    b"\x29" + b"\x01" + b"\x00" * 7,  # price = the smallest subnormal
    b"\x18\xff\xff\xff\xff\x07",  # side = int32 max
    b"\x2a\x00",  # price with the wrong wire type
]

garbage_orders = st.builds(
    Order,
    id=st.text(max_size=70),
    symbol=st.text(max_size=40),
    side=st.integers(-(2**31), 2**31 - 1),
    quantity=st.integers(INT64_MIN, INT64_MAX),
    price=st.floats(),
    client_id=st.text(max_size=20),
    timestamp_ns=st.integers(0, 2**64 - 1),
).map(encoded)
mutated = st.tuples(garbage_orders, st.binary(max_size=8), st.integers(0, 100)).map(
    lambda t: (t[0] + t[1])[: t[2]] if t[2] < len(t[0]) else t[0] + t[1]
)
plausible_orders = st.builds(
    Order,
    id=st.sampled_from(["o1", "o2"]),
    symbol=st.sampled_from(["AAPL", "MSFT"]),
    side=st.sampled_from([SIDE_BUY, SIDE_SELL]),
    quantity=st.integers(1, 2000),
    price=st.floats(0.01, 2000.0),
).map(encoded)
frames = st.one_of(
    st.sampled_from(NASTY_FRAMES), st.binary(max_size=80), garbage_orders, mutated, plausible_orders
)
requests = st.one_of(frames.map(lambda frame: [frame]), st.lists(frames, max_size=6))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(requests, max_size=12),
    st.sampled_from([None, 40, MIB]),
)
def test_judge_answers_every_request_and_counts_it(
    sequence: list[list[bytes]], limit: int | None
) -> None:
    book = RiskBook(LIMITS)
    stats = RiskServerStats()
    for request in sequence:
        result = judge(book, request, stats, max_message_bytes=limit)
        assert ValidationResult.FromString(result.SerializeToString()) == result
        size = sum(map(len, request))
        if limit is not None and size > limit:
            assert result.reason == REQUEST_TOO_LARGE and not result.order_id
        elif len(request) != 1:
            assert result.reason == MALFORMED_ORDER and not result.order_id
        if result.approved:
            assert not result.reason
    assert stats.requests == len(sequence) == stats.approved + stats.rejected
    assert stats.approved == book.approved
    kinds = stats.malformed + stats.over_limit + stats.invalid + stats.handler_errors
    assert kinds <= stats.rejected
    assert stats.invalid == sum(
        n for reason, n in book.rejections.items() if reason.startswith(INVALID_ORDER_PREFIX)
    )
    assert math.isfinite(book.available_capital)
    assert 0 <= book.available_capital <= LIMITS.max_capital


def test_judge_refuses_a_request_over_the_limit_without_decoding_it() -> None:
    book = RiskBook(LIMITS)
    stats = RiskServerStats()
    # A valid order, padded with an unknown field to 2 MiB.
    big = encoded(buy("big")) + b"\x7a" + b"\x80\x80\x80\x01" + b"x" * (2 * MIB)
    result = judge(book, [big], stats)
    assert (result.approved, result.reason, result.order_id) == (False, REQUEST_TOO_LARGE, "")
    assert stats.over_limit == 1 and stats.rejected == 1
    assert book.approved == 0 and not book.rejections  # the book never saw it
    many = [b""] * 100_000 + [b"x" * (MIB + 1)]  # one byte over, in 100,001 frames
    assert judge(book, many, stats).reason == REQUEST_TOO_LARGE
    assert judge(book, [encoded(buy("ok"))], stats).approved
    assert (stats.requests, stats.over_limit, stats.approved) == (3, 2, 1)


def test_judge_counts_many_and_empty_frames_as_malformed() -> None:
    book = RiskBook(LIMITS)
    stats = RiskServerStats()
    for request in ([], [b"", b""], [encoded(buy("x"))] * 10_000):
        assert judge(book, request, stats).reason == MALFORMED_ORDER
    result = judge(book, [b""], stats)  # one empty frame is an empty Order
    assert result.reason == INVALID_ORDER_PREFIX + "missing id"
    assert (stats.malformed, stats.invalid, stats.rejected) == (3, 1, 4)


def test_a_book_that_raises_refuses_the_order_and_is_counted() -> None:
    class BrokenBook(RiskBook):
        def validate(self, order: Order) -> ValidationResult:
            raise ArithmeticError("bug")

    stats = RiskServerStats()
    result = judge(BrokenBook(LIMITS), [encoded(buy("o1"))], stats)
    assert (result.approved, result.reason, result.order_id) == (False, RISK_CHECK_FAILED, "o1")
    assert (stats.handler_errors, stats.rejected, stats.requests) == (1, 1, 1)


def test_a_parser_that_raises_something_else_than_decode_error_is_a_malformed_request() -> None:
    # The pure-Python protobuf parser raises UnicodeDecodeError on a string field that is
    # not UTF-8 (the C parser raises DecodeError); it runs in a child process, where
    # protobuf can be told to use it.
    script = textwrap.dedent(
        """
        from google.protobuf.internal import api_implementation
        from transportkit.trading import RiskBook, RiskLimits, RiskServerStats, judge
        from transportkit.trading._pb.trading_pb2 import Order

        assert api_implementation.Type() == "python", api_implementation.Type()
        try:
            Order().ParseFromString(b"\\x0a\\x02\\xff\\xfe")
        except UnicodeDecodeError:
            pass
        else:
            raise AssertionError("the pure-Python parser no longer raises UnicodeDecodeError")
        stats = RiskServerStats()
        result = judge(RiskBook(RiskLimits(capital=1.0)), [b"\\x0a\\x02\\xff\\xfe"], stats)
        print(result.reason, stats.malformed, stats.requests)
        """
    )
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [*MALFORMED_ORDER.split(), "1", "1"]


def test_bounds_are_checked() -> None:
    book = RiskBook(LIMITS)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_message_bytes"):
            risk_handler(book, max_message_bytes=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_message_bytes"):
            risk_server_options(max_message_bytes=bad)  # type: ignore[arg-type]
    assert risk_server_options().maxmsgsize == MIB
    assert risk_server_options(max_message_bytes=None).maxmsgsize == -1
    assert risk_server_options(SocketOptions(maxmsgsize=10)).maxmsgsize == 10
    assert risk_server_options(SocketOptions(rcvhwm=5)).rcvhwm == 5


def test_serve_risk_checks_its_bound_before_serving() -> None:
    sim = Simulation()

    async def main() -> None:
        with (
            sim.node("risk").worker(bind="tcp://*:5555") as rep,
            pytest.raises(ValueError, match="max_message_bytes"),
        ):
            await serve_risk(rep, RiskBook(LIMITS), max_message_bytes=0)

    sim.run(main(), timeout=5)


# --- end to end: bad peers are answered and counted; the next client is served ---------

BAD_REQUESTS: list[list[bytes]] = [
    [b""],  # an empty Order: invalid (missing id)
    [b"", b"", b""],  # malformed: three frames
    [b"x"] * 1000,  # malformed: a thousand frames
    [b"\xff" * (100 * 1024)],  # over the 64 KiB limit
    [b"\x0a\x02\xff\xfe"],  # malformed: the id is not UTF-8
    [encoded(buy("h", symbol="S" * 50_000))],  # invalid: a 50 kB symbol
    [encoded(Order(id="h", symbol="AAPL", side=SIDE_SELL, quantity=2, price=1.7e308))],
    [encoded(Order(id="h", symbol="AAPL", side=99, quantity=-1, price=math.nan))],  # type: ignore[arg-type]
]


def test_risk_server_survives_bad_requests_and_serves_the_next_client(system: System) -> None:
    endpoint = system.endpoint()
    book = RiskBook(LIMITS)
    stats = RiskServerStats()

    async def body(nets: Sequence[Network]) -> list[ValidationResult]:
        with nets[0].worker() as worker, nets[1].requester() as hostile:
            resolved = worker.bind(endpoint)
            hostile.connect(resolved)
            server = asyncio.create_task(
                serve_risk(
                    worker,
                    book,
                    stats=stats,
                    max_requests=len(BAD_REQUESTS) + 1,
                    max_message_bytes=64 * 1024,
                )
            )
            verdicts = []
            for request in BAD_REQUESTS:
                reply = await hostile.request(request, timeout=2)
                assert len(reply) == 1
                verdicts.append(ValidationResult.FromString(reply[0]))
            with nets[2].requester(connect=resolved) as requester:
                verdicts.append(await RiskClient(requester).validate(buy("good"), timeout=2))
            await asyncio.wait_for(server, 2)
            return verdicts

    verdicts = system.run(body, ["risk", "mallory", "desk"])
    assert [v.approved for v in verdicts] == [False] * len(BAD_REQUESTS) + [True]
    assert [v.reason for v in verdicts[3:7]] == [
        REQUEST_TOO_LARGE,
        MALFORMED_ORDER,
        SYMBOL_TOO_LONG,
        NOTIONAL_LIMIT_EXCEEDED,
    ]
    assert (stats.requests, stats.approved, stats.rejected) == (9, 1, 8)
    assert (stats.malformed, stats.over_limit, stats.invalid, stats.handler_errors) == (3, 1, 3, 0)
    assert book.positions == {"AAPL": 1} and book.available_capital == 1e6 - 10.0


@pytest.mark.parametrize("bounded_socket", [True, False])
def test_lazy_pirate_risk_server_survives_bad_requests(bounded_socket: bool) -> None:
    sim = Simulation(seed=3)
    book = RiskBook(LIMITS)
    stats = RiskServerStats()
    serving = ServeStats()
    options = risk_server_options() if bounded_socket else SocketOptions()

    async def risk(node: Node) -> None:
        with node.worker(bind="tcp://*:5555", options=options) as rep:
            await serve_lazy_pirate(rep, risk_handler(book, stats=stats), stats=serving)

    sim.node("risk", main=risk)
    mallory = sim.node("mallory")
    client = ReliableRiskClient(sim.node("desk"), "tcp://risk:5555", timeout=0.5, attempts=2)

    async def main() -> tuple[list[Message], bool, ValidationResult]:
        await asyncio.sleep(0.01)
        replies = []
        with mallory.requester(connect="tcp://risk:5555") as req:
            for body in ([b"1"], [b"\xff\xff"], [b"a", b"b"], [encoded(buy("x"))] * 50):
                replies.append(await req.request(body, timeout=1))
        with mallory.requester(connect="tcp://risk:5555") as req:
            try:
                huge = await req.request([b"\x00" * (2 * MIB)], timeout=1)
                answered = huge == [EMPTY_ANSWER]
            except Timeout:
                answered = False
        verdict = await client.validate(buy("good"))
        client.close()
        return replies, answered, verdict

    replies, huge_answered, verdict = sim.run(main(), timeout=30)
    for reply in replies:  # the plain wire format: the verdict is the only frame
        assert len(reply) == 1
        assert ValidationResult.FromString(reply[0]).reason == MALFORMED_ORDER
    assert verdict.approved and verdict.order_id == "good"
    # With maxmsgsize the socket drops the 2 MiB request before the server sees it (no
    # reply); without, the Lazy Pirate loop refuses it before the handler sees it.
    assert huge_answered is not bounded_socket
    assert serving.over_limit == (0 if bounded_socket else 1)
    assert stats.malformed == 4 and stats.over_limit == 0
    assert stats.approved == 1


def test_the_scenario_risk_server_socket_drops_oversized_requests() -> None:
    sim = Simulation(seed=5)
    ctx = RunContext(metrics=Metrics(), duration=1.0, seed=5)
    params = RiskServerParams(
        bind="tcp://*:5555",
        capital=1e6,
        max_position=1000,
        service_us=0.0,
        options=SocketOptions(),
    )

    async def risk(node: Node) -> None:
        await COMPONENTS["risk_server"].run(node, "risk", params, ctx)

    sim.node("risk", main=risk)
    client = ReliableRiskClient(sim.node("desk"), "tcp://risk:5555", timeout=0.5, attempts=2)

    async def main() -> tuple[bool, ValidationResult]:
        await asyncio.sleep(0.01)
        with sim.node("mallory").requester(connect="tcp://risk:5555") as req:
            try:
                await req.request([b"1", b"\x00" * (2 * MIB)], timeout=1)
                answered = True
            except Timeout:
                answered = False
        verdict = await client.validate(buy("good"))
        client.close()
        return answered, verdict

    answered, verdict = sim.run(main(), timeout=30)
    assert not answered and verdict.approved
    assert ctx.objects["risk"].approved == 1


def test_run_risk_example_bounds_its_server_socket() -> None:
    big = Order(id="big", symbol="AAPL", side=SIDE_BUY, quantity=1, price=1.0, client_id="c" * 300)

    def run(max_message_bytes: int | None) -> ValidationResult:
        sim = Simulation(seed=2)
        summary = sim.run(
            run_risk_example(
                sim.node("exchange"),
                sim.node("trader"),
                "tcp://exchange:5555",
                [big],
                timeout=0.5,
                max_message_bytes=max_message_bytes,
            ),
            timeout=10,
        )
        return summary.results[0]

    assert run(None).approved
    assert run(1000).approved
    with pytest.raises(Timeout):  # dropped by the socket's maxmsgsize, never answered
        run(256)


def test_zmq_inproc_over_limit_request_is_a_rejection_of_that_order() -> None:
    # libzmq does not apply maxmsgsize over inproc: the server's own check answers.
    from transportkit.zmq_backend import ZmqNetwork  # noqa: PLC0415

    big = Order(id="big", symbol="AAPL", side=SIDE_BUY, quantity=1, price=1.0, client_id="c" * 300)
    with ZmqNetwork() as net:
        summary = asyncio.run(
            asyncio.wait_for(
                run_risk_example(
                    net, net, "inproc://risk-limit", [big], timeout=2.0, max_message_bytes=256
                ),
                10,
            )
        )
    (result,) = summary.results
    assert (result.order_id, result.approved, result.reason) == ("big", False, REQUEST_TOO_LARGE)
