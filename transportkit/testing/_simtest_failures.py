"""What a failing ``@sim_test`` seed leaves behind: a replay line and a failure folder.

A folder ``<failures dir>/<test id>-<seed>/`` holds:

- ``trace.json``: the run's trace as Chrome trace-event JSON (open it in Perfetto), its
  last :data:`MAX_SAVED_EVENTS` events;
- ``schedule.json``: the scheduler's record of choices (``sim.schedule.to_json()``),
  or, on a simulation without a scheduler record, a note saying the run was FIFO;
- ``faults.json``: the fault schedule the seed ran with (``[]`` for none);
- ``failure.json``: the test, seed, exception, trace hash and replay command.

The failures directory keeps the newest :data:`DEFAULT_KEEP_FAILURES` folders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from transportkit.sim_backend import FaultSchedule, Simulation, TraceEvent
from transportkit.sim_backend._perfetto import chrome_trace, write_trace_json

__all__ = [
    "DEFAULT_FAILURES_DIR",
    "DEFAULT_KEEP_FAILURES",
    "MAX_SAVED_EVENTS",
    "TRACE_TAIL",
    "FailureRecord",
    "folder_name",
    "jsonable",
    "prune_failures",
    "replay_command",
    "save_failure",
]

DEFAULT_FAILURES_DIR: Final = ".transportkit/failures"
"""Where failure folders go, relative to pytest's rootdir (ini option ``tk_failures_dir``)."""

DEFAULT_KEEP_FAILURES: Final = 50
"""How many failure folders are kept, the newest (ini option ``tk_keep_failures``)."""

MAX_SAVED_EVENTS: Final = 50_000
"""At most this many trace events (the last ones) go to a failure's ``trace.json``."""

TRACE_TAIL: Final = 20
"""How many trace events before the failure the pytest report shows."""

_MAX_NAME = 120
_RECORD = "failure.json"


@dataclasses.dataclass(frozen=True, slots=True)
class FailureRecord:
    """A failing seed of a ``@sim_test``, as reported and saved.

    Attributes:
        nodeid: The pytest node id of the test item.
        test_arg: The node id as a command-line argument from the invocation directory.
        seed: The failing seed.
        passed: How many seeds of the test passed before this one.
        scheduler: The scheduler's name (``"fifo"`` without a scheduler record).
        schedule: The scheduler's description of its choices ("FIFO except step 3").
        exception: ``"Type: message"`` of the failure.
        trace_hash: ``sim.trace.hash`` at the end of the failing run.
        events: The recorded trace events of the failing run.
        failed_at: How many of ``events`` happened up to the failure (the rest is the
            run winding down), or None when that is not known.
    """

    nodeid: str
    test_arg: str
    seed: int
    passed: int
    scheduler: str
    schedule: str
    exception: str
    trace_hash: str
    events: Sequence[TraceEvent]
    failed_at: int | None

    @property
    def replay(self) -> str:
        """The shell command that runs exactly this seed again."""
        return replay_command(self.test_arg, self.seed)

    def tail(self, limit: int = TRACE_TAIL) -> list[TraceEvent]:
        """The last ``limit`` trace events up to the failure."""
        end = len(self.events) if self.failed_at is None else self.failed_at
        return list(self.events[max(0, end - limit) : end])

    def report(self, folder: Path | str | None, limit: int = TRACE_TAIL) -> str:
        """The text the pytest report shows under the failure."""
        lines = [
            f"replay: {self.replay}",
            f"seed {self.seed} failed after {self.passed} passing seed(s); "
            f"scheduler {self.scheduler}: {self.schedule}",
            f"trace hash {self.trace_hash}, {len(self.events)} recorded events",
            f"saved: {folder}" if folder is not None else "saved: nothing (see the note above)",
        ]
        tail = self.tail(limit)
        end = len(self.events) if self.failed_at is None else self.failed_at
        if not self.events:
            lines.append("no trace events recorded (record_trace=False?)")
        else:
            where = "before the failure" if self.failed_at is not None else "of the run"
            lines.append(f"last {len(tail)} trace events {where} (of {end}):")
            lines.extend(
                f"  {e.time:.9f} {e.kind:<12} {e.subject} {e.detail}".rstrip() for e in tail
            )
            after = len(self.events) - end
            if after:
                lines.append(f"  ... then {after} more as the run wound down")
        return "\n".join(lines)


