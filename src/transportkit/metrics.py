"""Metrics: every socket's counters, every pattern's stats, request latency (HDR).

A :class:`MetricsRegistry` reads counters where they already live, when it is read
(a Prometheus scrape or :meth:`MetricsRegistry.as_dict`): nothing is copied on the
path of a message. It gives two outputs, a plain JSON-serialisable dict and
Prometheus metrics through the official ``prometheus-client`` package. It and
``hdrhistogram`` come with the ``metrics`` extra (``pip install 'transportkit[metrics]'``).
The module needs ``hdrhistogram`` to import; only the Prometheus calls need
``prometheus-client``, and raise :class:`~transportkit.MissingExtraError` (an
:class:`ImportError`) naming the extra if it is missing::

    from transportkit.metrics import MetricsRegistry, start_http_server

    registry = MetricsRegistry()
    registry.watch_network(net)                  # every socket net has open, at each read
    client = LazyPirateClient(net, "tcp://risk:5555")
    registry.watch(client, name="risk")          # its stats, and its round-trip latency
    with start_http_server(9464, registry=registry) as server:   # 127.0.0.1 by default
        ...                                       # scrape http://127.0.0.1:9464/metrics

What is exported:

- **Sockets** of each watched network (:meth:`~transportkit.Network.open_sockets`, and
  a zmq network's blocking sockets), read at each scrape; a socket closed since is
  gone from the next one. Labels: ``network``, ``kind``, ``socket`` (the name given to
  :meth:`MetricsRegistry.name_socket`, else the kind and its order of first sight in
  this registry and network: ``req0``, ``req1``...) and ``endpoint`` (its last bound
  or connected endpoint). Counters ``transportkit_socket_messages_sent_total``,
  ``..._received_total``, ``..._dropped_total`` and ``..._truncated_total``: a
  counter the backend cannot know (``dropped`` and ``truncated`` on zmq, where libzmq
  reports neither) is None in the dict and absent from Prometheus, never 0. The gauge
  ``transportkit_sockets_open`` counts them by network and kind, and
  ``transportkit_network_messages_sent_total{network}`` (and ``..._received``,
  ``..._dropped``, ``..._truncated``, ``transportkit_network_sockets_closed_total``)
  add up every socket the network made since it was watched, closed ones included:
  the network announces each new socket to the registry
  (:meth:`~transportkit.Network.add_socket_observer`), so one opened and closed
  between two scrapes (each Lazy Pirate retry is a new REQ) still counts.
- **Patterns** (anything with a ``stats`` dataclass, or a stats dataclass itself)
  registered with :meth:`MetricsRegistry.watch`: each int counter of its stats as
  ``transportkit_<pattern>_<counter>_total{name=...}`` (``<pattern>`` is the class
  name in snake case: ``lazy_pirate_client``, ``majordomo_broker``), and the queue
  depths the object knows, as gauges (see :data:`PATTERN_GAUGES`: broker and Titanic
  pending requests, waiting workers, snapshots queued...; per service for a
  Majordomo broker). The counters ``malformed``, ``over_limit`` and
  ``handler_errors`` mean the same in every pattern.
- **Authenticators** (a network's ZAP handler, from
  :meth:`~transportkit.Network.start_authenticator`) registered with
  :meth:`MetricsRegistry.watch`: the same names on both backends (the prefix
  :data:`AUTHENTICATOR_PATTERN`), ``transportkit_authenticator_allowed_total``,
  ``..._denied_key_total``, ``..._denied_ip_total``, ``..._malformed_total`` and
  ``..._handler_errors_total`` (every :class:`~transportkit.security.AuthStats`
  counter), and the gauge ``transportkit_authenticator_running`` (0 once it stopped:
  worth an alert, since its CURVE servers then admit any client that knows their
  key).
- **Request latency** of the Lazy Pirate, Majordomo and Freelance clients: their
  ``latency_observer`` hook (None by default: nothing measured, nothing paid) is given
  a :class:`LatencyHistogram` by :meth:`MetricsRegistry.watch`. It keeps an HDR
  histogram (3 significant digits, 1 ns to ``highest_seconds``) and exact counts per
  Prometheus bucket, and is exported twice, from the same data:

  - as a Prometheus **histogram** ``transportkit_request_latency_seconds`` with
    :data:`DEFAULT_LATENCY_BUCKETS` (5 us to 10 s, 1-2.5-5 steps): buckets add up
    across clients and processes, and ``histogram_quantile()`` over a ``rate()``
    gives percentiles over any window. This is the one to alert on;
  - as a **summary** ``transportkit_request_latency_hdr_seconds`` whose quantiles
    0.5, 0.9, 0.99 and 0.999 come from the HDR histogram, within 0.1 %, since the
    histogram was made (or :meth:`LatencyHistogram.reset`): bucket interpolation
    cannot resolve a P99.9 between 1 ms and 2.5 ms, the HDR one can, but it neither
    aggregates nor windows.

  Recording costs a lock, a bisect and an HDR count per reply: about 1.3 us in
  CPython 3.11 (median of 10 runs on a shared 2-core machine; 2.3 us through
  hdrh's own ``record_value``), against round trips of a few hundred microseconds
  for a Python client. Memory is about 220 KB per histogram with the default 60 s
  range.

OpenTelemetry is not added. ``opentelemetry-api`` and ``opentelemetry-sdk`` (1.45)
are on PyPI, with ``opentelemetry-exporter-prometheus`` and ``-otlp``, so it could
be. A user would gain a push path (OTLP) to collectors and vendors that do not
scrape, resource attributes, and one SDK shared with traces. It would cost two
required packages more, plus an exporter (OTLP brings protobuf and gRPC or HTTP
clients), a reader thread in the process, and on the request path an SDK histogram
``record()`` per reply (attribute handling and a lock in Python, where this module
only does a bisect and an HDR record; counters could stay observable callbacks read
at collection, as here). The same OTLP stream is had at no cost to the trading
process by pointing an OpenTelemetry Collector's Prometheus receiver at this
endpoint. So it is neither cheap nor clearly useful here; :meth:`MetricsRegistry.as_dict`
is the place to start for a user who wants OpenTelemetry instruments in-process.

Reads are safe from another thread (the HTTP server's): counters are read, never
reset, and a value read while a pattern runs may be a message behind.
"""

