"""Pre-trade risk validation over request/reply (the risk example).

:class:`RiskBook` is the pure logic: position, notional, capital and symbol limits, with
no I/O. :func:`serve_risk` runs it behind a REP socket; :class:`RiskClient` asks it over
REQ.

The rejection reasons below are part of the wire protocol: clients read them from
``ValidationResult.reason``, so they never change once published.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
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
from transportkit._keywords import RETRIES_COUNTED_ATTEMPTS, renamed
from transportkit._log import limited
from transportkit.patterns._limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    bounded_options,
    check_message_limit,
    too_large,
)
from transportkit.patterns._shutdown import GracefulStop
from transportkit.patterns.lazy_pirate import LazyPirateClient
from transportkit.trading._codec import parse, single_frame
from transportkit.trading._loop import LoopStop
from transportkit.trading._pb.trading_pb2 import SIDE_BUY, SIDE_SELL, Order, ValidationResult
from transportkit.trading._work import Work

logger = logging.getLogger(__name__)

__all__ = [
    "CAPITAL_LIMIT_EXCEEDED",
    "DEFAULT_MAX_CAPITAL",
    "DEFAULT_MAX_ORDER_ID_LENGTH",
    "DEFAULT_MAX_ORDER_NOTIONAL",
    "DEFAULT_MAX_SYMBOLS",
    "DEFAULT_MAX_SYMBOL_LENGTH",
    "INSUFFICIENT_CAPITAL",
    "INVALID_ORDER_PREFIX",
    "INVALID_PRICE",
    "INVALID_QUANTITY",
    "INVALID_SIDE",
    "INVALID_SYMBOL",
    "MALFORMED_ORDER",
    "MAX_POSITION_LIMIT",
    "MAX_SERVICE_TIME",
    "MISSING_ID",
    "MISSING_SYMBOL",
    "NOTIONAL_LIMIT_EXCEEDED",
    "ORDER_ID_TOO_LONG",
    "POSITION_LIMIT_EXCEEDED",
    "REQUEST_TOO_LARGE",
    "RISK_CHECK_FAILED",
    "SYMBOL_LIMIT_EXCEEDED",
    "SYMBOL_TOO_LONG",
    "ReliableRiskClient",
    "RiskBook",
    "RiskClient",
    "RiskLimits",
    "RiskServerStats",
    "judge",
    "risk_handler",
    "risk_server_options",
    "serve_risk",
    "signed_quantity",
    "verdict_for",
]

# --- rejection reasons (wire protocol) -------------------------------------------------

POSITION_LIMIT_EXCEEDED: Final = "Position limit exceeded"
"""Rejection reason: the order would take ``|position|`` above the symbol's limit."""

INSUFFICIENT_CAPITAL: Final = "Insufficient capital"
"""Rejection reason: a buy costs more than the capital still available."""

NOTIONAL_LIMIT_EXCEEDED: Final = "Notional limit exceeded"
"""Rejection reason: the order's notional (quantity x price) is above
:attr:`RiskLimits.max_order_notional`."""

CAPITAL_LIMIT_EXCEEDED: Final = "Capital limit exceeded"
"""Rejection reason: a sell's proceeds would take the available capital above
:attr:`RiskLimits.max_capital`."""

SYMBOL_LIMIT_EXCEEDED: Final = "Symbol limit exceeded"
"""Rejection reason: the order would open a position in one more symbol than
:attr:`RiskLimits.max_symbols` allows."""

MALFORMED_ORDER: Final = "malformed order"
"""Rejection reason the server gives to a request that is not one decodable Order."""

REQUEST_TOO_LARGE: Final = "request too large"
"""Rejection reason the server gives, without decoding it, to a request whose frames
total more than its ``max_message_bytes``."""

RISK_CHECK_FAILED: Final = "risk check failed"
"""Rejection reason the server gives when the book raised while judging an order (a
bug): the order is refused, never approved by default."""

INVALID_ORDER_PREFIX: Final = "invalid order: "
"""The start of every reason for an order that decodes but is not well formed."""

MISSING_ID: Final = INVALID_ORDER_PREFIX + "missing id"
"""Rejection reason: the order has no id."""

