"""The components a scenario can place on its nodes.

Each kind has a parser (TOML table -> frozen parameters, validated before the run) and a
runner (``async def run(net, name, params, ctx)``) written against transportkit's
interfaces and patterns only, so the same component runs on both backends. Load
generators stop after the scenario's duration; receivers run until the end.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from transportkit._errors import ProtocolError, ServiceUnavailableError
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit.patterns._shutdown import GracefulStop
from transportkit.patterns.clone import CloneClient, CloneClientStats, CloneServer
from transportkit.patterns.conflation import ConflatingSubscriber
from transportkit.patterns.lazy_pirate import serve_lazy_pirate
from transportkit.patterns.paranoid_pirate import ParanoidPirateQueue, ParanoidPirateWorker
from transportkit.patterns.proxy import forwarder
from transportkit.scenario._bounds import (
    MAX_ATTEMPTS,
    MAX_BURSTS,
    MAX_CAPITAL,
    MAX_EVENTS,
    MAX_INTERVAL_MS,
    MAX_LIVENESS,
    MAX_PUBLISH_RATE,
    MAX_QUANTITY,
    MAX_REQUEST_RATE,
    MAX_SERVICE_US,
    MIN_HEARTBEAT_MS,
    MIN_INTERVAL_MS,
)
from transportkit.scenario._context import RunContext
from transportkit.scenario._invariants import CUSTOM_CHECKS
from transportkit.scenario._metrics import Load
from transportkit.scenario._spec import REQUIRED, ComponentSpec, Table
from transportkit.trading import (
    MALFORMED_ORDER,
    SIDE_BUY,
    SIDE_SELL,
    TOPIC_PREFIX,
    MarketData,
    Order,
    ReliableRiskClient,
    RiskBook,
    RiskLimits,
    ValidationResult,
    decode_market_data,
    encode_market_data,
    risk_handler,
    risk_server_options,
    topic_for,
)
from transportkit.trading._codec import parse, single_frame
from transportkit.trading._work import Work

__all__ = ["COMPONENTS", "ComponentKind", "register_expectations"]

Runner = Callable[[Network, str, Any, RunContext], Awaitable[None]]


@dataclass(frozen=True)
class ComponentKind:
    """A component kind: how to read its parameters and how to run it."""

    parse: Callable[[Table], Any]
    run: Runner
    doc: str


# -- market data ---------------------------------------------------------------------

DEFAULT_SYMBOLS = ("AAPL", "MSFT", "GOOG")


@dataclass(frozen=True)
class Burst:
    """``count`` extra updates sent back to back at ``at`` seconds."""

    at: float
    count: int


@dataclass(frozen=True)
class PublisherParams:
    """Parameters of ``market_data_publisher``."""

    bind: str
    symbols: tuple[str, ...]
    rate: float
    bursts: tuple[Burst, ...]
    options: SocketOptions


# Parameter bounds (see transportkit.scenario._bounds for the reasoning); what a
# component's rates and intervals cost together is checked by _budget once the whole
# scenario is known.


def _symbols(t: Table, default: tuple[str, ...]) -> tuple[str, ...]:
    """The ``symbols`` list: names that make valid topics (no whitespace)."""
    symbols = tuple(t.texts("symbols", list(default)))
    for symbol in symbols:
        try:
            topic_for(symbol)
        except ValueError as exc:
            raise t.error("symbols", str(exc)) from None
    return symbols


def _interval_ms(t: Table, key: str, default: float, *, minimum: float = MIN_INTERVAL_MS) -> float:
    """A timeout, heartbeat or polling interval in milliseconds, within the bounds."""
    value: float = t.number(key, default, minimum=minimum, maximum=MAX_INTERVAL_MS)
    return value


def _service_us(t: Table, key: str) -> float:
    """A per-message service or processing time in microseconds (0 by default)."""
    value: float = t.number(key, 0.0, maximum=MAX_SERVICE_US)
    return value


def _parse_publisher(t: Table) -> PublisherParams:
    bursts = []
    for _, b in t.tables("burst", limit=MAX_BURSTS):
        bursts.append(
            Burst(
                b.number("at", REQUIRED, maximum=MAX_INTERVAL_MS / 1000),
                b.integer("count", REQUIRED, minimum=1, maximum=MAX_EVENTS),
            )
        )
        b.done()
    return PublisherParams(
        bind=t.text("bind", REQUIRED),
        symbols=_symbols(t, DEFAULT_SYMBOLS) or DEFAULT_SYMBOLS,
        rate=t.number("rate", 1000.0, maximum=MAX_PUBLISH_RATE),
        bursts=tuple(sorted(bursts, key=lambda b: b.at)),
        options=t.options(),
    )


_TICK = 0.001
"""A publisher wakes every millisecond of the loop's clock and sends, at the start of
each tick, what its rate owes by the tick's end."""