from __future__ import annotations

import array
import bisect
import dataclasses
import functools
import itertools
import math
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any, Final, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from transportkit._closing import Closeable
from transportkit._extras import requires_extra
from transportkit._keywords import accepted_keywords, check_keywords
from transportkit._kinds import SocketKind
from transportkit._network import Network
from transportkit._socket import Socket, SocketStats
from transportkit.security import Authenticator

with requires_extra("metrics", "transportkit.metrics"):
    from hdrh.histogram import HdrHistogram

if TYPE_CHECKING:
    from prometheus_client.registry import Collector
    from prometheus_client.samples import Sample

__all__ = [
    "AUTHENTICATOR_PATTERN",
    "DEFAULT_LATENCY_BUCKETS",
    "LATENCY_QUANTILES",
    "PATTERN_GAUGES",
    "PROMETHEUS_EXTRA",
    "LatencyHistogram",
    "MetricsRegistry",
    "MetricsServer",
    "start_http_server",
]

PROMETHEUS_EXTRA: Final = "metrics"
"""The extra that installs ``prometheus-client``: ``pip install 'transportkit[metrics]'``."""

DEFAULT_LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    5e-6,
    10e-6,
    25e-6,
    50e-6,
    100e-6,
    250e-6,
    500e-6,
    1e-3,
    2.5e-3,
    5e-3,
    10e-3,
    25e-3,
    50e-3,
    100e-3,
    250e-3,
    500e-3,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of the latency histogram's Prometheus buckets, ``+Inf`` added:
