"""RiskBook: the position, notional, capital and symbol checks of the risk server,
as pure logic, and the limits it holds under any sequence of orders, extreme ones included.
"""

from __future__ import annotations

import math
import pickle
import sys
from collections.abc import Mapping
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit.trading import (
    CAPITAL_LIMIT_EXCEEDED,
    DEMO_LIMITS,
    INSUFFICIENT_CAPITAL,
    INVALID_ORDER_PREFIX,
    INVALID_PRICE,
    INVALID_QUANTITY,
    INVALID_SIDE,
    INVALID_SYMBOL,
    MAX_POSITION_LIMIT,
    MISSING_ID,
    MISSING_SYMBOL,
    NOTIONAL_LIMIT_EXCEEDED,
    ORDER_ID_TOO_LONG,
    POSITION_LIMIT_EXCEEDED,
    SIDE_BUY,
    SIDE_SELL,
    SIDE_UNSPECIFIED,
    SYMBOL_LIMIT_EXCEEDED,
    SYMBOL_TOO_LONG,
    Order,
    RiskBook,
    RiskLimits,
    demo_orders,
    signed_quantity,
)

FLOAT_MAX = sys.float_info.max
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def order(symbol: str = "AAPL", side: int = SIDE_BUY, qty: int = 10, price: float = 100.0) -> Order:
    return Order(id="o1", symbol=symbol, side=side, quantity=qty, price=price)  # type: ignore[arg-type]


def test_an_order_within_limits_is_approved_and_booked() -> None:
    book = RiskBook(RiskLimits(capital=10_000.0, default_max_position=100))
    result = book.validate(order(qty=50, price=100.0))
    assert result.approved and result.reason == "" and result.order_id == "o1"
    assert book.position("AAPL") == 50
    assert book.available_capital == 5_000.0


def test_position_limit_uses_the_absolute_new_position() -> None:
    book = RiskBook(RiskLimits(capital=1e9, max_position={"AAPL": 100}))
    assert book.validate(order(qty=100)).approved
    rejected = book.validate(order(qty=1))
    assert not rejected.approved and rejected.reason == POSITION_LIMIT_EXCEEDED
    assert book.validate(order(side=SIDE_SELL, qty=200)).approved
    assert book.position("AAPL") == -100
    assert book.validate(order(side=SIDE_SELL, qty=1)).reason == POSITION_LIMIT_EXCEEDED


def test_a_buy_costing_more_than_available_capital_is_rejected() -> None:
    book = RiskBook(RiskLimits(capital=999.0))
    result = book.validate(order(qty=10, price=100.0))
    assert not result.approved and result.reason == INSUFFICIENT_CAPITAL
    assert book.position("AAPL") == 0 and book.available_capital == 999.0


def test_position_limit_is_checked_before_capital() -> None:
    book = RiskBook(RiskLimits(capital=0.0, default_max_position=5))
    assert book.validate(order(qty=10)).reason == POSITION_LIMIT_EXCEEDED


def test_sells_credit_their_proceeds() -> None:
    book = RiskBook(RiskLimits(capital=0.0))
    assert book.validate(order(side=SIDE_SELL, qty=10, price=50.0)).approved
    assert book.available_capital == 500.0
    assert book.validate(order(side=SIDE_BUY, qty=10, price=50.0)).approved
    assert book.available_capital == 0.0 and book.positions == {}


