"""The determinism self-check: the same seed must replay the same run."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from transportkit._keywords import accepted_keywords, check_keywords
from transportkit.sim_backend import Simulation

__all__ = ["check_determinism"]


def check_determinism(
    build: Callable[[Simulation], Coroutine[Any, Any, Any]],
    *,
    seed: int = 0,
    runs: int = 2,
    timeout: float | None = None,
    **simulation_options: Any,
) -> str:
    """Run ``build(sim)`` in ``runs`` fresh simulations with one seed; return the hash.

    ``build`` receives a new :class:`~transportkit.sim_backend.Simulation` (add nodes,
    schedule faults) and returns the main coroutine. Every run must produce the same
    trace and the same result; anything that leaks real time, global randomness or
    set-iteration order into the run makes them differ.

    Raises:
        AssertionError: Two runs differed; the message shows the first differing event.
        TypeError: A keyword is neither one of these nor a ``Simulation`` option (the
            message suggests the closest).
        ValueError: ``runs`` is below 2.
    """
    check_keywords(
        simulation_options,
        [n for n in accepted_keywords(Simulation) if n != "seed"]
        + ["build", "seed", "runs", "timeout"],
        where="check_determinism()",
    )
    if runs < 2:
        raise ValueError(f"a determinism check needs at least 2 runs, got {runs}")
    reference: Simulation | None = None
    reference_result: Any = None
    sims: list[Simulation] = []
    try:
        for attempt in range(runs):
            sim = Simulation(seed, **simulation_options)
            sims.append(sim)
            result = sim.run(build(sim), timeout=timeout)
            if reference is None:
                reference, reference_result = sim, result
                continue
            if sim.trace.hash != reference.trace.hash:
                raise AssertionError(
                    f"run {attempt + 1} with seed {seed} diverged from run 1: "
                    + _first_difference(reference, sim)
                )
            if result != reference_result:
                raise AssertionError(
                    f"run {attempt + 1} with seed {seed} returned {result!r}, "
                    f"run 1 returned {reference_result!r} (traces were identical)"
                )
        assert reference is not None
        return reference.trace.hash
    finally:
        for sim in sims:  # after the comparison: closing adds to the traces
            sim.close()


def _first_difference(a: Simulation, b: Simulation) -> str:
    if not (a.trace.record and b.trace.record):
        return "traces differ (record_trace=False: no events to compare)"
    for i, (x, y) in enumerate(zip(a.trace.events, b.trace.events, strict=False)):
        if x != y:
            return f"event {i}: {x} != {y}"
    return f"one trace is longer: {len(a.trace.events)} vs {len(b.trace.events)} events"