_SLICE = 0.001
"""The longest a source sends without letting the loop run the other components (on
the loop's clock: a catching-up publisher or a burst on zmq sends in slices of about
a millisecond; on the sim, where sending takes no virtual time, nothing changes)."""

_EPSILON = 1e-3
"""Of an update: the float error tolerated in ``rate x elapsed`` (the sim's clock adds
up ticks of 0.001 s, which are not exact in binary)."""


def _count(rate: float, seconds: float) -> int:
    """Updates a ``rate`` owes over ``seconds`` (at least 0)."""
    return max(0, math.floor(rate * seconds + _EPSILON))


def _slots(rate: float, seconds: float) -> int:
    """Requests of a schedule at ``rate`` from 0 due strictly before ``seconds``."""
    return max(0, math.ceil(rate * seconds - _EPSILON))


class _Offer:
    """One incarnation's part of a stream's :class:`~transportkit.scenario._metrics.Load`,
    kept current as it runs (a node run as a process that is killed keeps what its
    last metrics snapshot had, as its sent count does).
    """

    def __init__(self, load: Load) -> None:
        self.load = load
        self.offered = 0
        self.seconds = 0.0

    def set(self, offered: int, seconds: float, behind: int) -> None:
        """This incarnation has offered ``offered`` in ``seconds``, ``behind`` at most."""
        load = self.load
        load.offered += offered - self.offered
        load.seconds += seconds - self.seconds
        load.max_behind = max(load.max_behind, behind)
        self.offered, self.seconds = offered, seconds


async def _run_publisher(net: Network, name: str, p: PublisherParams, ctx: RunContext) -> None:
    """Send ``rate`` updates a second by the loop's clock, plus the bursts.

    Each tick it works out from ``loop.time()`` what the rate owes since the
    publisher started (a tick's worth ahead), and sends what it has not sent yet,
    yielding to the loop every :data:`_SLICE` of sending: a late tick (a busy
    machine) is made up by the next ones instead of being lost, and what the load
    period ended before it could send is the stream's shortfall
    (:class:`~transportkit.scenario._metrics.Load`). Bursts go first, back to back.
    """
    stream = ctx.metrics.stream(name, "PUB/SUB")
    offer = _Offer(stream.offer(p.rate))
    rng = ctx.rng(name)
    loop = asyncio.get_running_loop()
    with net.publisher(bind=p.bind, options=p.options) as pub:
        ctx.track(name, pub)
        sequence = dict.fromkeys(p.symbols, 0)
        ctx.objects[name] = sequence
        price = {s: 100.0 + 10 * i for i, s in enumerate(p.symbols)}
        symbols = p.symbols
        topics = {s: topic_for(s) for s in symbols}
        sent_by_topic = stream.sent_by_topic
        uniform, randrange = rng.uniform, rng.randrange
        send = pub.send
        turn = 0

        def next_update() -> tuple[bytes, list[bytes]]:
            # The next update's topic and frames (a plain call: no coroutine per
            # update); the same draws of ``rng``, in the same order, as ever.
            nonlocal turn
            symbol = symbols[turn % len(symbols)]
            turn += 1
            seq = sequence[symbol] = sequence[symbol] + 1
            last = price[symbol] = max(0.01, price[symbol] + uniform(-0.05, 0.05))
            data = MarketData(
                symbol=symbol,
                bid=round(last - 0.01, 2),
                ask=round(last + 0.01, 2),
                last=round(last, 2),
                bid_size=randrange(1, 50) * 100,
                ask_size=randrange(1, 50) * 100,
                sequence=seq,
            )
            return topics[symbol], encode_market_data(data, net.time_ns())

        bursts = list(p.bursts)
        origin = loop.time()
        end = ctx.start + ctx.duration
        whole = _count(p.rate, end - origin)  # the rate's updates over the whole load
        by_rate = 0  # updates of the rate sent (bursts aside)
        burst_owed = burst_offered = behind = 0
        scheduled = 0
        cancelled = False
        try:
            while loop.time() - ctx.start < ctx.duration:  # ctx.loading(), on this loop
                while bursts and ctx.elapsed() >= bursts[0].at:
                    count = bursts.pop(0).count
                    burst_owed += count
                    burst_offered += count
                now = loop.time()
                scheduled = _count(p.rate, now + _TICK - origin)
                behind = max(behind, _count(p.rate, min(now, end) - origin) - by_rate)
                offer.set(burst_offered + min(scheduled, whole), now - origin, behind)
                slice_end = now + _SLICE
                while burst_owed or by_rate < scheduled:
                    topic, frames = next_update()
                    await send(frames)
                    stream.sent += 1
                    sent_by_topic[topic] += 1
                    if burst_owed:
                        burst_owed -= 1
                    else:
                        by_rate += 1
                    if loop.time() >= slice_end:
                        await asyncio.sleep(0)
                        if not ctx.loading():
                            break
                        slice_end = loop.time() + _SLICE
                await asyncio.sleep(_TICK)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            stop = min(loop.time(), end)
            # Crashed: what it had scheduled by its last tick; else the whole load.
            by_schedule = min(scheduled, whole) if cancelled else whole
            offer.set(burst_offered + by_schedule, max(0.0, stop - origin), behind)


