"""Running a scenario on the sim backend (default) or on real ZeroMQ sockets."""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transportkit._network import Network
from transportkit.scenario._components import COMPONENTS
from transportkit.scenario._context import RunContext
from transportkit.scenario._invariants import INVARIANTS, Verdict, evaluate
from transportkit.scenario._metrics import Metrics
from transportkit.scenario._spec import ComponentSpec, Scenario, load_scenario
from transportkit.sim_backend import (
    Crash,
    Fault,
    Node,
    Restart,
    Simulation,
    schedule_faults,
)
from transportkit.zmq_backend import ZmqNetwork

__all__ = ["RunResult", "load", "run_scenario"]

ProgressHook = Callable[[float, float], None]
"""Called with (seconds done, seconds total) as a run advances."""


@dataclass
class RunResult:
    """Everything a run produced: metrics, verdicts, faults, and the trace (sim)."""

    scenario: Scenario
    backend: str
    seed: int
    metrics: Metrics
    verdicts: list[Verdict]
    faults: list[tuple[float, Fault, str]]
    elapsed: float
    wall_seconds: float
    trace_hash: str | None
    simulation: Simulation | None = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        """Whether every invariant held."""
        return all(v.passed for v in self.verdicts)


def load(path: str | Path) -> Scenario:
    """Load and validate a scenario file against the known components and invariants."""
    parsers = {kind: comp.parse for kind, comp in COMPONENTS.items()}
    checks = {kind: parse for kind, (parse, _) in INVARIANTS.items()}
    return load_scenario(path, parsers, checks)


async def _guarded(spec: ComponentSpec, net: Network, ctx: RunContext) -> None:
    try:
        await COMPONENTS[spec.kind].run(net, spec.name, spec.params, ctx)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        ctx.errors.append((spec.name, f"{type(exc).__name__}: {exc}"))


def _by_node(scenario: Scenario) -> dict[str, list[ComponentSpec]]:
    nodes: dict[str, list[ComponentSpec]] = {}
    for spec in scenario.components:
        nodes.setdefault(spec.node, []).append(spec)
    return nodes


def _finish(scenario: Scenario, ctx: RunContext) -> list[Verdict]:
    for name, socks in ctx.sockets.items():
        stream = ctx.metrics.streams.get(name)
        if stream is None:
            continue
        for sock in socks:
            stream.add_dropped(sock.stats.dropped)
    for (stream_name, receiver), expect in ctx.expected.items():
        ctx.metrics.stream(stream_name, "PUB/SUB").receiver(receiver).expected = expect()
    return evaluate(ctx, scenario.invariants)


def run_scenario(
    scenario: Scenario,
    *,
    backend: str = "sim",
    seed: int | None = None,
    progress: ProgressHook | None = None,
    record_trace: bool | None = None,
) -> RunResult:
    """Run ``scenario`` and evaluate its invariants.

    Args:
        scenario: A scenario from :func:`load`.
        backend: ``"sim"`` (virtual time, deterministic) or ``"zmq"`` (real sockets,
            real time, every node in this process with its own context).
        seed: Overrides the scenario's seed (sim only).
        progress: Called as the run advances (for a progress bar).
        record_trace: Overrides the scenario's ``record_trace`` (sim only).
    """
    if backend == "sim":
        return _run_sim(scenario, scenario.seed if seed is None else seed, progress, record_trace)
    if backend == "zmq":
        return asyncio.run(_run_zmq(scenario, progress))
    raise ValueError(f"unknown backend {backend!r}: expected 'sim' or 'zmq'")


def _run_sim(
    scenario: Scenario, seed: int, progress: ProgressHook | None, record_trace: bool | None
) -> RunResult:
    wall = time.perf_counter()
    record = scenario.record_trace if record_trace is None else record_trace
    sim = Simulation(seed, latency=scenario.latency, record_trace=record)
    for link in scenario.links:
        sim.link(link.a, link.b).latency = link.latency
        if link.both_ways:
            sim.link(link.b, link.a).latency = link.latency
    ctx = RunContext(Metrics(), scenario.duration, seed, start=sim.now)
    for node_name, specs in _by_node(scenario).items():

        async def node_main(node: Node, specs: list[ComponentSpec] = specs) -> None:
            await asyncio.gather(*(_guarded(spec, node, ctx) for spec in specs))

        sim.node(node_name, main=node_main)
    schedule_faults(sim, scenario.faults)
    total = scenario.duration + scenario.drain
    if progress is not None:
        _progress_ticks(sim, total, progress)
    sim.run(asyncio.sleep(total))
    verdicts = _finish(scenario, ctx)
    faults = [(at, fault, "applied") for at, fault in scenario.faults]
    return RunResult(
        scenario, "sim", seed, ctx.metrics, verdicts, faults, sim.now,
        time.perf_counter() - wall, sim.trace.hash, sim,
    )  # fmt: skip