a round trip on one host over inproc or tcp (tens of microseconds in Python) to a
retried request (seconds), in 1-2.5-5 steps.
"""

LATENCY_QUANTILES: Final[tuple[float, ...]] = (0.5, 0.9, 0.99, 0.999)
"""The quantiles of the HDR summary and of the dict form (``p50``, ``p90``, ``p99``,
``p99_9``).
"""

PATTERN_GAUGES: Final[tuple[tuple[str, str, str], ...]] = (
    ("pending_requests", "pending_requests", "Requests accepted, not yet answered or dropped"),
    ("pending_bytes", "pending_bytes", "Bytes charged for the pending requests"),
    ("pending", "pending", "Requests (Titanic) or updates (Clone pair) with no outcome yet"),
    ("stored", "stored_requests", "Requests stored, answered or not"),
    ("outstanding", "outstanding_requests", "Requests sent and not answered"),
    ("workers", "waiting_workers", "Workers ready for a request"),
    ("snapshots_in_progress", "snapshots_in_progress", "Snapshots being sent"),
    ("snapshots_pending", "snapshots_pending", "Snapshot requests waiting for a place"),
    ("cached_bytes", "cached_bytes", "Bytes of the cached messages"),
    ("held_bytes", "held_bytes", "Bytes of the local map"),
    ("active", "active", "1 when this server is the active one of a pair, else 0"),
)
"""Gauges read from a watched object that has the attribute: (attribute, metric
suffix, help). A bool reads as 0 or 1, a collection as its length; a method, a None or
an attribute that raises is skipped. A Majordomo broker also gets, per service,
``service_workers`` and ``service_queued_requests`` (label ``service``), and a Clone
server ``publisher_dropped`` (a counter: updates its PUB dropped at a HWM, where the
backend knows).
"""

AUTHENTICATOR_PATTERN: Final = "authenticator"
"""The metric prefix of a watched :class:`~transportkit.security.Authenticator`, on
both backends: ``transportkit_authenticator_<counter>_total{name=...}`` for each
:class:`~transportkit.security.AuthStats` counter, and the gauge
``transportkit_authenticator_running``.
"""
_AUTHENTICATOR_RUNNING_HELP: Final = (
    "1 while the authenticator answers handshakes, else 0 (its CURVE servers then admit "
    "any client with a valid handshake)"
)

_PROMETHEUS_FEATURE: Final = (
    "Prometheus output of transportkit.metrics (MetricsRegistry.as_dict() works without it)"
)
_RESERVED_PATTERNS: Final = frozenset({"network", "request", "socket", "sockets"})
_NO_MIN: Final = 1 << 62
_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
_SOCKET_COUNTERS: Final = (
    ("sent", "messages_sent", "Messages accepted by send (multipart counts once)"),
    ("received", "messages_received", "Messages handed to the application"),
    ("dropped", "messages_dropped", "Messages the socket discarded (HWM, unroutable...)"),
    ("truncated", "messages_truncated", "Multipart messages a conflating socket cut"),
)
_LATENCY_HISTOGRAM: Final = "transportkit_request_latency_seconds"
_LATENCY_SUMMARY: Final = "transportkit_request_latency_hdr_seconds"


class _Counted(Protocol):
    """What the registry reads of a socket (asyncio or zmq blocking)."""

    @property
    def kind(self) -> SocketKind: ...
    @property
    def stats(self) -> SocketStats: ...
    @property
    def closed(self) -> bool: ...
    @property
    def last_endpoint(self) -> str | None: ...


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty str, got {value!r}")
    return value


class LatencyHistogram:
    """Round-trip times of one client, in seconds: an HDR histogram and Prometheus buckets.

    Call it with the elapsed seconds (it is a ``latency_observer``). It never raises
    there: a negative or NaN value counts as 0 s, a value over ``highest_seconds`` is
    recorded as ``highest_seconds`` and counted in :attr:`out_of_range`. Thread-safe.

    Args:
        buckets: Upper bounds of the Prometheus buckets in seconds, increasing, finite
            and positive (``+Inf`` is added). Default :data:`DEFAULT_LATENCY_BUCKETS`.
        highest_seconds: The largest value kept exactly (default 60 s; at most 3600).
        significant_figures: HDR precision, 1 to 5 (default 3: within 0.1 %).

    Raises:
        ValueError: A bucket list that is empty, unsorted or not finite and positive;
            ``highest_seconds`` not in (0, 3600]; ``significant_figures`` not in 1..5.
    """

    __slots__ = (
        "_bounds",
        "_bounds_ns",
        "_bucket_counts",
        "_counts",
        "_hdr",
        "_highest_ns",
        "_layout",
        "_lock",
        "_max_ns",
        "_min_ns",
        "_out_of_range",
        "_sum_ns",
        "significant_figures",
    )

    def __init__(
        self,
        *,
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS,
        highest_seconds: float = 60.0,
        significant_figures: int = 3,
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if (
            not bounds
            or any(not (0 < b < math.inf) for b in bounds)
            or any(a >= b for a, b in itertools.pairwise(bounds))
        ):
            raise ValueError(
                f"buckets must be increasing, finite, positive seconds, got {buckets!r}"
            )
        if not isinstance(highest_seconds, int | float) or not 0 < highest_seconds <= 3600:
            raise ValueError(f"highest_seconds must be in (0, 3600], got {highest_seconds!r}")
        if (
            isinstance(significant_figures, bool)
            or not isinstance(significant_figures, int)
            or not 1 <= significant_figures <= 5
        ):
            raise ValueError(f"significant_figures must be 1..5, got {significant_figures!r}")
        self._bounds = bounds
        self._bounds_ns = tuple(round(b * 1e9) for b in bounds)
        self._highest_ns = max(2, round(highest_seconds * 1e9))
        self.significant_figures = significant_figures
        self._hdr = HdrHistogram(1, self._highest_ns, significant_figures)
        self._counts = self._hdr.counts
        self._layout = _hdr_layout(self._hdr, self._highest_ns)
        self._lock = threading.Lock()
        self._bucket_counts = [0] * (len(bounds) + 1)
        self._sum_ns = 0
        self._min_ns = _NO_MIN
        self._max_ns = 0
        self._out_of_range = 0

    def __call__(self, seconds: float) -> None:
        """Record one round trip of ``seconds`` (see the class for the bounds)."""
        if not seconds > 0:  # negative, zero or NaN
            seconds = 0.0
        over = seconds * 1e9 > self._highest_ns
        nanos = self._highest_ns if over else round(seconds * 1e9)
        layout = self._layout
        if layout is not None:  # hdrh's own index arithmetic, without its Python overhead
            mask, unit, shift, half = layout
            bucket = (nanos | mask).bit_length() - unit - shift - 1
            index = ((bucket + 1) << shift) + (nanos >> (bucket + unit)) - half
        with self._lock:
            self._out_of_range += over
            if layout is None:
                self._hdr.record_value(nanos)
            else:
                self._counts[index] += 1
                self._hdr.total_count += 1
            self._bucket_counts[bisect.bisect_left(self._bounds_ns, nanos)] += 1
            self._sum_ns += nanos
            self._min_ns = min(self._min_ns, nanos)
            self._max_ns = max(self._max_ns, nanos)

    record = __call__

    @property
    def buckets(self) -> tuple[float, ...]:
        """The Prometheus buckets' upper bounds in seconds (``+Inf`` not included)."""
        return self._bounds

    @property
    def count(self) -> int:
        """Round trips recorded."""
        return int(self._hdr.get_total_count())

    @property
    def sum(self) -> float:
        """Seconds recorded in all (each value rounded to the nanosecond)."""
        return self._sum_ns / 1e9

    @property
    def out_of_range(self) -> int:
        """Values over ``highest_seconds`` (recorded as ``highest_seconds``)."""
        return self._out_of_range

    def percentile(self, percent: float) -> float | None:
        """The value (seconds, within the HDR precision) below which ``percent`` % of the
        values lie; None before any value.

        Raises:
            ValueError: ``percent`` is not in [0, 100].
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"percent must be in [0, 100], got {percent!r}")
        with self._lock:
            counts, total, top = self._copy_counts()
        return None if total == 0 else self._at_percentiles(counts, total, top, (percent,))[0]

    def _copy_counts(self) -> tuple[array.array[int], int, int]:
        """The HDR counts (a memory copy: the lock, which the caller holds, is not held
        while percentiles are computed), their total, and one past the highest index in
        use.
        """
        raw = bytes(self._hdr.counts)
        total = int(self._hdr.get_total_count())
        top = self._hdr.get_counts_array_index(self._max_ns) + 1 if total else 0
        counts = array.array("Q")
        counts.frombytes(raw[: top * counts.itemsize])
        return counts, total, top

    def _at_percentiles(
        self, counts: array.array[int], total: int, top: int, percents: Sequence[float]
    ) -> list[float]:
        """Seconds at each of ``percents``, as HDR defines them (the highest value
        equivalent to the first bucket reaching the target count).
        """
        hdr = self._hdr
        cumulative = list(itertools.accumulate(counts))
        out = []
        for percent in percents:
            target = max(int(percent * total / 100 + 0.5), 1)
            index = min(bisect.bisect_left(cumulative, target), top - 1)
            value = hdr.get_value_from_index(index)
            nanos = hdr.get_highest_equivalent_value(value) if percent else value
            out.append(min(int(nanos), self._max_ns) / 1e9)
        return out

    def reset(self) -> None:
        """Forget every value (Prometheus then sees the histogram's counters reset)."""
        with self._lock:
            self._hdr.reset()
            self._bucket_counts = [0] * (len(self._bounds) + 1)
            self._sum_ns = 0
            self._min_ns = _NO_MIN
            self._max_ns = 0
            self._out_of_range = 0

    def _read(self) -> tuple[int, float, list[int], dict[str, float | int | None]]:
        """Count, sum, cumulative bucket counts and the dict form, consistent."""
        with self._lock:
            counts, total, top = self._copy_counts()
            total_ns = self._sum_ns
            cumulative = list(itertools.accumulate(self._bucket_counts))
            low, high, out_of_range = self._min_ns, self._max_ns, self._out_of_range
        values: list[float | None] = [None] * len(LATENCY_QUANTILES)
        if total:
            values = [
                *self._at_percentiles(counts, total, top, [q * 100 for q in LATENCY_QUANTILES])
            ]
        seconds = total_ns / 1e9
        summary: dict[str, float | int | None] = {
            "count": total,
            "sum_seconds": seconds,
            "min_seconds": low / 1e9 if total else None,
            "max_seconds": high / 1e9 if total else None,
            "mean_seconds": seconds / total if total else None,
        }
        for q, value in zip(LATENCY_QUANTILES, values, strict=True):
            summary[_quantile_key(q)] = value
        summary["out_of_range"] = out_of_range
        return total, seconds, cumulative, summary

    def __repr__(self) -> str:
        p99 = self.percentile(99)
        tail = "" if p99 is None else f" p99={p99 * 1e6:.1f}us"
        return f"<LatencyHistogram count={self.count}{tail}>"


def _hdr_layout(hdr: Any, highest: int) -> tuple[int, int, int, int] | None:
    """The counts-array layout of ``hdr``, to record without its method calls; None (record
    through ``record_value``) unless the arithmetic gives hdrh's own index for values
    across the whole range (an hdrh release that lays its counts out otherwise).
    """
    try:
        layout = (
            int(hdr.sub_bucket_mask),
            int(hdr.unit_magnitude),
            int(hdr.sub_bucket_half_count_magnitude),
            int(hdr.sub_bucket_half_count),
        )
        mask, unit, shift, half = layout
        probes = {0, 1, 2047, 2048, 4095, 4096, 123_456, 10**6, 10**9, highest}
        for value in probes:
            bucket = (value | mask).bit_length() - unit - shift - 1
            index = ((bucket + 1) << shift) + (value >> (bucket + unit)) - half
            if index != hdr.get_counts_array_index(value):
                return None
    except Exception:
        return None
    return layout


_FIELD_DOCS: dict[type, dict[str, str]] = {}


def _field_docs(cls: type) -> dict[str, str]:
    """The ``Attributes:`` of a Google-style class docstring: field -> its first sentence."""
    cached = _FIELD_DOCS.get(cls)
    if cached is None:
        cached = _FIELD_DOCS[cls] = _parse_field_docs(cls)
    return cached


def _parse_field_docs(cls: type) -> dict[str, str]:
    docs: dict[str, str] = {}
    lines = (cls.__doc__ or "").splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return docs
    indent = None
    current = None
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        depth = len(line) - len(line.lstrip())
        if indent is None:
            indent = depth
        if depth < indent:
            break
        match = re.match(r"(\w+): (.*)", line.strip()) if depth == indent else None
        if match:
            current = match.group(1)
            docs[current] = match.group(2)
        elif current is not None:
            docs[current] += " " + line.strip()
    return {
        name: _plain(re.split(r"(?<=\.)\s", text, maxsplit=1)[0]) for name, text in docs.items()
    }


def _plain(text: str) -> str:
    """``literal`` and :role:`target` markup as plain text, for a HELP line."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def _quantile_key(q: float) -> str:
    return "p" + f"{q * 100:g}".replace(".", "_") + "_seconds"


@dataclasses.dataclass(slots=True)
class _Watched:
    obj: object
    pattern: str
    stats: object
    gauges: Mapping[str, Callable[[], float | int | None]]
    latency: LatencyHistogram | None


@dataclasses.dataclass(slots=True)
class _NetState:
    """What the registry knows of one network's sockets."""

    network: Network | None  # None: named sockets of no watched network
    observer: Callable[[Socket], object] | None = None
    known: dict[int, tuple[_Counted, str, int]] = dataclasses.field(default_factory=dict)
    ordinals: dict[str, int] = dataclasses.field(default_factory=dict)
    closed_totals: list[int | None] = dataclasses.field(
        default_factory=lambda: [0] * len(_SOCKET_COUNTERS)
    )
    closed_sockets: int = 0
    prune_at: int = 64


@dataclasses.dataclass(slots=True)
class _SocketRow:
    network: str
    socket: str
    kind: str
    endpoint: str | None
    stats: SocketStats


class MetricsRegistry:
    """What to export, read when exported; no global state (make as many as needed).

    Everything it holds is what it was told to watch: networks (the sockets each one
    makes are announced to the registry, and its open sockets listed at each read),
    named sockets, patterns and latency histograms. A socket is held until a read (or
    the network's next sockets) finds it closed; its counts then go to its network's
    totals.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._nets: dict[str, _NetState] = {}
        self._names: dict[int, tuple[_Counted, str]] = {}  # id -> socket, its label
        self._loose: dict[int, tuple[_Counted, str]] = {}  # named, maybe in no network
        self._order = 0
        self._watched: dict[str, _Watched] = {}
        self._latency: dict[str, LatencyHistogram] = {}

    # -- what to watch ---------------------------------------------------------------

    def watch_network(self, network: Network, *, name: str | None = None) -> None:
        """Export ``network``'s sockets from now on: each open one, and totals per network
        that include the sockets closed since (so a Lazy Pirate client's retries, each
        on a new socket, are all counted).

        Sockets already open are taken at once; later ones are announced by the
        network (:meth:`~transportkit.Network.add_socket_observer`) and listed at each
        read (the zmq backend's blocking sockets are only listed: one opened and
        closed between two reads is not counted).

        Args:
            network: A network of either backend (a sim node, a ZmqNetwork).
            name: The ``network`` label (default: ``network.name``).

        Watching the same network again under its label does nothing.

        Raises:
            ValueError: Another network is watched under that name, or this one under
                another name.
            NotImplementedError: The network cannot list its sockets.
        """
        label = _check_name("name", network.name if name is None else name)
        current = network.open_sockets()  # fails now, not at the first scrape
        with self._lock:
            state = self._nets.get(label)
            if state is not None and state.network is network:
                return
            if state is not None and state.network is not None:
                raise ValueError(f"a network is already watched as {label!r}")
            for other, st in self._nets.items():
                if st.network is network:
                    raise ValueError(f"this network is already watched as {other!r}")
            state = self._nets[label] = _NetState(network)
            for sock in current:
                self._know(state, sock)

            def opened(sock: Socket) -> None:
                with self._lock:
                    self._know(state, sock)
                    if len(state.known) >= state.prune_at:
                        self._retire(state)
                        state.prune_at = 2 * len(state.known) + 64

            state.observer = opened
        network.add_socket_observer(opened)

    def unwatch_network(self, network: Network) -> None:
        """Stop exporting ``network``'s sockets and totals (one not watched is ignored)."""
        with self._lock:
            for label, state in list(self._nets.items()):
                if state.network is network:
                    del self._nets[label]
                    if state.observer is not None:
                        network.remove_socket_observer(state.observer)

    def name_socket(self, sock: _Counted, name: str, *, network: str = "") -> None:
        """Export ``sock`` with the label ``socket=name`` while it is open.

        A socket of a watched network keeps its network label; one of no watched
        network (a zmq blocking socket of an unwatched network, say) is exported all
        the same, with the label ``network=network``.

        Raises:
            ValueError: ``name`` is empty.
        """
        _check_name("name", name)
        with self._lock:
            self._names[id(sock)] = (sock, name)
            self._loose[id(sock)] = (sock, network)

    def _know(self, state: _NetState, sock: _Counted) -> None:
        """Give ``sock`` its label and order at first sight (the lock is held)."""
        key = id(sock)
        seen = state.known.get(key)
        if seen is not None and seen[0] is sock:
            return
        kind = sock.kind.value.lower()
        ordinal = state.ordinals.get(kind, 0)
        state.ordinals[kind] = ordinal + 1
        self._order += 1
        state.known[key] = (sock, f"{kind}{ordinal}", self._order)

    def _retire(self, state: _NetState) -> None:
        """Move the closed sockets' counts to the network's totals (the lock is held)."""
        for key, (sock, _label, _order) in list(state.known.items()):
            if not sock.closed:
                continue
            stats = sock.stats
            for i, (attr, _metric, _help) in enumerate(_SOCKET_COUNTERS):
                value, total = getattr(stats, attr), state.closed_totals[i]
                state.closed_totals[i] = None if value is None or total is None else total + value
            state.closed_sockets += 1
            del state.known[key]
            named = self._names.get(key)
            if named is not None and named[0] is sock:
                del self._names[key]
                self._loose.pop(key, None)

    def watch(
        self,
        obj: object,
        *,
        name: str,
        pattern: str | None = None,
        latency: bool = True,
        gauges: Mapping[str, Callable[[], float | int | None]] | None = None,
    ) -> None:
        """Export a pattern's stats (and depths, and latency) under the label ``name``.

        Args:
            obj: A server or client with a ``stats`` dataclass (``LazyPirateClient``,
                ``MajordomoBroker``, ``RiskServer``...), a network's authenticator
                (prefix :data:`AUTHENTICATOR_PATTERN` on both backends, with the
                ``running`` gauge), or a stats dataclass itself (the ``ServeStats``
                given to a serve loop). Read at each scrape, never copied; held until
                :meth:`unwatch`.
            name: The ``name`` label, unique in this registry.
            pattern: The metric prefix (default: the class name in snake case, a
                stats class without its ``Stats`` suffix): ``[a-z_][a-z0-9_]*``.
            latency: If ``obj`` has a ``latency_observer`` that is None, give it
                :meth:`latency` ``(name)`` (default True). One set already is kept.
            gauges: More gauges: metric suffix -> a function read at each scrape
                (it may return None for unknown; one that raises is skipped).

        Raises:
            ValueError: ``name`` is taken by another object, ``pattern`` or a gauge
                name is not a valid metric name part, or a gauge is named as one of
                the stats' counters (or starts with ``service_``).
            TypeError: ``obj`` has no ``stats`` dataclass and is not one.
        """
        _check_name("name", name)
        stats: object = obj if dataclasses.is_dataclass(obj) else getattr(obj, "stats", None)
        if not dataclasses.is_dataclass(stats) or isinstance(stats, type):
            raise TypeError(
                f"{type(obj).__name__} has no stats dataclass to export (watch a pattern "
                "with a 'stats' attribute, or a stats dataclass)"
            )
        extra = dict(gauges or {})
        if isinstance(obj, Authenticator):
            if pattern is None:
                pattern = AUTHENTICATOR_PATTERN
            extra.setdefault("running", functools.partial(_authenticator_running, obj))
        if pattern is None:
            cls = type(obj).__name__
            if obj is stats and cls.endswith("Stats") and len(cls) > len("Stats"):
                cls = cls[: -len("Stats")]
            pattern = _snake(cls)
        if not _NAME.match(pattern) or pattern in _RESERVED_PATTERNS:
            raise ValueError(
                f"pattern must match [a-z_][a-z0-9_]*, and not be one of "
                f"{sorted(_RESERVED_PATTERNS)}, got {pattern!r}"
            )
        taken = {f.name for f in dataclasses.fields(stats)} | {"publisher_dropped"}
        for suffix, read in extra.items():
            if not isinstance(suffix, str) or not _NAME.match(suffix) or not callable(read):
                raise ValueError(f"gauges must map metric names to functions, got {suffix!r}")
            if suffix in taken or suffix.startswith("service_"):
                raise ValueError(f"the gauge name {suffix!r} is a counter's or reserved")
        with self._lock:
            old = self._watched.get(name)
            if old is not None and old.obj is not obj:
                raise ValueError(f"the name {name!r} is already watched ({old.pattern})")
            histogram = None
            if latency and hasattr(obj, "latency_observer"):
                current = getattr(obj, "latency_observer", None)
                if current is None:
                    histogram = self.latency(name)
                    setattr(obj, "latency_observer", histogram)  # noqa: B010
                elif isinstance(current, LatencyHistogram):
                    histogram = current
                    self._latency.setdefault(name, current)
            self._watched[name] = _Watched(obj, pattern, stats, extra, histogram)

    def unwatch(self, name: str) -> None:
        """Stop exporting what :meth:`watch` registered as ``name``, and its latency
        (the object's ``latency_observer`` is left as it is). Unknown names are ignored.
        """
        with self._lock:
            watched = self._watched.pop(name, None)
            if watched is not None and watched.latency is self._latency.get(name):
                self._latency.pop(name, None)

    def latency(self, name: str, **options: Any) -> LatencyHistogram:
        """The latency histogram exported as ``name`` (made on first use).

        Give it to a client's ``latency_observer`` (``watch`` does that for you).

        Args:
            name: The ``name`` label.
            **options: :class:`LatencyHistogram` arguments, for a new histogram.

        Raises:
            ValueError: ``options`` given for a histogram that already exists, or bad.
            TypeError: An option that LatencyHistogram does not take (the message
                suggests the closest).
        """
        _check_name("name", name)
        with self._lock:
            histogram = self._latency.get(name)
            if histogram is None:
                check_keywords(options, accepted_keywords(LatencyHistogram), where="latency()")
                histogram = self._latency[name] = LatencyHistogram(**options)
            elif options:
                raise ValueError(f"the latency histogram {name!r} already exists")
            return histogram

    # -- reading ---------------------------------------------------------------------

    def _socket_rows(self) -> tuple[list[_SocketRow], dict[str, dict[str, int | None]]]:
        """Every open socket, labelled, and each network's totals; retires the closed."""
        with self._lock:
            for state in list(self._nets.values()):
                if state.network is None:
                    continue
                try:
                    listed: list[_Counted] = list(state.network.open_sockets())
                    blocking = getattr(state.network, "open_blocking_sockets", None)
                    if callable(blocking):
                        listed.extend(blocking())
                except Exception:  # a scrape never fails for one network
                    listed = []
                for sock in listed:
                    self._know(state, sock)
            in_networks = {key for state in self._nets.values() for key in state.known}
            for key, (sock, net_label) in list(self._loose.items()):
                if sock.closed:
                    self._loose.pop(key, None)
                    self._names.pop(key, None)
                elif key not in in_networks:
                    self._know(self._nets.setdefault(net_label, _NetState(None)), sock)
            rows: list[tuple[int, _SocketRow]] = []
            totals: dict[str, dict[str, int | None]] = {}
            for net_label, state in sorted(self._nets.items()):
                self._retire(state)
                sums = list(state.closed_totals)
                for key, (sock, ordinal_label, order) in state.known.items():
                    named = self._names.get(key)
                    label = named[1] if named is not None and named[0] is sock else ordinal_label
                    stats = sock.stats
                    rows.append(
                        (
                            order,
                            _SocketRow(
                                net_label, label, sock.kind.value, sock.last_endpoint, stats
                            ),
                        )
                    )
                    for i, (attr, _metric, _help) in enumerate(_SOCKET_COUNTERS):
                        value, total = getattr(stats, attr), sums[i]
                        sums[i] = None if value is None or total is None else total + value
                entry: dict[str, int | None] = {
                    "sockets_open": len(state.known),
                    "sockets_closed": state.closed_sockets,
                }
                for (_attr, metric, _help), value in zip(_SOCKET_COUNTERS, sums, strict=True):
                    entry[metric] = value
                totals[net_label] = entry
            for label in [k for k, st in self._nets.items() if st.network is None and not st.known]:
                del self._nets[label]
        rows.sort(key=lambda r: (r[1].network, r[0]))
        return [row for _, row in rows], totals

    def _pattern_rows(
        self,
    ) -> list[tuple[str, _Watched, dict[str, int], dict[str, float], dict[str, dict[str, int]]]]:
        with self._lock:
            watched = sorted(self._watched.items())
        out = []
        for name, w in watched:
            counters: dict[str, int] = {}
            stats = w.stats if w.stats is w.obj else getattr(w.obj, "stats", w.stats)
            if not dataclasses.is_dataclass(stats):  # replaced by something else: keep the old
                stats = w.stats
            for f in dataclasses.fields(stats):  # type: ignore[arg-type]
                value = getattr(stats, f.name, None)
                if isinstance(value, int) and not isinstance(value, bool):
                    counters[f.name] = value
            dropped = _read_attr(w.obj, "publisher_dropped")
            if isinstance(dropped, int):
                counters["publisher_dropped"] = dropped
            gauges: dict[str, float] = {}
            for attr, suffix, _help in PATTERN_GAUGES:
                value = _read_attr(w.obj, attr)
                if value is not None:
                    gauges[suffix] = value
            for suffix, read in w.gauges.items():
                try:
                    value = read()
                except Exception:
                    continue
                if isinstance(value, int | float) and not isinstance(value, bool):
                    gauges[suffix] = value
            out.append((name, w, counters, gauges, _services(w.obj)))
        return out

    def as_dict(self) -> dict[str, Any]:
        """Everything, read now, as plain JSON-serialisable data in a stable order.

        Returns:
            ``{"networks": {...}, "sockets": [...], "patterns": {...}, "latency":
            {...}}``: ``networks`` by label (sorted) ``{"sockets_open",
            "sockets_closed", "messages_sent", "messages_received",
            "messages_dropped", "messages_truncated"}``, the messages of every socket
            seen since the network was watched, closed ones included; ``sockets`` a
            list (by network, then first sight) of ``{"network", "socket", "kind",
            "endpoint", "messages_sent", "messages_received", "messages_dropped",
            "messages_truncated"}`` (None where the backend cannot know);
            ``patterns`` by name (sorted) ``{"pattern", "counters", "gauges"}`` (and
            ``"services"`` for a Majordomo broker); ``latency`` by name (sorted)
            ``{"count", "sum_seconds", "min_seconds", "max_seconds", "mean_seconds",
            "p50_seconds", "p90_seconds", "p99_seconds", "p99_9_seconds",
            "out_of_range"}`` (None before any value).
        """
        rows, networks = self._socket_rows()
        sockets = []
        for row in rows:
            entry: dict[str, Any] = {
                "network": row.network,
                "socket": row.socket,
                "kind": row.kind,
                "endpoint": row.endpoint,
            }
            for attr, metric, _help in _SOCKET_COUNTERS:
                entry[metric] = getattr(row.stats, attr)
            sockets.append(entry)
        patterns: dict[str, Any] = {}
        for name, w, counters, gauges, services in self._pattern_rows():
            patterns[name] = {"pattern": w.pattern, "counters": counters, "gauges": gauges}
            if services:
                patterns[name]["services"] = services
        with self._lock:
            histograms = sorted(self._latency.items())
        latency = {name: h._read()[3] for name, h in histograms}
        return {"networks": networks, "sockets": sockets, "patterns": patterns, "latency": latency}

    def prometheus_collector(self) -> Collector:
        """A ``prometheus_client`` collector that reads this registry at each scrape.

        Register it with your own ``CollectorRegistry`` (``registry.register(...)``)
        to serve these metrics next to yours; :func:`start_http_server` makes one.

        Raises:
            MissingExtraError: ``prometheus-client`` is not installed (the ``metrics``
                extra).
        """
        _prometheus()
        return _Collector(self)


def _authenticator_running(auth: Authenticator) -> int:
    return int(auth.running)


def _read_attr(obj: object, attr: str) -> float | None:
    try:
        value = getattr(obj, attr, None)
    except Exception:
        return None
    if value is None or callable(value):
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, Sized) and not isinstance(value, str | bytes):
        return len(value)
    return None