@dataclass(frozen=True)
class SubscriberParams:
    """Parameters of ``market_data_subscriber``."""

    source: str
    connect: str
    symbols: tuple[str, ...]
    processing_us: float
    options: SocketOptions


def _parse_subscriber(t: Table) -> SubscriberParams:
    return SubscriberParams(
        source=t.name("source", REQUIRED),
        connect=t.text("connect", REQUIRED),
        symbols=_symbols(t, ()),
        processing_us=_service_us(t, "processing_us"),
        options=t.options(),
    )


def _expect(ctx: RunContext, name: str, p: SubscriberParams) -> list[bytes]:
    """Register what subscriber ``name`` should receive: the updates its publisher sent
    on the topics it subscribed to. Returns those topics.
    """
    stream = ctx.metrics.stream(p.source, "PUB/SUB")
    topics = [topic_for(s) for s in p.symbols] or [TOPIC_PREFIX]
    ctx.objects.setdefault(f"{p.source}.topics", []).extend(topics)  # for forwarder_filtered
    ctx.expected[(p.source, name)] = lambda: sum(
        n for topic, n in stream.sent_by_topic.items() if any(topic.startswith(t) for t in topics)
    )
    return topics


def register_expectations(spec: ComponentSpec, ctx: RunContext) -> None:
    """Register ``spec``'s expectations in ``ctx`` without running it (for a component
    that runs in another process, whose counts are merged into ``ctx`` at the end).
    """
    if spec.kind == "market_data_subscriber":
        _expect(ctx, spec.name, spec.params)


async def _run_subscriber(net: Network, name: str, p: SubscriberParams, ctx: RunContext) -> None:
    stream = ctx.metrics.stream(p.source, "PUB/SUB")
    receipt = stream.receiver(name)
    topics = _expect(ctx, name, p)
    work = Work(p.processing_us / 1e6) if p.processing_us else None
    last: dict[str, int] = {}
    timeline = ctx.metrics.timeline
    loop = asyncio.get_running_loop()
    start, source, record = ctx.start, p.source, receipt.record
    with net.subscriber(connect=p.connect, topics=topics, options=p.options) as sub:
        ctx.track(p.source, sub)
        recv = sub.recv
        while True:
            msg = await recv(timeout=math.inf)
            try:
                update = decode_market_data(msg)
            except ProtocolError:
                stream.counters["malformed"] += 1
                continue
            record(net.time_ns() - update.timestamp_ns)
            elapsed = loop.time() - start  # ctx.elapsed(): nothing ran since the receive
            timeline.add(elapsed, source, "delivered")
            data = update.data
            seq = data.sequence
            symbol = data.symbol
            previous = last.get(symbol)
            if previous is not None:
                if seq > previous + 1:
                    receipt.gaps += 1
                    stream.counters["missing"] += seq - previous - 1
                    timeline.add(elapsed, source, "gap")
                elif seq <= previous:
                    stream.counters["sequence_restarts"] += 1
            last[symbol] = seq
            if work is not None:
                await work.do()


# -- risk validation -----------------------------------------------------------------


@dataclass(frozen=True)
class RiskServerParams:
    """Parameters of ``risk_server``."""

    bind: str
    capital: float
    max_position: int
    service_us: float
    options: SocketOptions


