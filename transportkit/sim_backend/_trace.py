"""The record of a simulation run and its stable hash."""

from __future__ import annotations

import hashlib
from collections import Counter
from operator import itemgetter
from typing import NamedTuple

__all__ = ["Trace", "TraceEvent"]

_BATCH = 2048
_kind_of = itemgetter(1)


class TraceEvent(NamedTuple):
    """One thing that happened: when, what, to which socket/node, and details."""

    time: float
    kind: str
    subject: str
    detail: str


class Trace:
    """Every send, delivery, drop, connection change and fault of a run, in order.

    The hash covers every event (time, kind, subject, detail) and is the same for the
    same seed and the same program, on any machine with IEEE-754 doubles. Keeping the
    events themselves is optional (``record=False``) so that very long runs keep only
    the hash and the per-kind counts.

    For speed, :meth:`add` only appends a tuple; events are formatted, hashed, counted
    and (if recorded) kept in batches. The digest is that of the concatenated lines
    ``time!r|kind|subject|detail`` plus a newline, so it does not depend on the batching
    (blake2b's streaming ``update`` of a concatenation equals one update per line).
    """

    __slots__ = ("_counts", "_events", "_hash", "_pending", "record")

    def __init__(self, *, record: bool = True) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.record = record
        self._events: list[TraceEvent] = []
        self._counts: Counter[str] = Counter()
        self._pending: list[tuple[float, str, str, str]] = []

    def add(self, time: float, kind: str, subject: str, detail: str = "") -> None:
        """Append an event (called by the simulator)."""
        pending = self._pending
        pending.append((time, kind, subject, detail))
        if len(pending) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._hash.update("".join([f"{t!r}|{k}|{s}|{d}\n" for t, k, s, d in pending]).encode())
        self._counts.update(map(_kind_of, pending))
        if self.record:
            self._events.extend(map(TraceEvent._make, pending))

    @property
    def events(self) -> list[TraceEvent]:
        """The recorded events (empty with ``record=False``)."""
        self._flush()
        return self._events

    @property
    def counts(self) -> Counter[str]:
        """How many events of each kind."""
        self._flush()
        return self._counts

    @property
    def hash(self) -> str:
        """Hex digest of every event so far."""
        self._flush()
        return self._hash.hexdigest()

    def __len__(self) -> int:
        return sum(self.counts.values())

    def format(self, limit: int | None = None) -> str:
        """The recorded events as text, one per line (for failure messages)."""
        events = self.events
        shown = events if limit is None else events[:limit]
        return "\n".join(f"{e.time:.9f} {e.kind:<12} {e.subject} {e.detail}" for e in shown)
