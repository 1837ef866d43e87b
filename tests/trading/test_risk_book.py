"""RiskBook: the position and capital checks of the seed's risk server, as pure logic."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from transportkit.trading import (
    DEMO_LIMITS,
    INSUFFICIENT_CAPITAL,
    POSITION_LIMIT_EXCEEDED,
    SIDE_BUY,
    SIDE_SELL,
    SIDE_UNSPECIFIED,
    Order,
    RiskBook,
    RiskLimits,
    demo_orders,
    signed_quantity,
)


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


orders = st.builds(
    Order,
    id=st.just("o"),
    symbol=st.sampled_from(["AAPL", "MSFT"]),
    side=st.sampled_from([SIDE_BUY, SIDE_SELL]),
    quantity=st.integers(-10, 400),
    price=st.floats(0.0, 500.0),
)


@given(st.lists(orders, max_size=60))
def test_limits_hold_after_any_sequence_of_orders(sequence: list[Order]) -> None:
    limits = RiskLimits(capital=50_000.0, max_position={"AAPL": 300}, default_max_position=500)
    book = RiskBook(limits)
    for o in sequence:
        before = book.position(o.symbol)
        result = book.validate(o)
        delta = signed_quantity(o) if result.approved else 0
        assert book.position(o.symbol) == before + delta
        assert abs(book.position(o.symbol)) <= limits.max_position_for(o.symbol)
        if result.approved and o.side == SIDE_BUY:
            assert book.available_capital >= -1e-6
    assert book.approved + sum(book.rejections.values()) == len(sequence)
