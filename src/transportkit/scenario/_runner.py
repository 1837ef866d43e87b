"""Running a scenario on the sim backend (default) or on real ZeroMQ sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from transportkit import _wallclock as wallclock
from transportkit._errors import OptionError
from transportkit._network import Network
from transportkit.scenario._bounds import MAX_EVENTS
from transportkit.scenario._budget import check_budget, check_open_files
from transportkit.scenario._catalog import resolve_scenario
from transportkit.scenario._components import COMPONENTS, register_expectations
from transportkit.scenario._context import RunContext
from transportkit.scenario._invariants import INVARIANTS, Verdict, evaluate
from transportkit.scenario._metrics import Metrics
from transportkit.scenario._spec import ComponentSpec, Scenario, ScenarioError, load_scenario
from transportkit.scenario._transfer import merge, read_snapshot
from transportkit.sim_backend import (
    Crash,
    Fault,
    Node,
    Restart,
    Scheduler,
    Simulation,
    schedule_faults,
)
from transportkit.sim_backend._loop import schedule_call
from transportkit.testing import ChildProcess, FaultProxy
from transportkit.zmq_backend import ZmqNetwork

__all__ = [
    "SERVER_SHUTDOWN_TIMEOUT",
    "RunResult",
    "load",
    "run_scenario",
    "shortened",
    "shutdown_servers",
]

STOP_TIMEOUT = 2.0
"""Seconds a stopped node's cancelled components get to end on zmq."""

SERVER_SHUTDOWN_TIMEOUT = 0.5
"""Seconds (of the loop's clock: virtual on the sim) each server component (a risk
server, a Paranoid Pirate queue, a Clone server) gets at the end of the drain to stop
gracefully, ``shutdown(timeout)``: it takes no new request and answers what is in
flight, while the other components still run; only then is what is left cancelled."""

REPLY_SETTLE = 0.1
"""Seconds the clients get, after a graceful stop that took time (something in flight
was finished), for the replies just sent to reach them before they are cancelled."""

PROXY_BUFFER_BYTES = 16 * 1024
"""What the fault proxy holds per direction of a routed connection in a zmq run
(beside a chunk being read): with its sockets' kernel buffers at
:data:`PROXY_SOCKET_BYTES`, a routed link holds about what a direct one does, so
high-water marks and the endpoints' ``sndbuf``/``rcvbuf`` act as on the sim (with the
proxy's defaults, 256 KiB and megabytes of loopback buffers, a slow subscriber behind
a ``[[link]]`` lagged by seconds and never lost an update)."""

PROXY_SOCKET_BYTES = 4096
"""``SO_SNDBUF``/``SO_RCVBUF`` of the fault proxy's sockets in a zmq run (the kernel
rounds it up to its minimum)."""

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
    links: list[tuple[str, str, str]] = field(default_factory=list)
    """``(a, b, outcome)`` of each ``[[link]]`` latency the zmq run realised through the
    fault proxy (empty on the sim, which models every link itself)."""

    @property
    def passed(self) -> bool:
        """Whether every invariant held (see also :attr:`representative`)."""
        return all(v.passed for v in self.verdicts)

    @property
    def short_of_load(self) -> list[str]:
        """The open-loop sources (publishers, Clone servers) that sent less than they
        offered by more than the scenario's ``load_tolerance``: on zmq, the machine
        could not keep up with them. Closed-loop request clients are not counted
        (they wait for each reply; their shortfall is in their stream's ``load``).
        Always empty on the sim, whose clock waits for the work.
        """
        tolerance = self.scenario.load_tolerance
        short = []
        for name, stream in sorted(self.metrics.streams.items()):
            load = stream.load
            if load is None or load.closed_loop:
                continue
            if load.summary(stream.sent)["shortfall_fraction"] > tolerance:
                short.append(name)
        return short

    @property
    def representative(self) -> bool:
        """Whether the run offered the load it claims: no open-loop source fell short
        by more than the scenario's ``load_tolerance`` (:attr:`short_of_load`). A run
        that is not representative has not tested what its file describes, whatever
        its invariants say (``transportkit run`` exits with status 3).
        """
        return not self.short_of_load