def _parse_risk_server(t: Table) -> RiskServerParams:
    return RiskServerParams(
        bind=t.text("bind", REQUIRED),
        capital=t.number("capital", 1_000_000.0, maximum=MAX_CAPITAL),
        max_position=t.integer("max_position", 1000, minimum=1, maximum=MAX_QUANTITY),
        service_us=_service_us(t, "service_us"),
        options=t.options(),
    )


async def _run_risk_server(net: Network, name: str, p: RiskServerParams, ctx: RunContext) -> None:
    book = RiskBook(RiskLimits(capital=p.capital, default_max_position=p.max_position))
    ctx.objects[name] = book
    stop = GracefulStop()
    with net.worker(bind=p.bind, options=risk_server_options(p.options)) as rep:
        ctx.serving(name, stop.shutdown)
        try:
            await serve_lazy_pirate(
                rep, risk_handler(book, service_time=p.service_us / 1e6), stop=stop
            )
        finally:
            ctx.done_serving(name, stop.shutdown)


@dataclass(frozen=True)
class RiskClientParams:
    """Parameters of ``risk_client``."""

    connect: str
    rate: float
    symbols: tuple[str, ...]
    timeout_ms: float
    attempts: int
    max_quantity: int
    options: SocketOptions


def _attempts(t: Table) -> int:
    """``attempts``: sends of a request, the first included (as the clients'
    ``attempts=``); the old name ``retries`` is refused with the key to write.
    """
    if t.has("retries"):
        old = t.integer("retries", REQUIRED, minimum=0)
        raise t.error(
            "retries",
            f"is now 'attempts' (sends of a request, the first included, as it always "
            f"counted): write attempts = {old}",
        )
    value: int = t.integer("attempts", 3, minimum=1, maximum=MAX_ATTEMPTS)
    return value


def _parse_risk_client(t: Table) -> RiskClientParams:
    return RiskClientParams(
        connect=t.text("connect", REQUIRED),
        rate=t.number("rate", 100.0, positive=True, maximum=MAX_REQUEST_RATE),
        symbols=_symbols(t, DEFAULT_SYMBOLS) or DEFAULT_SYMBOLS,
        timeout_ms=_interval_ms(t, "timeout_ms", 2500.0),
        attempts=_attempts(t),
        max_quantity=t.integer("max_quantity", 100, minimum=1, maximum=MAX_QUANTITY),
        options=t.options(),
    )


async def _run_risk_client(net: Network, name: str, p: RiskClientParams, ctx: RunContext) -> None:
    """Send an order every ``1 / rate`` s by the loop's clock, one in flight.

    A closed loop: while it waits for a reply (or its attempts' timeouts) its
    schedule goes on, and it sends the orders that came due as soon as it can,
    back to back; what the load period ended before it could send is the stream's
    shortfall (:class:`~transportkit.scenario._metrics.Load`, ``closed_loop``).
    """
    stream = ctx.metrics.stream(name, "REQ/REP")
    offer = _Offer(stream.offer(p.rate, closed_loop=True))
    rng = ctx.rng(name)
    loop = asyncio.get_running_loop()
    client = ReliableRiskClient(
        net, p.connect, timeout=p.timeout_ms / 1000, attempts=p.attempts, options=p.options
    )
    ctx.objects[name] = client
    interval = 1.0 / p.rate
    origin = next_at = loop.time()
    end = ctx.start + ctx.duration
    order_id = 0
    sent = behind = 0
    in_flight = False
    try:
        while ctx.loading():
            order_id += 1
            order = Order(
                id=f"{name}-{order_id}",
                symbol=p.symbols[rng.randrange(len(p.symbols))],
                side=SIDE_BUY if rng.random() < 0.5 else SIDE_SELL,
                quantity=rng.randrange(1, p.max_quantity + 1),
                price=round(rng.uniform(50, 150), 2),
                timestamp_ns=net.time_ns(),
            )
            stream.sent += 1
            sent += 1
            in_flight = True
            sent_ns = net.time_ns()
            try:
                result = await client.validate(order)
            except ServiceUnavailableError:
                stream.failures += 1
                ctx.metrics.timeline.add(ctx.elapsed(), name, "failed")
            else:
                stream.deliver("replies", net.time_ns() - sent_ns)
                ctx.metrics.timeline.delivered(ctx.elapsed(), name)
                ctx.objects.setdefault(f"{name}.answered", set()).add(order.id)
                stream.counters["approved" if result.approved else "rejected"] += 1
                if not result.approved:
                    ctx.metrics.timeline.add(ctx.elapsed(), name, "rejected")
            in_flight = False
            next_at += interval
            now = loop.time()
            overdue = _slots(p.rate, min(now, end) - next_at)
            behind = max(behind, overdue)
            offer.set(sent + overdue, min(now, end) - origin, behind)
            await asyncio.sleep(max(0.0, next_at - now))
    finally:
        stop = min(loop.time(), end)
        # The orders that came due before the load ended (or the node crashed) and
        # were never sent: from the slot after the one in flight.
        first_unsent = next_at + interval if in_flight else next_at
        offer.set(sent + _slots(p.rate, stop - first_unsent), max(0.0, stop - origin), behind)
        stream.counters["retries"] += client.client.stats.retries
        client.close()


