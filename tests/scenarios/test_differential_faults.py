"""Differential: small fault schedules, written once, on the sim and on real sockets.

A sender node ``src`` and two receivers ``r1``/``r2`` over tcp (PUSH/PULL, one pusher
per receiver; or PUB/SUB, one publisher): messages every 10 ms, and a Hypothesis
schedule of a few outages between the nodes (partitions one or both ways, holds,
latency spikes, dropped connections), run through the testing kit's harnesses on
both backends (on zmq through the fault proxy). The tolerance, per receiver:

- nothing is invented or duplicated: what a receiver got is a sub-multiset of what
  was sent to it, on both backends;
- every message sent outside every fault's window is delivered on both backends, so
  the two multisets are equal on those messages. A window runs from 30 ms before a
  fault starts to 100 ms (plus a spike's delay) after it ends (a dropped
  connection's ends where it starts): margin for the zmq run's timing jitter, libzmq's
  reconnect (``reconnect_ivl`` 20 ms here) and a SUB's resubscription;
- partitions, holds and latency lose nothing on either backend (TCP retransmits,
  the traffic stays far below every high-water mark), so a schedule without a dropped
  connection is compared exactly, every message;
- the faults happen on both: a message sent to a receiver while the link to it is cut
  or held (from 30 ms after the fault, an outage overlapping no other of that
  receiver's) arrives only after the repair or release, and one sent during a
  latency spike on that link arrives no sooner than the spike's delay;
- a dropped connection's window may differ: the sim loses the messages on the wire
  at that instant, real sockets the bytes in kernel buffers and in the proxy, and a
  PUB loses what it publishes before the reconnected SUB's subscription arrives,
  after a reconnect whose timing differs. Those messages may be delivered or lost,
  on either backend.

Nothing here depends on the sim's exact in-flight capacity (SNDHWM + RCVHWM today,
more once kernel buffers are modelled): no high-water mark is approached.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from transportkit import SocketOptions
from transportkit.sim_backend import (
    Constant,
    Crash,
    DropConnection,
    Fault,
    FaultSchedule,
    Hold,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
)
from transportkit.testing import SYNC_TOPIC, Harness, open_harness, sync_subscribers

RECEIVERS = ("r1", "r2")
START = 0.3  # the first message, on the harness's clock
SPACING = 0.01
BEFORE, AFTER = 0.03, 0.1


@dataclass(frozen=True)
class Outage:
    """One fault episode: the schedule entries and the window it may disturb."""

    entries: tuple[tuple[float, Fault], ...]
    start: float
    end: float

    @property
    def window(self) -> tuple[float, float]:
        spike = max(
            (f.latency.delay for _, f in self.entries if isinstance(f, SetLatency)
             and isinstance(f.latency, Constant)),
            default=0.0,
        )  # fmt: skip
        return self.start - BEFORE, self.end + AFTER + spike


@st.composite
def outages(draw: st.DrawFn, count: int) -> Outage:
    """A partition, hold, spike or drop between ``src`` and a receiver (either way)."""
    receiver = draw(st.sampled_from(RECEIVERS))
    a, b = draw(st.permutations(("src", receiver)))
    start = START + draw(st.integers(2, count - 10)) * SPACING
    length = draw(st.integers(3, 15)) * SPACING
    end = start + length
    kind = draw(st.sampled_from(("partition", "hold", "spike", "drop")))
    both = draw(st.booleans())
    entries: tuple[tuple[float, Fault], ...]
    if kind == "partition":
        entries = ((start, Partition(a, b, both)), (end, Repair(a, b, both)))
    elif kind == "hold":
        entries = ((start, Hold(a, b, both)), (end, Release(a, b, both)))
    elif kind == "spike":
        delay = draw(st.integers(5, 40)) / 1000
        entries = (
            (start, SetLatency(a, b, Constant(delay), both)),
            (end, SetLatency(a, b, None, both)),
        )
    else:
        entries = ((start, DropConnection(a, b)),)
        end = start
    return Outage(entries, start, end)


def schedules(count: int, most: int) -> st.SearchStrategy[list[Outage]]:
    return st.lists(outages(count), min_size=1, max_size=most)


@dataclass
class Run:
    sent: dict[str, list[tuple[bytes, float]]]  # per receiver: (message, time sent)
    got: dict[str, Counter[bytes]]
    arrived: dict[str, dict[bytes, float]]  # per receiver: first arrival time


async def traffic(h: Harness, pattern: str, count: int) -> Run:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    src = h.network("src")
    options = SocketOptions(reconnect_ivl=20, linger=0)
    got: dict[str, Counter[bytes]] = {r: Counter() for r in RECEIVERS}
    arrived: dict[str, dict[bytes, float]] = {r: {} for r in RECEIVERS}
    sent: dict[str, list[tuple[bytes, float]]] = {r: [] for r in RECEIVERS}
    receivers, senders = {}, {}
    if pattern == "push":
        for r in RECEIVERS:
            pull = receivers[r] = h.network(r).puller(bind=h.bind_endpoint(), options=options)
            assert pull.last_endpoint is not None
            senders[r] = src.pusher(connect=pull.last_endpoint, options=options)
    else:
        pub = src.publisher(bind=h.bind_endpoint(), options=options)
        assert pub.last_endpoint is not None
        for r in RECEIVERS:
            receivers[r] = h.network(r).subscriber(connect=pub.last_endpoint, options=options)
        await sync_subscribers(pub, list(receivers.values()), subscribe=False)

    async def collect(r: str) -> None:
        while True:
            msg = await receivers[r].recv()
            if not msg[0].startswith(SYNC_TOPIC):
                got[r][msg[0]] += 1
                arrived[r].setdefault(msg[0], loop.time() - t0)

    tasks = [asyncio.create_task(collect(r)) for r in RECEIVERS]
    try:
        for i in range(count):
            await asyncio.sleep(max(0.0, t0 + START + i * SPACING - loop.time()))
            body = b"m%d" % i
            when = loop.time() - t0
            if pattern == "push":
                for r in RECEIVERS:
                    await senders[r].send([body])
            else:
                await pub.send([body])
            for r in RECEIVERS:
                sent[r].append((body, when))
        await asyncio.sleep(0.35)  # the longest window's tail, and delivery
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sock in [*receivers.values(), *senders.values()]:
            sock.close()
        if pattern == "pub":
            pub.close()
    return Run(sent, got, arrived)


def run_on(backend: str, pattern: str, count: int, schedule: FaultSchedule) -> Run:
    with open_harness(backend, seed=3, faults=True) as h:
        h.schedule_faults(schedule)
        run = h.run(traffic(h, pattern, count), timeout=20.0)
        if backend == "zmq":
            outcomes = getattr(h, "outcomes", [])
            assert len(outcomes) == len(schedule)
            failed = [o for o in outcomes if not o[2].startswith("applied")]
            assert failed == [], failed
        return run


def outside(when: float, windows: list[tuple[float, float]]) -> bool:
    return all(when < low or when > high for low, high in windows)


def _receiver(outage: Outage) -> str:
    fault = outage.entries[0][1]
    assert not isinstance(fault, Crash | Restart)
    return fault.b if fault.a == "src" else fault.a


def _cuts_data(fault: Fault) -> bool:
    """Whether ``fault`` acts on the direction data flows, src -> receiver."""
    return bool(getattr(fault, "both_ways", True)) or getattr(fault, "a", "") == "src"


def check_effects(name: str, run: Run, plan: list[Outage]) -> None:
    """The faults took effect: held back by cuts and holds, delayed by spikes."""
    for outage in plan:
        r = _receiver(outage)
        fault = outage.entries[0][1]
        others = [o for o in plan if o is not outage and _receiver(o) == r]
        if isinstance(fault, DropConnection) or not _cuts_data(fault):
            continue
        if any(o.start <= outage.end + AFTER and outage.start <= o.end + AFTER for o in others):
            continue
        for body, when in run.sent[r]:
            if not outage.start + BEFORE <= when <= outage.end - 0.01:
                continue
            at = run.arrived[r].get(body)
            assert at is not None, f"{name} {r}: {body!r} lost in {fault}"
            if isinstance(fault, SetLatency):
                assert isinstance(fault.latency, Constant)
                assert at - when >= 0.9 * fault.latency.delay, (name, r, body, at, when, fault)
            else:
                assert at >= outage.end - 1e-6, f"{name} {r}: {body!r} passed {fault} at {at}"


def compare(pattern: str, count: int, plan: list[Outage]) -> None:
    schedule = sorted((e for o in plan for e in o.entries), key=lambda e: e[0])
    sim = run_on("sim", pattern, count, schedule)
    real = run_on("zmq", pattern, count, schedule)
    windows = [o.window for o in plan]
    lossless = not any(isinstance(f, DropConnection) for _, f in schedule)
    check_effects("sim", sim, plan)
    check_effects("zmq", real, plan)
    for r in RECEIVERS:
        sent = Counter(body for body, _ in sim.sent[r])
        assert sent == Counter(body for body, _ in real.sent[r])
        for run in (sim, real):
            assert run.got[r] <= sent, f"{r}: invented or duplicated {run.got[r] - sent}"
        if lossless:
            assert sim.got[r] == sent, f"sim {r} lost {sent - sim.got[r]}"
            assert real.got[r] == sent, f"zmq {r} lost {sent - real.got[r]}"
            continue
        clear = {body for body, when in sim.sent[r] if outside(when, windows)}
        clear &= {body for body, when in real.sent[r] if outside(when, windows)}
        for name, run in (("sim", sim), ("zmq", real)):
            missing = sorted(clear - set(run.got[r]))
            assert missing == [], f"{name} {r} lost messages sent outside every window"


PATTERNS = st.sampled_from(("push", "pub"))


@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(
    pattern="push",
    plan=[
        Outage(((0.4, Partition("src", "r1")), (0.5, Repair("src", "r1"))), 0.4, 0.5),
        Outage(((0.45, DropConnection("r2", "src")),), 0.45, 0.45),
    ],
)
@given(pattern=PATTERNS, plan=schedules(30, 2))
def test_small_fault_schedules_deliver_the_same_messages_on_both_backends(
    pattern: str, plan: list[Outage]
) -> None:
    compare(pattern, 30, plan)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=PATTERNS, plan=schedules(60, 4))
def test_fault_schedules_deliver_the_same_messages_on_both_backends_slow(
    pattern: str, plan: list[Outage]
) -> None:
    compare(pattern, 60, plan)
