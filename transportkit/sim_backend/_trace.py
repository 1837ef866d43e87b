"""The record of a simulation run and its stable hash."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import NamedTuple

__all__ = ["Trace", "TraceEvent"]


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
    """

    __slots__ = ("_hash", "counts", "events", "record")

    def __init__(self, *, record: bool = True) -> None:
        self._hash = hashlib.blake2b(digest_size=16)
        self.record = record
        self.events: list[TraceEvent] = []
        self.counts: Counter[str] = Counter()

    def add(self, time: float, kind: str, subject: str, detail: str = "") -> None:
        """Append an event (called by the simulator)."""
        self._hash.update(f"{time!r}|{kind}|{subject}|{detail}\n".encode())
        self.counts[kind] += 1
        if self.record:
            self.events.append(TraceEvent(time, kind, subject, detail))

    @property
    def hash(self) -> str:
        """Hex digest of every event so far."""
        return self._hash.hexdigest()

    def __len__(self) -> int:
        return sum(self.counts.values())

    def format(self, limit: int | None = None) -> str:
        """The recorded events as text, one per line (for failure messages)."""
        shown = self.events if limit is None else self.events[:limit]
        return "\n".join(f"{e.time:.9f} {e.kind:<12} {e.subject} {e.detail}" for e in shown)
