"""Pre-trade risk validation over request/reply (the seed's pattern 1).

:class:`RiskBook` is the pure logic: position and capital limits, with no I/O.
:func:`serve_risk` runs it behind a REP socket; :class:`RiskClient` asks it over REQ.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from transportkit import (
    ClosedError,
    Message,
    Network,
    ProtocolError,
    Requester,
    SocketOptions,
    Worker,
)
from transportkit.patterns.lazy_pirate import LazyPirateClient
from transportkit.trading._codec import parse, single_frame
from transportkit.trading._loop import recv_or_stop
from transportkit.trading._pb.trading_pb2 import SIDE_BUY, SIDE_SELL, Order, ValidationResult

__all__ = [
    "INSUFFICIENT_CAPITAL",
    "MALFORMED_ORDER",
    "POSITION_LIMIT_EXCEEDED",
    "RiskBook",
    "RiskClient",
    "RiskLimits",
    "RiskServerStats",
    "serve_risk",
    "signed_quantity",
]

POSITION_LIMIT_EXCEEDED: Final = "Position limit exceeded"
"""Rejection reason: the order would take ``|position|`` above the symbol's limit."""

INSUFFICIENT_CAPITAL: Final = "Insufficient capital"
"""Rejection reason: a buy costs more than the capital still available."""

