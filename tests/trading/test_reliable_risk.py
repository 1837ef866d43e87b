"""ReliableRiskClient: a verdict or a typed failure, on both backends."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

import pytest

from transportkit import ServiceUnavailableError
from transportkit.patterns import serve_lazy_pirate
from transportkit.sim_backend import Crash, Node, Restart, Simulation, schedule_faults
from transportkit.testing import open_harness
from transportkit.trading import (
    SIDE_BUY,
    Order,
    ReliableRiskClient,
    RiskBook,
    RiskLimits,
    risk_handler,
    serve_risk,
)


def order(i: int, quantity: int = 10) -> Order:
    return Order(id=f"o{i}", symbol="AAPL", side=SIDE_BUY, quantity=quantity, price=100.0)


def test_reliable_client_gets_each_orders_own_verdict(tk_backend: str) -> None:
    with open_harness(tk_backend) as h:

        async def body() -> list[tuple[str, bool]]:
            book = RiskBook(RiskLimits(capital=1e6, default_max_position=25))
            with ExitStack() as stack:
                rep = stack.enter_context(h.network("risk").worker(bind=h.bind_endpoint()))
                assert rep.last_endpoint is not None
                server = asyncio.ensure_future(serve_lazy_pirate(rep, risk_handler(book)))
                client = ReliableRiskClient(h.network("desk"), rep.last_endpoint, timeout=2.0)
                stack.callback(client.close)
                verdicts = [await client.validate(order(i)) for i in range(4)]
                server.cancel()
                return [(v.order_id, v.approved) for v in verdicts]

        assert h.run(body(), timeout=30) == [
            ("o0", True), ("o1", True), ("o2", False), ("o3", False)
        ]  # fmt: skip


def test_reliable_client_fails_typed_while_the_server_is_down_then_recovers() -> None:
    sim = Simulation(seed=4)
    book = RiskBook(RiskLimits(capital=1e9))

    async def risk(node: Node) -> None:
        with node.worker(bind="tcp://*:5555") as rep:
            await serve_lazy_pirate(rep, risk_handler(book))

    sim.node("risk", main=risk)
    schedule_faults(sim, [(1.0, Crash("risk")), (3.0, Restart("risk"))])
    client = ReliableRiskClient(sim.node("desk"), "tcp://risk:5555", timeout=0.1, attempts=3)

    async def main() -> list[str]:
        outcomes = []
        for i in range(40):
            try:
                await client.validate(order(i, 1))
                outcomes.append("ok")
            except ServiceUnavailableError:
                outcomes.append("down")
            await asyncio.sleep(0.1)
        return outcomes

    outcomes = sim.run(main(), timeout=60)
    assert "down" in outcomes
    assert outcomes[0] == "ok" and outcomes[-1] == "ok"
    first_down = outcomes.index("down")
    assert all(o == "ok" for o in outcomes[:first_down])


def test_reliable_client_parameters_are_checked() -> None:
    sim = Simulation()
    with pytest.raises(ValueError, match="attempts"):
        ReliableRiskClient(sim.node("desk"), "tcp://risk:1", attempts=0)


def test_reliable_client_works_against_the_seeds_one_frame_rep_risk_server(
    tk_backend: str,
) -> None:
    # serve_risk is a plain REP risk server that reads one Order frame.
    # The plain Lazy Pirate wire format sends it exactly that (a sequence frame first
    # made every order malformed).
    with open_harness(tk_backend) as h:

        async def body() -> list[tuple[str, bool, str]]:
            book = RiskBook(RiskLimits(capital=1e6, default_max_position=25))
            with ExitStack() as stack:
                rep = stack.enter_context(h.network("risk").worker(bind=h.bind_endpoint()))
                assert rep.last_endpoint is not None
                server = asyncio.ensure_future(serve_risk(rep, book, max_requests=3))
                client = ReliableRiskClient(h.network("desk"), rep.last_endpoint, timeout=2.0)
                stack.callback(client.close)
                verdicts = [await client.validate(order(i)) for i in range(3)]
                stats = await server
                assert (stats.requests, stats.malformed) == (3, 0)
                return [(v.order_id, v.approved, v.reason) for v in verdicts]

        verdicts = h.run(body(), timeout=30)
    assert [(order_id, approved) for order_id, approved, _ in verdicts] == [
        ("o0", True), ("o1", True), ("o2", False)
    ]  # fmt: skip