# -- order pipeline under Paranoid Pirate -------------------------------------------


@dataclass(frozen=True)
class QueueParams:
    """Parameters of ``paranoid_queue``."""

    frontend: str
    backend: str
    heartbeat_ms: float
    liveness: int


def _parse_queue(t: Table) -> QueueParams:
    return QueueParams(
        frontend=t.text("frontend", REQUIRED),
        backend=t.text("backend", REQUIRED),
        heartbeat_ms=_interval_ms(t, "heartbeat_ms", 1000.0, minimum=MIN_HEARTBEAT_MS),
        liveness=t.integer("liveness", 3, minimum=1, maximum=MAX_LIVENESS),
    )


async def _run_queue(net: Network, name: str, p: QueueParams, ctx: RunContext) -> None:
    queue = ParanoidPirateQueue(
        net,
        frontend=p.frontend,
        backend=p.backend,
        heartbeat_interval=p.heartbeat_ms / 1000,
        liveness=p.liveness,
    )
    ctx.objects[name] = queue
    ctx.serving(name, queue.shutdown)
    try:
        await queue.run()
    finally:
        ctx.done_serving(name, queue.shutdown)
        queue.close()


@dataclass(frozen=True)
class WorkerParams:
    """Parameters of ``paranoid_worker``."""

    connect: str
    stream: str
    heartbeat_ms: float
    liveness: int
    service_us: float


def _parse_worker(t: Table) -> WorkerParams:
    return WorkerParams(
        connect=t.text("connect", REQUIRED),
        stream=t.name("stream", REQUIRED),
        heartbeat_ms=_interval_ms(t, "heartbeat_ms", 1000.0, minimum=MIN_HEARTBEAT_MS),
        liveness=t.integer("liveness", 3, minimum=1, maximum=MAX_LIVENESS),
        service_us=_service_us(t, "service_us"),
    )


async def _run_worker(net: Network, name: str, p: WorkerParams, ctx: RunContext) -> None:
    processed: Counter[str] = ctx.objects.setdefault(f"{p.stream}.processed", Counter())
    stream = ctx.metrics.stream(p.stream, "REQ/REP")
    work = Work(p.service_us / 1e6) if p.service_us else None

    async def handle(body: list[bytes]) -> list[bytes]:
        if work is not None:
            await work.do()
        try:
            order = parse(Order, single_frame(body, "order request"), "order request")
        except ProtocolError:
            stream.counters[f"malformed at {name}"] += 1
            return [ValidationResult(approved=False, reason=MALFORMED_ORDER).SerializeToString()]
        processed[order.id] += 1
        stream.counters[f"processed by {name}"] += 1
        return [ValidationResult(order_id=order.id, approved=True).SerializeToString()]

    worker = ParanoidPirateWorker(
        net,
        p.connect,
        handle,
        heartbeat_interval=p.heartbeat_ms / 1000,
        liveness=p.liveness,
    )
    try:
        await worker.run()
    finally:
        worker.close()


def _check_orders(ctx: RunContext) -> tuple[bool, str]:
    """For every stream served by workers: each answered order was processed; none lost.

    Orders processed twice (a retry after a lost reply) are reported, not failed.
    """
    streams = sorted(k[: -len(".processed")] for k in ctx.objects if k.endswith(".processed"))
    if not streams:
        return False, "no paranoid_worker processed any stream"
    parts = []
    for stream in streams:
        processed: Counter[str] = ctx.objects[f"{stream}.processed"]
        answered: set[str] = ctx.objects.get(f"{stream}.answered", set())
        lost = sorted(answered - set(processed))
        if lost:
            return False, f"{stream}: {len(lost)} answered orders never processed: {lost[:3]}"
        twice = sum(1 for count in processed.values() if count > 1)
        parts.append(f"{stream}: {len(answered)} answered, all processed, {twice} twice")
    return True, "; ".join(parts) + " (a retry after a lost reply: keep orders idempotent)"