ORDER_ID_TOO_LONG: Final = INVALID_ORDER_PREFIX + "id too long"
"""Rejection reason: the id is longer than :attr:`RiskLimits.max_order_id_length`."""

MISSING_SYMBOL: Final = INVALID_ORDER_PREFIX + "missing symbol"
"""Rejection reason: the order has no symbol."""

SYMBOL_TOO_LONG: Final = INVALID_ORDER_PREFIX + "symbol too long"
"""Rejection reason: the symbol is longer than :attr:`RiskLimits.max_symbol_length`."""

INVALID_SYMBOL: Final = INVALID_ORDER_PREFIX + "symbol must be printable ASCII without spaces"
"""Rejection reason: the symbol has a character outside ``!`` to ``~`` (see
:class:`RiskLimits`)."""

INVALID_SIDE: Final = INVALID_ORDER_PREFIX + "side must be BUY or SELL"
"""Rejection reason: the side is not BUY or SELL."""

INVALID_QUANTITY: Final = INVALID_ORDER_PREFIX + "quantity must be positive"
"""Rejection reason: the quantity is zero or negative."""

INVALID_PRICE: Final = INVALID_ORDER_PREFIX + "price must be finite and positive"
"""Rejection reason: the price is NaN, infinite, zero (either sign) or negative."""

# --- limits ----------------------------------------------------------------------------

MAX_POSITION_LIMIT: Final = 2**63 - 1
"""The largest position limit a :class:`RiskLimits` accepts: the int64 range of the
schema's ``quantity``, so every position the book holds fits that field."""

MAX_SERVICE_TIME: Final = 60.0
"""The longest ``service_time`` :func:`risk_handler` accepts, in seconds (a minute)."""

DEFAULT_MAX_ORDER_NOTIONAL: Final = 1e9
"""Default :attr:`RiskLimits.max_order_notional`: one billion price units per order."""

DEFAULT_MAX_CAPITAL: Final = 1e15
"""Default :attr:`RiskLimits.max_capital`: a thousand million million price units."""

DEFAULT_MAX_SYMBOLS: Final = 10_000
"""Default :attr:`RiskLimits.max_symbols`: about every listed equity of a large market."""

DEFAULT_MAX_SYMBOL_LENGTH: Final = 32
"""Default :attr:`RiskLimits.max_symbol_length`, in characters."""

DEFAULT_MAX_ORDER_ID_LENGTH: Final = 64
"""Default :attr:`RiskLimits.max_order_id_length`, in characters."""