def _services(obj: object) -> dict[str, dict[str, int]]:
    """Per-service workers and queued requests of a Majordomo broker (else empty)."""
    services = getattr(obj, "services", None)
    queued = getattr(obj, "queued", None)
    if not (callable(services) and callable(queued)):
        return {}
    for _ in range(3):  # the broker's thread may change the dict under a scrape
        try:
            workers = dict(services())
            return {
                name.decode("utf-8", "backslashreplace"): {
                    "workers": int(count),
                    "queued_requests": int(queued(name)),
                }
                for name, count in sorted(workers.items())
            }
        except RuntimeError:
            continue
        except Exception:
            return {}
    return {}


# -- Prometheus ---------------------------------------------------------------------


def _prometheus() -> Any:
    with requires_extra(PROMETHEUS_EXTRA, _PROMETHEUS_FEATURE):
        import prometheus_client  # noqa: PLC0415
    return prometheus_client


def _go_float(value: float) -> str:
    """A bound or quantile as ``prometheus_client`` writes it (``0.0025``, ``1e-05``)."""
    with requires_extra(PROMETHEUS_EXTRA, _PROMETHEUS_FEATURE):
        from prometheus_client.utils import floatToGoString  # noqa: PLC0415
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


class _Collector:
    """Reads a MetricsRegistry at each scrape (a ``prometheus_client`` custom collector)."""

    def __init__(self, registry: MetricsRegistry) -> None:
        self._registry = registry

    def describe(self) -> list[Any]:
        """Nothing up front: the metrics depend on what is open at each scrape."""
        return []

    def collect(self) -> Iterator[Any]:
        """The metrics, read now."""
        with requires_extra(PROMETHEUS_EXTRA, _PROMETHEUS_FEATURE):
            from prometheus_client.core import (  # noqa: PLC0415
                CounterMetricFamily,
                GaugeMetricFamily,
                HistogramMetricFamily,
                Metric,
            )
            from prometheus_client.samples import Sample  # noqa: PLC0415

        registry = self._registry
        labels = ["network", "kind", "socket", "endpoint"]
        rows, networks = registry._socket_rows()
        for attr, metric, doc in _SOCKET_COUNTERS:
            family = CounterMetricFamily(f"transportkit_socket_{metric}", doc, labels=labels)
            for row in rows:
                value = getattr(row.stats, attr)
                if value is not None:
                    family.add_metric(
                        [row.network, row.kind, row.socket, row.endpoint or ""], value
                    )
            yield family
        open_count = GaugeMetricFamily(
            "transportkit_sockets_open", "Open sockets of the watched networks", labels=labels[:2]
        )
        counts: dict[tuple[str, str], int] = {}
        for row in rows:
            counts[(row.network, row.kind)] = counts.get((row.network, row.kind), 0) + 1
        for (network, kind), n in sorted(counts.items()):
            open_count.add_metric([network, kind], n)
        yield open_count
        for _attr, metric, doc in _SOCKET_COUNTERS:
            family = CounterMetricFamily(
                f"transportkit_network_{metric}",
                f"{doc}: every socket of the network since it was watched",
                labels=["network"],
            )
            for network, entry in networks.items():
                value = entry[metric]
                if value is not None:
                    family.add_metric([network], value)
            yield family
        closed = CounterMetricFamily(
            "transportkit_network_sockets_closed",
            "Sockets of the network seen closed since it was watched",
            labels=["network"],
        )
        for network, entry in networks.items():
            closed.add_metric([network], entry["sockets_closed"] or 0)
        yield closed

        families: dict[str, Any] = {}

        def family_of(name: str, doc: str, make: Callable[..., Any], *extra: str) -> Any:
            if name not in families:
                families[name] = make(name, doc, labels=["name", *extra])
            return families[name]

        for name, w, counters, gauges, services in registry._pattern_rows():
            prefix = f"transportkit_{w.pattern}"
            docs = _field_docs(type(w.stats))
            for counter, value in counters.items():
                doc = docs.get(counter) or f"{w.pattern} stats: {counter}"
                family_of(f"{prefix}_{counter}", doc, CounterMetricFamily).add_metric([name], value)
            helps = {suffix: doc for _attr, suffix, doc in PATTERN_GAUGES}
            if isinstance(w.obj, Authenticator):
                helps["running"] = _AUTHENTICATOR_RUNNING_HELP
            for suffix, value in gauges.items():
                doc = helps.get(suffix, f"{w.pattern}: {suffix}")
                family_of(f"{prefix}_{suffix}", doc, GaugeMetricFamily).add_metric([name], value)
            for service, depth in services.items():
                for key, doc in (
                    ("workers", "Live workers of the service"),
                    ("queued_requests", "Requests waiting for a worker of the service"),
                ):
                    family_of(
                        f"{prefix}_service_{key}", doc, GaugeMetricFamily, "service"
                    ).add_metric([name, service], depth[key])
        yield from families.values()

        with registry._lock:
            histograms = sorted(registry._latency.items())
        hist_family = HistogramMetricFamily(
            _LATENCY_HISTOGRAM, "Request round trips, first send to reply", labels=["name"]
        )
        summary = Metric(
            _LATENCY_SUMMARY, "Request round trips: HDR quantiles since start", "summary"
        )
        samples: list[Sample] = summary.samples
        for name, histogram in histograms:
            count, total, cumulative, data = histogram._read()
            bounds = [*(_go_float(b) for b in histogram.buckets), "+Inf"]
            hist_family.add_metric([name], list(zip(bounds, cumulative, strict=True)), total)
            for q in LATENCY_QUANTILES:
                value = data[_quantile_key(q)]
                samples.append(
                    Sample(
                        _LATENCY_SUMMARY,
                        {"name": name, "quantile": _go_float(q)},
                        math.nan if value is None else float(value),
                    )
                )
            samples.append(Sample(f"{_LATENCY_SUMMARY}_count", {"name": name}, count))
            samples.append(Sample(f"{_LATENCY_SUMMARY}_sum", {"name": name}, total))
        yield hist_family
        yield summary