def load(path: str | Path, *, max_events: int = MAX_EVENTS) -> Scenario:
    """Load and validate a scenario file against the known components and invariants.

    Besides the file's form, every number is bounded and the run's cost is estimated
    (events, queued messages: :func:`~transportkit.scenario._budget.check_budget`), so
    a scenario that loads runs to its end in bounded time and memory.

    Args:
        path: The scenario file, or a shipped scenario's name (``"trading_day"``:
            :func:`~transportkit.scenario.resolve_scenario`).
        max_events: The most events an untraced run may cost (about 10 us each on the
            sim): raise it to run a long scenario on purpose.

    Raises:
        ScenarioError: The file is not a valid scenario, or asks for more than the
            runner can do; the message names the file, the key and the problem. Or a
            bare name is not a shipped scenario (the message lists them).
    """
    path = resolve_scenario(path)
    parsers = {kind: comp.parse for kind, comp in COMPONENTS.items()}
    checks = {kind: parse for kind, (parse, _) in INVARIANTS.items()}
    scenario = load_scenario(path, parsers, checks)
    check_budget(scenario, max_events=max_events)
    return scenario


def shortened(scenario: Scenario, duration: float) -> Scenario:
    """``scenario`` with its load period cut to ``duration`` seconds (for a quick run,
    such as ``transportkit bench --quick``).

    The drain, the components, the links and the invariants are kept; the faults at
    or after ``duration`` are left out (they would fall in the drain or after the run,
    where the file never put them). A shorter run costs less, so the budget the file
    passed still holds. Invariants written for the whole run (a fault's effect, a
    count) may fail on the shortened one: it measures the machinery, not the system.

    Raises:
        ScenarioError: ``duration`` is not positive or is longer than the file's own.
    """
    if not 0 < duration <= scenario.duration:
        raise ScenarioError(
            f"{scenario.source}: a shortened run needs 0 < duration <= "
            f"{scenario.duration:g} s (the file's), got {duration!r}"
        )
    faults = tuple((at, fault) for at, fault in scenario.faults if at < duration)
    return replace(scenario, duration=float(duration), faults=faults)


def _open_files_limit() -> int | None:
    """The soft limit of open files of this process (None: unlimited or unknown)."""
    try:
        import resource  # noqa: PLC0415 - POSIX only
    except ImportError:  # pragma: no cover - not POSIX
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


async def guarded(spec: ComponentSpec, net: Network, ctx: RunContext) -> None:
    try:
        await COMPONENTS[spec.kind].run(net, spec.name, spec.params, ctx)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        ctx.errors.append((spec.name, f"{type(exc).__name__}: {exc}"))


async def shutdown_servers(ctx: RunContext, timeout: float = SERVER_SHUTDOWN_TIMEOUT) -> None:
    """Stop every server component running now gracefully (``ctx.servers``, in name
    order, concurrently): each answers what it has in flight within ``timeout``
    seconds (its ``shutdown`` returns within ``timeout`` plus
    :data:`~transportkit.patterns.SHUTDOWN_GRACE`), then, if that took any time, the
    clients get :data:`REPLY_SETTLE` for those replies. Whether each was clean is kept
    in ``ctx.shutdowns``; a shutdown that raised is one of ``ctx.errors``.
    """
    servers = sorted(ctx.servers.items())
    if not servers:
        return
    loop = asyncio.get_running_loop()
    began = loop.time()
    results = await asyncio.gather(
        *(shutdown(timeout) for _, shutdown in servers), return_exceptions=True
    )
    if loop.time() > began:  # on the sim: only when something in flight was finished
        await asyncio.sleep(REPLY_SETTLE)
    for (name, _), result in zip(servers, results, strict=True):
        if isinstance(result, asyncio.CancelledError):
            raise result
        if isinstance(result, BaseException):
            ctx.errors.append((name, f"shutdown failed: {type(result).__name__}: {result}"))
        else:
            ctx.shutdowns[name] = result


def _by_node(scenario: Scenario) -> dict[str, list[ComponentSpec]]:
    nodes: dict[str, list[ComponentSpec]] = {}
    for spec in scenario.components:
        nodes.setdefault(spec.node, []).append(spec)
    return nodes