_SYMBOL_CHARACTERS: Final = re.compile(r"[!-~]+")
_FLOAT_MAX: Final = sys.float_info.max


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The limits a :class:`RiskBook` enforces, validated on construction.

    Amounts (``capital``, ``max_order_notional``, ``max_capital``) are in price units
    (quantity x price); they must be finite numbers (int or float) >= 0. Counts and
    lengths must be ints (not bools).

    Symbols are 1 to ``max_symbol_length`` characters, each printable ASCII other
    than space (``!`` to ``~``): no control characters, whitespace or non-ASCII, so a
    symbol prints as itself in logs and reports, and no look-alike spelling of a symbol
    (full-width, zero-width or confusable Unicode) can open a second position that
    escapes the first one's limit. Symbols are compared exactly: ``aapl`` is not
    ``AAPL`` and falls under ``default_max_position``.

    Attributes:
        capital: Capital available for buys at the start; at most ``max_capital``.
        max_position: Largest absolute position allowed, per symbol; each a valid
            symbol and an int from 0 to :data:`MAX_POSITION_LIMIT`. Kept as a read-only
            copy.
        default_max_position: The limit for symbols not in ``max_position`` (0 to
            :data:`MAX_POSITION_LIMIT`).
        max_order_notional: Largest notional (quantity x price, exact) of one order,
            buy or sell (default :data:`DEFAULT_MAX_ORDER_NOTIONAL`): the fat-finger
            check.
        max_capital: Largest available capital the book may hold (default
            :data:`DEFAULT_MAX_CAPITAL`); a sell whose proceeds would take it higher is
            rejected. With the position limits it keeps every value the book holds
            finite.
        max_symbols: Most symbols the book holds a non-flat position in at once
            (default :data:`DEFAULT_MAX_SYMBOLS`, at least 1); an order that would open
            one more is rejected.
        max_symbol_length: Longest symbol, in characters (default
            :data:`DEFAULT_MAX_SYMBOL_LENGTH`, at least 1).
        max_order_id_length: Longest order id, in characters (default
            :data:`DEFAULT_MAX_ORDER_ID_LENGTH`, at least 1).

    Raises:
        ValueError: A field is of the wrong type or out of range (NaN, infinite or
            negative amounts, ``capital`` above ``max_capital``, negative or too large
            position limits, an invalid symbol in ``max_position``, a bound below 1).
    """

    capital: float
    max_position: Mapping[str, int] = field(default_factory=dict)
    default_max_position: int = 1000
    max_order_notional: float = DEFAULT_MAX_ORDER_NOTIONAL
    max_capital: float = DEFAULT_MAX_CAPITAL
    max_symbols: int = DEFAULT_MAX_SYMBOLS
    max_symbol_length: int = DEFAULT_MAX_SYMBOL_LENGTH
    max_order_id_length: int = DEFAULT_MAX_ORDER_ID_LENGTH

    def __post_init__(self) -> None:
        for name in ("capital", "max_order_notional", "max_capital"):
            _check_amount(name, getattr(self, name))
        if self.capital > self.max_capital:
            raise ValueError(
                f"capital {self.capital!r} is above max_capital {self.max_capital!r}; "
                "raise max_capital"
            )
        for name in ("max_symbols", "max_symbol_length", "max_order_id_length"):
            _check_count(name, getattr(self, name), 1)
        _check_position_limit("default_max_position", self.default_max_position)
        if not isinstance(self.max_position, Mapping):
            raise ValueError(
                f"max_position must be a mapping of symbol to limit, got {self.max_position!r}"
            )
        limits = dict(self.max_position)
        for symbol, limit in limits.items():
            if not isinstance(symbol, str) or _symbol_problem(symbol, self) is not None:
                raise ValueError(f"max_position has an invalid symbol {symbol!r}")
            _check_position_limit(f"max_position[{symbol!r}]", limit)
        object.__setattr__(self, "max_position", _ReadOnlyLimits(limits))

    def max_position_for(self, symbol: str) -> int:
        """The absolute position limit that applies to ``symbol``."""
        return self.max_position.get(symbol, self.default_max_position)


class _ReadOnlyLimits(Mapping[str, int]):
    """A read-only copy of the per-symbol position limits (picklable, unlike a
    ``MappingProxyType``).
    """

    __slots__ = ("_limits",)

    def __init__(self, limits: dict[str, int]) -> None:
        self._limits = limits

    def __getitem__(self, symbol: str) -> int:
        return self._limits[symbol]

    def __iter__(self) -> Iterator[str]:
        return iter(self._limits)

    def __len__(self) -> int:
        return len(self._limits)

    def __repr__(self) -> str:
        return repr(self._limits)


def _check_amount(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (value >= 0 and value <= _FLOAT_MAX):  # written so that NaN fails
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")


def _check_count(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_position_limit(name: str, value: object) -> None:
    _check_count(name, value, 0)
    assert isinstance(value, int)
    if value > MAX_POSITION_LIMIT:
        raise ValueError(f"{name} must be at most {MAX_POSITION_LIMIT} (int64), got {value!r}")


def _symbol_problem(symbol: str, limits: RiskLimits) -> str | None:
    if not symbol:
        return MISSING_SYMBOL
    if not len(symbol) <= limits.max_symbol_length:
        return SYMBOL_TOO_LONG
    if _SYMBOL_CHARACTERS.fullmatch(symbol) is None:
        return INVALID_SYMBOL
    return None


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

    An order is checked in this order, and the first failure is the reason given (the
    constants of this module):

    1. it is well formed: id set and at most ``max_order_id_length`` characters, symbol
       valid (see :class:`RiskLimits`), side BUY or SELL, quantity > 0, price finite
       and > 0; else a reason starting with :data:`INVALID_ORDER_PREFIX`;
    2. ``|position + signed quantity| <= max_position``, else
       :data:`POSITION_LIMIT_EXCEEDED`;
    3. it opens no position beyond ``max_symbols``, else :data:`SYMBOL_LIMIT_EXCEEDED`;
    4. ``quantity * price <= max_order_notional``, else :data:`NOTIONAL_LIMIT_EXCEEDED`;
    5. a buy's ``quantity * price <= available capital``, else
       :data:`INSUFFICIENT_CAPITAL`; a sell's ``available capital + quantity * price <=
       max_capital``, else :data:`CAPITAL_LIMIT_EXCEEDED`.

    Every check is written to fail closed: a value that compares as nothing (a NaN)
    rejects the order. An approved order is booked: its signed quantity is added to the
    position, a buy's cost is taken from the available capital and a sell's proceeds
    are added to it (a cash account). A rejected order changes nothing but the
    ``rejections`` count.

    Capital is kept exactly, as an integer number of 2**-1074 (the smallest positive
    float): every product of an int64 quantity and a float price is a whole number of
    those, so buys and sells add and subtract without rounding and the capital never
    drifts. Hence, at all times: ``0 <= available capital <= max_capital``, every
    ``|position| <= max_position_for(symbol)`` (within int64), at most ``max_symbols``
    non-flat positions, and the state is exactly the sum of the approved orders.
    """

    def __init__(self, limits: RiskLimits) -> None:
        """Start flat, with ``limits.capital`` available."""
        self.limits: Final = limits
        self._positions: dict[str, int] = {}
        self._capital = _units(limits.capital)
        self._max_capital: Final = _units(limits.max_capital)
        self._max_notional: Final = _units(limits.max_order_notional)
        self.approved = 0
        self.rejections: Counter[str] = Counter()

    @property
    def available_capital(self) -> float:
        """Capital still available for buys: the float nearest the exact amount."""
        return self._capital / _ONE

    @property
    def available_capital_exact(self) -> Fraction:
        """Capital still available for buys, exactly."""
        return Fraction(self._capital, _ONE)

    @property
    def positions(self) -> dict[str, int]:
        """A copy of the non-flat positions, by symbol (sorted)."""
        return dict(sorted(self._positions.items()))

    def position(self, symbol: str) -> int:
        """The current signed position in ``symbol`` (0 if never traded or flat)."""
        return self._positions.get(symbol, 0)

    def check(self, order: Order) -> str | None:
        """Return why ``order`` would be rejected, or None if it would be approved.

        Pure: nothing is booked.
        """
        return self._assess(order)[0]

    def validate(self, order: Order) -> ValidationResult:
        """Check ``order``, book it if approved, and return the verdict.

        The verdict's ``order_id`` is the order's id, also on a rejection.
        """
        reason, new_position, notional = self._assess(order)
        if reason is not None:
            self.rejections[reason] += 1
            return ValidationResult(order_id=order.id, approved=False, reason=reason)
        if new_position:
            self._positions[order.symbol] = new_position
        else:
            self._positions.pop(order.symbol, None)
        if order.side == SIDE_BUY:
            self._capital -= notional
        else:
            self._capital += notional
        self.approved += 1
        return ValidationResult(order_id=order.id, approved=True)

    def _assess(self, order: Order) -> tuple[str | None, int, int]:
        """(reason or None, position after booking, notional in units)."""
        limits = self.limits
        problem = _invalid(order, limits)
        if problem is not None:
            return problem, 0, 0
        symbol = order.symbol
        current = self._positions.get(symbol, 0)
        new_position = current + signed_quantity(order)
        if not abs(new_position) <= limits.max_position_for(symbol):
            return POSITION_LIMIT_EXCEEDED, 0, 0
        if not current and new_position and not len(self._positions) < limits.max_symbols:
            return SYMBOL_LIMIT_EXCEEDED, 0, 0
        notional = order.quantity * _units(order.price)
        if not notional <= self._max_notional:
            return NOTIONAL_LIMIT_EXCEEDED, 0, 0
        if order.side == SIDE_BUY:
            if not notional <= self._capital:
                return INSUFFICIENT_CAPITAL, 0, 0
        elif not self._capital + notional <= self._max_capital:
            return CAPITAL_LIMIT_EXCEEDED, 0, 0
        return None, new_position, notional