MALFORMED_ORDER: Final = "malformed order"
"""Rejection reason the server gives to a request that is not one decodable Order."""


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The limits a :class:`RiskBook` enforces.

    Attributes:
        capital: Capital available for buys at the start, in price units.
        max_position: Largest absolute position allowed, per symbol.
        default_max_position: The limit for symbols not in ``max_position``.
    """

    capital: float
    max_position: Mapping[str, int] = field(default_factory=dict)
    default_max_position: int = 1000

    def max_position_for(self, symbol: str) -> int:
        """The absolute position limit that applies to ``symbol``."""
        return self.max_position.get(symbol, self.default_max_position)


def signed_quantity(order: Order) -> int:
    """The position change ``order`` makes: ``+quantity`` for a buy, ``-quantity`` for a
    sell, 0 for an order without a side.
    """
    if order.side == SIDE_BUY:
        return order.quantity
    if order.side == SIDE_SELL:
        return -order.quantity
    return 0


class RiskBook:
    """Positions and capital of one account, and the checks every order must pass.

    An order is checked in this order, and the first failure is the reason given:

    1. it is well formed (id and symbol set, side BUY or SELL, quantity > 0, price finite
       and > 0), else ``"invalid order: <what>"``;
    2. ``|position + signed quantity| <= max_position``, else ``"Position limit exceeded"``;
    3. a buy's ``quantity * price <= available capital``, else ``"Insufficient capital"``.

    An approved order is booked: its signed quantity is added to the position, a buy's
    cost is taken from the available capital and a sell's proceeds are added to it (a
    cash account). Rejected orders change nothing.
    """

    def __init__(self, limits: RiskLimits) -> None:
        """Start flat, with ``limits.capital`` available."""
        self.limits: Final = limits
        self._positions: dict[str, int] = {}
        self._capital = float(limits.capital)
        self.approved = 0
        self.rejections: Counter[str] = Counter()

    @property
    def available_capital(self) -> float:
        """Capital still available for buys."""
        return self._capital

    @property
    def positions(self) -> dict[str, int]:
        """A copy of the non-flat positions, by symbol."""
        return {symbol: qty for symbol, qty in sorted(self._positions.items()) if qty}

    def position(self, symbol: str) -> int:
        """The current signed position in ``symbol`` (0 if never traded)."""
        return self._positions.get(symbol, 0)

    def check(self, order: Order) -> str | None:
        """Return why ``order`` would be rejected, or None if it would be approved.

        Pure: nothing is booked.
        """
        problem = _invalid(order)
        if problem is not None:
            return f"invalid order: {problem}"
        new_position = self.position(order.symbol) + signed_quantity(order)
        if abs(new_position) > self.limits.max_position_for(order.symbol):
            return POSITION_LIMIT_EXCEEDED
        if order.side == SIDE_BUY and order.quantity * order.price > self._capital:
            return INSUFFICIENT_CAPITAL
        return None

    def validate(self, order: Order) -> ValidationResult:
        """Check ``order``, book it if approved, and return the verdict."""
        reason = self.check(order)
        if reason is not None:
            self.rejections[reason] += 1
            return ValidationResult(order_id=order.id, approved=False, reason=reason)
        delta = signed_quantity(order)
        self._positions[order.symbol] = self.position(order.symbol) + delta
        self._capital -= delta * order.price
        self.approved += 1
        return ValidationResult(order_id=order.id, approved=True)


def _invalid(order: Order) -> str | None:
    if not order.id:
        return "missing id"
    if not order.symbol:
        return "missing symbol"
    if order.side not in (SIDE_BUY, SIDE_SELL):
        return "side must be BUY or SELL"
    if order.quantity <= 0:
        return "quantity must be positive"
    if not (math.isfinite(order.price) and order.price > 0):
        return "price must be finite and positive"
    return None


@dataclass(slots=True)
class RiskServerStats:
    """Counters of a :func:`serve_risk` loop, updated as it runs.

    Attributes:
        requests: Requests answered, malformed ones included.
        approved: Orders approved.
        rejected: Orders rejected (malformed ones included).
        malformed: Requests that were not one frame decoding as an Order.
    """

    requests: int = 0
    approved: int = 0
    rejected: int = 0
    malformed: int = 0


async def serve_risk(
    worker: Worker,
    book: RiskBook,
    *,
    max_requests: int | None = None,
    stop: asyncio.Event | None = None,
    stats: RiskServerStats | None = None,
) -> RiskServerStats:
    """Answer each request on ``worker`` (one Order frame) with one ValidationResult frame.

    A request that is not a single frame decoding as an Order is answered with a
    rejection whose reason is :data:`MALFORMED_ORDER` (and an empty ``order_id``) and is
    counted; it never ends the loop.

    Args:
        worker: A bound or connected REP socket; it is not closed here.
        book: The risk book that judges and books the orders.
        max_requests: Return after answering this many requests (None: no limit).
        stop: Return once this event is set (checked between requests).
        stats: Counters to update as the loop runs (a new object if None).

    Returns:
        The counters. The loop also returns when ``worker`` is closed.
    """
    stats = RiskServerStats() if stats is None else stats
    while max_requests is None or stats.requests < max_requests:
        request = await recv_or_stop(worker, stop)
        if request is None:
            break
        result = judge(book, request, stats)
        try:
            await worker.send([result.SerializeToString()])
        except ClosedError:
            break
    return stats


def judge(book: RiskBook, request: Message, stats: RiskServerStats) -> ValidationResult:
    """The verdict on one request (one Order frame), counted in ``stats``.

    A request that is not a single frame decoding as an Order gets a rejection whose
    reason is :data:`MALFORMED_ORDER`; it is counted, never raised.
    """
    try:
        order = parse(Order, single_frame(request, "order request"), "order request")
    except ProtocolError:
        stats.malformed += 1
        result = ValidationResult(approved=False, reason=MALFORMED_ORDER)
    else:
        result = book.validate(order)
    stats.requests += 1
    if result.approved:
        stats.approved += 1
    else:
        stats.rejected += 1
    return result


def risk_handler(
    book: RiskBook, *, service_time: float = 0.0, stats: RiskServerStats | None = None
) -> Callable[[Message], Awaitable[list[bytes]]]:
    """A request handler for :func:`~transportkit.patterns.serve_lazy_pirate` (or any
    reply loop): judges each request with ``book``, after ``service_time`` seconds.

    The Lazy Pirate server echoes the client's sequence frame around it, so a
    :class:`ReliableRiskClient` can tell this reply from a late one.
    """
    counters = RiskServerStats() if stats is None else stats

    async def handle(request: Message) -> list[bytes]:
        if service_time:
            await asyncio.sleep(service_time)
        return [judge(book, request, counters).SerializeToString()]

    return handle


class RiskClient:
    """Asks a risk server (:func:`serve_risk`) to validate orders, one at a time."""

    def __init__(self, requester: Requester) -> None:
        """Use ``requester``, a REQ socket connected to the server (not closed here)."""
        self.requester: Final = requester

    async def validate(self, order: Order, timeout: float | None = None) -> ValidationResult:
        """Send ``order`` and return the server's verdict.

        Args:
            order: The order; it is not modified.
            timeout: Seconds to wait for the reply; None uses the socket's ``rcvtimeo``.

        Raises:
            Timeout: No reply in time. The REQ socket is then stuck waiting for that
                reply; close it and use a new one (the Lazy Pirate pattern does this).
            ProtocolError: The reply is not one ValidationResult frame for this order.
            ClosedError: The socket is closed.
        """
        reply = await self.requester.request([order.SerializeToString()], timeout)
        return verdict_for(order, reply)


def verdict_for(order: Order, reply: Message) -> ValidationResult:
    """Decode a risk reply and check that it answers ``order``.

    Raises:
        ProtocolError: The reply is not one ValidationResult frame, or is for another
            order.
    """
    result = parse(ValidationResult, single_frame(reply, "risk reply"), "risk reply")
    if result.order_id != order.id:
        raise ProtocolError(f"risk reply is for order {result.order_id!r}, expected {order.id!r}")
    return result


class ReliableRiskClient:
    """The seed's ReliableRiskClient: risk checks that survive a dead or slow server.

    Built on :class:`~transportkit.patterns.LazyPirateClient`: each check ends in the
    verdict for *that* order, or :class:`~transportkit.ServiceUnavailableError` after
    ``retries`` attempts of ``timeout`` seconds; never a hang. The server runs
    :func:`~transportkit.patterns.serve_lazy_pirate` with :func:`risk_handler`.

    Args:
        network: Where the REQ sockets come from.
        endpoint: The risk server.
        timeout: Seconds per attempt (the seed uses 0.1, the Guide 2.5).
        retries: Attempts per order (the seed's and the Guide's 3).
        options: Options of the REQ sockets.
    """

    def __init__(
        self,
        network: Network,
        endpoint: str,
        *,
        timeout: float = 0.1,
        retries: int = 3,
        options: SocketOptions | None = None,
    ) -> None:
        self.client: Final = LazyPirateClient(
            network, endpoint, timeout=timeout, retries=retries, options=options
        )

    async def validate(self, order: Order) -> ValidationResult:
        """The verdict on ``order``.

        Raises:
            ServiceUnavailableError: No verdict after every retry.
            ProtocolError: The verdict does not decode or is for another order.
        """
        reply = await self.client.request([order.SerializeToString()])
        return verdict_for(order, reply)

    def close(self) -> None:
        """Close the client's socket. Idempotent."""
        self.client.close()
