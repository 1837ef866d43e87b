"""Hypothesis strategies for transportkit tests (``pip install 'transportkit[testing]'``).

They generate plain data (bytes, lists, latency models) so that a failing example
shrinks to something short and readable.
"""

from __future__ import annotations

from collections.abc import Sequence

from transportkit._extras import requires_extra
from transportkit.sim_backend import (
    Constant,
    Crash,
    DropConnection,
    Empirical,
    Fault,
    FaultSchedule,
    Hold,
    LatencyModel,
    LogNormal,
    Normal,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
    Uniform,
)

with requires_extra("testing", "transportkit.testing.strategies"):
    from hypothesis import strategies as st

__all__ = [
    "OUTAGE_KINDS",
    "fault_schedules",
    "frames",
    "latency_models",
    "messages",
    "prefixes",
    "seeds",
    "subscription_sets",
    "topics",
]

_TOPIC_ALPHABET = "AB."

OUTAGE_KINDS = ("crash", "partition", "hold", "drop_connection", "set_latency")
"""The outages :func:`fault_schedules` draws, each named by the fault that starts it
(:data:`transportkit.sim_backend.FAULT_KINDS`)."""

_RENAMED_KINDS = {"drop": "drop_connection", "spike": "set_latency", "latency": "set_latency"}


def seeds() -> st.SearchStrategy[int]:
    """Simulation seeds (shrinking towards 0). A simulation's randomness is a pure
    function of its seed, so drawing the seed lets Hypothesis replay and shrink runs.
    """
    return st.integers(min_value=0, max_value=2**32 - 1)


def topics() -> st.SearchStrategy[bytes]:
    """Short topics over a tiny alphabet, so that prefixes collide often."""
    return st.text(_TOPIC_ALPHABET, min_size=1, max_size=5).map(str.encode)


def prefixes() -> st.SearchStrategy[bytes]:
    """Subscription prefixes, including ``b""`` (everything)."""
    return st.text(_TOPIC_ALPHABET, min_size=0, max_size=3).map(str.encode)


def frames(max_size: int = 16) -> st.SearchStrategy[bytes]:
    """One frame of arbitrary bytes (possibly empty)."""
    return st.binary(min_size=0, max_size=max_size)


def messages(max_frames: int = 3) -> st.SearchStrategy[list[bytes]]:
    """A multipart message whose frame 0 is a topic."""
    return st.builds(
        lambda topic, rest: [topic, *rest],
        topics(),
        st.lists(frames(), min_size=0, max_size=max_frames),
    )


def subscription_sets(max_subscribers: int = 3) -> st.SearchStrategy[list[list[bytes]]]:
    """For each of 1..max subscribers, its list of 0..3 prefixes."""
    return st.lists(
        st.lists(prefixes(), min_size=0, max_size=3), min_size=1, max_size=max_subscribers
    )


def latency_models(max_delay: float = 0.01) -> st.SearchStrategy[LatencyModel]:
    """Any of the sim's latency models, with delays up to about ``max_delay`` seconds."""
    delays = st.floats(0.0, max_delay, allow_nan=False, allow_infinity=False)
    return st.one_of(
        delays.map(Constant),
        st.tuples(delays, delays).map(lambda lh: Uniform(min(lh), max(lh))),
        st.tuples(delays, delays).map(lambda ms: Normal(ms[0], ms[1] / 4)),
        st.floats(1e-6, max_delay).map(lambda median: LogNormal.from_median(median, 0.5)),
        st.lists(delays, min_size=1, max_size=8).map(Empirical),
    )