def test_invalid_orders_are_rejected_with_the_reason() -> None:
    book = RiskBook(RiskLimits(capital=1e9))
    cases = {
        "missing id": Order(symbol="A", side=SIDE_BUY, quantity=1, price=1.0),
        "missing symbol": Order(id="x", side=SIDE_BUY, quantity=1, price=1.0),
        "side must be BUY or SELL": order(side=SIDE_UNSPECIFIED),
        "quantity must be positive": order(qty=-5),
        "price must be finite and positive": order(price=math.nan),
    }
    for problem, bad in cases.items():
        assert book.validate(bad).reason == f"invalid order: {problem}"
    assert book.approved == 0 and sum(book.rejections.values()) == len(cases)
    # The published reasons are these strings, unchanged (clients read them).
    assert [f"invalid order: {problem}" for problem in cases] == [
        MISSING_ID,
        MISSING_SYMBOL,
        INVALID_SIDE,
        INVALID_QUANTITY,
        INVALID_PRICE,
    ]
    assert (POSITION_LIMIT_EXCEEDED, INSUFFICIENT_CAPITAL) == (
        "Position limit exceeded",
        "Insufficient capital",
    )


def test_check_is_pure() -> None:
    book = RiskBook(RiskLimits(capital=1e6))
    assert book.check(order()) is None
    assert book.position("AAPL") == 0 and book.available_capital == 1e6


def test_demo_orders_show_every_verdict() -> None:
    book = RiskBook(DEMO_LIMITS)
    verdicts = [book.validate(o) for o in demo_orders()]
    reasons = {v.reason for v in verdicts if not v.approved}
    assert sum(v.approved for v in verdicts) == 4
    assert reasons == {
        POSITION_LIMIT_EXCEEDED,
        INSUFFICIENT_CAPITAL,
        "invalid order: quantity must be positive",
    }


# --- the issue: extreme but finite prices ----------------------------------------------


def test_two_orders_at_extreme_prices_cannot_disable_the_check() -> None:
    # Before the fix: the sell made the capital inf, the buy made it NaN, and after that
    # every order passed.
    book = RiskBook(RiskLimits(capital=1e6))
    sell = book.validate(order(side=SIDE_SELL, qty=2, price=1.7e308))
    buy = book.validate(order(side=SIDE_BUY, qty=1000, price=1.7e308))
    assert (sell.approved, sell.reason) == (False, NOTIONAL_LIMIT_EXCEEDED)
    assert (buy.approved, buy.reason) == (False, NOTIONAL_LIMIT_EXCEEDED)
    assert book.available_capital == 1e6 and book.positions == {}
    assert book.validate(order(qty=1000, price=1001.0)).reason == INSUFFICIENT_CAPITAL


def test_with_the_widest_limits_extreme_orders_still_leave_a_finite_book() -> None:
    widest = RiskLimits(
        capital=0.0,
        default_max_position=MAX_POSITION_LIMIT,
        max_order_notional=FLOAT_MAX,
        max_capital=FLOAT_MAX,
    )
    book = RiskBook(widest)
    assert book.validate(order(side=SIDE_SELL, qty=1, price=FLOAT_MAX)).approved
    assert book.available_capital == FLOAT_MAX
    more = book.validate(order(side=SIDE_SELL, qty=1, price=5e-324))
    assert more.reason == CAPITAL_LIMIT_EXCEEDED
    assert book.validate(order(qty=2, price=1.7e308)).reason == NOTIONAL_LIMIT_EXCEEDED
    assert book.validate(order(side=SIDE_BUY, qty=1, price=FLOAT_MAX)).approved
    assert book.available_capital_exact == 0 and book.positions == {}


def test_capital_does_not_drift_over_buys_and_sells_of_huge_notionals() -> None:
    # In floats, 0.1 + 1e300 - 1e300 == 0.0: the 0.1 was lost on every round trip.
    book = RiskBook(RiskLimits(capital=0.1, max_order_notional=FLOAT_MAX, max_capital=FLOAT_MAX))
    for _ in range(100):
        assert book.validate(order(side=SIDE_SELL, qty=3, price=1e300)).approved
        assert book.validate(order(side=SIDE_BUY, qty=3, price=1e300)).approved
        assert book.validate(order(side=SIDE_BUY, qty=1, price=0.01)).approved
        assert book.validate(order(side=SIDE_SELL, qty=1, price=0.01)).approved
    assert book.available_capital_exact == Fraction(0.1)
    assert book.available_capital == 0.1


