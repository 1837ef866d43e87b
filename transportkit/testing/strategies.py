"""Hypothesis strategies for transportkit tests (requires the ``test`` extra).

They generate plain data (bytes, lists, latency models) so that a failing example
shrinks to something short and readable.
"""

from __future__ import annotations

from hypothesis import strategies as st

from transportkit.sim_backend import Constant, Empirical, LatencyModel, LogNormal, Normal, Uniform

__all__ = [
    "frames",
    "latency_models",
    "messages",
    "prefixes",
    "subscription_sets",
    "topics",
]

_TOPIC_ALPHABET = "AB."


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