_UNIT_BITS: Final = 1074
_ONE: Final = 1 << _UNIT_BITS


def _units(value: float) -> int:
    """``value`` (a finite float or an int) exactly, in units of 2**-1074."""
    numerator, denominator = value.as_integer_ratio()
    # A finite float's denominator is a power of two of at most 2**1074 (an int's is 1).
    return numerator << (_UNIT_BITS - denominator.bit_length() + 1)


def _invalid(order: Order, limits: RiskLimits) -> str | None:
    if not order.id:
        return MISSING_ID
    if not len(order.id) <= limits.max_order_id_length:
        return ORDER_ID_TOO_LONG
    problem = _symbol_problem(order.symbol, limits)
    if problem is not None:
        return problem
    if order.side not in (SIDE_BUY, SIDE_SELL):
        return INVALID_SIDE
    if not order.quantity > 0:
        return INVALID_QUANTITY
    if not (math.isfinite(order.price) and order.price > 0):
        return INVALID_PRICE
    return None


@dataclass(slots=True)
class RiskServerStats:
    """Counters of a :func:`serve_risk` loop (or a :func:`risk_handler`), updated as it
    runs.

    Every request is answered and counted in ``requests`` and in exactly one of
    ``approved`` and ``rejected``; ``malformed``, ``over_limit``, ``invalid`` and
    ``handler_errors`` count kinds of rejection.

    Attributes:
        requests: Requests answered, bad ones included.
        approved: Orders approved.
        rejected: Requests rejected, for any reason (the four kinds below included).
        malformed: Requests that were not one frame decoding as an Order
            (:data:`MALFORMED_ORDER`).
        over_limit: Requests larger than ``max_message_bytes``, refused undecoded
            (:data:`REQUEST_TOO_LARGE`).
        invalid: Orders that decoded but were not well formed (a reason starting with
            :data:`INVALID_ORDER_PREFIX`).
        handler_errors: Orders on which the book raised (:data:`RISK_CHECK_FAILED`).
    """

    requests: int = 0
    approved: int = 0
    rejected: int = 0
    malformed: int = 0
    over_limit: int = 0
    invalid: int = 0
    handler_errors: int = 0