# -- Clone market-data feed ----------------------------------------------------------


@dataclass(frozen=True)
class CloneServerParams:
    """Parameters of ``clone_server``."""

    publisher: str
    snapshot: str
    symbols: tuple[str, ...]
    rate: float
    heartbeat_ms: float
    options: SocketOptions


def _parse_clone_server(t: Table) -> CloneServerParams:
    return CloneServerParams(
        publisher=t.text("publisher", REQUIRED),
        snapshot=t.text("snapshot", REQUIRED),
        symbols=_symbols(t, DEFAULT_SYMBOLS) or DEFAULT_SYMBOLS,
        rate=t.number("rate", 100.0, positive=True, maximum=MAX_REQUEST_RATE),
        heartbeat_ms=_interval_ms(t, "heartbeat_ms", 1000.0, minimum=MIN_HEARTBEAT_MS),
        options=t.options(),
    )


async def _run_clone_server(net: Network, name: str, p: CloneServerParams, ctx: RunContext) -> None:
    stream = ctx.metrics.stream(name, "CHP")
    offer = _Offer(stream.offer(p.rate))
    rng = ctx.rng(name)
    loop = asyncio.get_running_loop()
    async with CloneServer(
        net,
        publisher=p.publisher,
        snapshot=p.snapshot,
        heartbeat=p.heartbeat_ms / 1000,
        publisher_options=p.options,
        # Both ends are transportkit's: HUGZ carry the sequence, so a client also sees
        # the loss of the last updates before a quiet spell (CHP's HUGZ carry 0).
        extensions=True,
    ) as server:
        ctx.objects[name] = server
        ctx.serving(name, server.shutdown)
        try:
            interval = 1.0 / p.rate
            origin = loop.time()
            end = ctx.start + ctx.duration
            sent = behind = 0
            try:
                while ctx.loading():
                    # By the loop's clock: the updates due since it started (the first at
                    # once), each wake-up; a late one is made up, in slices.
                    now = loop.time()
                    due = _count(p.rate, min(now, end) - origin) + 1
                    behind = max(behind, due - sent - 1)
                    offer.set(due, now - origin, behind)
                    slice_end = now + _SLICE
                    while sent < due:
                        symbol = p.symbols[rng.randrange(len(p.symbols))]
                        await server.set(topic_for(symbol), b"%.2f" % rng.uniform(50, 150))
                        stream.sent += 1
                        sent += 1
                        if loop.time() >= slice_end and sent < due:
                            await asyncio.sleep(0)
                            if not ctx.loading():
                                break
                            slice_end = loop.time() + _SLICE
                    await asyncio.sleep(interval)
            finally:
                stop = min(loop.time(), end)
                offered = _slots(p.rate, stop - origin)
                if stop < end:  # crashed: a wake-up at that very moment may have sent it
                    offered = max(offered, sent)
                offer.set(offered, max(0.0, stop - origin), behind)
            await asyncio.sleep(math.inf)
        finally:
            ctx.done_serving(name, server.shutdown)


@dataclass(frozen=True)
class CloneClientParams:
    """Parameters of ``clone_client``."""

    source: str
    snapshot: str
    updates: str
    timeout_ms: float


def _parse_clone_client(t: Table) -> CloneClientParams:
    return CloneClientParams(
        source=t.name("source", REQUIRED),
        snapshot=t.text("snapshot", REQUIRED),
        updates=t.text("updates", REQUIRED),
        timeout_ms=_interval_ms(t, "timeout_ms", 5000.0, minimum=MIN_HEARTBEAT_MS),
    )


class _TimedCloneStats(CloneClientStats):
    """A Clone client's counters that also count its updates (``delivered``) and gaps
    (``gap``) into the run's timeline as they happen (the client has no callback).
    """

    __slots__ = ("_count",)
    _count: Callable[[str, int], None]

    def __init__(self, count: Callable[[str, int], None]) -> None:
        object.__setattr__(self, "_count", count)
        super().__init__()

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("updates", "gaps"):
            grew = value - getattr(self, name, 0)
            if grew > 0:
                self._count("delivered" if name == "updates" else "gap", grew)
        super().__setattr__(name, value)