def _finish(scenario: Scenario, ctx: RunContext, backend: str) -> list[Verdict]:
    for name, socks in ctx.sockets.items():
        stream = ctx.metrics.streams.get(name)
        if stream is None:
            continue
        for sock in socks:
            stream.add_dropped(sock.stats.dropped)
    for (stream_name, receiver), expect in ctx.expected.items():
        ctx.metrics.stream(stream_name, "PUB/SUB").receiver(receiver).expected = expect()
    specs = tuple(replace(spec, params=spec.params_on(backend)) for spec in scenario.invariants)
    verdicts = evaluate(ctx, specs)
    for i, spec in enumerate(scenario.invariants):
        if backend == "zmq" and spec.zmq_params is not None:
            verdict = verdicts[i]
            verdicts[i] = replace(
                verdict, detail=f"{verdict.detail} [zmq threshold: {spec.zmq_reason}]"
            )
    return verdicts


def run_scenario(
    scenario: Scenario,
    *,
    backend: str = "sim",
    seed: int | None = None,
    progress: ProgressHook | None = None,
    record_trace: bool | None = None,
    scheduler: str | Scheduler = "fifo",
    log_connections: bool = False,
) -> RunResult:
    """Run ``scenario`` and evaluate its invariants.

    At the end of the drain the server components are stopped gracefully
    (:func:`shutdown_servers`, :data:`SERVER_SHUTDOWN_TIMEOUT` each) while the other
    components still run, so what they have in flight is answered; then the rest is
    cancelled. A ``crash`` fault stays a hard stop.

    Args:
        scenario: A scenario from :func:`load`.
        backend: ``"sim"`` (virtual time, deterministic) or ``"zmq"`` (real sockets,
            real time, every node in this process with its own context, except nodes
            marked ``process = true``: each of those in a child process; network
            faults go through a :class:`~transportkit.testing.FaultProxy` that every
            tcp connect between two nodes some network fault or ``[[link]]`` names is
            routed through, and each fault's outcome says what it did; a
            ``[[link]]``'s latency is a delay the proxy adds on that link from the
            start, on top of loopback's own, reported in :attr:`RunResult.links`).
            Load generators pace by the loop's clock on both backends; a zmq run
            whose publishers fell short of their load is not
            :attr:`RunResult.representative`, and invariants with an
            ``[invariant.zmq]`` table use those thresholds there.
        seed: Overrides the scenario's seed (sim only).
        progress: Called as the run advances (for a progress bar).
        record_trace: Overrides the scenario's ``record_trace`` (sim only).
        scheduler: The sim's scheduler (``Simulation(scheduler=...)``): ``"fifo"``,
            the default, which the golden reports use; ``"random"`` or ``"pct"`` to
            explore other interleavings. Ignored on zmq.
        log_connections: Log every socket's connects, accepts, disconnects and
            handshake failures (default False): ``Simulation(log_connections=True)``
            on the sim (virtual time, part of no trace), ``ZmqNetwork(
            log_connections=True)`` for each node run in this process on zmq (nodes
            run as processes are not logged). The records go to the
            ``transportkit.*.connections`` loggers; nothing is shown unless logging is
            configured (``transportkit run --log-connections`` does).

    Raises:
        ScenarioError: Before anything runs: ``record_trace`` asks to keep the trace of
            a run too large to trace; on zmq, the run needs more open files than the
            process may have, or nodes run as processes but the scenario was not loaded
            from a file.
        ValueError: ``backend`` is neither ``"sim"`` nor ``"zmq"``.
        OptionError: ``log_connections`` is not a bool.
    """
    if not isinstance(log_connections, bool):
        raise OptionError(f"log_connections must be a bool, got {log_connections!r}")
    if backend == "sim":
        if record_trace and not scenario.record_trace:
            check_budget(scenario, record_trace=True)
        return _run_sim(
            scenario,
            scenario.seed if seed is None else seed,
            progress,
            record_trace,
            scheduler,
            log_connections=log_connections,
        )
    if backend == "zmq":
        check_open_files(scenario, _open_files_limit())
        return asyncio.run(_run_zmq(scenario, progress, log_connections))
    raise ValueError(f"unknown backend {backend!r}: expected 'sim' or 'zmq'")


