"""Inside a simulation, clocks read virtual time and randomness comes from the seed.

In the run's thread only: other threads, and everything after the run, get the real
clocks and the usual sources of randomness; transportkit's own wall-time measures
(:mod:`transportkit._wallclock`) stay real inside a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import random
import secrets
import threading
import time
import uuid
from typing import Any

import pytest

from transportkit import SimulationError
from transportkit import _wallclock as wallclock
from transportkit.sim_backend import VIRTUAL_EPOCH, Simulation, Uniform

UTC = datetime.UTC


def _clocks() -> dict[str, Any]:
    return {
        "loop": asyncio.get_running_loop().time(),
        "time": time.time(),
        "time_ns": time.time_ns(),
        "monotonic": time.monotonic(),
        "monotonic_ns": time.monotonic_ns(),
        "perf_counter": time.perf_counter(),
        "perf_counter_ns": time.perf_counter_ns(),
        "realtime": time.clock_gettime(time.CLOCK_REALTIME),
        "monotonic_clock_ns": time.clock_gettime_ns(time.CLOCK_MONOTONIC),
        "gmtime": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
        "utc": datetime.datetime.fromtimestamp(time.time(), UTC).isoformat(),
    }


def test_clocks_read_virtual_time_from_a_fixed_epoch() -> None:
    async def main() -> list[dict[str, Any]]:
        first = _clocks()
        await asyncio.sleep(2.5)
        return [first, _clocks()]

    sim = Simulation(seed=1)
    at_zero, later = sim.run(main())
    assert at_zero == {
        "loop": 0.0,
        "time": VIRTUAL_EPOCH,
        "time_ns": VIRTUAL_EPOCH * 10**9,
        "monotonic": 0.0,
        "monotonic_ns": 0,
        "perf_counter": 0.0,
        "perf_counter_ns": 0,
        "realtime": VIRTUAL_EPOCH,
        "monotonic_clock_ns": 0,
        "gmtime": "2026-01-01T00:00:00",
        "utc": "2026-01-01T00:00:00+00:00",
    }
    assert later == {
        "loop": 2.5,
        "time": VIRTUAL_EPOCH + 2.5,
        "time_ns": VIRTUAL_EPOCH * 10**9 + 2_500_000_000,
        "monotonic": 2.5,
        "monotonic_ns": 2_500_000_000,
        "perf_counter": 2.5,
        "perf_counter_ns": 2_500_000_000,
        "realtime": VIRTUAL_EPOCH + 2.5,
        "monotonic_clock_ns": 2_500_000_000,
        "gmtime": "2026-01-01T00:00:02",
        "utc": "2026-01-01T00:00:02.500000+00:00",
    }
    assert datetime.datetime.fromtimestamp(VIRTUAL_EPOCH, UTC) == datetime.datetime(
        2026, 1, 1, tzinfo=UTC
    )
    # After the run, real time again: far from the virtual clock's 2.5 s after its epoch.
    assert abs(time.time() - wallclock.time()) < 60
    assert abs(time.monotonic() - wallclock.monotonic()) < 60


def test_a_second_run_of_the_same_simulation_carries_its_clock_on() -> None:
    sim = Simulation(seed=1)

    async def read_after(delay: float) -> float:
        await asyncio.sleep(delay)
        return time.monotonic()

    assert sim.run(read_after(1.0)) == 1.0
    assert sim.run(read_after(0.5)) == 1.5


def test_logging_timestamps_are_virtual() -> None:
    async def main() -> float:
        await asyncio.sleep(3.0)
        record = logging.LogRecord("trader", logging.INFO, __file__, 1, "fill", None, None)
        return record.created

    assert Simulation().run(main()) == VIRTUAL_EPOCH + 3.0


def test_datetime_now_is_c_code_that_reads_the_real_clock() -> None:
    """Documented as not intercepted: datetime's C code does not call time.time."""

    async def main() -> tuple[datetime.datetime, datetime.datetime]:
        return datetime.datetime.now(UTC), datetime.datetime.fromtimestamp(time.time(), UTC)

    now, virtual = Simulation().run(main())
    assert abs(now.timestamp() - wallclock.time()) < 60
    assert virtual == datetime.datetime(2026, 1, 1, tzinfo=UTC)


def _draws() -> dict[str, Any]:
    deck = list(range(10))
    random.shuffle(deck)
    unseeded = random.Random()
    return {
        "random": random.random(),
        "randint": random.randint(1, 10**9),
        "choice": random.choice("abcdefgh"),
        "shuffle": deck,
        "gauss": random.gauss(0, 1),
        "getrandbits": random.getrandbits(64),
        "randbytes": random.randbytes(8),
        "urandom": os.urandom(8),
        "uuid4": uuid.uuid4(),
        "token_hex": secrets.token_hex(8),
        "randbits": secrets.randbits(32),
        "secrets_choice": secrets.choice("abcdefgh"),
        "system_random": random.SystemRandom().random(),
        "system_randint": random.SystemRandom().randint(1, 10**9),
        "unseeded_random": unseeded.random(),
    }


