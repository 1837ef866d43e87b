"""What a scenario will cost to run, estimated from the file before anything runs.

Each bound in :mod:`transportkit.scenario._bounds` keeps one number sane; this module
checks what they add up to. From the rates, bursts, intervals and fan-out in a file it
estimates, as upper bounds:

- **events**: the sim work of the run, in units of about 10 us of wall time (what one
  PUB/SUB send or delivery, or one timer wake-up, costs), against
  :data:`~transportkit.scenario._bounds.MAX_EVENTS` (or
  :data:`~transportkit.scenario._bounds.MAX_TRACED_EVENTS` when the trace is kept:
  a unit records at most one trace event). The weights were measured on the sim:

  - a market-data publisher sends ``rate x duration`` updates plus its bursts (again
    after each restart of its node), 1 each, and ticks every millisecond, 1 each;
    each update costs every subscriber of the publisher 1 (3 with ``processing_us``,
    which adds a timer per update);
  - a request client makes ``rate x duration`` requests of up to ``attempts`` sends,
    each 20 (``risk_client``) or 40 (``order_client``, through a Paranoid Pirate queue
    and a worker);
  - a Paranoid Pirate queue heartbeats each worker every ``heartbeat_ms`` and each
    worker the queue, 17 each, for the whole run;
  - a Clone server sends ``rate x duration`` updates and a heartbeat every
    ``heartbeat_ms``, 1 each plus 2 per client; a client may resync after each
    ``timeout_ms`` of silence, 17 plus one per symbol;
  - a conflating subscriber wakes every ``poll_ms``, 1 each;
  - a forwarder receives and resends each update of its ``source``, 2 each.

- **queued messages**: what can wait in PUB/SUB queues at once, a publisher's
  ``sndhwm`` plus each subscriber's ``rcvhwm`` (0 means unlimited: then everything the
  publisher sends), plus over ipc and tcp what the kernel's socket buffers between
  them hold (the sim's model, ``sim_backend/_kernel.py``, in updates of at least
  :data:`_MIN_UPDATE_BYTES` bytes), against
  :data:`~transportkit.scenario._bounds.MAX_QUEUED`.
- **open files** on the zmq backend, against the process's limit.

A scenario over a bound is refused with a :class:`ScenarioError` that names the
component and the key with the largest share, and what it costs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from transportkit._endpoint import parse_endpoint
from transportkit.scenario._bounds import MAX_EVENTS, MAX_QUEUED, MAX_TRACED_EVENTS
from transportkit.scenario._components import (
    _TICK,
    CloneClientParams,
    CloneServerParams,
    ConflatingParams,
    ForwarderParams,
    PublisherParams,
    QueueParams,
    RiskClientParams,
    SubscriberParams,
    WorkerParams,
)
from transportkit.scenario._spec import ComponentSpec, Scenario, ScenarioError, show
from transportkit.sim_backend import Crash, Restart
from transportkit.sim_backend._kernel import capacity

__all__ = [
    "Share",
    "check_budget",
    "check_open_files",
    "estimate_events",
    "estimate_queued",
    "open_files_needed",
]

_ATTEMPT = {"risk_client": 20, "order_client": 40}
"""Cost of one request attempt: request, reply, the client's timers (and its socket
reopened after a timeout); through a queue and a worker for an ``order_client``.
Measured: 14.5 per answered attempt and 18 per timed-out one direct, 39 through a
queue."""

_HEARTBEAT = 17
"""Cost of one Paranoid Pirate heartbeat, sent and received (a queue and a worker
heartbeating every 1 ms: 339 us of wall time per millisecond)."""

_FORWARD = 2
"""Cost of an update through a forwarder (a receive and a send)."""

_SLOW_DELIVERY = 3
"""Cost of a delivery to a subscriber with ``processing_us`` (the update and the
pause; measured 4.3 per update sent and delivered)."""

_CLONE_DELIVERY = 2
"""Cost per client of a Clone update or heartbeat (measured 3 per update to one
client, the send included)."""

_RESYNC = 17
"""Cost of a Clone client's resync, besides one per symbol of the snapshot."""