async def serve_risk(
    worker: Worker,
    book: RiskBook,
    *,
    max_requests: int | None = None,
    stop: asyncio.Event | GracefulStop | None = None,
    stats: RiskServerStats | None = None,
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
) -> RiskServerStats:
    """Answer each request on ``worker`` (one Order frame) with one ValidationResult frame.

    No request ends the loop or makes it raise: each is answered by :func:`judge` (a
    bad one with a rejection, counted in ``stats``).

    The caller makes ``worker``. For peers it does not trust it should bound what the
    socket accepts before the bytes reach this loop: make it with
    ``options=risk_server_options(options, max_message_bytes=...)``, which sets
    ``maxmsgsize`` to the same figure (over ipc and tcp libzmq then drops a larger frame
    and the peer's connection), and keep its ``rcvhwm`` bounded (the default 1000, never
    0). A REP drops a reply to a peer whose pipe is full, so a peer that does not read
    its replies never stalls the loop.

    Args:
        worker: A bound or connected REP socket; it is not closed here.
        book: The risk book that judges and books the orders.
        max_requests: Return after answering this many requests (None: no limit).
        stop: Return once this event is set (checked between requests), or a
            :class:`~transportkit.patterns.GracefulStop`: ``await
            stop.shutdown(timeout)`` makes the loop read no new request and return
            (the verdict being computed is synchronous, so nothing is ever left
            unanswered; ``shutdown`` returns True once the loop has returned).
        stats: Counters to update as the loop runs (a new object if None).
        max_message_bytes: A request whose frames total more bytes than this is
            answered :data:`REQUEST_TOO_LARGE` without being decoded (default 1 MiB,
            the server patterns' ``DEFAULT_MAX_MESSAGE_BYTES``; None: no limit).

    Returns:
        The counters. The loop also returns when ``worker`` is closed.

    Raises:
        ValueError: ``max_message_bytes`` is not None or an int >= 1.
    """
    limit = check_message_limit(max_message_bytes)
    stats = RiskServerStats() if stats is None else stats
    graceful = stop if isinstance(stop, GracefulStop) else None
    if graceful is not None:
        graceful.started()
    try:
        with LoopStop(stop) as watched:
            while max_requests is None or stats.requests < max_requests:
                request = await watched.recv(worker)
                if request is None:
                    break
                result = judge(book, request, stats, max_message_bytes=limit)
                try:
                    await worker.send([result.SerializeToString()])
                except ClosedError:
                    break
    finally:
        if graceful is not None:
            graceful.finished()
    return stats