def _run_sim(
    scenario: Scenario,
    seed: int,
    progress: ProgressHook | None,
    record_trace: bool | None,
    scheduler: str | Scheduler = "fifo",
    *,
    log_connections: bool = False,
) -> RunResult:
    wall = wallclock.perf_counter()
    record = scenario.record_trace if record_trace is None else record_trace
    sim = Simulation(
        seed,
        latency=scenario.latency,
        record_trace=record,
        scheduler=scheduler,
        log_connections=log_connections,
    )
    for link in scenario.links:
        sim.link(link.a, link.b).latency = link.latency
        if link.both_ways:
            sim.link(link.b, link.a).latency = link.latency
    ctx = RunContext(Metrics(), scenario.duration, seed, start=sim.now)
    for node_name, specs in _by_node(scenario).items():

        async def node_main(node: Node, specs: list[ComponentSpec] = specs) -> None:
            await asyncio.gather(*(guarded(spec, node, ctx) for spec in specs))

        sim.node(node_name, main=node_main)
    schedule_faults(sim, scenario.faults)
    total = scenario.duration + scenario.drain
    if progress is not None:
        _progress_ticks(sim, total, progress)

    async def run_and_drain() -> None:
        await asyncio.sleep(total)
        await shutdown_servers(ctx)  # the servers answer what is in flight

    try:
        sim.run(run_and_drain())
    except BaseException:
        with contextlib.suppress(Exception):  # the run's own error is the one to see
            sim.close()
        raise
    sim.close()  # the components' tasks end (and count what they saw) before the verdicts
    verdicts = _finish(scenario, ctx, "sim")
    faults = [(at, fault, "applied") for at, fault in scenario.faults]
    return RunResult(
        scenario, "sim", seed, ctx.metrics, verdicts, faults, sim.now,
        wallclock.perf_counter() - wall, sim.trace.hash, sim,
    )  # fmt: skip


def _progress_ticks(sim: Simulation, total: float, progress: ProgressHook) -> None:
    """Report progress from SimPy events outside the traced world (no effect on it)."""
    steps = 100

    def tick(step: int) -> None:
        # At absolute times from the tick's index: summing total / 100 a hundred times
        # falls short of total, and the last tick (100 %) came after the end of the run.
        progress(total * step / steps, total)
        if step < steps:
            schedule_call(sim.env, total * (step + 1) / steps, tick, (step + 1,))

    schedule_call(sim.env, sim.env.now, tick, (0,))


_NODE_HOST = re.compile(r"^tcp://([^:/\[\]]+):")
_NODE_PORT = re.compile(r"^tcp://([^:/\[\]]+):(\d+)$")

Routes = Mapping[tuple[str, str, int], str]
"""``(connecting node, bound node, port)`` to the fault proxy's endpoint for it."""

ROUTES_FILE = "routes.json"
"""In a zmq run's private directory: the routes, for the nodes run as processes."""


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


def _peer_port(endpoint: str, node: str, nodes: tuple[str, ...]) -> tuple[str, int] | None:
    """``(other node, port)`` when ``endpoint`` is a tcp connect from ``node`` to
    another node of the scenario by its name; else None.
    """
    match = _NODE_PORT.match(endpoint)
    if match is None or match.group(1) not in nodes or match.group(1) == node:
        return None
    return match.group(1), int(match.group(2))


_SCHEMES = ("tcp://", "ipc://", "inproc://")


def _endpoints(spec: ComponentSpec) -> dict[str, str]:
    return {
        key: value
        for key, value in vars(spec.params).items()
        if isinstance(value, str) and value.startswith(_SCHEMES)
    }