def test_randomness_is_a_function_of_the_seed() -> None:
    async def main() -> dict[str, Any]:
        return _draws()

    first = Simulation(seed=5).run(main())
    assert Simulation(seed=5).run(main()) == first
    other = Simulation(seed=6).run(main())
    assert all(other[key] != first[key] for key in first if "choice" not in key)
    assert first["uuid4"].version == 4
    # Outside a run, the usual sources: two draws differ.
    assert os.urandom(16) != os.urandom(16)
    assert uuid.uuid4() != uuid.uuid4()


def test_random_seed_inside_a_run_reseeds_the_runs_generator_only() -> None:
    random.seed(1234)
    outside = random.getstate()

    async def main() -> tuple[float, float, float]:
        random.seed(42)
        a = random.random()
        random.seed(42)
        b = random.random()
        random.seed()  # no seed: from the run's generator, still deterministic
        return a, b, random.random()

    a, b, c = Simulation(seed=1).run(main())
    assert a == b == random.Random(42).random()
    assert Simulation(seed=1).run(main()) == (a, b, c)
    assert random.getstate() == outside  # the global generator was not touched


def test_drawing_random_numbers_does_not_shift_the_networks_draws() -> None:
    """Latencies come from sim.rng, user draws from sim.global_rng: an added log line
    with a uuid4 in it does not change the run."""

    def run(draw: bool) -> str:
        sim = Simulation(seed=3, latency=Uniform(10e-6, 900e-6))
        a, b = sim.node("a"), sim.node("b")

        async def main() -> None:
            with a.puller(bind="tcp://*:5555") as pull, b.pusher(connect="tcp://a:5555") as push:
                for i in range(50):
                    if draw:
                        uuid.uuid4()
                        random.random()
                    await push.send([b"%d" % i])
                for _ in range(50):
                    await pull.recv(timeout=5.0)

        sim.run(main(), timeout=60)
        return sim.trace.hash

    assert run(draw=True) == run(draw=False)


def test_uuid1_is_refused_as_it_embeds_the_real_clock_and_address() -> None:
    async def main() -> None:
        with contextlib.suppress(SimulationError):  # caught: the run fails all the same
            uuid.uuid1()

    with pytest.raises(SimulationError, match=r"uuid\.uuid1 .*uuid4"):
        Simulation().run(main())
    assert uuid.uuid1().version == 1  # outside a run


def test_another_thread_reads_real_clocks_and_real_randomness_during_a_run() -> None:
    in_run, done = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def helper() -> None:
        try:
            if in_run.wait(10):
                seen["time"] = time.time()
                seen["monotonic"] = time.monotonic()
                seen["real_monotonic"] = wallclock.monotonic()
                seen["urandom"] = {os.urandom(16) for _ in range(3)}
                seen["random"] = random.random()
        finally:
            done.set()

    thread = threading.Thread(target=helper)
    thread.start()
    try:

        async def main() -> dict[str, Any]:
            in_run.set()
            for _ in range(1_000_000):  # bounded: the helper is done well before
                if done.is_set():
                    break
                await asyncio.sleep(0.001)
            return {"time": time.time(), "real": wallclock.time(), "urandom": os.urandom(16)}

        inside = Simulation(seed=2).run(main())
    finally:
        in_run.set()
        thread.join(30)
    assert done.is_set()
    # This thread saw virtual time, the helper real time.
    assert VIRTUAL_EPOCH <= inside["time"] < VIRTUAL_EPOCH + 1000
    assert abs(inside["real"] - wallclock.time()) < 60
    assert abs(seen["time"] - wallclock.time()) < 60
    assert abs(seen["monotonic"] - seen["real_monotonic"]) < 1
    assert len(seen["urandom"]) == 3
    assert inside["urandom"] == Simulation(seed=2).run(_urandom_after_the_same_draws())


async def _urandom_after_the_same_draws() -> bytes:
    return os.urandom(16)


def test_wallclock_references_stay_real_inside_a_run() -> None:
    async def main() -> tuple[float, float, bool, Any]:
        start = wallclock.perf_counter()
        for _ in range(20_000):  # takes real time, no virtual time
            await asyncio.sleep(0)
        guarded = time.time is not wallclock.time
        return (
            wallclock.perf_counter() - start,
            time.perf_counter(),
            guarded,
            wallclock.real(time.time),
        )

    real_elapsed, virtual, guarded, unwrapped = Simulation().run(main())
    assert real_elapsed > 0
    assert virtual == 0.0
    assert guarded
    assert unwrapped is wallclock.time  # the original, even from under the guard


def test_the_clocks_and_randomness_guards_are_restored_after_a_run() -> None:
    originals = [
        time.time,
        time.monotonic,
        time.perf_counter_ns,
        random.random,
        random.Random.seed,
        random.SystemRandom.getrandbits,
        os.urandom,
        uuid.uuid1,
        secrets.randbits,
        asyncio.wait_for,
        asyncio.gather,
    ]

    async def main() -> list[bool]:
        return [hasattr(f, wallclock.GUARD_MARK) for f in _current()]

    def _current() -> list[Any]:
        return [
            time.time,
            time.monotonic,
            time.perf_counter_ns,
            random.random,
            random.Random.seed,
            random.SystemRandom.getrandbits,
            os.urandom,
            uuid.uuid1,
            secrets.randbits,
            asyncio.wait_for,
            asyncio.gather,
        ]

    guarded = Simulation().run(main())
    assert guarded[:9] == [True] * 9
    assert _current() == originals
