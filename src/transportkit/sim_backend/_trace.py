"""The record of a simulation run and its stable hash."""

from __future__ import annotations

import hashlib
import sys
from array import array
from collections import Counter
from typing import NamedTuple

__all__ = ["TRACE_BATCH", "Trace", "TraceEvent", "event_name"]

TRACE_BATCH = 2048
"""Events are hashed once this many are pending (see :attr:`Trace.pending`)."""
_STREAMS = 4  # times, kinds, subjects, details
_BIG_ENDIAN = sys.byteorder == "big"


_ID = object()  # no text detail: the event's detail is its message id


def _shown(detail: object) -> str:
    """A detail that is not a message id, as :attr:`Trace.events` shows it."""
    return detail if type(detail) is str else f"m{detail}"


def event_name(kind: str) -> str:
    """The name an event kind is shown with (:meth:`Trace.format`, the Perfetto export):
    kebab case. The simulator records its monitor events as libzmq names them,
    lowered (``connect_retried``, ``handshake_succeeded``); they are shown as
    ``connect-retried``, ``handshake-succeeded``, like every other kind. The recorded
    kinds, and so the trace hash, are unchanged.
    """
    return kind.replace("_", "-").lower()


class TraceEvent(NamedTuple):
    """One thing that happened: when, what, to which socket/node, and details."""

    time: float
    kind: str
    subject: str
    detail: str


class _Cells(dict[tuple[str, str], int]):
    """Numbers the (kind, subject) pairs of a recorded trace as they first appear."""

    __slots__ = ("pairs",)

    def __init__(self) -> None:
        super().__init__()
        self.pairs: list[tuple[str, str]] = []

    def __missing__(self, pair: tuple[str, str]) -> int:
        number = self[pair] = len(self.pairs)
        self.pairs.append(pair)
        return number