def risk_server_options(
    options: SocketOptions | None = None,
    *,
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
) -> SocketOptions:
    """The options of a risk server's REP socket: ``options`` (default: transportkit's)
    with ``maxmsgsize`` set to ``max_message_bytes`` (default 1 MiB), unless ``options``
    already set one or ``max_message_bytes`` is None.

    Raises:
        ValueError: ``max_message_bytes`` is not None or an int >= 1.
    """
    return bounded_options(options, check_message_limit(max_message_bytes))


def judge(
    book: RiskBook,
    request: Message,
    stats: RiskServerStats,
    *,
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
) -> ValidationResult:
    """The verdict on one request (one Order frame), counted in ``stats``.

    Never raises because of the request. In the order checked:

    - frames totalling more than ``max_message_bytes`` (None: no limit) are not decoded
      and get :data:`REQUEST_TOO_LARGE` (``stats.over_limit``);
    - anything but one frame that decodes as an Order gets :data:`MALFORMED_ORDER`
      (``stats.malformed``), whatever the protobuf parser raised;
    - an Order is judged by ``book.validate``; an invalid one is counted in
      ``stats.invalid``, and if the book raises the order gets
      :data:`RISK_CHECK_FAILED` (``stats.handler_errors``).

    Rejections of undecoded requests have an empty ``order_id``; the others carry the
    order's id.
    """
    if too_large(request, max_message_bytes):
        stats.over_limit += 1
        limited(
            logger,
            logging.WARNING,
            "over_limit",
            "order request of %d bytes over max_message_bytes (%s): rejected",
            sum(len(frame) for frame in request),
            max_message_bytes,
            extra={"reason": "too large", "counter": "over_limit"},
        )
        result = ValidationResult(approved=False, reason=REQUEST_TOO_LARGE)
    else:
        result = _judge_order(book, request, stats)
    stats.requests += 1
    if result.approved:
        stats.approved += 1
    else:
        stats.rejected += 1
    return result


def _judge_order(book: RiskBook, request: Message, stats: RiskServerStats) -> ValidationResult:
    try:
        order = parse(Order, single_frame(request, "order request"), "order request")
    except ProtocolError as exc:
        stats.malformed += 1
        limited(
            logger,
            logging.WARNING,
            "malformed",
            "malformed order request: %s",
            exc,
            extra={"reason": str(exc), "counter": "malformed"},
        )
        return ValidationResult(approved=False, reason=MALFORMED_ORDER)
    try:
        result = book.validate(order)
    except Exception:  # a bug in the book must refuse the order, not end the server
        stats.handler_errors += 1
        limited(
            logger,
            logging.ERROR,
            "handler",
            "risk check of order %s failed: rejected",
            order.id,
            exc_info=True,
            extra={"counter": "handler_errors"},
        )
        return ValidationResult(order_id=order.id, approved=False, reason=RISK_CHECK_FAILED)
    if not result.approved and result.reason.startswith(INVALID_ORDER_PREFIX):
        stats.invalid += 1
    return result


