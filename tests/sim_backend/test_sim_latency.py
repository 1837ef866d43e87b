"""Latency models: non-negative, reproducible, validated; links obey them; pipes stay FIFO."""

from __future__ import annotations

import asyncio
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit import OptionError, SocketOptions
from transportkit.sim_backend import (
    Constant,
    Empirical,
    LatencyModel,
    LogNormal,
    Normal,
    Simulation,
    Uniform,
)

from .conftest import TCP, VIRTUAL_LIMIT

delays = st.floats(0, 1, allow_nan=False)

models: st.SearchStrategy[LatencyModel] = st.one_of(
    st.builds(Constant, delays),
    st.tuples(delays, delays).map(lambda lh: Uniform(min(lh), max(lh))),
    st.builds(Normal, delays, delays, delays),
    st.builds(LogNormal, st.floats(-12, 0), st.floats(0, 2), delays),
    st.builds(Empirical, st.lists(delays, min_size=1, max_size=20)),
)


@settings(max_examples=200)
@given(model=models, seed=st.integers(0, 2**64))
def test_every_sample_is_finite_and_non_negative(model: LatencyModel, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        value = model.sample(rng)
        assert math.isfinite(value)
        assert value >= 0


@settings(max_examples=100)
@given(model=models, seed=st.integers(0, 2**64))
def test_samples_are_reproducible_per_seed(model: LatencyModel, seed: int) -> None:
    first = [model.sample(random.Random(seed)) for _ in range(1)]
    rng_a, rng_b = random.Random(seed), random.Random(seed)
    assert [model.sample(rng_a) for _ in range(30)] == [model.sample(rng_b) for _ in range(30)]
    assert first == [model.sample(random.Random(seed))]


def test_normal_is_truncated_at_its_minimum() -> None:
    rng = random.Random(0)
    samples = [Normal(0.001, 0.01, minimum=0.0005).sample(rng) for _ in range(1000)]
    assert min(samples) == 0.0005


def test_lognormal_from_median_has_that_median() -> None:
    rng = random.Random(0)
    samples = sorted(LogNormal.from_median(0.002, 0.5).sample(rng) for _ in range(4001))
    assert samples[2000] == pytest.approx(0.002, rel=0.1)


def test_empirical_draws_only_its_samples() -> None:
    rng = random.Random(0)
    values = {Empirical([0.1, 0.2, 0.3]).sample(rng) for _ in range(200)}
    assert values == {0.1, 0.2, 0.3}


@pytest.mark.parametrize(
    "make",
    [
        lambda: Constant(-1),
        lambda: Constant(math.nan),
        lambda: Constant(math.inf),
        lambda: Constant("1"),  # type: ignore[arg-type]
        lambda: Constant(True),
        lambda: Uniform(-0.1, 1),
        lambda: Uniform(2, 1),
        lambda: Normal(-1, 0.1),
        lambda: Normal(1, -0.1),
        lambda: Normal(1, 0.1, minimum=-1),
        lambda: LogNormal(math.inf, 1),
        lambda: LogNormal(math.nan, 1),
        lambda: LogNormal("x", 1),  # type: ignore[arg-type]
        lambda: LogNormal(True, 1),
        lambda: LogNormal(0, -1),
        lambda: LogNormal.from_median(0, 1),
        lambda: LogNormal.from_median(-1, 1),
        lambda: Empirical([]),
        lambda: Empirical([0.1, -0.1]),
        lambda: Empirical([math.nan]),
        lambda: Empirical(0.1),  # type: ignore[arg-type]
        lambda: Empirical("0.1"),
    ],
)
def test_invalid_parameters_raise_option_error(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OptionError):
        make()


def _one_way_delay(sim: Simulation, change: LatencyModel | None) -> float:
    a, b = sim.node("a"), sim.node("b")

    async def main() -> float:
        pull = b.puller(bind=TCP)
        assert pull.last_endpoint is not None
        push = a.pusher(connect=pull.last_endpoint)
        await asyncio.sleep(1)
        if change is not None:
            sim.set_latency("a", "b", change)
        start = sim.now
        await push.send([b"x"])
        await pull.recv(timeout=10)
        return sim.now - start

    return sim.run(main(), timeout=VIRTUAL_LIMIT)


def test_default_link_delay_is_the_simulation_latency() -> None:
    assert _one_way_delay(Simulation(latency=Constant(0.004)), None) == pytest.approx(0.004)


def test_set_latency_changes_delivery_time() -> None:
    delay = _one_way_delay(Simulation(latency=Constant(0.004)), Constant(0.25))
    assert delay == pytest.approx(0.25)


def test_set_latency_one_way_leaves_the_reverse_link_alone() -> None:
    sim = Simulation(latency=Constant(0.004))
    sim.set_latency("a", "b", Constant(0.2), both_ways=False)
    assert sim.link("a", "b").latency == Constant(0.2)
    assert sim.link("b", "a").latency == Constant(0.004)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    model=st.sampled_from(
        [
            Uniform(0, 0.05),
            Normal(0.01, 0.02),
            LogNormal.from_median(0.005, 1.5),
            Empirical([0, 0.0001, 0.05]),
        ]
    ),
    publishers=st.integers(1, 3),
    subscribers=st.integers(1, 3),
    messages=st.integers(1, 200),
)
def test_random_latency_never_reorders_a_publisher_to_subscriber_pipe(
    seed: int, model: LatencyModel, publishers: int, subscribers: int, messages: int
) -> None:
    sim = Simulation(seed=seed, latency=model)
    unlimited = SocketOptions(sndhwm=0, rcvhwm=0)

    async def main() -> list[list[list[bytes]]]:
        pubs = [sim.node(f"p{i}").publisher(bind=TCP, options=unlimited) for i in range(publishers)]
        endpoints = [p.last_endpoint for p in pubs]
        subs = [
            sim.node(f"s{j}").subscriber(connect=endpoints, options=unlimited)  # type: ignore[arg-type]
            for j in range(subscribers)
        ]
        await asyncio.sleep(2)
        for n in range(messages):
            for i, pub in enumerate(pubs):
                await pub.send([str(i).encode(), str(n).encode()])
            if n % 7 == 0:
                await asyncio.sleep(0.001)
        await asyncio.sleep(60)
        received = []
        for sub in subs:
            msgs = []
            while (msg := sub.try_recv()) is not None:
                msgs.append(msg)
            received.append(msgs)
        return received

    for msgs in sim.run(main(), timeout=VIRTUAL_LIMIT):
        for i in range(publishers):
            from_pub = [int(m[1]) for m in msgs if m[0] == str(i).encode()]
            assert from_pub == list(range(messages))
