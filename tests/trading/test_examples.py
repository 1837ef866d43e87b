"""The example systems run, unchanged, on every backend."""

from __future__ import annotations

from collections.abc import Sequence

from conftest import System

from transportkit import Network
from transportkit.testing import open_harness
from transportkit.trading import (
    INSUFFICIENT_CAPITAL,
    POSITION_LIMIT_EXCEEDED,
    MarketDataSummary,
    OrderPipelineSummary,
    PairSummary,
    RiskSummary,
    demo_orders,
    run_market_data_example,
    run_order_pipeline_example,
    run_pair_example,
    run_risk_example,
)


def test_market_data_reaches_every_subscriber_after_the_warm_up(system: System) -> None:
    endpoint = system.endpoint()

    async def body(nets: Sequence[Network]) -> MarketDataSummary:
        return await run_market_data_example(nets[0], nets[1:], endpoint, updates=200)

    summary = system.run(body, ["exchange", "trader-1", "trader-2", "trader-3"])
    assert summary.published == 200
    assert summary.warm_up >= 1
    assert [s.name for s in summary.subscribers] == ["trader-1", "trader-2", "trader-3"]
    for report in summary.subscribers:
        assert (report.received, report.lost, report.out_of_order, report.malformed) == (
            200,
            0,
            0,
            0,
        )
        assert report.mean_latency_ns is not None and report.mean_latency_ns >= 0


def test_market_data_over_ipc(system: System) -> None:
    endpoint = system.endpoint("ipc")

    async def body(nets: Sequence[Network]) -> MarketDataSummary:
        return await run_market_data_example(nets[0], nets[1:], endpoint, symbols=["X"], updates=5)

    summary = system.run(body, ["exchange", "trader"])
    assert summary.endpoint == endpoint
    assert summary.subscribers[0].received == 5


def test_risk_example_gives_the_seed_verdicts_and_counts_malformed_requests(
    system: System,
) -> None:
    endpoint = system.endpoint()

    async def body(nets: Sequence[Network]) -> RiskSummary:
        return await run_risk_example(
            nets[0], nets[1], endpoint, demo_orders(), malformed_requests=2
        )

    summary = system.run(body, ["risk", "trader"])
    assert [r.order_id for r in summary.results] == [o.id for o in demo_orders()]
    assert [r.approved for r in summary.results] == [
        True,
        False,
        True,
        True,
        False,
        False,
        True,
        False,
    ]
    assert summary.reasons == {
        INSUFFICIENT_CAPITAL: 1,
        POSITION_LIMIT_EXCEEDED: 2,
        "invalid order: quantity must be positive": 1,
    }
    assert summary.malformed == 2
    assert summary.positions == {"AAPL": 300, "MSFT": 300}
    assert summary.available_capital == 1_000_000 - 95_000 - 168_000 + 38_200 + 42_100


def test_order_pipeline_processes_every_order_exactly_once(system: System) -> None:
    endpoint = system.endpoint()

    async def body(nets: Sequence[Network]) -> OrderPipelineSummary:
        return await run_order_pipeline_example(nets[0], nets[1:], endpoint, 60)

    summary = system.run(body, ["producer", "worker-a", "worker-b", "worker-c"])
    assert summary.sent == 60
    assert sum(summary.processed.values()) == 60
    assert list(summary.processed) == ["worker-a#0", "worker-b#1", "worker-c#2"]
    assert all(count > 0 for count in summary.processed.values()), summary.processed
    if system.name == "sim":
        assert set(summary.processed.values()) == {20}
    assert summary.malformed == 0


def test_pair_control_channel_acknowledges_each_command(system: System) -> None:
    endpoint = system.endpoint()

    async def body(nets: Sequence[Network]) -> PairSummary:
        return await run_pair_example(nets[0], nets[1], endpoint, ["PING", "HALT AAPL"])

    summary = system.run(body, ["gateway", "strategy"])
    assert summary.exchanges == (
        ("PING", "PONG"),
        ("HALT AAPL", "ACK HALT AAPL"),
        ("STOP", "ACK STOP"),
    )


def test_the_simulated_examples_are_deterministic() -> None:
    async def body(nets: Sequence[Network]) -> tuple[MarketDataSummary, RiskSummary]:
        md = await run_market_data_example(nets[0], nets[1:], "tcp://exchange:5556", updates=50)
        risk = await run_risk_example(nets[0], nets[1], "tcp://exchange:5555", demo_orders())
        return md, risk

    runs = []
    for _ in range(2):
        with open_harness("sim", seed=1) as h:
            sim_system = System(h)
            first = sim_system.run(body, ["exchange", "t1", "t2"])
            runs.append((sim_system.trace_hash, first))
    assert runs[0] == runs[1]
