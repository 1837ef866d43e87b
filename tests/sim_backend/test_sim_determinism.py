"""Determinism: the same seed and program always give the same trace and hash."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit import SocketOptions
from transportkit.sim_backend import (
    Constant,
    Empirical,
    LatencyModel,
    LogNormal,
    Normal,
    Simulation,
    TraceEvent,
    Uniform,
)

from .conftest import TCP

RANDOM_MODELS: list[LatencyModel] = [
    Uniform(0.0001, 0.01),
    Normal(0.002, 0.001),
    LogNormal.from_median(0.001, 0.8),
    Empirical([0.0001, 0.0005, 0.002, 0.01]),
]


def pubsub_program(
    seed: int,
    latency: LatencyModel,
    *,
    subscribers: int = 3,
    messages: int = 50,
    topics: tuple[bytes, ...] = (b"A", b"B"),
) -> tuple[str, list[TraceEvent], list[list[bytes]]]:
    """Run a small PUB/SUB workload; return its hash, events and what each SUB got."""
    sim = Simulation(seed=seed, latency=latency)
    pub_node = sim.node("pub")
    sub_nodes = [sim.node(f"sub{i}") for i in range(subscribers)]

    async def main() -> list[list[bytes]]:
        pub = pub_node.publisher(bind=TCP)
        assert pub.last_endpoint is not None
        subs = [
            node.subscriber(connect=pub.last_endpoint, topics=[topics[i % len(topics)]])
            for i, node in enumerate(sub_nodes)
        ]
        await asyncio.sleep(0.1)
        for i in range(messages):
            await pub.send([topics[i % len(topics)], str(i).encode()])
            await asyncio.sleep(0.001)
        await asyncio.sleep(1)
        got: list[list[bytes]] = []
        for sub in subs:
            frames: list[bytes] = []
            while (msg := sub.try_recv()) is not None:
                frames.append(msg[1])
            got.append(frames)
        return got

    got = sim.run(main(), timeout=60)
    return sim.trace.hash, list(sim.trace.events), got


def pushpull_program(
    seed: int, latency: LatencyModel, *, pullers: int = 2, messages: int = 40, sndhwm: int = 5
) -> tuple[str, list[TraceEvent]]:
    """Run a PUSH fan-out to slow PULLs with a small HWM; return hash and events."""
    sim = Simulation(seed=seed, latency=latency)
    push_node = sim.node("push")
    pull_nodes = [sim.node(f"pull{i}") for i in range(pullers)]

    async def consume(node_index: int, ep: str) -> int:
        pull = pull_nodes[node_index].puller(connect=ep, options=SocketOptions(rcvhwm=sndhwm))
        count = 0
        while True:
            await pull.recv()
            count += 1
            await asyncio.sleep(0.003 * (node_index + 1))

    async def main() -> None:
        push = push_node.pusher(bind=TCP, options=SocketOptions(sndhwm=sndhwm))
        assert push.last_endpoint is not None
        for i in range(pullers):
            pull_nodes[i].spawn(consume(i, push.last_endpoint))
        for i in range(messages):
            await push.send([str(i).encode()])
        await asyncio.sleep(1)

    sim.run(main(), timeout=60)
    return sim.trace.hash, list(sim.trace.events)


def test_same_seed_same_program_gives_identical_hash_and_events() -> None:
    first = pubsub_program(7, Uniform(0.0001, 0.01))
    second = pubsub_program(7, Uniform(0.0001, 0.01))
    assert first[0] == second[0]
    assert first[1] == second[1]
    assert first[2] == second[2]
    assert len(first[1]) > 100


@pytest.mark.parametrize("model", RANDOM_MODELS, ids=lambda m: type(m).__name__)
def test_different_seed_with_random_latency_gives_different_hash(model: LatencyModel) -> None:
    assert pubsub_program(1, model)[0] != pubsub_program(2, model)[0]


def test_constant_latency_run_does_not_depend_on_the_seed() -> None:
    # With no randomness in the model the seed has nothing to change.
    assert pubsub_program(1, Constant(0.001))[0] == pubsub_program(2, Constant(0.001))[0]


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    model=st.sampled_from(RANDOM_MODELS),
    subscribers=st.integers(1, 3),
    messages=st.integers(1, 30),
    topics=st.lists(st.binary(min_size=0, max_size=2), min_size=1, max_size=3).map(tuple),
)
def test_any_pubsub_program_replays_identically(
    seed: int,
    model: LatencyModel,
    subscribers: int,
    messages: int,
    topics: tuple[bytes, ...],
) -> None:
    kwargs = {"subscribers": subscribers, "messages": messages, "topics": topics}
    assert pubsub_program(seed, model, **kwargs) == pubsub_program(seed, model, **kwargs)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    model=st.sampled_from(RANDOM_MODELS),
    pullers=st.integers(1, 3),
    messages=st.integers(1, 40),
    sndhwm=st.integers(1, 10),
)
def test_any_pushpull_program_replays_identically(
    seed: int, model: LatencyModel, pullers: int, messages: int, sndhwm: int
) -> None:
    kwargs = {"pullers": pullers, "messages": messages, "sndhwm": sndhwm}
    assert pushpull_program(seed, model, **kwargs) == pushpull_program(seed, model, **kwargs)


_HASH_SCRIPT = textwrap.dedent(
    """
    import asyncio
    from transportkit import SocketOptions
    from transportkit.sim_backend import Simulation, Uniform

    sim = Simulation(seed=3, latency=Uniform(0.0001, 0.005))
    a, b, c = sim.node("alpha"), sim.node("beta"), sim.node("gamma")

    async def main():
        pub = a.publisher(bind="tcp://*:*")
        subs = [n.subscriber(connect=pub.last_endpoint, topics=[b"x", b"y"]) for n in (b, c)]
        router = b.router(bind="tcp://*:*")
        dealers = [n.dealer(connect=router.last_endpoint,
                            options=SocketOptions(routing_id=n.name.encode())) for n in (a, c)]
        await asyncio.sleep(0.1)
        for i in range(40):
            await pub.send([b"xy"[i % 2:i % 2 + 1], bytes([i])])
            await dealers[i % 2].send([bytes([i])])
        await asyncio.sleep(0.5)
        while (m := router.try_recv()) is not None:
            await router.send([m[0], b"ack"])
        sim.crash("gamma")
        await asyncio.sleep(0.5)

    sim.run(main())
    print(sim.trace.hash, len(sim.trace))
    """
)


def test_hash_does_not_depend_on_pythonhashseed() -> None:
    outputs = []
    for hashseed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        result = subprocess.run(
            [sys.executable, "-c", _HASH_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        outputs.append(result.stdout.strip())
    assert outputs[0] == outputs[1]
    assert outputs[0]


def test_tasks_left_at_the_end_of_a_run_are_cancelled_in_a_stable_order() -> None:
    """Regression: leftover tasks were cancelled in asyncio.all_tasks() order (a set
    ordered by memory address), so the sockets they closed were traced in an order that
    changed from one run to the next within one process."""

    def program() -> str:
        sim = Simulation(seed=5)

        async def holder(node_name: str) -> None:
            with sim.node(node_name).subscriber(connect="tcp://feed:1"):
                await asyncio.sleep(3600)

        async def main() -> None:
            for i in range(12):
                sim.node(f"n{i}").spawn(holder(f"n{i}"))
            await asyncio.sleep(1.0)

        sim.run(main())
        return sim.trace.hash

    first = program()
    clutter = [object() for _ in range(10_000)]
    assert all(program() == first for _ in range(5))
    del clutter