def replay_command(test_arg: str, seed: int) -> str:
    """``pytest <test> --tk-seed=<seed>``, the test quoted for a POSIX shell if needed."""
    return f"pytest {shlex.quote(test_arg)} --tk-seed={seed}"


def folder_name(nodeid: str, seed: int) -> str:
    """A file-name-safe ``<test id>-<seed>``: the node id with runs of other characters
    than letters, digits, ``.``, ``_`` and ``-`` made ``_``; a long id is cut and given
    a hash of the whole id, so different tests never share a folder name by truncation.
    """
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", nodeid).strip("_.") or "test"
    if len(slug) > _MAX_NAME:
        digest = hashlib.blake2b(nodeid.encode(), digest_size=4).hexdigest()
        slug = f"{slug[:_MAX_NAME]}-{digest}"
    return f"{slug}-{seed}"


def jsonable(value: Any) -> Any:
    """``value`` as JSON-able data: dataclasses (faults, latency models) become
    ``{"type": ClassName, field: value, ...}``, tuples lists; other objects their repr.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"type": type(value).__name__, **fields}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return repr(value)


def schedule_json(sim: Simulation) -> Any:
    """The scheduler's record of ``sim`` (``sim.schedule.to_json()``), or a note."""
    schedule = getattr(sim, "schedule", None)
    to_json = getattr(schedule, "to_json", None)
    if callable(to_json):
        return to_json()
    return {
        "scheduler": "fifo",
        "recorded": False,
        "note": "this transportkit's Simulation has no scheduler record: the run was FIFO",
    }


def save_failure(
    directory: Path,
    record: FailureRecord,
    sim: Simulation,
    faults: FaultSchedule,
    *,
    keep: int = DEFAULT_KEEP_FAILURES,
) -> Path:
    """Write the failure folder of ``record`` under ``directory``; return its path.

    A folder of the same test and seed is replaced. Then only the newest ``keep``
    failure folders of ``directory`` are kept (see :func:`prune_failures`).

    Raises:
        OSError: The folder could not be written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    name = folder_name(record.nodeid, record.seed)
    final = directory / name
    staging = directory / f".{name}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        events = record.events[-MAX_SAVED_EVENTS:]
        doc = chrome_trace(
            events,
            other_data={
                "test": record.nodeid,
                "seed": record.seed,
                "trace_hash": record.trace_hash,
                "events_left_out": len(record.events) - len(events),
            },
        )
        write_trace_json(doc, staging / "trace.json")
        _write_json(staging / "schedule.json", schedule_json(sim))
        _write_json(
            staging / "faults.json",
            [{"at": at, "fault": jsonable(fault)} for at, fault in faults],
        )
        _write_json(
            staging / _RECORD,
            {
                "test": record.nodeid,
                "seed": record.seed,
                "passed_before": record.passed,
                "scheduler": record.scheduler,
                "schedule": record.schedule,
                "exception": record.exception,
                "trace_hash": record.trace_hash,
                "trace_events": len(record.events),
                "replay": record.replay,
            },
        )
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    prune_failures(directory, keep)
    return final


def prune_failures(directory: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` failure folders in ``directory``.

    Only folders holding a ``failure.json`` count (nothing else there is touched);
    newest means the latest modification of that file. Returns the removed folders.
    """
    folders: list[tuple[int, str, Path]] = []
    for entry in directory.iterdir():
        record = entry / _RECORD
        try:
            folders.append((record.stat().st_mtime_ns, entry.name, entry))
        except OSError:
            continue  # not a failure folder
    folders.sort(reverse=True)
    removed = [path for _, _, path in folders[max(keep, 0) :]]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