def _progress_ticks(sim: Simulation, total: float, progress: ProgressHook) -> None:
    """Report progress from SimPy events outside the traced world (no effect on it)."""
    step = total / 100

    def tick(_event: object, done: float = 0.0) -> None:
        progress(min(done, total), total)
        if done < total:
            sim.env.timeout(step).callbacks.append(lambda e: tick(e, done + step))

    sim.env.timeout(0).callbacks.append(tick)


_NODE_HOST = re.compile(r"^tcp://([^:/\[\]]+):")


def _real_endpoint(endpoint: str, nodes: tuple[str, ...], ipc_dir: str) -> str:
    """Map a scenario endpoint to a real one: node-name hosts become 127.0.0.1 and
    ipc names live in a private temporary directory.
    """
    match = _NODE_HOST.match(endpoint)
    if match and match.group(1) in nodes:
        return "tcp://127.0.0.1:" + endpoint[match.end() :]
    if endpoint.startswith("ipc://"):
        name = endpoint[len("ipc://") :].strip("/").replace("/", "_") or "ipc"
        return f"ipc://{ipc_dir}/{name}"
    return endpoint


def _with_real_endpoints(spec: ComponentSpec, nodes: tuple[str, ...], ipc_dir: str) -> Any:
    params = spec.params
    changes = {
        key: _real_endpoint(value, nodes, ipc_dir)
        for key in ("bind", "connect")
        if isinstance(value := getattr(params, key, None), str)
    }
    return type(params)(**{**vars(params), **changes}) if changes else params


async def _run_zmq(scenario: Scenario, progress: ProgressHook | None) -> RunResult:
    wall = time.perf_counter()
    loop = asyncio.get_running_loop()
    ipc_dir = tempfile.mkdtemp(prefix="transportkit-scenario-")
    ctx = RunContext(Metrics(), scenario.duration, scenario.seed, start=loop.time())
    nodes = _by_node(scenario)
    networks: dict[str, ZmqNetwork] = {}
    tasks: dict[str, list[asyncio.Task[None]]] = {}
    outcome: list[tuple[float, Fault, str]] = []

    def start(node: str) -> None:
        net = networks[node] = ZmqNetwork(name=node)
        tasks[node] = []
        for spec in nodes[node]:
            real = ComponentSpec(
                spec.name, spec.kind, spec.node,
                _with_real_endpoints(spec, scenario.nodes, ipc_dir),
            )  # fmt: skip
            tasks[node].append(loop.create_task(_guarded(real, net, ctx)))

    async def stop(node: str) -> None:
        for task in tasks.pop(node, []):
            task.cancel()
        await asyncio.gather(*tasks.get(node, []), return_exceptions=True)
        net = networks.pop(node, None)
        if net is not None:
            net.close()

    async def apply(at: float, fault: Fault) -> None:
        await asyncio.sleep(max(0.0, ctx.start + at - loop.time()))
        if isinstance(fault, Crash):
            if fault.node in networks:
                await stop(fault.node)
            outcome.append((at, fault, "applied: tasks cancelled, sockets closed"))
        elif isinstance(fault, Restart):
            if fault.node not in networks:
                start(fault.node)
            outcome.append((at, fault, "applied: components started again"))
        else:
            outcome.append((at, fault, "not applicable on zmq (needs the sim backend)"))

    try:
        for node in nodes:
            start(node)
        fault_tasks = [loop.create_task(apply(at, f)) for at, f in scenario.faults]
        total = scenario.duration + scenario.drain
        while (done := loop.time() - ctx.start) < total:
            if progress is not None:
                progress(done, total)
            await asyncio.sleep(min(0.1, total - done))
        for task in fault_tasks:
            task.cancel()
        await asyncio.gather(*fault_tasks, return_exceptions=True)
    finally:
        for node in list(networks):
            await stop(node)
        shutil.rmtree(ipc_dir, ignore_errors=True)
    verdicts = _finish(scenario, ctx)
    return RunResult(
        scenario, "zmq", scenario.seed, ctx.metrics, verdicts, outcome,
        loop.time() - ctx.start, time.perf_counter() - wall, None, None,
    )  # fmt: skip


def run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion (a seam for tests)."""
    return asyncio.run(coro)