async def _run_clone_client(net: Network, name: str, p: CloneClientParams, ctx: RunContext) -> None:
    stream = ctx.metrics.stream(p.source, "CHP")
    receipt = stream.receiver(name)
    client = CloneClient(net, snapshot=p.snapshot, updates=p.updates, timeout=p.timeout_ms / 1000)
    timeline = ctx.metrics.timeline
    client.stats = _TimedCloneStats(lambda what, n: timeline.add(ctx.elapsed(), p.source, what, n))
    ctx.objects[name] = client
    ctx.objects.setdefault("clone.pairs", []).append((name, p.source))
    try:
        await client.run()
    finally:
        receipt.delivered = client.stats.updates
        receipt.gaps = client.stats.gaps
        stream.counters[f"{name} resyncs"] = client.stats.resyncs
        stream.counters[f"{name} snapshots"] = client.stats.snapshots
        await client.close()


def _check_clone(ctx: RunContext) -> tuple[bool, str]:
    """Each Clone client's map equals its server's at the end of the run."""
    pairs = ctx.objects.get("clone.pairs", [])
    if not pairs:
        return False, "no clone_client in the scenario"
    for client_name, server_name in pairs:
        client, server = ctx.objects[client_name], ctx.objects.get(server_name)
        if server is None:
            return False, f"server {server_name!r} never ran"
        if client.state != server.values:
            differ = sorted(set(client.state.items()) ^ set(server.values.items()))[:3]
            return False, f"{client_name} differs from {server_name}: {differ}"
    return True, f"{len(pairs)} client(s) hold exactly their server's map"


# -- conflation ----------------------------------------------------------------------


@dataclass(frozen=True)
class ConflatingParams:
    """Parameters of ``conflating_subscriber``."""

    source: str
    connect: str
    poll_ms: float
    options: SocketOptions


def _parse_conflating(t: Table) -> ConflatingParams:
    return ConflatingParams(
        source=t.name("source", REQUIRED),
        connect=t.text("connect", REQUIRED),
        poll_ms=_interval_ms(t, "poll_ms", 50.0),
        options=t.options(),
    )


async def _run_conflating(net: Network, name: str, p: ConflatingParams, ctx: RunContext) -> None:
    stream = ctx.metrics.stream(p.source, "PUB/SUB")
    with net.subscriber(connect=p.connect, topics=[TOPIC_PREFIX], options=p.options) as sub:
        ctx.track(p.source, sub)
        conflating = ConflatingSubscriber(sub)
        ctx.objects[name] = conflating
        ctx.objects.setdefault("conflation.pairs", []).append((name, p.source))
        try:
            while True:
                await asyncio.sleep(p.poll_ms / 1000)
                for message in conflating.receive_latest().values():
                    update = decode_market_data(message)
                    stream.deliver(name, net.time_ns() - update.timestamp_ns)
                    ctx.metrics.timeline.delivered(ctx.elapsed(), p.source)
        finally:
            stream.counters[f"{name} superseded"] = conflating.superseded


def _check_conflation(ctx: RunContext) -> tuple[bool, str]:
    """Each conflating subscriber ends with the publisher's last update per symbol."""
    pairs = ctx.objects.get("conflation.pairs", [])
    if not pairs:
        return False, "no conflating_subscriber in the scenario"
    for sub_name, source in pairs:
        last: dict[str, int] = ctx.objects.get(source, {})
        latest = ctx.objects[sub_name].latest
        got = {
            decode_market_data(m).data.symbol: decode_market_data(m).data.sequence
            for m in latest.values()
        }
        want = {symbol: seq for symbol, seq in last.items() if seq}
        if got != want:
            return False, f"{sub_name} holds {got}, the publisher's last is {want}"
    return True, f"{len(pairs)} conflating subscriber(s) hold every symbol's last update"


# -- forwarder -----------------------------------------------------------------------


@dataclass(frozen=True)
class ForwarderParams:
    """Parameters of ``forwarder``."""

    source: str
    upstream: str | None
    frontend: str | None
    backend: str
    options: SocketOptions


