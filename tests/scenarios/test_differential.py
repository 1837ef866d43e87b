"""Differential: scenarios with their faults on the sim and on real sockets pass the
same invariants.

On ``--backend zmq`` every fault is applied (crashes and restarts to the nodes, the
network faults through the tcp fault proxy); the shipped scenarios run with their
ports moved to free ones (so a concurrent run elsewhere on the machine cannot clash),
the sim runs the files as they are.

What is not compared, and why: invariants of kind ``latency`` bound wall-clock
latencies on zmq (a Python process on a shared machine), not a property of the
faults; they are evaluated and reported, not required, unless the file sets their
threshold on zmq (``[invariant.zmq]``, as the flagship does with the reason it
measured): then the zmq run must meet that one. Every other invariant must hold on
both backends with the file's own thresholds, and the zmq run must be
representative (its publishers offered the load the file asks for).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import transportkit
from transportkit import SocketOptions
from transportkit.scenario import load, report_dict, run_scenario
from transportkit.testing import free_tcp_endpoint

SHIPPED = Path(transportkit.__file__).parent / "scenarios"  # the scenario files in the package

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = SHIPPED

_PORT = re.compile(r"(tcp://[^:\"/]+):(\d+)")


def free_port() -> int:
    return int(free_tcp_endpoint().rsplit(":", 1)[1])


def with_free_ports(text: str) -> str:
    """``text`` with every tcp port replaced by a free one (the same port, the same
    replacement)."""
    ports: dict[str, int] = {}

    def swap(match: re.Match[str]) -> str:
        port = ports.setdefault(match.group(2), free_port())
        return f"{match.group(1)}:{port}"

    return _PORT.sub(swap, text)


def verdicts(report: dict[str, Any]) -> dict[str, bool]:
    return {v["description"]: v["passed"] for v in report["invariants"]}


def run_both(path: Path, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    sim = report_dict(run_scenario(load(path)))
    moved = tmp_path / path.name
    moved.write_text(with_free_ports(path.read_text(encoding="utf-8")), encoding="utf-8")
    real = report_dict(run_scenario(load(moved), backend="zmq"))
    return sim, real


def assert_every_fault_applied(report: dict[str, Any]) -> None:
    outcomes = [(f["text"], f["outcome"]) for f in report["faults"]]
    assert outcomes, "the scenario has faults"
    assert all(outcome.startswith("applied") for _, outcome in outcomes), outcomes


def wall_clock_only(path: Path) -> set[str]:
    """The latency invariants that set no threshold of their own on zmq."""
    return {
        spec.description or spec.kind
        for spec in load(path).invariants
        if spec.kind == "latency" and spec.zmq_params is None
    }


def assert_same_invariants(path: Path, sim: dict[str, Any], real: dict[str, Any]) -> None:
    skipped = wall_clock_only(path)
    sim_verdicts, real_verdicts = verdicts(sim), verdicts(real)
    assert all(sim_verdicts.values()), sim["invariants"]
    assert sim_verdicts.keys() == real_verdicts.keys()
    assert real["load"]["representative"], real["load"]
    for description, passed in real_verdicts.items():
        if description in skipped:
            continue
        assert passed, [v for v in real["invariants"] if v["description"] == description]


SHORT = """
[scenario]
name = "differential-short"
description = "a partition between a desk and the exchange, on both backends"
seed = 5
duration = 1.3
drain = 0.4

[[component]]
name = "feed"
kind = "clone_server"
node = "exchange"
publisher = "tcp://*:{clone_pub}"
snapshot = "tcp://*:{clone_snap}"
symbols = ["AAPL", "MSFT"]
rate = 100

[[component]]
name = "desk"
kind = "clone_client"
node = "desk"
source = "feed"
snapshot = "tcp://exchange:{clone_snap}"
updates = "tcp://exchange:{clone_pub}"
timeout_ms = 300

[[component]]
name = "risk"
kind = "risk_server"
node = "exchange"
bind = "tcp://*:{risk}"