def fault_schedules(
    nodes: Sequence[str],
    *,
    crashable: Sequence[str] | None = None,
    horizon: float = 30.0,
    max_faults: int = 4,
    max_outage: float = 10.0,
    kinds: Sequence[str] = OUTAGE_KINDS,
) -> st.SearchStrategy[FaultSchedule]:
    """Schedules of up to ``max_faults`` outages within ``horizon`` virtual seconds.

    Each outage is a pair that undoes itself: a crash and its restart, a partition and
    its repair, a hold and its release, a latency spike and its end (a dropped
    connection heals by itself). So every generated schedule ends with the system
    whole, and properties can ask what holds once the faults stop. Shrinking removes
    outages and shortens them.

    Args:
        nodes: Node names whose links may be cut (pairs are drawn from them).
        crashable: Nodes that may crash (default: all of ``nodes``).
        horizon: Latest start of an outage, in virtual seconds.
        max_faults: Most outages in one schedule.
        max_outage: Longest outage, in virtual seconds.
        kinds: Which outages to draw from (:data:`OUTAGE_KINDS`, the default: all),
            each named by the fault that starts it: ``crash`` (a :class:`Crash` and
            its :class:`Restart`), ``partition`` (a Partition and its Repair),
            ``hold`` (a Hold and its Release), ``drop_connection`` (a
            DropConnection), ``set_latency`` (a SetLatency spike of 10 ms to 2 s and
            the SetLatency that ends it).

    Raises:
        ValueError: A kind is not one of :data:`OUTAGE_KINDS` (an old name such as
            ``drop`` or ``spike`` is told the new one), ``kinds`` is empty, or a link
            fault is asked for with fewer than two nodes.
    """
    for kind in kinds:
        if kind in _RENAMED_KINDS:
            raise ValueError(
                f"fault kind {kind!r} is now {_RENAMED_KINDS[kind]!r} (the name of the fault "
                "class that starts the outage, in snake case)"
            )
        if kind not in OUTAGE_KINDS:
            raise ValueError(
                f"unknown fault kind {kind!r}: kinds are {', '.join(map(repr, OUTAGE_KINDS))}"
            )
    names = list(nodes)
    victims = names if crashable is None else list(crashable)
    if len(names) < 2 and set(kinds) - {"crash"}:
        raise ValueError("link faults need at least two nodes")
    starts = st.floats(0.0, horizon, allow_nan=False, allow_infinity=False)
    lengths = st.floats(0.001, max_outage, allow_nan=False, allow_infinity=False)
    pairs = st.permutations(names).map(lambda p: (p[0], p[1]))

    def crash(at: float, length: float, node: str) -> FaultSchedule:
        return [(at, Crash(node)), (at + length, Restart(node))]

    def partition(at: float, length: float, ab: tuple[str, str], both: bool) -> FaultSchedule:
        a, b = ab
        return [(at, Partition(a, b, both)), (at + length, Repair(a, b, both))]

    def hold(at: float, length: float, ab: tuple[str, str], both: bool) -> FaultSchedule:
        a, b = ab
        return [(at, Hold(a, b, both)), (at + length, Release(a, b, both))]

    def drop(at: float, ab: tuple[str, str]) -> FaultSchedule:
        return [(at, DropConnection(*ab))]

    def spike(at: float, length: float, ab: tuple[str, str], delay: float) -> FaultSchedule:
        a, b = ab
        return [(at, SetLatency(a, b, Constant(delay))), (at + length, SetLatency(a, b, None))]

    outages: list[st.SearchStrategy[FaultSchedule]] = []
    if "crash" in kinds and victims:
        outages.append(st.builds(crash, starts, lengths, st.sampled_from(victims)))
    if "partition" in kinds:
        outages.append(st.builds(partition, starts, lengths, pairs, st.booleans()))
    if "hold" in kinds:
        outages.append(st.builds(hold, starts, lengths, pairs, st.booleans()))
    if "drop_connection" in kinds:
        outages.append(st.builds(drop, starts, pairs))
    if "set_latency" in kinds:
        outages.append(st.builds(spike, starts, lengths, pairs, st.floats(0.01, 2.0)))
    if not outages:
        raise ValueError(f"no fault kind to draw from in {kinds!r}")

    def flatten(parts: list[FaultSchedule]) -> FaultSchedule:
        merged: list[tuple[float, Fault]] = [item for part in parts for item in part]
        return sorted(merged, key=lambda item: item[0])

    return st.lists(st.one_of(outages), max_size=max_faults).map(flatten)
