"""End-to-end example systems (market data, risk, orders, PAIR), written once for every backend.

Each example is an ``async def`` that receives the networks to use and the endpoint to
bind (dependency injection), builds its sockets, runs, closes its sockets and returns a
summary. Endpoints may use wildcard tcp ports: the example binds first and connects the
other side to the endpoint the bind resolved to.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from transportkit import (
    LOW_LATENCY,
    Monitor,
    Network,
    Socket,
    SocketOptions,
    Timeout,
    TransportError,
    UnsupportedError,
)
from transportkit._timeouts import wait_for
from transportkit.patterns._limits import DEFAULT_MAX_MESSAGE_BYTES
from transportkit.trading._market_data import (
    MarketDataPublisher,
    MarketDataSubscriber,
    topic_for,
)
from transportkit.trading._orders import OrderProducer, OrderWorkerStats, run_order_worker
from transportkit.trading._pair import PairChannel
from transportkit.trading._pb.trading_pb2 import (
    SIDE_BUY,
    SIDE_SELL,
    MarketData,
    Order,
    ValidationResult,
)
from transportkit.trading._risk import (
    RiskBook,
    RiskClient,
    RiskLimits,
    RiskServerStats,
    risk_server_options,
    serve_risk,
)

__all__ = [
    "DEMO_LIMITS",
    "WARM_UP_SEQUENCE",
    "MarketDataSummary",
    "OrderPipelineSummary",
    "PairSummary",
    "RiskSummary",
    "SubscriberReport",
    "demo_orders",
    "run_market_data_example",
    "run_order_pipeline_example",
    "run_pair_example",
    "run_risk_example",
]

WARM_UP_SEQUENCE: Final = 0
"""The sequence number of warm-up updates, published until every subscriber has joined
(real updates are numbered from 1)."""

MALFORMED_REQUEST: Final = b"\xff\xff\xff\xff"
"""A request that does not decode as an Order (a truncated varint)."""


def _close_all(sockets: Iterable[Socket]) -> None:
    for sock in sockets:
        sock.close()


async def _finish(tasks: Sequence[asyncio.Task[object]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# --- market data (PUB/SUB) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriberReport:
    """What one subscriber of :func:`run_market_data_example` saw.

    Attributes:
        name: The subscriber's network name.
        received: Real (non-warm-up) updates received.
        lost: Real updates published but not received (HWM drops, or the wait for them
            ended first).
        out_of_order: Updates whose sequence was not above the previous one (never
            expected: pipes are FIFO).
        malformed: Messages that did not decode.
        mean_latency_ns: Mean of receive time minus publish stamp, or None if nothing
            was received (in a simulation this is the modelled latency).
    """

    name: str
    received: int
    lost: int
    out_of_order: int
    malformed: int
    mean_latency_ns: float | None


@dataclass(frozen=True, slots=True)
class MarketDataSummary:
    """The outcome of :func:`run_market_data_example`.

    Attributes:
        endpoint: The endpoint the publisher bound (resolved).
        symbols: The symbols published.
        published: Real updates published.
        warm_up: Warm-up updates published before every subscriber had joined.
        subscribers: One report per subscriber, in the order of ``sub_nets``.
        elapsed_s: Time the example took, on the event loop's clock (virtual in a
            simulation).
    """

    endpoint: str
    symbols: tuple[str, ...]
    published: int
    warm_up: int
    subscribers: tuple[SubscriberReport, ...]
    elapsed_s: float


async def _consume_market_data(
    subscriber: MarketDataSubscriber,
    *,
    name: str,
    joined: asyncio.Event,
    expected: int,
    idle_timeout: float,
    network: Network,
) -> SubscriberReport:
    while True:
        update = await subscriber.receive(timeout=math.inf)
        if update.data.sequence == WARM_UP_SEQUENCE:
            joined.set()
            break
    received = out_of_order = 0
    last_sequence = WARM_UP_SEQUENCE
    latency_total = 0
    while received < expected:
        try:
            update = await subscriber.receive(timeout=idle_timeout)
        except Timeout:
            break
        sequence = update.data.sequence
        if sequence == WARM_UP_SEQUENCE:
            continue
        if sequence <= last_sequence:
            out_of_order += 1
        last_sequence = max(last_sequence, sequence)
        received += 1
        latency_total += network.time_ns() - update.timestamp_ns
    return SubscriberReport(
        name=name,
        received=received,
        lost=expected - received,
        out_of_order=out_of_order,
        malformed=subscriber.malformed,
        mean_latency_ns=latency_total / received if received else None,
    )


def _quote(symbol_index: int, sequence: int, symbol: str) -> MarketData:
    mid = 100.0 * (symbol_index + 1) + (sequence % 50) * 0.01
    return MarketData(
        symbol=symbol,
        bid=round(mid - 0.01, 2),
        ask=round(mid + 0.01, 2),
        last=round(mid, 2),
        bid_size=100 * (1 + sequence % 5),
        ask_size=100 * (1 + (sequence + 2) % 5),
        sequence=sequence,
    )


async def run_market_data_example(
    pub_net: Network,
    sub_nets: Sequence[Network],
    endpoint: str,
    *,
    symbols: Sequence[str] = ("AAPL", "MSFT", "GOOG"),
    updates: int = 100,
    options: SocketOptions = LOW_LATENCY,
    sync_timeout: float = 5.0,
    sync_interval: float = 0.005,
    idle_timeout: float = 1.0,
) -> MarketDataSummary:
    """Publish ``updates`` quotes round-robin over ``symbols`` to every subscriber.

    The publisher binds ``endpoint``; one subscriber per network in ``sub_nets`` connects
    and subscribes to every symbol. Because a subscription takes time to reach the
    publisher (the slow joiner), the publisher first sends warm-up updates (sequence
    :data:`WARM_UP_SEQUENCE`) every ``sync_interval`` seconds until each subscriber has
    received one; only then are the real updates (sequences 1 to ``updates``) published.
    A subscriber stops when it has them all, or after ``idle_timeout`` seconds without
    one (what it missed is reported as lost).

    Raises:
        Timeout: Some subscriber had not joined after ``sync_timeout`` seconds.
        ValueError: ``symbols`` is empty or holds an invalid symbol.
    """
    if not symbols:
        raise ValueError("run_market_data_example needs at least one symbol")
    topics = [topic_for(symbol) for symbol in symbols]
    loop = asyncio.get_running_loop()
    start = loop.time()
    sockets: list[Socket] = []
    tasks: list[asyncio.Task[SubscriberReport]] = []
    try:
        pub_sock = pub_net.publisher(options=options)
        sockets.append(pub_sock)
        resolved = pub_sock.bind(endpoint)
        joined = [asyncio.Event() for _ in sub_nets]
        for net, event in zip(sub_nets, joined, strict=True):
            sub_sock = net.subscriber(connect=resolved, topics=topics, options=options)
            sockets.append(sub_sock)
            consumer = _consume_market_data(
                MarketDataSubscriber(sub_sock),
                name=net.name,
                joined=event,
                expected=updates,
                idle_timeout=idle_timeout,
                network=net,
            )
            tasks.append(asyncio.create_task(consumer))
        publisher = MarketDataPublisher(pub_sock, pub_net.time_ns)
        deadline = start + sync_timeout
        while not all(event.is_set() for event in joined):
            if loop.time() >= deadline:
                missing = [n.name for n, e in zip(sub_nets, joined, strict=True) if not e.is_set()]
                raise Timeout(f"subscribers {missing} did not join within {sync_timeout} s")
            await publisher.publish(_quote(0, WARM_UP_SEQUENCE, symbols[0]))
            await asyncio.sleep(sync_interval)
        warm_up = publisher.published
        for sequence in range(1, updates + 1):
            index = (sequence - 1) % len(symbols)
            await publisher.publish(_quote(index, sequence, symbols[index]))
            if sequence % 64 == 0:
                await asyncio.sleep(0)
        reports = await asyncio.gather(*tasks)
        return MarketDataSummary(
            endpoint=resolved,
            symbols=tuple(symbols),
            published=publisher.published - warm_up,
            warm_up=warm_up,
            subscribers=tuple(reports),
            elapsed_s=loop.time() - start,
        )
    finally:
        await _finish(tasks)
        _close_all(sockets)


# --- risk validation (REQ/REP) ---------------------------------------------------------

DEMO_LIMITS: Final = RiskLimits(
    capital=1_000_000.0, max_position={"AAPL": 1000, "MSFT": 500}, default_max_position=1000
)
"""Limits for :func:`demo_orders`: one million of capital, AAPL 1000, MSFT 500."""


def demo_orders() -> list[Order]:
    """Orders that, against :data:`DEMO_LIMITS`, show every verdict: approvals, a
    position-limit breach, insufficient capital and an invalid order.
    """
    specs = [
        ("AAPL", SIDE_BUY, 500, 190.0),
        ("AAPL", SIDE_BUY, 600, 190.0),
        ("MSFT", SIDE_BUY, 400, 420.0),
        ("AAPL", SIDE_SELL, 200, 191.0),
        ("MSFT", SIDE_BUY, 200, 420.0),
        ("NVDA", SIDE_BUY, 900, 1200.0),
        ("MSFT", SIDE_SELL, 100, 421.0),
        ("GOOG", SIDE_BUY, 0, 170.0),
    ]
    return [
        Order(
            id=f"ord-{n}",
            symbol=symbol,
            side=side,
            quantity=quantity,
            price=price,
            client_id="demo",
        )
        for n, (symbol, side, quantity, price) in enumerate(specs, start=1)
    ]


@dataclass(frozen=True, slots=True)
class RiskSummary:
    """The outcome of :func:`run_risk_example`.

    Attributes:
        endpoint: The endpoint the server bound (resolved).
        results: The verdict on each order, in the order sent.
        approved: Orders approved.
        rejected: Orders rejected (malformed requests not included).
        reasons: Rejection counts by reason, sorted by reason.
        malformed: Malformed requests the server answered (and counted).
        positions: Final non-flat positions, by symbol.
        available_capital: Capital left at the end.
        elapsed_s: Time the example took, on the event loop's clock.
    """

    endpoint: str
    results: tuple[ValidationResult, ...]
    approved: int
    rejected: int
    reasons: dict[str, int]
    malformed: int
    positions: dict[str, int]
    available_capital: float
    elapsed_s: float


async def run_risk_example(
    server_net: Network,
    client_net: Network,
    endpoint: str,
    orders: Sequence[Order],
    *,
    limits: RiskLimits = DEMO_LIMITS,
    malformed_requests: int = 0,
    timeout: float = 2.0,
    max_message_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES,
) -> RiskSummary:
    """Validate ``orders`` one by one against a risk server.

    The server (REP, :func:`serve_risk`) binds ``endpoint`` on ``server_net``; the client
    (REQ, :class:`RiskClient`) connects from ``client_net``. Each order is stamped with
    the client network's clock before it is sent. First, ``malformed_requests`` requests
    that do not decode are sent, to show that the server answers and counts them.

    The server's socket is made with :func:`risk_server_options`: a request larger than
    ``max_message_bytes`` (default 1 MiB; None: no limit) is dropped by the socket
    where the transport enforces ``maxmsgsize`` (its sender then gets no reply), and
    refused undecoded by :func:`serve_risk` where it does not (inproc).

    Raises:
        Timeout: A reply took longer than ``timeout`` seconds.
        ProtocolError: A reply did not decode.
        ValueError: ``max_message_bytes`` is not None or an int >= 1.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    sockets: list[Socket] = []
    stop = asyncio.Event()
    stats = RiskServerStats()
    book = RiskBook(limits)
    server: asyncio.Task[RiskServerStats] | None = None
    try:
        worker = server_net.worker(options=risk_server_options(max_message_bytes=max_message_bytes))
        sockets.append(worker)
        resolved = worker.bind(endpoint)
        server = asyncio.create_task(
            serve_risk(worker, book, stop=stop, stats=stats, max_message_bytes=max_message_bytes)
        )
        requester = client_net.requester(connect=resolved)
        sockets.append(requester)
        for _ in range(malformed_requests):
            await requester.request([MALFORMED_REQUEST], timeout)
        client = RiskClient(requester)
        results = []
        for order in orders:
            stamped = Order()
            stamped.CopyFrom(order)
            stamped.timestamp_ns = client_net.time_ns()
            results.append(await client.validate(stamped, timeout))
        stop.set()
        await server
        approved = sum(result.approved for result in results)
        reasons: dict[str, int] = {}
        for result in results:
            if not result.approved:
                reasons[result.reason] = reasons.get(result.reason, 0) + 1
        return RiskSummary(
            endpoint=resolved,
            results=tuple(results),
            approved=approved,
            rejected=len(results) - approved,
            reasons=dict(sorted(reasons.items())),
            malformed=stats.malformed,
            positions=book.positions,
            available_capital=book.available_capital,
            elapsed_s=loop.time() - start,
        )
    finally:
        if server is not None:
            await _finish([server])
        _close_all(sockets)


