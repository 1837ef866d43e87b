"""A scenario's ``[[link]]`` latency on real sockets: the fault proxy adds it to that
link from the start, and the run's report says so."""

from __future__ import annotations

from pathlib import Path

from transportkit.scenario import load, report_dict, report_text, run_scenario
from transportkit.testing import free_tcp_endpoint

LINK_SCENARIO = """
[scenario]
name = "far-risk"
description = "a risk server 20 ms away, one way"
seed = 3
duration = 0.6
drain = 0.3

[[link]]
a = "strategy"
b = "risk-host"
latency = {{ model = "constant", delay_us = 20000 }}

[[component]]
name = "risk"
kind = "risk_server"
node = "risk-host"
bind = "tcp://*:{port}"

[[component]]
name = "orders"
kind = "risk_client"
node = "strategy"
connect = "tcp://risk-host:{port}"
rate = 20
timeout_ms = 1000
attempts = 1

[[invariant]]
kind = "every_request_answered"
stream = "orders"
"""


def test_a_20_ms_link_makes_every_zmq_round_trip_at_least_40_ms(tmp_path: Path) -> None:
    """On the old code the zmq runner ignored ``[[link]]``: the fastest round trip
    took 0.5 ms, and the report said nothing about the link."""
    port = free_tcp_endpoint().rsplit(":", 1)[1]
    path = tmp_path / "far_risk.toml"
    path.write_text(LINK_SCENARIO.format(port=port), encoding="utf-8")
    scenario = load(path)

    sim = report_dict(run_scenario(scenario))
    result = run_scenario(scenario, backend="zmq")
    real = report_dict(result)

    for report in (sim, real):
        assert report["passed"], report["invariants"]
        orders = report["streams"]["orders"]
        assert orders["delivered"] >= 5, orders
        assert orders["failures"] == 0, orders
    # The sim's round trip is exactly the link's twice (plus the server's service time).
    assert sim["streams"]["orders"]["latency"]["p50_us"] >= 40_000
    # On zmq the proxy adds 20 ms each way on top of loopback: every reply, not only
    # the median, took at least 40 ms, and none took much longer (bounded).
    rows = real["streams"]["orders"]["latency"]
    fastest_ns = result.metrics.streams["orders"].latency.get_min_value()
    assert fastest_ns >= 0.999 * 40e6, fastest_ns  # the histogram keeps 3 digits
    assert rows["max_us"] < 400_000, rows
    # The report says the link's latency was applied, in the JSON and the text.
    assert [(link["a"], link["b"]) for link in real["links"]] == [("strategy", "risk-host")]
    assert real["links"][0]["outcome"].startswith(
        "applied: strategy->risk-host and risk-host->strategy: +20 ms per chunk"
    ), real["links"]
    assert "links" not in sim
    text = report_text(result)
    assert "  links\n    strategy - risk-host  (applied: " in text, text