def risk_handler(
    book: RiskBook,
    *,
    service_time: float = 0.0,
    stats: RiskServerStats | None = None,
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
) -> Callable[[Message], Awaitable[list[bytes]]]:
    """A request handler for :func:`~transportkit.patterns.serve_lazy_pirate` (or any
    reply loop): judges each request with ``book``, after ``service_time`` seconds.

    ``service_time`` (default 0: none) is simulated work by the loop's clock (virtual
    on the sim): what a sleep overran is credited to the next requests (at most 1 ms
    per sleep), so on a real event loop, whose timers wake on millisecond ticks, N
    requests cost about ``N * service_time`` of service rather than N ms; a single
    request may then be served in less than ``service_time``. On the sim each
    request sleeps exactly ``service_time``. One handler paces one loop: give each
    server its own.

    Each reply names the order it judges, so a :class:`ReliableRiskClient` checks that
    it answers the order sent (:func:`verdict_for`); the plain Lazy Pirate wire format
    (the default) needs nothing more, and the request is the single Order frame, so the
    same client also works against :func:`serve_risk`. The handler never
    raises because of a request: each is answered by :func:`judge` (bounded by
    ``max_message_bytes``, default 1 MiB) and counted in ``stats``. Give the server's
    REP socket :func:`risk_server_options`.

    Raises:
        ValueError: ``max_message_bytes`` is not None or an int >= 1, or
            ``service_time`` is not a number of seconds from 0 to
            :data:`MAX_SERVICE_TIME`.
    """
    limit = check_message_limit(max_message_bytes)
    if (
        isinstance(service_time, bool)
        or not isinstance(service_time, int | float)
        or not 0 <= service_time <= MAX_SERVICE_TIME
    ):
        raise ValueError(
            f"service_time must be a number of seconds from 0 to {MAX_SERVICE_TIME:g},"
            f" got {service_time!r}"
        )
    counters = RiskServerStats() if stats is None else stats
    work = Work(float(service_time)) if service_time else None

    async def handle(request: Message) -> list[bytes]:
        if work is not None:
            await work.do()
        return [judge(book, request, counters, max_message_bytes=limit).SerializeToString()]

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

        A request larger than the server's ``max_message_bytes`` is rejected with
        :data:`REQUEST_TOO_LARGE`, or, where the server's socket enforces
        ``maxmsgsize``, dropped unanswered (a Timeout).

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

    A rejection the server gave without decoding the request (:data:`REQUEST_TOO_LARGE`
    or :data:`MALFORMED_ORDER`, with an empty ``order_id``) answers the request just
    sent, so it is returned as the rejection of ``order``, with ``order``'s id.

    Raises:
        ProtocolError: The reply is not one ValidationResult frame, or is for another
            order.
    """
    result = parse(ValidationResult, single_frame(reply, "risk reply"), "risk reply")
    if (
        not result.order_id
        and not result.approved
        and result.reason in (REQUEST_TOO_LARGE, MALFORMED_ORDER)
    ):
        return ValidationResult(order_id=order.id, approved=False, reason=result.reason)
    if result.order_id != order.id:
        raise ProtocolError(f"risk reply is for order {result.order_id!r}, expected {order.id!r}")
    return result


class ReliableRiskClient:
    """Risk checks that survive a dead or slow server.

    Built on :class:`~transportkit.patterns.LazyPirateClient`: each check ends in the
    verdict for *that* order, or :class:`~transportkit.ServiceUnavailableError` after
    ``attempts`` sends of ``timeout`` seconds each; never a hang. It speaks the plain Lazy
    Pirate wire format (the order as the only frame, the verdict as the only frame of
    the reply), so the server is any REP risk server: :func:`serve_risk`,
    or :func:`~transportkit.patterns.serve_lazy_pirate` with :func:`risk_handler`.

    Args:
        network: Where the REQ sockets come from.
        endpoint: The risk server.
        timeout: Seconds per attempt (default 0.1; the Guide uses 2.5).
        attempts: Sends of each order before giving up, the first included (default
            3, the Guide's). Formerly ``retries``, which counted the same thing:
            passing ``retries=`` raises a TypeError that says what to write.
        options: Options of the REQ sockets.

    Raises:
        ValueError: ``timeout`` is not positive or ``attempts`` is not an int >= 1.
        TypeError: The removed keyword ``retries`` was given (use ``attempts``).
    """

    @renamed("retries", "attempts", RETRIES_COUNTED_ATTEMPTS)
    def __init__(
        self,
        network: Network,
        endpoint: str,
        *,
        timeout: float = 0.1,
        attempts: int = 3,
        options: SocketOptions | None = None,
    ) -> None:
        self.client: Final = LazyPirateClient(
            network, endpoint, timeout=timeout, attempts=attempts, options=options
        )

    async def validate(self, order: Order) -> ValidationResult:
        """The verdict on ``order``.

        Raises:
            ServiceUnavailableError: No verdict after ``attempts`` sends.
            ProtocolError: The verdict does not decode or is for another order.
        """
        reply = await self.client.request([order.SerializeToString()])
        return verdict_for(order, reply)

    def close(self) -> None:
        """Close the client's socket. Idempotent."""
        self.client.close()
