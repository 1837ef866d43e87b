"""Faults paired into spans, as the plot and the trace show them."""

from __future__ import annotations

from transportkit.scenario._spans import FaultSpan, fault_spans
from transportkit.sim_backend import (
    Constant,
    Crash,
    DropConnection,
    Hold,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
)


def test_starts_pair_with_their_ends_and_what_never_ends_runs_to_the_end() -> None:
    spans = fault_spans(
        [
            (1.0, Crash("a"), "applied"),
            (2.0, Partition("a", "b"), "applied"),
            (3.0, Repair("b", "a"), "applied"),  # both ways: either order ends it
            (4.0, Restart("a"), "applied"),
            (5.0, SetLatency("a", "b", Constant(0.02)), "applied"),
            (6.0, SetLatency("a", "b", Constant(250e-6)), "applied"),  # a new spike
            (7.0, SetLatency("a", "b", None), "applied"),
            (8.0, Hold("a", "b", both_ways=False), "applied"),
            (8.5, DropConnection("a", "b"), "lost after 0.1 s"),
            (9.0, Restart("c"), "applied"),  # nothing to end: an instant
        ],
        end=10.0,
    )
    assert spans == [
        FaultSpan(1.0, 4.0, "a", "a crashed"),
        FaultSpan(2.0, 3.0, "a<->b", "a<->b partitioned"),
        FaultSpan(5.0, 6.0, "a<->b", "a<->b latency 20 ms"),
        FaultSpan(6.0, 7.0, "a<->b", "a<->b latency 250 us"),
        FaultSpan(8.0, 10.0, "a->b", "a->b held", open_ended=True),
        FaultSpan(8.5, None, "a<->b", "a<->b connections dropped", outcome="lost after 0.1 s"),
        FaultSpan(9.0, None, "c", "c restarted"),
    ]
    assert [s.duration for s in spans[:2]] == [3.0, 1.0]


def test_a_release_of_the_other_direction_does_not_end_a_one_way_hold() -> None:
    spans = fault_spans(
        [
            (1.0, Hold("a", "b", both_ways=False), "applied"),
            (2.0, Release("b", "a", both_ways=False), "applied"),
        ],
        end=3.0,
    )
    assert spans == [
        FaultSpan(1.0, 3.0, "a->b", "a->b held", open_ended=True),
        FaultSpan(2.0, None, "b->a", "b->a released"),
    ]


def test_an_unknown_fault_is_an_instant_named_by_its_repr() -> None:
    assert fault_spans([(1.0, "lightning", "applied")], end=2.0) == [
        FaultSpan(1.0, None, "", "'lightning'")
    ]