def test_subnormal_prices_are_booked_exactly() -> None:
    book = RiskBook(RiskLimits(capital=1.0, default_max_position=MAX_POSITION_LIMIT))
    tiny = 5e-324
    assert book.validate(order(side=SIDE_BUY, qty=MAX_POSITION_LIMIT, price=tiny)).approved
    assert book.available_capital_exact == 1 - MAX_POSITION_LIMIT * Fraction(tiny)
    assert book.position("AAPL") == MAX_POSITION_LIMIT
    assert book.validate(order(qty=1, price=tiny)).reason == POSITION_LIMIT_EXCEEDED
    assert book.validate(order(side=SIDE_SELL, qty=MAX_POSITION_LIMIT, price=tiny)).approved
    assert book.available_capital_exact == 1 and book.positions == {}


def test_quantity_at_the_int64_extremes() -> None:
    book = RiskBook(RiskLimits(capital=1e9, default_max_position=MAX_POSITION_LIMIT))
    assert book.validate(order(qty=INT64_MIN)).reason == INVALID_QUANTITY
    # uint64 max on the wire decodes as int64 -1.
    wire = Order()
    wire.ParseFromString(b"\x20" + b"\xff" * 9 + b"\x01")
    assert wire.quantity == -1
    assert book.validate(order(qty=wire.quantity)).reason == INVALID_QUANTITY
    assert book.validate(order(qty=INT64_MAX, price=1.0)).reason == NOTIONAL_LIMIT_EXCEEDED
    assert book.validate(order(side=SIDE_SELL, qty=INT64_MAX, price=1e-300)).approved
    assert book.position("AAPL") == -INT64_MAX
    assert book.validate(order(side=SIDE_SELL, qty=1, price=1e-300)).reason == (
        POSITION_LIMIT_EXCEEDED
    )


@pytest.mark.parametrize("price", [-0.0, 0.0, -1.0, math.inf, -math.inf, math.nan])
def test_prices_that_are_not_finite_and_positive_are_rejected(price: float) -> None:
    book = RiskBook(RiskLimits(capital=1e9))
    assert book.validate(order(price=price)).reason == INVALID_PRICE
    assert book.validate(order(side=SIDE_SELL, price=price)).reason == INVALID_PRICE
    assert book.available_capital == 1e9 and book.positions == {}


def test_notional_limit_is_exact_and_applies_to_both_sides() -> None:
    book = RiskBook(RiskLimits(capital=1e6, max_order_notional=1000.0))
    assert book.validate(order(qty=10, price=100.0)).approved
    # In floats 7 * 142.85714285714286 == 1000.0, but the exact product is a little
    # above 1000: the check uses the exact one.
    assert 7 * 142.85714285714286 == 1000.0
    assert book.validate(order(qty=7, price=142.85714285714286)).reason == (NOTIONAL_LIMIT_EXCEEDED)
    assert book.validate(order(side=SIDE_SELL, qty=11, price=100.0)).reason == (
        NOTIONAL_LIMIT_EXCEEDED
    )
    assert book.validate(order(side=SIDE_SELL, qty=10, price=100.0)).approved


def test_sells_that_would_take_capital_above_its_maximum_are_rejected() -> None:
    book = RiskBook(RiskLimits(capital=900.0, max_capital=1000.0))
    assert book.validate(order(side=SIDE_SELL, qty=1, price=100.0)).approved
    assert book.validate(order(side=SIDE_SELL, qty=1, price=0.5)).reason == (CAPITAL_LIMIT_EXCEEDED)
    assert book.available_capital == 1000.0 and book.position("AAPL") == -1