[[component]]
name = "checks"
kind = "risk_client"
node = "desk"
connect = "tcp://exchange:{risk}"
rate = 50
timeout_ms = 100
attempts = 1

[[fault]]
at = 0.4
kind = "partition"
a = "exchange"
b = "desk"

[[fault]]
at = 1.0
kind = "repair"
a = "exchange"
b = "desk"

[[invariant]]
kind = "check"
description = "the desk converges on the server's map after the repair"
check = "clone_converged"

[[invariant]]
kind = "bound"
description = "the cut-off desk resynchronised"
stream = "feed"
metric = "desk resyncs"
at_least = 1

[[invariant]]
kind = "every_request_answered"
description = "every risk check ends in a verdict or a typed failure"
stream = "checks"

[[invariant]]
kind = "bound"
description = "the partition surfaces as typed failures"
stream = "checks"
metric = "failures"
at_least = 1

[[invariant]]
kind = "bound"
description = "risk checks are answered again after the repair"
stream = "checks"
metric = "delivered"
at_least = 25
"""


def test_a_short_partition_scenario_passes_the_same_invariants_on_both_backends(
    tmp_path: Path,
) -> None:
    """On the old code the zmq run reported the partition "not applicable" and failed
    "resynchronised" and "typed failures" (nothing was cut)."""
    path = tmp_path / "short.toml"
    path.write_text(
        SHORT.format(clone_pub=free_port(), clone_snap=free_port(), risk=free_port()),
        encoding="utf-8",
    )
    sim = report_dict(run_scenario(load(path)))
    real = report_dict(run_scenario(load(path), backend="zmq"))
    assert_every_fault_applied(real)
    assert_same_invariants(path, sim, real)
    # the Clone client's SUB and DEALER, the risk client's REQ
    assert "cut on 3 connection(s)" in real["faults"][0]["outcome"]


SLOW = ["trading_day", "clone_feed_partition", "risk_latency_spike", "risk_server_crash"]


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", SLOW)
def test_shipped_scenarios_pass_the_same_invariants_on_both_backends(
    name: str, tmp_path: Path
) -> None:
    path = SCENARIOS / f"{name}.toml"
    sim, real = run_both(path, tmp_path)
    assert_every_fault_applied(real)
    assert_same_invariants(path, sim, real)


def test_the_flagship_on_zmq_routes_only_the_faulted_pair_through_the_proxy() -> None:
    """``transportkit run scenarios/trading_day.toml --backend zmq`` applies its latency
    spike through the proxy: desk-2's two connections to the exchange are routed,
    nothing else (desk-1's latency figures stay those of direct sockets)."""
    from transportkit.scenario._runner import _faulted_pairs, _peer_port  # noqa: PLC0415

    scenario = load(SCENARIOS / "trading_day.toml")
    pairs = _faulted_pairs(scenario)
    assert pairs == {frozenset(("exchange", "desk-2"))}
    routed = sorted(
        (spec.node, value)
        for spec in scenario.components
        for value in vars(spec.params).values()
        if isinstance(value, str)
        and (peer := _peer_port(value, spec.node, scenario.nodes)) is not None
        and frozenset((spec.node, peer[0])) in pairs
    )
    assert routed == [("desk-2", "tcp://exchange:5555"), ("desk-2", "tcp://exchange:5556")]


STOPPING = """
[scenario]
name = "counted-on-stop"
duration = 0.6
drain = 0.2

[[component]]
name = "feed"
kind = "clone_server"
node = "exchange"
publisher = "tcp://*:{pub}"
snapshot = "tcp://*:{snap}"
rate = 50

[[component]]
name = "desk"
kind = "clone_client"
node = "desk"
source = "feed"
snapshot = "tcp://exchange:{snap}"
updates = "tcp://exchange:{pub}"

[[invariant]]
kind = "bound"
description = "the client's snapshot is counted"
stream = "feed"
metric = "desk snapshots"
at_least = 1
"""


def test_a_zmq_run_evaluates_its_invariants_after_the_components_stopped(
    tmp_path: Path,
) -> None:
    """A Clone client writes its counters as it stops; the old runner cancelled the
    components and evaluated the invariants before they ran their ``finally`` (it
    gathered an emptied list), so this failed there with ``desk snapshots = 0``."""
    path = tmp_path / "stopping.toml"
    path.write_text(STOPPING.format(pub=free_port(), snap=free_port()), encoding="utf-8")
    real = report_dict(run_scenario(load(path), backend="zmq"))
    assert verdicts(real) == {
        "the client's snapshot is counted": True,
        "components ran without errors": True,
    }, real["invariants"]


def test_nodes_run_as_processes_read_their_routes_from_the_runs_directory(
    tmp_path: Path,
) -> None:
    """A child process maps its endpoints with the routes the parent wrote; a connect
    between nodes no network fault names, and every bind, stay as before."""
    from transportkit.scenario._components import SubscriberParams  # noqa: PLC0415
    from transportkit.scenario._runner import ROUTES_FILE, with_real_endpoints  # noqa: PLC0415
    from transportkit.scenario._spec import ComponentSpec  # noqa: PLC0415

    nodes = ("exchange", "desk-1", "desk-2")
    (tmp_path / ROUTES_FILE).write_text(
        '[["desk-2", "exchange", 5556, "tcp://127.0.0.1:40001"]]', encoding="utf-8"
    )
    params = SubscriberParams("feed", "tcp://exchange:5556", (), 0.0, SocketOptions())
    routed = with_real_endpoints(ComponentSpec("d2", "x", "desk-2", params), nodes, str(tmp_path))
    direct = with_real_endpoints(ComponentSpec("d1", "x", "desk-1", params), nodes, str(tmp_path))
    assert routed.connect == "tcp://127.0.0.1:40001"
    assert direct.connect == "tcp://127.0.0.1:5556"
    assert (
        with_real_endpoints(
            ComponentSpec("d1", "x", "desk-1", params), nodes, str(tmp_path / "none")
        ).connect
        == "tcp://127.0.0.1:5556"
    )


PROCESS = """
[scenario]
name = "partition-to-a-process"
duration = 1.6
drain = 0.4

[[node]]
name = "strategy"
process = true

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
rate = 50
timeout_ms = 100
attempts = 1

[[fault]]
at = 0.6
kind = "partition"
a = "strategy"
b = "risk-host"

[[fault]]
at = 1.1
kind = "repair"
a = "strategy"
b = "risk-host"

[[invariant]]
kind = "every_request_answered"
stream = "orders"

[[invariant]]
kind = "bound"
description = "the partition surfaces as typed failures"
stream = "orders"
metric = "failures"
at_least = 1
"""


@pytest.mark.slow
def test_a_partition_reaches_a_node_run_as_a_child_process(tmp_path: Path) -> None:
    """The connecting node runs as a child process: it connects through the proxy with
    the routes the parent wrote, so the partition cuts its connection (a child that
    connected directly would leave the proxy with none to cut)."""
    path = tmp_path / "process.toml"
    path.write_text(PROCESS.format(port=free_port()), encoding="utf-8")
    real = report_dict(run_scenario(load(path), backend="zmq"))
    assert_every_fault_applied(real)
    assert re.search(r"cut on [1-9]\d* connection", real["faults"][0]["outcome"])  # its REQ
    assert real["passed"], real["invariants"]


def test_the_open_files_estimate_counts_the_proxys_sockets() -> None:
    """A zmq run is refused when it needs more files than ``ulimit -n``: the proxy's
    listener and two sockets per routed connection count too (desk-2's two connects in
    the flagship: 4 + 2 * 5), and a scenario without network faults has no proxy."""
    from transportkit.scenario._budget import _proxy_files  # noqa: PLC0415

    assert _proxy_files(load(SCENARIOS / "trading_day.toml")) == 14
    assert _proxy_files(load(SCENARIOS / "risk_server_crash.toml")) == 0
