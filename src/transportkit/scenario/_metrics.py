"""What a scenario measures: per stream and per receiver, counts and latency histograms.

Latencies are recorded in an HDR histogram (3 significant digits, 1 ns to 1 hour), so
a million-message run costs a few kilobytes, not a list of a million numbers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

__all__ = ["TIMELINE_BINS", "Load", "Metrics", "Receipt", "Stream", "Timeline"]

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


RECORD_BATCH = 1024
"""Latencies a :class:`Receipt` holds before it counts them into its histogram."""


def _layout(hist: HdrHistogram) -> tuple[int, int, int, int] | None:
    """The counts-array layout of ``hist`` (mask, unit, shift, half), to count values
    without hdrh's method calls; None (count through ``record_value``) unless this
    arithmetic gives hdrh's own index across the whole range (an hdrh release that
    lays its counts out otherwise).
    """
    try:
        layout = (
            int(hist.sub_bucket_mask),
            int(hist.unit_magnitude),
            int(hist.sub_bucket_half_count_magnitude),
            int(hist.sub_bucket_half_count),
        )
        mask, unit, shift, half = layout
        probes = (1, 2, 1023, 2047, 2048, 4095, 4096, 123_456, 10**6, 10**9, _HIGHEST_NS)
        for value in probes:
            bucket = (value | mask).bit_length() - unit - shift - 1
            index = ((bucket + 1) << shift) + (value >> (bucket + unit)) - half
            if index != hist.get_counts_array_index(value):
                return None
    except Exception:
        return None
    return layout


def record_values(hist: HdrHistogram, values: list[int]) -> None:
    """Count ``values`` (ints from 1 to 1 hour in ns) into ``hist``: the same counts,
    total, minimum and maximum as ``record_value`` of each, at a fraction of the cost.
    """
    if not values:
        return
    layout = _layout(hist)
    if layout is None:
        for value in values:
            hist.record_value(value)
        return
    mask, unit, shift, half = layout
    base = unit + shift + 1
    counts = hist.counts
    for value in values:
        bucket = (value | mask).bit_length() - base
        counts[((bucket + 1) << shift) + (value >> (bucket + unit)) - half] += 1
    hist.total_count += len(values)
    low, high = min(values), max(values)
    hist.min_value = min(hist.min_value, low)
    hist.max_value = max(hist.max_value, high)


@dataclass
class Receipt:
    """What one receiver of a stream got.

    Latencies are counted into :attr:`latency` in batches of :data:`RECORD_BATCH`
    (and whenever it is read), which costs a delivery a list append rather than an
    HDR record: what is read is always complete.
    """

    name: str
    delivered: int = 0
    gaps: int = 0
    expected: int | None = None
    _latency: HdrHistogram = field(default_factory=_histogram, init=False, repr=False)
    _pending: list[int] = field(default_factory=list, init=False, repr=False)

    @property
    def latency(self) -> HdrHistogram:
        """The latency histogram of this receiver's deliveries (ns from send)."""
        if self._pending:
            self._flush()
        return self._latency

    def record(self, latency_ns: int) -> None:
        """Count one delivery that took ``latency_ns`` (an int) from send; a latency
        of 0 or less is counted as a delivery, not in the histogram; one over an hour
        as an hour.
        """
        self.delivered += 1
        if latency_ns > 0:
            pending = self._pending
            pending.append(latency_ns if latency_ns < _HIGHEST_NS else _HIGHEST_NS)
            if len(pending) >= RECORD_BATCH:
                self._flush()

    def _flush(self) -> None:
        record_values(self._latency, self._pending)
        self._pending = []


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


TIMELINE_BINS = 4096
"""The most bins a :class:`Timeline` keeps per series (its memory bound)."""

TIMELINE_FIRST_BIN = 0.001
"""A new :class:`Timeline`'s bin width, in seconds (doubled as the run grows)."""


@dataclass
class Timeline:
    """What happened to each stream over run time, counted in bins, for plots.

    A series is ``(stream, what)``: ``what`` is ``"delivered"`` (a receiver got a
    message or a reply), ``"failed"`` (a request ended in a typed failure after its
    retries), ``"rejected"`` (a risk check said no) or ``"gap"`` (a receiver saw a
    sequence gap: updates lost). Every series shares one bin width: it starts
    at :data:`TIMELINE_FIRST_BIN` and doubles (neighbouring bins merge) whenever an
    event falls past :data:`TIMELINE_BINS` bins, so a run of any length costs at most
    that many counts per series and nothing is dropped.

    Attributes:
        bin_seconds: The width of one bin now.
        series: Counts by bin index (time ``index * bin_seconds``), per series.
    """

    bin_seconds: float = TIMELINE_FIRST_BIN
    series: dict[tuple[str, str], Counter[int]] = field(default_factory=dict)
    max_bins: int = TIMELINE_BINS

    def add(self, when: float, stream: str, what: str, count: int = 1) -> None:
        """Count ``count`` events ``what`` of ``stream`` at ``when`` seconds.

        A negative (or NaN) time counts at 0; a count of 0 or less is ignored.
        """
        if count <= 0:
            return
        index = int(when / self.bin_seconds) if when > 0.0 else 0
        while index >= self.max_bins:
            self._coarsen()
            index //= 2
        key = (stream, what)
        bins = self.series.get(key)
        if bins is None:
            bins = self.series[key] = Counter()
        bins[index] += count

    def delivered(self, when: float, stream: str) -> None:
        """Count one delivery of ``stream`` at ``when``."""
        self.add(when, stream, "delivered")

    def _coarsen(self) -> None:
        self.bin_seconds *= 2
        for key, bins in self.series.items():
            merged: Counter[int] = Counter()
            for index, count in bins.items():
                merged[index // 2] += count
            self.series[key] = merged

    def merge(self, other: Timeline) -> None:
        """Add ``other``'s counts (re-binned to the coarser of the two widths)."""
        for (stream, what), bins in sorted(other.series.items()):
            for index, count in sorted(bins.items()):
                self.add((index + 0.5) * other.bin_seconds, stream, what, count)

    def total(self, stream: str, what: str) -> int:
        """All the counts of one series."""
        return sum(self.series.get((stream, what), Counter()).values())

    def as_dict(self) -> dict[str, Any]:
        """The timeline as JSON-ready data (see :meth:`from_dict`)."""
        return {
            "bin_seconds": self.bin_seconds,
            "series": [
                [stream, what, sorted(bins.items())]
                for (stream, what), bins in sorted(self.series.items())
            ],
        }

    @classmethod
    def from_dict(cls, data: Any) -> Timeline:
        """The timeline :meth:`as_dict` gave."""
        timeline = cls(bin_seconds=float(data["bin_seconds"]))
        for stream, what, bins in data["series"]:
            timeline.series[(str(stream), str(what))] = Counter(
                {int(index): int(count) for index, count in bins}
            )
        return timeline


@dataclass
class Metrics:
    """Every stream of a run."""

    streams: dict[str, Stream] = field(default_factory=dict)
    timeline: Timeline = field(default_factory=Timeline)
    socket_streams: dict[str, str] = field(default_factory=dict)
    """The stream of each tracked socket, by the socket's name where it has one (sim
    sockets: the subject of their trace events, so drops can be told per stream)."""

    def stream(self, name: str, pattern: str) -> Stream:
        """The stream called ``name`` (created on first use)."""
        stream = self.streams.get(name)
        if stream is None:
            stream = self.streams[name] = Stream(name, pattern)
        return stream