def test_the_number_of_symbols_held_is_bounded() -> None:
    book = RiskBook(RiskLimits(capital=1e9, max_symbols=2))
    assert book.validate(order(symbol="A")).approved
    assert book.validate(order(symbol="B")).approved
    assert book.validate(order(symbol="C")).reason == SYMBOL_LIMIT_EXCEEDED
    assert book.validate(order(symbol="A")).approved  # adding to a held symbol is fine
    assert book.validate(order(symbol="B", side=SIDE_SELL)).approved  # B is flat again
    assert book.positions == {"A": 20}
    assert book.validate(order(symbol="C")).approved
    assert sorted(book.positions) == ["A", "C"]


@pytest.mark.parametrize(
    ("symbol", "reason"),
    [
        ("", MISSING_SYMBOL),
        ("X" * 33, SYMBOL_TOO_LONG),
        ("\uff21\uff21\uff30\uff2c", INVALID_SYMBOL),  # full-width AAPL
        ("AAPL\u200b", INVALID_SYMBOL),  # zero-width space
        ("AA PL", INVALID_SYMBOL),
        ("AAPL\n", INVALID_SYMBOL),
        ("\x00", INVALID_SYMBOL),
    ],
)
def test_symbols_are_short_printable_ascii(symbol: str, reason: str) -> None:
    book = RiskBook(RiskLimits(capital=1e9))
    assert book.validate(order(symbol=symbol)).reason == reason
    assert book.positions == {}


def test_symbols_and_ids_at_their_length_limits() -> None:
    book = RiskBook(RiskLimits(capital=1e9, max_symbol_length=4, max_order_id_length=3))
    assert book.validate(Order(id="abc", symbol="BRK.", side=SIDE_BUY, quantity=1, price=1.0))
    assert book.validate(
        Order(id="abc", symbol="BRK.B", side=SIDE_BUY, quantity=1, price=1.0)
    ).reason == (SYMBOL_TOO_LONG)
    too_long_id = Order(id="abcd", symbol="A", side=SIDE_BUY, quantity=1, price=1.0)
    assert book.validate(too_long_id).reason == ORDER_ID_TOO_LONG
    assert RiskBook(RiskLimits(capital=1e9)).validate(order_with_id("x" * 65)).reason == (
        ORDER_ID_TOO_LONG
    )
    assert RiskBook(RiskLimits(capital=1e9)).validate(order_with_id("x" * 64)).approved


def order_with_id(order_id: str) -> Order:
    return Order(id=order_id, symbol="AAPL", side=SIDE_BUY, quantity=1, price=1.0)