class MetricsServer(Closeable):
    """An HTTP endpoint serving a registry's metrics (``GET /metrics``) on a thread.

    Made by :func:`start_http_server`; :meth:`close` stops it (also on leaving a
    ``with`` block).
    """

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self._closed = False

    @property
    def address(self) -> str:
        """The address listened on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port listened on (the one chosen, when 0 was asked)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://ADDRESS:PORT/metrics``."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving and release the port; wait up to ``timeout`` s for the thread.

        Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url}{' closed' if self._closed else ''}>"


def start_http_server(
    port: int, addr: str = "127.0.0.1", *, registry: MetricsRegistry
) -> MetricsServer:
    """Serve ``registry`` to Prometheus on ``http://addr:port/metrics``, from a thread.

    Only ``registry``'s metrics are served (not ``prometheus_client``'s global
    registry, and no process metrics): nothing is registered globally.

    Args:
        port: The TCP port (0: any free one; read it from :attr:`MetricsServer.port`).
        addr: The address to listen on (default loopback only; ``"0.0.0.0"`` for all).
        registry: What to serve.

    Returns:
        The running server; close it to stop.

    Raises:
        MissingExtraError: ``prometheus-client`` is not installed (the ``metrics``
            extra).
        OSError: The address cannot be bound (a port in use, say).
        TypeError: ``registry`` is not a MetricsRegistry.
    """
    prometheus = _prometheus()
    if not isinstance(registry, MetricsRegistry):
        raise TypeError(f"registry must be a MetricsRegistry, got {type(registry).__name__}")
    collectors = prometheus.CollectorRegistry(auto_describe=False)
    collectors.register(_Collector(registry))
    server_class = _QuietServer6 if ":" in addr else _QuietServer
    server = make_server(
        addr, port, prometheus.make_wsgi_app(collectors), server_class, _QuietHandler
    )
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": _POLL_INTERVAL},
        name=f"transportkit-metrics-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return MetricsServer(server, thread)


_POLL_INTERVAL: Final = 0.05
"""Seconds between the HTTP server's checks for :meth:`MetricsServer.close`."""


class _QuietServer(ThreadingMixIn, WSGIServer):
    """One thread per scrape, daemon threads, no reverse DNS lookup of scrapers."""

    daemon_threads = True


class _QuietServer6(_QuietServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """Logs nothing to stderr (each scrape would print a line)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Drop the access log line."""