_CLONE_CLIENT_RCVHWM = 1000
"""A Clone client's SUB socket has the default options (its ``rcvhwm`` is 1,000)."""


@dataclass(frozen=True)
class Share:
    """One part of an estimate: how much of it, where in the file, and why."""

    amount: float
    where: str
    key: str
    why: str


def _where(spec: ComponentSpec) -> str:
    return f"[[component]] {show(spec.name)}"


def _unlimited(hwm: int) -> float:
    return math.inf if hwm == 0 else float(hwm)


_MIN_UPDATE_BYTES = 16
"""The fewest ZMTP bytes of a market-data or Clone update (a topic or key frame, an
8-byte timestamp or sequence, a body: three frames of two bytes' header each)."""


def _in_kernel(connect: str, sndbuf: int | None, rcvbuf: int | None) -> float:
    """Updates the kernel's socket buffers of one ipc/tcp connection may hold."""
    try:
        transport = parse_endpoint(connect).transport
    except ValueError:
        transport = "tcp"
    return float(capacity(transport, sndbuf, rcvbuf) // _MIN_UPDATE_BYTES)


_Receiver = SubscriberParams | ConflatingParams | CloneClientParams


def _by_source(specs: Iterable[ComponentSpec], kinds: tuple[type[_Receiver], ...]) -> Counter[str]:
    """How many receivers of ``kinds`` name each source."""
    counts: Counter[str] = Counter()
    for spec in specs:
        params = spec.params
        if isinstance(params, kinds):
            counts[params.source] += 1
    return counts


def _publisher_sends(scenario: Scenario, restarts: Counter[str]) -> dict[str, float]:
    sends = {}
    for spec in scenario.components:
        p = spec.params
        if isinstance(p, PublisherParams):
            bursts = sum(b.count for b in p.bursts) * (1 + restarts[spec.node])
            sends[spec.name] = p.rate * (scenario.duration + _TICK) + bursts
    return sends


def estimate_events(scenario: Scenario) -> list[Share]:
    """The run's cost in events (about 10 us of sim work each), in shares.

    Upper bounds with the weights of the module docstring; linear in the number of
    components.
    """
    load, run = scenario.duration, scenario.duration + scenario.drain
    restarts: Counter[str] = Counter(
        fault.node for _, fault in scenario.faults if isinstance(fault, Restart)
    )
    # What one update of each publisher costs its subscribers, and how many they are.
    per_update: Counter[str] = Counter()
    subscribers: Counter[str] = Counter()
    clients = _by_source(scenario.components, (CloneClientParams,))
    for spec in scenario.components:
        p = spec.params
        if isinstance(p, (SubscriberParams, ConflatingParams)):
            slow = isinstance(p, SubscriberParams) and p.processing_us > 0
            per_update[p.source] += _SLOW_DELIVERY if slow else 1
            subscribers[p.source] += 1
        elif isinstance(p, ForwarderParams):
            per_update[p.source] += _FORWARD
    sends = _publisher_sends(scenario, restarts)
    busiest = max(sends.values(), default=0.0)
    workers = sum(isinstance(s.params, WorkerParams) for s in scenario.components)
    clone_symbols = max(
        (len(s.params.symbols) for s in scenario.components if s.kind == "clone_server"),
        default=0,
    )
    shares: list[Share] = []
    publishers = 0
    for spec in scenario.components:
        p, where = spec.params, _where(spec)
        if isinstance(p, PublisherParams):
            publishers += 1
            cost = 1 + per_update[spec.name]
            to = f"sent and delivered to {subscribers[spec.name]} subscriber(s)"
            shares.append(
                Share(
                    p.rate * (load + _TICK) * cost, where, "rate",
                    f"rate {p.rate:g}/s x {load:g} s of load, {to}",
                )
            )  # fmt: skip
            if p.bursts:
                count = sum(b.count for b in p.bursts)
                again = 1 + restarts[spec.node]
                repeat = f", sent again after each of {again - 1} restart(s)" if again > 1 else ""
                shares.append(
                    Share(
                        count * again * cost, where, "burst",
                        f"{len(p.bursts)} burst(s) of {count:,} updates in all{repeat}, {to}",
                    )
                )  # fmt: skip
        elif isinstance(p, (SubscriberParams, ConflatingParams)):
            if p.source not in sends:  # not a publisher's name: it may receive any feed
                shares.append(
                    Share(
                        busiest * _SLOW_DELIVERY, where, "source",
                        f"source {show(p.source)} is no market_data_publisher, so up to "
                        "the busiest publisher's updates",
                    )
                )  # fmt: skip
            if isinstance(p, ConflatingParams):
                shares.append(
                    Share(
                        run / (p.poll_ms / 1000), where, "poll_ms",
                        f"a poll every {p.poll_ms:g} ms for {run:g} s",
                    )
                )  # fmt: skip
        elif isinstance(p, RiskClientParams):
            attempt = _ATTEMPT.get(spec.kind, max(_ATTEMPT.values()))
            shares.append(
                Share(
                    p.rate * load * p.attempts * attempt, where, "rate",
                    f"rate {p.rate:g}/s x {load:g} s of load, up to {p.attempts} attempt(s) "
                    f"per request costing {attempt} each",
                )
            )  # fmt: skip
        elif isinstance(p, QueueParams):
            shares.append(
                Share(
                    _HEARTBEAT * workers * run / (p.heartbeat_ms / 1000), where,
                    "heartbeat_ms",
                    f"a heartbeat every {p.heartbeat_ms:g} ms for {run:g} s to each of "
                    f"{workers} worker(s), costing {_HEARTBEAT} each",
                )
            )  # fmt: skip
        elif isinstance(p, WorkerParams):
            shares.append(
                Share(
                    _HEARTBEAT * run / (p.heartbeat_ms / 1000), where, "heartbeat_ms",
                    f"a heartbeat every {p.heartbeat_ms:g} ms for {run:g} s, costing "
                    f"{_HEARTBEAT} each",
                )
            )  # fmt: skip
        elif isinstance(p, CloneServerParams):
            cost = 1 + _CLONE_DELIVERY * clients[spec.name]
            to = f"sent and delivered to {clients[spec.name]} client(s)"
            shares.append(
                Share(
                    p.rate * load * cost, where, "rate",
                    f"rate {p.rate:g}/s x {load:g} s of load, {to}",
                )
            )  # fmt: skip
            shares.append(
                Share(
                    run / (p.heartbeat_ms / 1000) * cost, where, "heartbeat_ms",
                    f"a heartbeat every {p.heartbeat_ms:g} ms for {run:g} s, {to}",
                )
            )  # fmt: skip
        elif isinstance(p, CloneClientParams):
            resync = _RESYNC + clone_symbols
            shares.append(
                Share(
                    run / (p.timeout_ms / 1000) * resync, where, "timeout_ms",
                    f"a resync (a snapshot of up to {clone_symbols} symbols, costing "
                    f"{resync}) after each {p.timeout_ms:g} ms of silence for {run:g} s",
                )
            )  # fmt: skip
    if publishers:
        shares.append(
            Share(
                publishers * load / _TICK, "[scenario]", "duration",
                f"the {_TICK * 1000:g} ms ticks of {publishers} market_data_publisher(s) "
                f"over {load:g} s of load",
            )
        )  # fmt: skip
    return shares


def estimate_queued(scenario: Scenario) -> list[Share]:
    """What PUB/SUB queues may hold at once, per subscriber, as allowed by the
    high-water marks (an upper bound; linear in the number of components).
    """
    restarts: Counter[str] = Counter(
        fault.node for _, fault in scenario.faults if isinstance(fault, Restart)
    )
    sends = _publisher_sends(scenario, restarts)
    sndhwm: dict[str, float] = {}
    sndbuf: dict[str, int | None] = {}
    clone_sends: dict[str, float] = {}
    for spec in scenario.components:
        p = spec.params
        if isinstance(p, PublisherParams):
            sndhwm[spec.name] = 1.0 if p.options.conflate else _unlimited(p.options.sndhwm)
            sndbuf[spec.name] = p.options.sndbuf
        elif isinstance(p, CloneServerParams):
            clone_sends[spec.name] = p.rate * scenario.duration + 1
            sndhwm[spec.name] = _unlimited(p.options.sndhwm)
            sndbuf[spec.name] = p.options.sndbuf
    worst_md = max((sndhwm[n] for n in sends), default=0.0)
    busiest = max(sends.values(), default=0.0)
    shares = []
    for spec in scenario.components:
        p, where = spec.params, _where(spec)
        if isinstance(p, (SubscriberParams, ConflatingParams)):
            rcv = 1.0 if p.options.conflate else _unlimited(p.options.rcvhwm)
            if p.source in sends:
                pub_hwm, sent = sndhwm[p.source], sends[p.source]
            else:
                pub_hwm, sent = worst_md, busiest
            kernel = (
                0.0
                if p.options.conflate
                else _in_kernel(p.connect, sndbuf.get(p.source), p.options.rcvbuf)
            )
            shares.append(
                Share(
                    min(pub_hwm + rcv + kernel, sent), where, "options",
                    f"its rcvhwm {_hwm(rcv)} plus its publisher's sndhwm {_hwm(pub_hwm)} "
                    f"plus {kernel:,.0f} in the kernel's buffers, of {sent:,.0f} updates sent",
                )
            )  # fmt: skip
        elif isinstance(p, CloneClientParams) and p.source in clone_sends:
            pub_hwm, sent = sndhwm[p.source], clone_sends[p.source]
            kernel = _in_kernel(p.updates, sndbuf.get(p.source), None)
            shares.append(
                Share(
                    min(pub_hwm + _CLONE_CLIENT_RCVHWM + kernel, sent), where, "source",
                    f"its rcvhwm {_CLONE_CLIENT_RCVHWM} plus its server's sndhwm "
                    f"{_hwm(pub_hwm)} plus {kernel:,.0f} in the kernel's buffers, "
                    f"of {sent:,.0f} updates sent",
                )
            )  # fmt: skip
    return shares


def _hwm(value: float) -> str:
    return "0 (unlimited)" if value == math.inf else f"{value:,.0f}"


def _refuse(scenario: Scenario, shares: list[Share], limit: int, claim: str, cost: str) -> None:
    """Raise if ``shares`` add up to more than ``limit``, blaming the largest share.

    ``claim`` says what the total is (``{total}`` is replaced by it).
    """
    total = sum(share.amount for share in shares)
    if total <= limit:
        return
    worst = max(shares, key=lambda share: share.amount)
    raise ScenarioError(
        f"{scenario.source}: {worst.where} key {worst.key!r}: "
        + claim.format(total=f"{total:,.0f}")
        + f", more than the {limit:,} allowed ({cost}); the largest share, about "
        f"{worst.amount:,.0f}, is {worst.why}"
    )


def _check_bursts(scenario: Scenario) -> None:
    """Refuse a burst that would never be sent (load generators stop at ``duration``)."""
    for spec in scenario.components:
        p = spec.params
        if isinstance(p, PublisherParams) and p.bursts and p.bursts[-1].at > scenario.duration:
            raise ScenarioError(
                f"{scenario.source}: {_where(spec)} key 'burst': a burst at "
                f"{p.bursts[-1].at:g} s would never be sent: the load ends at "
                f"{scenario.duration:g} s (the scenario's duration)"
            )


def check_budget(
    scenario: Scenario, *, record_trace: bool | None = None, max_events: int = MAX_EVENTS
) -> None:
    """Refuse a scenario whose run would cost more than the bounds allow.

    Args:
        scenario: A parsed scenario.
        record_trace: Whether the run keeps its trace (None: the scenario's
            ``record_trace``); a kept trace lowers the bound on events.
        max_events: The bound on an untraced run's events: a bound on time only (about
            10 us each), which the user may raise for a long run on purpose; the
            bounds on memory (a traced run's events, queued messages) stay.

    Raises:
        ScenarioError: The estimated events or queued messages exceed the bounds (the
            message names the component and key with the largest share), or a burst
            comes after the load ends.
    """
    _check_bursts(scenario)
    traced = scenario.record_trace if record_trace is None else record_trace
    events = estimate_events(scenario)
    claim = "the run would cost about {total} events (messages sent and delivered, timer wake-ups)"
    if traced:
        _refuse(
            scenario, events, MAX_TRACED_EVENTS, claim,
            "with the trace recorded, up to about 160 MB of it; with record_trace = false in "
            f"[scenario] and without --trace, {max_events:,}",
        )  # fmt: skip
    _refuse(
        scenario, events, max_events, claim,
        f"about {max_events / 100_000:,.0f} s on the sim; raise it with --max-events",
    )  # fmt: skip
    _refuse(
        scenario, estimate_queued(scenario), MAX_QUEUED,
        "up to about {total} messages could wait in queues at once",
        "about 360 MB on the sim; lower the sndhwm and rcvhwm options (0 is unlimited)",
    )  # fmt: skip


_DESCRIPTORS = {
    "market_data_publisher": 1,
    "market_data_subscriber": 3,
    "conflating_subscriber": 3,
    "risk_server": 1,
    "risk_client": 3,
    "order_client": 3,
    "paranoid_queue": 2,
    "paranoid_worker": 3,
    "clone_server": 2,
    "clone_client": 6,
}
"""Open files per component on zmq: one per socket, two per connection (both ends are
in this process)."""

_DESCRIPTORS_PER_NODE = 6
"""A node's ZeroMQ context: its I/O thread's poller and mailboxes."""

_DESCRIPTORS_BASE = 32
"""The interpreter, its standard streams, imported extension modules."""


def open_files_needed(scenario: Scenario) -> int:
    """Estimate the open files a zmq run of ``scenario`` needs in this process (nodes
    run as child processes count in their own). Measured: 64 nodes running 256
    components (32 publishers, 224 subscribers) peaked at 1,065; this says 1,128.
    """
    children = set(scenario.process_nodes)
    nodes = {spec.node for spec in scenario.components if spec.node not in children}
    files = _DESCRIPTORS_BASE + _DESCRIPTORS_PER_NODE * len(nodes)
    for spec in scenario.components:
        if spec.node not in children:
            files += _DESCRIPTORS.get(spec.kind, 6)
    return files + _proxy_files(scenario)


def _proxy_files(scenario: Scenario) -> int:
    """The fault proxy's files on zmq: its loop, and for each tcp connect between two
    nodes a network fault or a ``[[link]]`` names a listener and two sockets per connection (a Lazy
    Pirate client's closing socket and its new one may overlap: counted twice).
    """
    pairs = {
        frozenset((f.a, f.b)) for _, f in scenario.faults if not isinstance(f, Crash | Restart)
    } | {frozenset((link.a, link.b)) for link in scenario.links}
    if not pairs:
        return 0
    files = 4
    for spec in scenario.components:
        for value in vars(spec.params).values():
            if not (isinstance(value, str) and value.startswith("tcp://")):
                continue
            host = value[len("tcp://") :].rsplit(":", 1)[0]
            if host != spec.node and frozenset((spec.node, host)) in pairs:
                files += 1 + 2 * 2
    return files


def check_open_files(scenario: Scenario, limit: int | None) -> None:
    """Refuse a zmq run that would need more open files than ``limit`` (the process's
    soft ``RLIMIT_NOFILE``; None: no limit).

    Raises:
        ScenarioError: The estimate exceeds ``limit``.
    """
    needed = open_files_needed(scenario)
    if limit is not None and needed > limit:
        children = set(scenario.process_nodes)
        here = [spec for spec in scenario.components if spec.node not in children]
        nodes = len({spec.node for spec in here})
        raise ScenarioError(
            f"{scenario.source}: on the zmq backend this run needs about {needed:,} open "
            f"files ({nodes} nodes running {len(here)} components in this process), "
            f"more than this process may open ({limit:,}): raise the limit (ulimit -n), "
            "run some nodes as processes ([[node]] process = true) or use the sim backend"
        )