def read_routes(ipc_dir: str) -> dict[tuple[str, str, int], str]:
    """The routes the parent wrote in the run's directory (none if it wrote none)."""
    try:
        rows = json.loads((Path(ipc_dir) / ROUTES_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {(src, dst, int(port)): proxied for src, dst, port, proxied in rows}


def with_real_endpoints(
    spec: ComponentSpec, nodes: tuple[str, ...], ipc_dir: str, routes: Routes | None = None
) -> Any:
    """``spec``'s parameters with every endpoint (``bind``, ``connect``, a queue's
    ``frontend``/``backend``, a Clone ``publisher``/``snapshot``/``updates``, ...) mapped
    by :func:`_real_endpoint`, and a tcp connect to another node that ``routes`` has
    (those between nodes a network fault names) replaced by the fault proxy's
    endpoint. Without ``routes``, the routes file in ``ipc_dir`` is read (a node run as
    a child process gets its routes this way).
    """
    if routes is None:
        routes = read_routes(ipc_dir)
    changes = {}
    for key, value in _endpoints(spec).items():
        peer = _peer_port(value, spec.node, nodes)
        routed = routes.get((spec.node, *peer)) if peer is not None else None
        changes[key] = routed if routed is not None else _real_endpoint(value, nodes, ipc_dir)
    params = spec.params
    return type(params)(**{**vars(params), **changes}) if changes else params


def _faulted_pairs(scenario: Scenario) -> set[frozenset[str]]:
    """The pairs of nodes some network fault (not a crash or restart) or some
    ``[[link]]`` latency names: their tcp connects go through the fault proxy on zmq.
    """
    return {
        frozenset((fault.a, fault.b))
        for _, fault in scenario.faults
        if not isinstance(fault, Crash | Restart)
    } | {frozenset((link.a, link.b)) for link in scenario.links}


def _open_routes(
    scenario: Scenario, proxy: FaultProxy, ipc_dir: str
) -> dict[tuple[str, str, int], str]:
    """Route every tcp connect between two nodes that a network fault or a
    ``[[link]]`` names through ``proxy``; write the routes for the child processes too.
    """
    pairs = _faulted_pairs(scenario)
    routes: dict[tuple[str, str, int], str] = {}
    for spec in scenario.components:
        for value in _endpoints(spec).values():
            peer = _peer_port(value, spec.node, scenario.nodes)
            if peer is None or frozenset((spec.node, peer[0])) not in pairs:
                continue
            key = (spec.node, *peer)
            if key not in routes:
                routes[key] = proxy.route(spec.node, peer[0], f"tcp://127.0.0.1:{peer[1]}")
    rows = [[src, dst, port, proxied] for (src, dst, port), proxied in routes.items()]
    (Path(ipc_dir) / ROUTES_FILE).write_text(json.dumps(rows), encoding="utf-8")
    return routes


async def _run_zmq(
    scenario: Scenario, progress: ProgressHook | None, log_connections: bool = False
) -> RunResult:
    wall = wallclock.perf_counter()
    loop = asyncio.get_running_loop()
    if scenario.process_nodes and not Path(scenario.source).is_file():
        raise ScenarioError(
            f"{scenario.source}: nodes run as processes need the scenario loaded from a "
            "file (the child processes load it too)"
        )
    ipc_dir = tempfile.mkdtemp(prefix="transportkit-scenario-")
    ctx = RunContext(Metrics(), scenario.duration, scenario.seed, start=loop.time())
    nodes = _by_node(scenario)
    networks: dict[str, ZmqNetwork] = {}
    tasks: dict[str, list[asyncio.Task[None]]] = {}
    outcome: list[tuple[float, Fault, str]] = []
    links: list[tuple[str, str, str]] = []
    children = _Children(scenario, ipc_dir, ctx) if scenario.process_nodes else None
    proxy: FaultProxy | None = None
    routes: dict[tuple[str, str, int], str] = {}

    def start(node: str) -> None:
        net = networks[node] = ZmqNetwork(name=node, log_connections=log_connections)
        tasks[node] = []
        for spec in nodes[node]:
            real = ComponentSpec(
                spec.name, spec.kind, spec.node,
                with_real_endpoints(spec, scenario.nodes, ipc_dir, routes),
            )  # fmt: skip
            tasks[node].append(loop.create_task(guarded(real, net, ctx)))

    async def stop(node: str) -> None:
        # The cancelled components must end (and count what they saw, in their
        # ``finally``) before the network closes and before the verdicts: bounded, so
        # a component that does not end cannot hang the run.
        node_tasks = tasks.pop(node, [])
        for spec in nodes[node]:  # crashed: no graceful stop for them at the end
            ctx.servers.pop(spec.name, None)
        for task in node_tasks:
            task.cancel()
        if node_tasks:
            await asyncio.wait(node_tasks, timeout=STOP_TIMEOUT)
        net = networks.pop(node, None)
        if net is not None:
            net.close()

    async def apply(at: float, fault: Fault) -> None:
        await asyncio.sleep(max(0.0, ctx.start + at - loop.time()))
        if children is not None and getattr(fault, "node", None) in scenario.process_nodes:
            outcome.append((at, fault, await children.apply(fault)))
        elif isinstance(fault, Crash):
            if fault.node in networks:
                await stop(fault.node)
            outcome.append((at, fault, "applied: tasks cancelled, sockets closed"))
        elif isinstance(fault, Restart):
            if fault.node not in networks:
                start(fault.node)
            outcome.append((at, fault, "applied: components started again"))
        else:
            assert proxy is not None  # a network fault made one
            outcome.append((at, fault, proxy.apply(fault)))

    try:
        if _faulted_pairs(scenario):  # before any node starts: its connects use the routes
            proxy = FaultProxy(
                seed=scenario.seed,
                buffer_bytes=PROXY_BUFFER_BYTES,
                socket_buffer_bytes=PROXY_SOCKET_BYTES,
            )
            routes.update(_open_routes(scenario, proxy, ipc_dir))
            for link in scenario.links:  # from the start, as on the sim
                text = proxy.set_link_latency(
                    link.a, link.b, link.latency, both_ways=link.both_ways
                )
                links.append((link.a, link.b, text))
        if children is not None:
            await children.start_all()
            ctx.start = loop.time()
            children.go()
            await children.started()
        for node in nodes:
            if node not in scenario.process_nodes:
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
        if children is not None:
            children.terminate()  # they stop their servers gracefully, as below
        await shutdown_servers(ctx)
        if children is not None:  # this process's clients wait for their servers' replies
            await children.wait_exited(_Children.TERM_TIMEOUT)
    finally:
        try:
            for node in list(networks):
                await stop(node)
        finally:
            try:
                snapshots = await children.stop_all() if children is not None else []
            finally:
                if proxy is not None:
                    proxy.close()
                shutil.rmtree(ipc_dir, ignore_errors=True)
    for data in snapshots:
        merge(ctx, data)
    verdicts = _finish(scenario, ctx, "zmq")
    return RunResult(
        scenario, "zmq", scenario.seed, ctx.metrics, verdicts, outcome,
        loop.time() - ctx.start, wallclock.perf_counter() - wall, None, None, links,
    )  # fmt: skip


@dataclass
class _Incarnation:
    """One child process running a node (a restart makes a new one)."""

    node: str
    child: ChildProcess
    metrics: Path
    pid: int | None = None
    stopping: bool = False


class _Children:
    """The nodes a scenario runs as child processes: start, SIGKILL, restart, stop."""

    READY_TIMEOUT = 20.0
    TERM_TIMEOUT = 5.0

    def __init__(self, scenario: Scenario, ipc_dir: str, ctx: RunContext) -> None:
        self.scenario = scenario
        self.source = Path(scenario.source).resolve()
        self.dir = Path(ipc_dir)
        self.go_file = self.dir / "go"
        self.ctx = ctx
        self.current: dict[str, _Incarnation] = {}
        self.all: list[_Incarnation] = []
        for node in scenario.process_nodes:
            for spec in scenario.components:
                if spec.node == node:
                    register_expectations(spec, ctx)

    def _new(self, node: str) -> _Incarnation:
        count = sum(1 for inc in self.all if inc.node == node)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", node)
        metrics = self.dir / f"metrics-{safe}-{count + 1}.json"
        child = ChildProcess(
            "-m", "transportkit.scenario._child", str(self.source), node,
            "--dir", str(self.dir), "--go", str(self.go_file), "--metrics", str(metrics),
            timeout=self.READY_TIMEOUT,
        )  # fmt: skip
        incarnation = _Incarnation(node, child, metrics)
        self.all.append(incarnation)
        self.current[node] = incarnation
        return incarnation

    async def _start(self, incarnation: _Incarnation) -> str | None:
        """Start one child; None when it is ready, else what went wrong."""
        try:
            await asyncio.to_thread(incarnation.child.start)
        except RuntimeError as exc:
            self.current.pop(incarnation.node, None)
            return str(exc)
        incarnation.pid = incarnation.child.pid
        return None

    async def start_all(self) -> None:
        """Start every process node (concurrently) and wait until each is READY."""
        incarnations = [self._new(node) for node in self.scenario.process_nodes]
        problems = await asyncio.gather(*(self._start(inc) for inc in incarnations))
        for inc, problem in zip(incarnations, problems, strict=True):
            if problem is not None:
                self.ctx.errors.append((inc.node, f"child process did not start: {problem}"))

    def go(self) -> None:
        """Tell the children (and later restarts) the run's wall-clock start."""
        tmp = self.go_file.with_name("go.tmp")
        tmp.write_text(repr(wallclock.time()), encoding="ascii")
        os.replace(tmp, self.go_file)

    async def started(self) -> None:
        """Wait (bounded) until each child has started its components (its first
        snapshot exists), so that in-process nodes connect to bound endpoints.
        """
        deadline = wallclock.monotonic() + self.READY_TIMEOUT
        while wallclock.monotonic() < deadline and not all(
            inc.metrics.exists() or not inc.child.running for inc in self.current.values()
        ):
            await asyncio.sleep(0.005)

    async def apply(self, fault: Fault) -> str:
        """Realise a crash as SIGKILL and a restart as a new child process."""
        node = getattr(fault, "node", "")
        if isinstance(fault, Crash):
            incarnation = self.current.pop(node, None)
            if incarnation is None or not incarnation.child.running:
                return "not applied: the node's process was not running"
            await asyncio.to_thread(incarnation.child.kill)
            return f"applied: child process {incarnation.pid} killed with SIGKILL; " + (
                self._lost(incarnation)
            )
        if isinstance(fault, Restart):
            if node in self.current:
                return "not applied: the node's process is still running"
            began = wallclock.perf_counter()
            incarnation = self._new(node)
            problem = await self._start(incarnation)
            if problem is not None:
                self.ctx.errors.append((node, f"child process did not restart: {problem}"))
                return f"failed: the new child process did not start: {problem}"
            return (
                f"applied: new child process {incarnation.pid} ready after "
                f"{wallclock.perf_counter() - began:.2f} s, its metrics merged too"
            )
        return "not applicable on zmq to a node run as a process (needs the sim backend)"

    @staticmethod
    def _lost(incarnation: _Incarnation) -> str:
        try:
            data = read_snapshot(incarnation.metrics)
        except (OSError, ValueError):
            data = None
        if data is None:
            return "it had flushed no metrics: everything it counted is lost"
        return (
            f"its metrics as flushed at {data['flushed_at']:.2f} s are kept, what it "
            "counted after that is lost"
        )

    def terminate(self) -> None:
        """SIGTERM every running child (each stops its servers gracefully, then the
        rest of its components, writes its last snapshot and exits); see
        :meth:`stop_all`.
        """
        for incarnation in self.current.values():
            child = incarnation.child
            if child.running and child.pid is not None and not incarnation.stopping:
                incarnation.stopping = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)

    async def wait_exited(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until no child of this run is running."""
        deadline = wallclock.monotonic() + timeout
        while wallclock.monotonic() < deadline and any(
            inc.child.running for inc in self.current.values()
        ):
            await asyncio.sleep(0.02)

    async def stop_all(self) -> list[dict[str, Any]]:
        """SIGTERM every running child (unless :meth:`terminate` did), wait (bounded),
        SIGKILL stragglers; return the last snapshot of every child that ever ran, in
        start order.
        """
        for incarnation in self.current.values():
            child = incarnation.child
            if incarnation.stopping:
                continue
            if not child.running:
                tail = " | ".join(child.lines[-3:])
                self.ctx.errors.append(
                    (incarnation.node, f"child process {incarnation.pid} died: {tail}")
                )
            elif child.pid is not None:
                incarnation.stopping = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)
        await self.wait_exited(self.TERM_TIMEOUT)
        for incarnation in self.all:
            if incarnation.stopping and incarnation.child.running:
                self.ctx.errors.append(
                    (
                        incarnation.node,
                        f"child process {incarnation.pid} ignored SIGTERM for "
                        f"{self.TERM_TIMEOUT:g} s: killed, its last flushed metrics kept",
                    )
                )
            await asyncio.to_thread(incarnation.child.kill)
        snapshots = []
        for incarnation in self.all:
            try:
                data = read_snapshot(incarnation.metrics)
            except (OSError, ValueError) as exc:
                self.ctx.errors.append((incarnation.node, f"unreadable metrics: {exc}"))
                continue
            if data is not None:
                snapshots.append(data)
        return snapshots