# --- order pipeline (PUSH/PULL) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderPipelineSummary:
    """The outcome of :func:`run_order_pipeline_example`.

    Attributes:
        endpoint: The endpoint the producer bound (resolved).
        sent: Orders sent.
        processed: Orders processed, by worker name (the worker's network name and its
            index: ``"<name>#<i>"``).
        malformed: Messages the workers skipped.
        elapsed_s: Time the example took, on the event loop's clock.
    """

    endpoint: str
    sent: int
    processed: dict[str, int]
    malformed: int
    elapsed_s: float


async def _wait_for_peers(monitor: Monitor, peers: int, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen = 0
    while seen < peers:
        try:
            event = await monitor.recv(timeout=max(0.0, deadline - loop.time()))
        except Timeout:
            return
        if event.name == "HANDSHAKE_SUCCEEDED":
            seen += 1


async def run_order_pipeline_example(
    producer_net: Network,
    worker_nets: Sequence[Network],
    endpoint: str,
    n_orders: int,
    *,
    peer_timeout: float = 1.0,
    completion_timeout: float = 10.0,
) -> OrderPipelineSummary:
    """Distribute ``n_orders`` orders from one producer to one worker per network.

    The producer (PUSH) binds ``endpoint``; the workers (PULL) connect. PUSH deals only
    to peers already connected, so before sending the producer waits (up to
    ``peer_timeout`` seconds, on its socket monitor) for every worker's handshake;
    where the backend reports none, it just proceeds after the wait. The workers stop
    once all orders are processed, or after ``completion_timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    sockets: list[Socket] = []
    tasks: list[asyncio.Task[OrderWorkerStats]] = []
    stop = asyncio.Event()
    done = asyncio.Event()
    total = 0

    def count(_order: Order) -> None:
        nonlocal total
        total += 1
        if total >= n_orders:
            done.set()

    try:
        pusher = producer_net.pusher()
        sockets.append(pusher)
        resolved = pusher.bind(endpoint)
        monitor: Monitor | None
        try:
            monitor = pusher.monitor()
        except UnsupportedError:
            monitor = None
        for index, net in enumerate(worker_nets):
            puller = net.puller(connect=resolved)
            sockets.append(puller)
            worker = run_order_worker(puller, f"{net.name}#{index}", count, stop=stop)
            tasks.append(asyncio.create_task(worker))
        if monitor is not None:
            try:
                await _wait_for_peers(monitor, len(worker_nets), peer_timeout)
            finally:
                monitor.close()
        producer = OrderProducer(pusher)
        for n in range(1, n_orders + 1):
            symbol = ("AAPL", "MSFT", "GOOG")[n % 3]
            side = SIDE_BUY if n % 2 else SIDE_SELL
            order = Order(id=f"ord-{n}", symbol=symbol, side=side, quantity=100, price=100.0)
            order.timestamp_ns = producer_net.time_ns()
            await producer.send_order(order)
        if n_orders:
            with contextlib.suppress(TimeoutError):
                await wait_for(done.wait(), completion_timeout)
        stop.set()
        stats = await asyncio.gather(*tasks)
        return OrderPipelineSummary(
            endpoint=resolved,
            sent=producer.sent,
            processed={s.worker_id: s.processed for s in stats},
            malformed=sum(s.malformed for s in stats),
            elapsed_s=loop.time() - start,
        )
    finally:
        await _finish(tasks)
        _close_all(sockets)


# --- control channel (PAIR) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PairSummary:
    """The outcome of :func:`run_pair_example`.

    Attributes:
        endpoint: The endpoint the controller bound (resolved).
        exchanges: Each command sent and the reply to it, in order.
        elapsed_s: Time the example took, on the event loop's clock.
    """

    endpoint: str
    exchanges: tuple[tuple[str, str], ...]
    elapsed_s: float


def _reply_to(command: str) -> str:
    return "PONG" if command == "PING" else f"ACK {command}"


async def _serve_commands(channel: PairChannel) -> None:
    while True:
        try:
            command = await channel.receive(timeout=math.inf)
        except TransportError:
            return
        await channel.send(_reply_to(command))
        if command == "STOP":
            return


async def run_pair_example(
    controller_net: Network,
    peer_net: Network,
    endpoint: str,
    commands: Sequence[str] = ("PING", "PAUSE", "RESUME"),
    *,
    timeout: float = 2.0,
) -> PairSummary:
    """Drive a peer over a control channel: send each command, wait for its reply.

    The controller binds ``endpoint`` on ``controller_net``; the peer connects from
    ``peer_net`` and answers ``PING`` with ``PONG`` and any other command with
    ``ACK <command>``. A final ``STOP`` is sent (unless ``commands`` ends with one),
    which the peer acknowledges before it exits.

    Raises:
        Timeout: A reply took longer than ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    script = list(commands)
    if not script or script[-1] != "STOP":
        script.append("STOP")
    sockets: list[Socket] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        controller_sock = controller_net.pair()
        sockets.append(controller_sock)
        resolved = controller_sock.bind(endpoint)
        peer_sock = peer_net.pair(connect=resolved)
        sockets.append(peer_sock)
        tasks.append(asyncio.create_task(_serve_commands(PairChannel(peer_sock))))
        controller = PairChannel(controller_sock)
        exchanges = []
        for command in script:
            await controller.send(command)
            exchanges.append((command, await controller.receive(timeout)))
        await tasks[0]
        return PairSummary(
            endpoint=resolved, exchanges=tuple(exchanges), elapsed_s=loop.time() - start
        )
    finally:
        await _finish(tasks)
        _close_all(sockets)
