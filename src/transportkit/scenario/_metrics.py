"""What a scenario measures: per stream and per receiver, counts and latency histograms.

Latencies are recorded in an HDR histogram (3 significant digits, 1 ns to 1 hour), so
a million-message run costs a few kilobytes, not a list of a million numbers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = ["Load", "Metrics", "Receipt", "Stream", "Timeline"]

_LOWEST_NS = 1
_HIGHEST_NS = 3_600_000_000_000
_DIGITS = 3
PERCENTILES = (50.0, 99.0, 99.9)


def _histogram() -> HdrHistogram:
    return HdrHistogram(_LOWEST_NS, _HIGHEST_NS, _DIGITS)


def latency_summary(hist: HdrHistogram) -> dict[str, float | None]:
    """P50/P99/P99.9/max in microseconds (None when nothing was recorded)."""
    if hist.get_total_count() == 0:
        return {"p50_us": None, "p99_us": None, "p99_9_us": None, "max_us": None}
    return {
        "p50_us": hist.get_value_at_percentile(50.0) / 1000,
        "p99_us": hist.get_value_at_percentile(99.0) / 1000,
        "p99_9_us": hist.get_value_at_percentile(99.9) / 1000,
        "max_us": hist.get_max_value() / 1000,
    }


@dataclass
class Receipt:
    """What one receiver of a stream got."""

    name: str
    delivered: int = 0
    gaps: int = 0
    expected: int | None = None
    latency: HdrHistogram = field(default_factory=_histogram, repr=False)

    def record(self, latency_ns: int) -> None:
        """Count one delivery that took ``latency_ns`` from send."""
        self.delivered += 1
        if latency_ns > 0:
            self.latency.record_value(min(latency_ns, _HIGHEST_NS))


@dataclass
class Load:
    """What a rate-driven source (a publisher, a Clone server, a request client) was
    asked to send and how long it ran, summed over the incarnations of its node.

    Attributes:
        rate: The rate the file asks for, per second.
        offered: What its schedule asked for while it ran: ``rate`` times the seconds
            it ran (a tick's worth at the start of each tick), plus its bursts.
        seconds: Seconds it ran its schedule (load time, crashes excluded).
        closed_loop: A request client: one request in flight, so it falls behind its
            schedule while it waits for a reply (the system under test), and catches
            up after; an open-loop source (a publisher) is behind only when the
            machine cannot run it fast enough.
        max_behind: The most it owed at once (updates or requests due, not yet sent).
    """

    rate: float
    offered: int = 0
    seconds: float = 0.0
    closed_loop: bool = False
    max_behind: int = 0

    def add(self, offered: int, seconds: float, behind: int) -> None:
        """Count one incarnation's schedule (``behind``: the most it owed at once)."""
        self.offered += offered
        self.seconds += seconds
        self.max_behind = max(self.max_behind, behind)

    def summary(self, sent: int) -> dict[str, Any]:
        """Offered against achieved, for a source that sent ``sent``.

        ``shortfall`` is what it did not send of what it offered (never negative;
        a closed-loop client's float schedule may send one more than it offered),
        ``shortfall_fraction`` that as a fraction of ``offered`` (0 when nothing was
        offered).
        """
        shortfall = max(0, self.offered - sent)
        return {
            "rate": self.rate,
            "offered": self.offered,
            "sent": sent,
            "seconds": round(self.seconds, 6),
            "offered_rate": round(self.offered / self.seconds, 3) if self.seconds else None,
            "achieved_rate": round(sent / self.seconds, 3) if self.seconds else None,
            "shortfall": shortfall,
            "shortfall_fraction": round(shortfall / self.offered, 6) if self.offered else 0.0,
            "closed_loop": self.closed_loop,
            "max_behind": self.max_behind,
        }


@dataclass
class Stream:
    """One flow of messages (a feed, a request path, a pipeline) and its receivers.

    Attributes:
        name: The stream's name (its source component's name).
        pattern: A label such as ``PUB/SUB`` or ``REQ/REP``.
        sent: Messages the source sent (requests, for request/reply).
        dropped: Messages sockets discarded (HWM, disconnects), where the backend counts.
        failures: Requests that ended in a typed error (timeouts after retries, ...).
        counters: Other named counts (resyncs, retries, reconnects, ...).
        sent_by_topic: For feeds, messages sent per topic (for per-receiver expectations).
        load: For a rate-driven source, what it offered (None for other streams).
    """

    name: str
    pattern: str
    sent: int = 0
    dropped: int | None = 0
    failures: int = 0
    counters: Counter[str] = field(default_factory=Counter)
    sent_by_topic: Counter[bytes] = field(default_factory=Counter)
    receivers: dict[str, Receipt] = field(default_factory=dict)
    load: Load | None = None

    def offer(self, rate: float, *, closed_loop: bool = False) -> Load:
        """The stream's :class:`Load` record (created on first use)."""
        if self.load is None:
            self.load = Load(rate, closed_loop=closed_loop)
        return self.load

    def receiver(self, name: str) -> Receipt:
        """The receipt of receiver ``name`` (created on first use)."""
        receipt = self.receivers.get(name)
        if receipt is None:
            receipt = self.receivers[name] = Receipt(name)
        return receipt

    def deliver(self, receiver: str, latency_ns: int) -> None:
        """Count a delivery to ``receiver`` that took ``latency_ns``."""
        self.receiver(receiver).record(latency_ns)

    @property
    def latency(self) -> HdrHistogram:
        """The latency histogram over all receivers (merged on demand)."""
        merged = _histogram()
        for receipt in self.receivers.values():
            merged.add(receipt.latency)
        return merged

    def add_dropped(self, count: int | None) -> None:
        """Add a socket's drop count (None: the backend cannot count drops)."""
        if count is None or self.dropped is None:
            self.dropped = None
        else:
            self.dropped += count

    @property
    def delivered(self) -> int:
        """Deliveries over all receivers."""
        return sum(r.delivered for r in self.receivers.values())

    @property
    def gaps(self) -> int:
        """Gaps detected over all receivers."""
        return sum(r.gaps for r in self.receivers.values())

    def as_dict(self) -> dict[str, Any]:
        """The stream as plain data for reports."""
        latency = self.latency
        load = {} if self.load is None else {"load": self.load.summary(self.sent)}
        return {
            "pattern": self.pattern,
            "sent": self.sent,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "gaps": self.gaps,
            "failures": self.failures,
            "latency": latency_summary(latency),
            "counters": dict(sorted(self.counters.items())),
            "receivers": {
                name: {
                    "delivered": r.delivered,
                    "expected": r.expected,
                    "gaps": r.gaps,
                    "latency": latency_summary(r.latency),
                }
                for name, r in sorted(self.receivers.items())
            },
            **load,
        }


@dataclass
class Timeline:
    """Coarse events over virtual time for plots: (time, stream, what)."""

    deliveries: list[tuple[float, str]] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)
    limit: int = 200_000

    def delivered(self, when: float, stream: str) -> None:
        """Note a delivery (only the first ``limit`` are kept, for plotting)."""
        if len(self.deliveries) < self.limit:
            self.deliveries.append((when, stream))


@dataclass
class Metrics:
    """Every stream of a run."""

    streams: dict[str, Stream] = field(default_factory=dict)
    timeline: Timeline = field(default_factory=Timeline)

    def stream(self, name: str, pattern: str) -> Stream:
        """The stream called ``name`` (created on first use)."""
        stream = self.streams.get(name)
        if stream is None:
            stream = self.streams[name] = Stream(name, pattern)
        return stream