def _parse_forwarder(t: Table) -> ForwarderParams:
    upstream, frontend = t.text("upstream"), t.text("frontend")
    if upstream is None and frontend is None:
        raise t.error("upstream", "a forwarder needs an upstream to connect to or a frontend")
    return ForwarderParams(
        source=t.name("source", REQUIRED),
        upstream=upstream,
        frontend=frontend,
        backend=t.text("backend", REQUIRED),
        options=t.options(),
    )


async def _run_forwarder(net: Network, name: str, p: ForwarderParams, ctx: RunContext) -> None:
    stream = ctx.metrics.stream(p.source, "PUB/SUB")
    proxy = forwarder(
        net,
        frontend=p.frontend or (),
        upstream=p.upstream or (),
        backend=p.backend,
        options=p.options,
    )
    ctx.track(p.source, proxy.backend)  # its XPUB's HWM drops count for the feed
    ctx.objects[name] = proxy
    ctx.objects.setdefault("forwarder.pairs", []).append((name, p.source))
    try:
        await proxy.run()
    finally:
        stream.counters[f"{name} forwarded"] = proxy.stats.forwarded
        stream.counters[f"{name} subscriptions"] = proxy.stats.returned
        proxy.close()


def _check_forwarder(ctx: RunContext) -> tuple[bool, str]:
    """Subscriptions went upstream through each forwarder: it passed some on, and it
    forwarded updates, but none of a topic no subscriber of its feed asked for (the
    feed filtered them, knowing the subscriptions only through the forwarder).
    """
    pairs = ctx.objects.get("forwarder.pairs", [])
    if not pairs:
        return False, "no forwarder in the scenario"
    for name, source in pairs:
        stats = ctx.objects[name].stats
        stream = ctx.metrics.stream(source, "PUB/SUB")
        topics: list[bytes] = ctx.objects.get(f"{source}.topics", [])
        wanted = sum(
            n for topic, n in stream.sent_by_topic.items() if topic.startswith(tuple(topics))
        )
        if stats.returned == 0:
            return False, f"{name} passed no subscription upstream"
        if not 0 < stats.forwarded <= wanted:
            return False, (
                f"{name} forwarded {stats.forwarded} updates; {source} sent {wanted} on "
                f"the topics its subscribers asked for, {stream.sent} in all"
            )
    return True, f"{len(pairs)} forwarder(s) carried subscriptions upstream and only those topics"


CUSTOM_CHECKS.update(
    {
        "orders_processed": _check_orders,
        "clone_converged": _check_clone,
        "conflated_latest": _check_conflation,
        "forwarder_filtered": _check_forwarder,
    }
)


COMPONENTS: dict[str, ComponentKind] = {
    "market_data_publisher": ComponentKind(
        _parse_publisher,
        _run_publisher,
        "PUB of MARKET.<symbol> updates at `rate` per second, plus [[burst]]s",
    ),
    "market_data_subscriber": ComponentKind(
        _parse_subscriber,
        _run_subscriber,
        "SUB of a publisher's stream; counts deliveries, gaps, latency; `processing_us`",
    ),
    "risk_server": ComponentKind(
        _parse_risk_server,
        _run_risk_server,
        "REP risk check (position limit, capital) behind the Lazy Pirate protocol",
    ),
    "risk_client": ComponentKind(
        _parse_risk_client,
        _run_risk_client,
        "Lazy Pirate client sending orders at `rate`; failures after `attempts` timeouts",
    ),
    "order_client": ComponentKind(
        _parse_risk_client,
        _run_risk_client,
        "Lazy Pirate client sending orders to a queue (the risk_client, by another name)",
    ),
    "paranoid_queue": ComponentKind(
        _parse_queue, _run_queue, "Paranoid Pirate queue (ROUTER front end and back end)"
    ),
    "paranoid_worker": ComponentKind(
        _parse_worker, _run_worker, "Paranoid Pirate worker processing orders of `stream`"
    ),
    "clone_server": ComponentKind(
        _parse_clone_server, _run_clone_server, "Clone (12/CHP) server of MARKET.<symbol> values"
    ),
    "clone_client": ComponentKind(
        _parse_clone_client, _run_clone_client, "Clone client: snapshot, updates, gap resync"
    ),
    "conflating_subscriber": ComponentKind(
        _parse_conflating,
        _run_conflating,
        "an application-level ConflatingSubscriber, draining every `poll_ms`",
    ),
    "forwarder": ComponentKind(
        _parse_forwarder,
        _run_forwarder,
        "XSUB/XPUB proxy of `source`'s feed: `upstream` (or `frontend`) to `backend`",
    ),
}
