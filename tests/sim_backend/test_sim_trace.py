"""The trace's hash: independent of batching, sensitive to every field of every event."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from transportkit.sim_backend import Trace

events = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=1e6, allow_nan=False),
        st.sampled_from(["send", "deliver", "drop", "fault"]),
        st.sampled_from(["a/pub0", "b/sub0", ""]),
        st.one_of(st.integers(min_value=0, max_value=10**9), st.text(max_size=8)),
    ),
    max_size=60,
)


def _trace(evs: list[tuple[float, str, str, str | int]], flush_every: int = 0) -> Trace:
    trace = Trace()
    for i, event in enumerate(evs):
        trace.add(*event)
        if flush_every and i % flush_every == 0:
            _ = trace.hash  # reading the hash flushes a partial batch
    return trace


@given(events, st.integers(min_value=1, max_value=7))
def test_hash_does_not_depend_on_when_batches_are_flushed(
    evs: list[tuple[float, str, str, str | int]], every: int
) -> None:
    assert _trace(evs).hash == _trace(evs, flush_every=every).hash


def test_hash_does_not_depend_on_the_batch_size() -> None:
    evs = [(i * 1e-6, "send", "a/pub0", i) for i in range(5000)]  # > 2 internal batches
    assert _trace(evs).hash == _trace(evs, flush_every=999).hash


def test_every_field_changes_the_hash() -> None:
    base = [(1.5e-5, "send", "a/pub0", 7), (2.5e-5, "deliver", "b/sub0", 7)]
    reference = _trace(base).hash
    changed = [
        [(1.5000000000000002e-5, "send", "a/pub0", 7), base[1]],  # one ulp later
        [(1.5e-5, "drop", "a/pub0", 7), base[1]],
        [(1.5e-5, "send", "a/pub1", 7), base[1]],
        [(1.5e-5, "send", "a/pub0", 8), base[1]],
        [(1.5e-5, "send", "a/pub0", "7"), base[1]],  # a text detail is not a message id
        [(1.5e-5, "send", "a/pub0", "m7"), base[1]],
        [base[1], base[0]],  # order
        base[:1],
    ]
    hashes = {_trace(evs).hash for evs in changed}
    assert reference not in hashes
    assert len(hashes) == len(changed)


def test_message_ids_show_as_m_numbers_and_counts_are_kept() -> None:
    trace = _trace([(0.0, "send", "a/pub0", 3), (1.0, "fault", "a->b", "partition")])
    assert [e.detail for e in trace.events] == ["m3", "partition"]
    assert trace.counts == {"send": 1, "fault": 1}
    assert len(trace) == 2


def test_record_false_keeps_the_hash_but_not_the_events() -> None:
    evs = [(i * 1e-3, "send", "a/pub0", i) for i in range(10)]
    kept, dropped = Trace(), Trace(record=False)
    for event in evs:
        kept.add(*event)
        dropped.add(*event)
    assert kept.hash == dropped.hash
    assert dropped.events == [] and len(kept.events) == 10


def test_recorded_events_survive_ids_past_32_bits_and_text_details() -> None:
    evs: list[tuple[float, str, str, str | int]] = [
        (0.0, "send", "a/pub0", 5),
        (1.0, "deliver", "b/sub0", 2**31 + 7),  # past a 32-bit column
        (2.0, "fault", "a->b", "partition"),
        (3.0, "drop", "a/pub0", ""),
        (4.0, "send", "a/pub0", 2**40),
    ]
    trace = _trace(evs)
    assert [e.detail for e in trace.events] == [
        "m5",
        f"m{2**31 + 7}",
        "partition",
        "",
        f"m{2**40}",
    ]
    assert [(e.time, e.kind, e.subject) for e in trace.events] == [e[:3] for e in evs]


def test_events_read_during_a_run_are_extended_not_rebuilt() -> None:
    trace = Trace()
    trace.add(0.5, "send", "a/pub0", 1)
    first = trace.events
    assert [tuple(e) for e in first] == [(0.5, "send", "a/pub0", "m1")]
    for i in range(2, 3000):  # past a batch
        trace.add(i * 1e-3, "deliver", "b/sub0", i)
    again = trace.events
    assert again is first and len(again) == 2999
    assert again[0] == (0.5, "send", "a/pub0", "m1")
    assert again[-1] == (2.999, "deliver", "b/sub0", "m2999")


def test_a_recorded_trace_costs_about_16_bytes_an_event_until_it_is_read() -> None:
    """A recorded 1M-message run (2M events) fits in tens of MB, not hundreds: events
    are kept in columns, not as a tuple, a float and a string each.
    """
    import gc  # noqa: PLC0415
    import tracemalloc  # noqa: PLC0415

    count = 100_000
    gc.collect()
    tracemalloc.start()
    try:
        trace = Trace()
        base = tracemalloc.get_traced_memory()[0]
        pending = trace.pending
        for i in range(count):
            pending.append((i * 1e-6, "deliver", "b/sub0", i))
            if len(pending) >= 2048:
                trace.flush()
        trace.flush()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert used < 24 * count, f"{used / count:.1f} bytes an event"
    assert len(trace.events) == count
