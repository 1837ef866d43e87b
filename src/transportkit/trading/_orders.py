"""Order distribution over push/pull (the order pipeline): one producer, many workers."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from transportkit import ProtocolError, Puller, Pusher
from transportkit._log import limited
from transportkit.trading._codec import parse, single_frame
from transportkit.trading._loop import LoopStop
from transportkit.trading._pb.trading_pb2 import Order

logger = logging.getLogger(__name__)

__all__ = ["OrderHandler", "OrderProducer", "OrderWorkerStats", "run_order_worker"]

OrderHandler: TypeAlias = Callable[[Order], Awaitable[None] | None]
"""Processes one order; may be a plain function or a coroutine function."""


class OrderProducer:
    """Sends orders, one frame each, to the workers behind a PUSH socket.

    Attributes:
        sent: Orders accepted by the socket.
    """

    def __init__(self, pusher: Pusher) -> None:
        """Send on ``pusher`` (not closed here)."""
        self.pusher: Final = pusher
        self.sent = 0

    async def send_order(self, order: Order) -> None:
        """Send ``order`` to the next worker in round-robin order.

        Waits while every worker's pipe is at its HWM, up to ``sndtimeo``.

        Raises:
            Timeout: ``sndtimeo`` elapsed at the HWM.
            ClosedError: The socket is closed.
        """
        await self.pusher.send([order.SerializeToString()])
        self.sent += 1


@dataclass(slots=True)
class OrderWorkerStats:
    """Counters of one :func:`run_order_worker` loop, updated as it runs.

    Attributes:
        worker_id: The worker's name.
        processed: Orders handed to the handler and completed.
        malformed: Messages skipped because they were not one Order frame.
        order_ids: Ids of the processed orders, in processing order.
    """

    worker_id: str
    processed: int = 0
    malformed: int = 0
    order_ids: list[str] = field(default_factory=list)


async def run_order_worker(
    puller: Puller,
    worker_id: str,
    handle: OrderHandler,
    *,
    max_orders: int | None = None,
    stop: asyncio.Event | None = None,
    stats: OrderWorkerStats | None = None,
) -> OrderWorkerStats:
    """Receive orders from ``puller`` and pass each to ``handle``, until told to stop.

    A message that is not a single frame decoding as an Order is skipped and counted.
    An exception raised by ``handle`` ends the loop and propagates: a failing handler
    is a bug, not bad input.

    Args:
        puller: A connected PULL socket; it is not closed here.
        worker_id: The worker's name, for the stats.
        handle: Called with each order (awaited if it returns an awaitable).
        max_orders: Return after this many orders (None: no limit).
        stop: Return once this event is set (checked between orders).
        stats: Counters to update as the loop runs (a new object if None).

    Returns:
        The counters. The loop also returns when ``puller`` is closed.
    """
    stats = OrderWorkerStats(worker_id) if stats is None else stats
    with LoopStop(stop) as watched:
        while max_orders is None or stats.processed < max_orders:
            message = await watched.recv(puller)
            if message is None:
                break
            try:
                order = parse(Order, single_frame(message, "order"), "order")
            except ProtocolError as exc:
                stats.malformed += 1
                limited(
                    logger,
                    logging.WARNING,
                    "malformed",
                    "malformed order: %s",
                    exc,
                    extra={"reason": str(exc), "counter": "malformed"},
                )
                continue
            outcome = handle(order)
            if inspect.isawaitable(outcome):
                await outcome
            stats.processed += 1
            stats.order_ids.append(order.id)
    return stats
