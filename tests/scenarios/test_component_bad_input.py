"""Scenario components outlive any one bad request."""

from __future__ import annotations

import asyncio

from transportkit import Message, Timeout
from transportkit.patterns.paranoid_pirate import ParanoidPirateQueue
from transportkit.scenario._components import COMPONENTS, WorkerParams
from transportkit.scenario._context import RunContext
from transportkit.scenario._metrics import Metrics
from transportkit.sim_backend import Node, Simulation
from transportkit.trading import MALFORMED_ORDER, Order, ValidationResult


def test_the_order_worker_answers_a_request_that_is_not_an_order_and_keeps_working() -> None:
    sim = Simulation(seed=2)
    ctx = RunContext(Metrics(), duration=10.0, seed=2)
    params = WorkerParams(
        connect="tcp://queue:5556", stream="orders", heartbeat_ms=1000, liveness=3, service_us=0
    )

    async def queue(node: Node) -> None:
        with ParanoidPirateQueue(node, frontend="tcp://*:5555", backend="tcp://*:5556") as q:
            await q.run()

    sim.node("queue", main=queue)
    sim.node("worker", main=lambda node: COMPONENTS["paranoid_worker"].run(node, "w", params, ctx))
    client = sim.node("client")
    good = Order(id="o-1", symbol="AAPL", side=1, quantity=5, price=10.0).SerializeToString()

    async def main() -> list[Message | None]:
        await asyncio.sleep(0.5)
        replies: list[Message | None] = []
        # The plain Lazy Pirate wire format: the order is the only frame.
        for body in ([b"\xff not an order"], [b"2", b"two frames"], [good]):
            with client.requester(connect="tcp://queue:5555") as req:
                try:
                    replies.append(await req.request(body, timeout=2))
                except Timeout:
                    replies.append(None)
        return replies

    replies = sim.run(main(), timeout=30)
    malformed = ValidationResult(approved=False, reason=MALFORMED_ORDER).SerializeToString()
    assert replies[:2] == [[malformed], [malformed]]
    assert replies[2] is not None
    assert ValidationResult.FromString(replies[2][0]).order_id == "o-1"
    assert ctx.metrics.stream("orders", "REQ/REP").counters["malformed at w"] == 2