class Trace:
    """Every send, delivery, drop, connection change and fault of a run, in order.

    The hash covers every event (time, kind, subject, detail) and is the same for the
    same seed and the same program, on any machine with IEEE-754 doubles, for one
    version of transportkit. Keeping the events themselves is optional
    (``record=False``) so that very long runs keep only the hash and the per-kind counts.

    For speed, :meth:`add` only appends a tuple; events are hashed, counted and (if
    recorded) kept in batches. The simulator's hottest paths inline :meth:`add`: append
    to :attr:`pending` (always the same list) and :meth:`flush` once it holds
    :data:`TRACE_BATCH` events. The digest is independent of the batching: it hashes
    four streams, each the concatenation of one field of every event (times as
    little-endian IEEE-754 doubles; kinds, subjects and the ``repr`` of details as
    newline-terminated text), and then the four stream digests.

    Recorded events are kept in columns, about 16 bytes an event (the time as a
    double, the (kind, subject) pair as a number, the message id as an integer; a text
    detail by its position), and made into :class:`TraceEvent` tuples only when
    :attr:`events` is read (then kept, and extended at the next read): a run that
    records its trace but never reads it holds no tuple per event.

    A detail that is an ``int`` is a message id; it is shown as ``m<id>`` in
    :attr:`events` (formatting it only when events are read saves the hot path a
    string per message). Kinds are kept as recorded (libzmq's monitor events lowered:
    ``connect_retried``); :meth:`format` and the Perfetto export show every kind in
    kebab case (:func:`event_name`).
    """

    __slots__ = (
        "_cells",
        "_counts",
        "_details",
        "_events",
        "_hash",
        "_pairs",
        "_texts",
        "_times",
        "pending",
        "record",
    )

    def __init__(self, *, record: bool = True) -> None:
        self._hash = [hashlib.blake2b(digest_size=16) for _ in range(_STREAMS)]
        self.record = record
        self._counts: Counter[str] = Counter()
        self.pending: list[tuple[float, str, str, str | int]] = []
        # The recorded events, by column (see the class docstring).
        self._times = array("d")
        self._pairs = _Cells()
        self._cells = array("I")
        self._details = array("i")  # message ids (0 where the detail is a text)
        self._texts: dict[int, object] = {}  # event number -> a detail that is no int
        self._events: list[TraceEvent] = []  # those made so far by ``events``

    def add(self, time: float, kind: str, subject: str, detail: str | int = "") -> None:
        """Append an event (called by the simulator); an ``int`` detail is a message id."""
        pending = self.pending
        pending.append((time, kind, subject, detail))
        if len(pending) >= TRACE_BATCH:
            self.flush()

    def flush(self) -> None:
        """Hash, count and (if recorded) keep the pending events; empty :attr:`pending`."""
        pending = self.pending
        if not pending:
            return
        times, kinds, subjects, details = zip(*pending, strict=True)
        streams = self._hash
        packed = array("d", times)
        if self.record:
            self._keep(packed, kinds, subjects, details)
        if _BIG_ENDIAN:
            packed.byteswap()
        streams[0].update(packed.tobytes())
        streams[1].update("\n".join(kinds).encode() + b"\n")
        streams[2].update("\n".join(subjects).encode() + b"\n")
        # One formatting call: the same text as "\n".join(map(repr, details)) + "\n".
        streams[3].update((("%r\n" * len(details)) % details).encode())
        self._counts.update(kinds)
        pending.clear()

    def _keep(
        self,
        times: array[float],
        kinds: tuple[str, ...],
        subjects: tuple[str, ...],
        details: tuple[str | int, ...],
    ) -> None:
        """Append one batch to the recorded columns."""
        first = len(self._times)
        self._times.extend(times)
        self._cells.extend(map(self._pairs.__getitem__, zip(kinds, subjects, strict=True)))
        column = self._details
        try:
            # All message ids (the usual case); fromlist changes nothing if it fails,
            # and is twice as fast as extend from the tuple.
            column.fromlist(list(details))  # type: ignore[arg-type]
            return
        except (TypeError, OverflowError):
            pass
        ids = []
        texts = self._texts
        for number, detail in enumerate(details, first):
            if type(detail) is int:
                ids.append(detail)
            else:
                texts[number] = detail
                ids.append(0)
        try:
            column.fromlist(ids)
        except OverflowError:  # a message id past 2**31: a wider column from now on
            column = self._details = array("q", column)
            column.fromlist(ids)

    @property
    def events(self) -> list[TraceEvent]:
        """The recorded events (empty with ``record=False``), made from the recorded
        columns at the first read and kept: reading again costs only what was recorded
        since. The list is the trace's own (do not change it).
        """
        self.flush()
        events = self._events
        start, end = len(events), len(self._times)
        if start < end:
            times, cells, details = self._times, self._cells, self._details
            pairs, texts = self._pairs.pairs, self._texts
            for number in range(start, end):
                kind, subject = pairs[cells[number]]
                text = texts.get(number, _ID)
                events.append(
                    TraceEvent(
                        times[number],
                        kind,
                        subject,
                        f"m{details[number]}" if text is _ID else _shown(text),
                    )
                )
        return events

    @property
    def counts(self) -> Counter[str]:
        """How many events of each kind."""
        self.flush()
        return self._counts

    @property
    def hash(self) -> str:
        """Hex digest of every event so far."""
        self.flush()
        whole = hashlib.blake2b(digest_size=16)
        for stream in self._hash:
            whole.update(stream.digest())
        return whole.hexdigest()

    def __len__(self) -> int:
        return sum(self.counts.values())

    def format(self, limit: int | None = None) -> str:
        """The recorded events as text, one per line (for failure messages), each kind
        by its :func:`event_name`.
        """
        events = self.events
        shown = events if limit is None else events[:limit]
        return "\n".join(
            f"{e.time:.9f} {event_name(e.kind):<12} {e.subject} {e.detail}" for e in shown
        )