# --- RiskLimits refuses what it cannot enforce -----------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"capital": math.nan},
        {"capital": math.inf},
        {"capital": -1.0},
        {"capital": 10**400},
        {"capital": "1000"},
        {"capital": True},
        {"capital": 2e15},  # above the default max_capital
        {"capital": 1.0, "max_capital": 0.5},
        {"capital": 1.0, "max_order_notional": -1.0},
        {"capital": 1.0, "max_order_notional": math.nan},
        {"capital": 1.0, "max_order_notional": math.inf},
        {"capital": 1.0, "max_capital": math.inf},
        {"capital": 1.0, "default_max_position": -1},
        {"capital": 1.0, "default_max_position": 2**63},
        {"capital": 1.0, "default_max_position": 1.5},
        {"capital": 1.0, "max_position": {"AAPL": -5}},
        {"capital": 1.0, "max_position": {"AAPL": 2**63}},
        {"capital": 1.0, "max_position": {"AAPL": True}},
        {"capital": 1.0, "max_position": {"AA PL": 5}},
        {"capital": 1.0, "max_position": {"": 5}},
        {"capital": 1.0, "max_position": [("AAPL", 5)]},
        {"capital": 1.0, "max_symbols": 0},
        {"capital": 1.0, "max_symbol_length": 0},
        {"capital": 1.0, "max_order_id_length": -3},
    ],
)
def test_risk_limits_refuse_values_they_cannot_enforce(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RiskLimits(**kwargs)  # type: ignore[arg-type]


def test_risk_limits_keep_a_read_only_copy_of_the_position_limits() -> None:
    given_limits = {"AAPL": 10}
    limits = RiskLimits(capital=1.0, max_position=given_limits)
    given_limits["AAPL"] = 10**6
    assert limits.max_position_for("AAPL") == 10
    with pytest.raises(TypeError):
        limits.max_position["AAPL"] = 5  # type: ignore[index]
    assert limits == RiskLimits(capital=1.0, max_position={"AAPL": 10})
    assert pickle.loads(pickle.dumps(limits)) == limits
    assert repr(limits.max_position) == "{'AAPL': 10}"


def test_risk_limits_accept_their_extremes() -> None:
    limits = RiskLimits(
        capital=0,
        max_position={"AAPL": 0},
        default_max_position=MAX_POSITION_LIMIT,
        max_order_notional=0.0,
        max_capital=FLOAT_MAX,
    )
    book = RiskBook(limits)
    assert book.validate(order(symbol="AAPL")).reason == POSITION_LIMIT_EXCEEDED
    assert book.validate(order(symbol="MSFT")).reason == NOTIONAL_LIMIT_EXCEEDED


# --- the property: limits hold after any sequence of orders, extremes included ---------

EXTREME_QUANTITIES = [
    *(INT64_MIN, -1, 0, 1, 2, 3, 1000, 2**31 - 1, 2**31, 2**53, 2**53 + 1, 2**62),
    INT64_MAX - 1,
    INT64_MAX,
]
EXTREME_PRICES = [
    1.7e308,
    FLOAT_MAX,
    1e300,
    1e154,
    1e15,
    1e9,
    1.0,
    0.1,
    0.01,
    1e-300,
    sys.float_info.min,  # smallest normal
    math.nextafter(sys.float_info.min, 0.0),  # largest subnormal
    5e-324,  # smallest subnormal
    0.0,
    -0.0,
    -1.0,
    math.inf,
    -math.inf,
    math.nan,
]
SYMBOLS = ["AAPL", "MSFT", "GOOG", "NVDA", "\uff21\uff21\uff30\uff2c", "", "X" * 40, "A B"]

# Extremes are drawn often (sampled from the lists above), well-formed orders more often
# than the rest, so that the limits are actually reached.
well_formed_orders = st.builds(
    Order,
    id=st.just("o"),
    symbol=st.sampled_from(SYMBOLS[:4]),
    side=st.sampled_from([SIDE_BUY, SIDE_SELL]),
    quantity=st.one_of(
        st.sampled_from([q for q in EXTREME_QUANTITIES if q > 0]),
        st.integers(1, 1500),
        st.integers(1, INT64_MAX),
    ),
    price=st.one_of(
        st.sampled_from([p for p in EXTREME_PRICES if p > 0 and math.isfinite(p)]),
        st.floats(0.01, 500.0),
        st.floats(5e-324, FLOAT_MAX),
    ),
)
any_orders = st.builds(
    Order,
    id=st.sampled_from(["o", "", "i" * 65]),
    symbol=st.sampled_from(SYMBOLS),
    side=st.sampled_from([SIDE_BUY, SIDE_SELL, SIDE_UNSPECIFIED, 7]),
    quantity=st.one_of(st.sampled_from(EXTREME_QUANTITIES), st.integers(INT64_MIN, INT64_MAX)),
    price=st.one_of(st.sampled_from(EXTREME_PRICES), st.floats()),  # NaN, inf, subnormals
)
orders = st.sampled_from([False, False, False, True]).flatmap(
    lambda anything: any_orders if anything else well_formed_orders
)
limits_choices = st.sampled_from(
    [
        RiskLimits(
            capital=50_000.0, max_position={"AAPL": 300}, default_max_position=500, max_symbols=3
        ),
        RiskLimits(
            capital=0.0,
            max_position={"MSFT": 2**40},
            default_max_position=MAX_POSITION_LIMIT,
            max_order_notional=FLOAT_MAX,
            max_capital=FLOAT_MAX,
            max_symbols=2,
        ),
        RiskLimits(
            capital=0.1,
            default_max_position=10**12,
            max_order_notional=1e300,
            max_capital=1e308,
        ),
        RiskLimits(capital=1e9, default_max_position=10**6, max_order_notional=1e12),
        RiskLimits(
            capital=100.0,
            default_max_position=10**6,
            max_order_notional=FLOAT_MAX,
            max_capital=1000.0,
        ),
    ]
)


def applicable_reasons(
    limits: RiskLimits, positions: Mapping[str, int], capital: Fraction, o: Order
) -> set[str]:
    """Every check ``o`` fails, worked out afresh in exact rationals."""
    if not (
        o.id
        and len(o.id) <= limits.max_order_id_length
        and 0 < len(o.symbol) <= limits.max_symbol_length
        and all("!" <= c <= "~" for c in o.symbol)
        and o.side in (SIDE_BUY, SIDE_SELL)
        and o.quantity > 0
        and math.isfinite(o.price)
        and o.price > 0
    ):
        return {"invalid"}
    reasons = set()
    current = positions.get(o.symbol, 0)
    new = current + signed_quantity(o)
    if abs(new) > limits.max_position_for(o.symbol):
        reasons.add(POSITION_LIMIT_EXCEEDED)
    if current == 0 and new != 0 and len(positions) >= limits.max_symbols:
        reasons.add(SYMBOL_LIMIT_EXCEEDED)
    notional = o.quantity * Fraction(o.price)
    if notional > Fraction(limits.max_order_notional):
        reasons.add(NOTIONAL_LIMIT_EXCEEDED)
    if o.side == SIDE_BUY and notional > capital:
        reasons.add(INSUFFICIENT_CAPITAL)
    if o.side == SIDE_SELL and capital + notional > Fraction(limits.max_capital):
        reasons.add(CAPITAL_LIMIT_EXCEEDED)
    return reasons


def check_limits_hold(limits: RiskLimits, sequence: list[Order]) -> None:
    book = RiskBook(limits)
    positions: dict[str, int] = {}  # the approved orders' effects, summed here
    capital = Fraction(limits.capital)
    for o in sequence:
        reasons = applicable_reasons(limits, positions, capital, o)
        result = book.validate(o)
        assert result.order_id == o.id
        if result.approved:
            assert not reasons, f"approved although {reasons}"
            delta = signed_quantity(o)
            positions[o.symbol] = positions.get(o.symbol, 0) + delta
            if not positions[o.symbol]:
                del positions[o.symbol]
            capital -= delta * Fraction(o.price)
        elif result.reason.startswith(INVALID_ORDER_PREFIX):
            assert reasons == {"invalid"}
        else:
            assert result.reason in reasons
        # The book is exactly the sum of the approved orders, and within every limit.
        assert book.positions == dict(sorted(positions.items()))
        assert book.available_capital_exact == capital
        assert math.isfinite(book.available_capital)
        assert 0 <= book.available_capital <= limits.max_capital
        assert 0 <= capital <= Fraction(limits.max_capital)
        assert len(positions) <= limits.max_symbols
        for symbol, position in positions.items():
            assert abs(position) <= limits.max_position_for(symbol)
            assert INT64_MIN <= position <= INT64_MAX
    assert book.approved + sum(book.rejections.values()) == len(sequence)


@settings(max_examples=300, deadline=None)
@given(limits_choices, st.lists(orders, max_size=25))
def test_limits_hold_after_any_sequence_of_orders(
    limits: RiskLimits, sequence: list[Order]
) -> None:
    check_limits_hold(limits, sequence)


@pytest.mark.slow
@pytest.mark.timeout(900)
@settings(max_examples=20_000, deadline=None)
@given(limits_choices, st.lists(orders, max_size=200))
def test_limits_hold_after_any_sequence_of_orders_long_run(
    limits: RiskLimits, sequence: list[Order]
) -> None:
    check_limits_hold(limits, sequence)
