"""Sim backend figures: delivered messages per wall-clock second against a bare SimPy
loop doing the same deliveries with callbacks, what recording the trace costs, cost per
message as runs grow, peak memory of a long run (trace recorded or not), and the profile
that says where the time goes.

Measure only: these figures are for the sim backend's owners to act on.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import io
import pstats
import random
import tracemalloc
from collections.abc import Callable
from typing import Any

import simpy

from transportkit import _wallclock as wallclock
from transportkit._bench._common import BenchConfig, interleaved, median, paired_ratio, ratio
from transportkit._options import SocketOptions

__all__ = ["run_sim"]

LATENCY_LOW_S = 40e-6
LATENCY_HIGH_S = 60e-6
BATCH = 100
GAP_S = 10e-6
SEED = 7
_SETTLE_S = 0.001
_REPEAT_UP_TO = 100_000
_UNLIMITED = SocketOptions(sndhwm=0, rcvhwm=0)

TRACE_COST_WHAT = (
    "PUB/SUB with record_trace=True against False: recording is keeping every event "
    "(columns of times, kind and subject numbers, message ids); the hash and the "
    "per-kind counts are computed in both runs"
)
"""What the trace-cost figure compares (shown with it)."""


def _simulation(record_trace: bool = False) -> Any:
    from transportkit.sim_backend import Simulation, Uniform  # noqa: PLC0415

    return Simulation(
        seed=SEED, latency=Uniform(LATENCY_LOW_S, LATENCY_HIGH_S), record_trace=record_trace
    )


def _pubsub(count: int, *, read: bool, record_trace: bool = False) -> int:
    """Publish ``count`` messages (batches of 100 every 1 ms virtual) to one subscriber
    that receives them (``read``) or lets them queue; return deliveries.
    """
    sim = _simulation(record_trace)
    exchange, trader = sim.node("exchange"), sim.node("trader")

    async def main() -> int:
        pub = exchange.publisher(bind="tcp://exchange:5556", options=_UNLIMITED)
        sub = trader.subscriber(connect="tcp://exchange:5556", options=_UNLIMITED)
        await asyncio.sleep(_SETTLE_S)

        async def publish() -> None:
            payload = b"x" * 100
            for start in range(0, count, BATCH):
                for _ in range(min(BATCH, count - start)):
                    await pub.send([b"T", payload])
                await asyncio.sleep(BATCH * GAP_S)

        task = asyncio.ensure_future(publish())
        if read:
            for _ in range(count):
                await sub.recv()
        await task
        if read:
            return count
        await asyncio.sleep(_SETTLE_S)  # the last batch arrives
        return int(sub.stats.received + sum(len(p.in_q) for p in sub.peers))

    delivered = int(sim.run(main()))
    if delivered != count:
        raise RuntimeError(f"the run delivered {delivered} of {count} messages")
    return delivered


def sim_pubsub(count: int, *, record_trace: bool = False) -> int:
    """Publish ``count`` messages (batches of 100 every 1 ms virtual); return deliveries.
    ``record_trace`` keeps every trace event (the hash is computed either way).
    """
    return _pubsub(count, read=True, record_trace=record_trace)


def sim_pubsub_traced(count: int) -> int:
    """:func:`sim_pubsub` with ``record_trace=True`` (the scenario runner's default)."""
    return _pubsub(count, read=True, record_trace=True)


def sim_network_pubsub(count: int) -> int:
    """:func:`sim_pubsub` with a subscriber that never reads: the messages queue at the
    SUB. What is left is the simulated network (send, route, wire, arrival, trace)
    without the receiving coroutine's wake-ups and receives.
    """
    return _pubsub(count, read=False)


def sim_reqrep(count: int) -> int:
    """``count`` REQ/REP round trips; return deliveries (two per round trip)."""
    sim = _simulation()
    client, server = sim.node("client"), sim.node("server")

    async def main() -> int:
        rep = server.worker(bind="tcp://server:5555")
        req = client.requester(connect="tcp://server:5555")

        async def echo() -> None:
            for _ in range(count):
                await rep.send(await rep.recv())

        task = asyncio.ensure_future(echo())
        payload = [b"x" * 100]
        for _ in range(count):
            await req.send(payload)
            await req.recv()
        await task
        return 2 * count

    return int(sim.run(main()))


def bare_pubsub(count: int) -> int:
    """The same deliveries as :func:`sim_pubsub` in bare SimPy: a timeout per message."""
    env = simpy.Environment()
    rng = random.Random(SEED)
    delivered = [0]

    def deliver(_event: simpy.Event) -> None:
        delivered[0] += 1

    def publisher() -> Any:
        yield env.timeout(_SETTLE_S)
        for start in range(0, count, BATCH):
            for _ in range(min(BATCH, count - start)):
                env.timeout(rng.uniform(LATENCY_LOW_S, LATENCY_HIGH_S)).callbacks.append(deliver)
            yield env.timeout(BATCH * GAP_S)

    env.process(publisher())
    env.run()
    return delivered[0]


def bare_reqrep(count: int) -> int:
    """The same deliveries as :func:`sim_reqrep` in bare SimPy: chained callbacks."""
    env = simpy.Environment()
    rng = random.Random(SEED)
    delivered = [0]

    def send(callback: Callable[[simpy.Event], None]) -> None:
        env.timeout(rng.uniform(LATENCY_LOW_S, LATENCY_HIGH_S)).callbacks.append(callback)

    def at_server(_event: simpy.Event) -> None:
        delivered[0] += 1
        send(at_client)

    def at_client(_event: simpy.Event) -> None:
        delivered[0] += 1
        if delivered[0] < 2 * count:
            send(at_server)

    send(at_server)
    env.run()
    return delivered[0]


def floor_pubsub(count: int) -> int:
    """The lower bound for async code: :func:`bare_pubsub`'s deliveries, each waking a
    coroutine that awaits a future, on the sim's event loop (no sockets, no trace).

    The gap between this and :func:`bare_pubsub` is the cost of one asyncio wake-up per
    delivery, which any receive by unmodified ``async`` code pays.
    """
    from transportkit.sim_backend._loop import SimEventLoop  # noqa: PLC0415

    env = simpy.Environment()
    rng = random.Random(SEED)
    loop = SimEventLoop(env)
    arrived: list[int] = []
    waiting: list[asyncio.Future[bool]] = []

    def deliver(_event: simpy.Event) -> None:
        arrived.append(1)
        if waiting:
            waiting.pop().set_result(True)

    async def publish() -> None:
        await asyncio.sleep(_SETTLE_S)
        for start in range(0, count, BATCH):
            for _ in range(min(BATCH, count - start)):
                env.timeout(rng.uniform(LATENCY_LOW_S, LATENCY_HIGH_S)).callbacks.append(deliver)
            await asyncio.sleep(BATCH * GAP_S)

    async def main() -> int:
        task = asyncio.ensure_future(publish())
        for _ in range(count):
            if not arrived:
                fut = loop.create_future()
                waiting.append(fut)
                await fut
            arrived.pop()
        await task
        return count

    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def _rate(run: Callable[[int], int], count: int) -> Callable[[], float]:
    def one() -> float:
        start = wallclock.perf_counter()
        delivered = run(count)
        return delivered / (wallclock.perf_counter() - start)

    return one


def _breakdown(rates: dict[str, float]) -> dict[str, float]:
    """Microseconds per PUB/SUB delivery, by layer, from the rates of one run."""
    per = {name: 1e6 / rate for name, rate in rates.items() if rate > 0}
    bare, floor = per["bare_pubsub"], per["floor_pubsub"]
    network, full = per["network_pubsub"], per["tk_pubsub"]
    return {
        "bare_simpy_delivery": bare,
        "coroutine_wake": floor - bare,
        "sim_network": network,
        "sim_receive": full - network - (floor - bare),
        "sim_total": full,
    }


def _profile(count: int, top: int = 15) -> list[dict[str, Any]]:
    profiler = cProfile.Profile()
    profiler.enable()
    sim_pubsub(count)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    entries = stats.stats  # type: ignore[attr-defined]
    for (path, line, func), (_cc, calls, tottime, cumtime, _callers) in sorted(
        entries.items(), key=lambda item: item[1][2], reverse=True
    )[:top]:
        where = path.split("/transportkit/")[-1].split("/site-packages/")[-1]
        rows.append(
            {
                "function": f"{where}:{line}({func})",
                "calls": calls,
                "tottime_s": tottime,
                "cumtime_s": cumtime,
                "share": tottime / total if total else 0.0,
            }
        )
    return rows


def _peak_memory(count: int, *, record_trace: bool) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        sim_pubsub(count, record_trace=record_trace)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 1e6


def run_sim(config: BenchConfig) -> dict[str, Any]:
    """Sim rates against bare SimPy, trace cost, cost per message, peak memory (trace
    recorded, the scenario runner's default, and not), profile.
    """
    n = config.sim_messages
    rounds = interleaved(
        {
            "tk_pubsub_traced": _rate(sim_pubsub_traced, n),
            "tk_pubsub": _rate(sim_pubsub, n),
            "bare_pubsub": _rate(bare_pubsub, n),
            "floor_pubsub": _rate(floor_pubsub, n),
            "network_pubsub": _rate(sim_network_pubsub, n),
            "tk_reqrep": _rate(sim_reqrep, n // 2),
            "bare_reqrep": _rate(bare_reqrep, n // 2),
        },
        config.rounds,
    )
    rates = {name: median(values) for name, values in rounds.items()}
    scaling = {}
    for count in config.sim_scaling:
        # The median of three runs where that is cheap: one short run's cost swings
        # with the collector's timing by as much as the target's 20%.
        runs = 3 if count <= _REPEAT_UP_TO else 1
        costs_us = []
        for _ in range(runs):
            start = wallclock.perf_counter()
            sim_pubsub(count)
            costs_us.append((wallclock.perf_counter() - start) / count * 1e6)
        scaling[str(count)] = median(costs_us)
    costs = list(scaling.values())
    return {
        "latency_model": f"Uniform({LATENCY_LOW_S * 1e6:g}, {LATENCY_HIGH_S * 1e6:g}) us",
        "messages_per_run": n,
        "deliveries_per_s": rates,
        "ratios": {
            "pubsub_vs_bare": paired_ratio(rounds["tk_pubsub"], rounds["bare_pubsub"]),
            "reqrep_vs_bare": paired_ratio(rounds["tk_reqrep"], rounds["bare_reqrep"]),
        },
        "floor": {
            "what": "bare SimPy deliveries each awaited by a coroutine on the sim loop",
            "pubsub_vs_bare": paired_ratio(rounds["floor_pubsub"], rounds["bare_pubsub"]),
            "tk_pubsub_vs_floor": paired_ratio(rounds["tk_pubsub"], rounds["floor_pubsub"]),
        },
        "trace_cost": {
            "what": TRACE_COST_WHAT,
            # traced time / untraced time - 1, paired within each round
            "cost": paired_ratio(rounds["tk_pubsub"], rounds["tk_pubsub_traced"]) - 1,
        },
        "breakdown_us": _breakdown(rates),
        "cost_us_per_message": scaling,
        "cost_growth": ratio(costs[-1], costs[0]) if costs else float("nan"),
        "peak_memory_mb": {
            "messages": config.sim_memory_messages,
            # The target's: the scenario runner's default (a scenario's record_trace).
            "record_trace": True,
            "peak_mb": _peak_memory(config.sim_memory_messages, record_trace=True),
            "untraced_peak_mb": _peak_memory(config.sim_memory_messages, record_trace=False),
        },
        "profile_top": _profile(min(n, 20_000)),
    }
