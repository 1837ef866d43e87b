"""What a failing ``@sim_test`` seed leaves behind: a replay line and a failure folder.

A folder ``<failures dir>/<test id>-<seed>/`` holds:

- ``trace.json``: the run's trace as Chrome trace-event JSON (open it in Perfetto), its
  last :data:`MAX_SAVED_EVENTS` events;
- ``schedule.json``: the scheduler's record of choices (``sim.schedule.to_json()``),
  or, on a simulation without a scheduler record, a note saying the run was FIFO;
- ``faults.json``: the fault schedule the seed ran with (``[]`` for none);
- ``failure.json``: the test, seed, exception, trace hash and replay command;
- ``shrunk.json`` (when the failure was shrunk): the seed, the shrunk run's non-FIFO
  choices and fault schedule, its description and exception, and its replay command
  (``pytest <test> --tk-replay=<folder>/shrunk.json``).

The failures directory keeps the newest :data:`DEFAULT_KEEP_FAILURES` folders.
:func:`load_replay` reads a folder (the original run) or a ``shrunk.json`` back, for
``--tk-replay``.
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

from transportkit.sim_backend import (
    Constant,
    Crash,
    DropConnection,
    Empirical,
    Fault,
    FaultSchedule,
    Hold,
    LogNormal,
    Normal,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
    Simulation,
    TraceEvent,
    Uniform,
)
from transportkit.sim_backend._perfetto import chrome_trace, write_trace_json
from transportkit.sim_backend._trace import event_name

__all__ = [
    "DEFAULT_FAILURES_DIR",
    "DEFAULT_KEEP_FAILURES",
    "MAX_REPLAY_FILE_BYTES",
    "MAX_SAVED_EVENTS",
    "SHRUNK_FILE",
    "TRACE_TAIL",
    "FailureRecord",
    "ReplayRecord",
    "fault_from_json",
    "faults_json",
    "folder_name",
    "jsonable",
    "load_replay",
    "prune_failures",
    "replay_command",
    "replay_file_command",
    "save_failure",
    "shrunk_document",
]

DEFAULT_FAILURES_DIR: Final = ".transportkit/failures"
"""Where failure folders go, relative to pytest's rootdir (ini option ``tk_failures_dir``)."""

DEFAULT_KEEP_FAILURES: Final = 50
"""How many failure folders are kept, the newest (ini option ``tk_keep_failures``)."""

MAX_SAVED_EVENTS: Final = 50_000
"""At most this many trace events (the last ones) go to a failure's ``trace.json``."""

TRACE_TAIL: Final = 20
"""How many trace events before the failure the pytest report shows."""

SHRUNK_FILE: Final = "shrunk.json"
"""The file of a failure folder holding the shrunk run."""

MAX_REPLAY_FILE_BYTES: Final = 64 * 1024 * 1024
"""The largest JSON file :func:`load_replay` reads (a record of about 4 million choices)."""

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
        shrunk: The shrunk run in words (``Shrunk.describe()``), or ``""``.
        shrinking: How shrinking went (runs, seconds, minimal or why it stopped), or
            why the failure could not be shrunk; ``""`` when shrinking was off.
        replay_shrunk: The command that runs the shrunk run, or ``""``.
        command: The command that replays this run, if not ``pytest <test>
            --tk-seed=<seed>`` (a ``--tk-replay`` run's own).
        replayed_from: For a ``--tk-replay`` run, the file or folder it replayed.
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
    shrunk: str = ""
    shrinking: str = ""
    replay_shrunk: str = ""
    command: str = ""
    replayed_from: str = ""

    @property
    def replay(self) -> str:
        """The shell command that runs exactly this run again."""
        return self.command or replay_command(self.test_arg, self.seed)

    def tail(self, limit: int = TRACE_TAIL) -> list[TraceEvent]:
        """The last ``limit`` trace events up to the failure."""
        end = len(self.events) if self.failed_at is None else self.failed_at
        return list(self.events[max(0, end - limit) : end])

    def report(self, folder: Path | str | None, limit: int = TRACE_TAIL) -> str:
        """The text the pytest report shows under the failure."""
        if self.replayed_from:
            ran = f"seed {self.seed} replayed from {self.replayed_from}"
        else:
            ran = f"seed {self.seed} failed after {self.passed} passing seed(s)"
        lines = [
            f"replay: {self.replay}",
            f"{ran}; scheduler {self.scheduler}: {self.schedule}",
        ]
        if self.shrunk:
            lines.append(f"shrunk: {self.shrunk}")
        if self.replay_shrunk:
            lines.append(f"replay shrunk: {self.replay_shrunk}")
        if self.shrinking:
            lines.append(f"shrinking: {self.shrinking}")
        lines.append(f"trace hash {self.trace_hash}, {len(self.events)} recorded events")
        if folder is not None:
            lines.append(f"saved: {folder}")
        elif self.replayed_from:
            lines.append("saved: nothing (a --tk-replay run leaves the failure folders alone)")
        else:
            lines.append("saved: nothing (see the note above)")
        tail = self.tail(limit)
        end = len(self.events) if self.failed_at is None else self.failed_at
        if not self.events:
            lines.append("no trace events recorded (record_trace=False?)")
        else:
            where = "before the failure" if self.failed_at is not None else "of the run"
            lines.append(f"last {len(tail)} trace events {where} (of {end}):")
            lines.extend(
                f"  {e.time:.9f} {event_name(e.kind):<12} {e.subject} {e.detail}".rstrip()
                for e in tail
            )
            after = len(self.events) - end
            if after:
                lines.append(f"  ... then {after} more as the run wound down")
        return "\n".join(lines)


def replay_command(test_arg: str, seed: int) -> str:
    """``pytest <test> --tk-seed=<seed>``, the test quoted for a POSIX shell if needed."""
    return f"pytest {shlex.quote(test_arg)} --tk-seed={seed}"


def replay_file_command(test_arg: str, path: str) -> str:
    """``pytest <test> --tk-replay=<path>``, quoted for a POSIX shell if needed."""
    return f"pytest {shlex.quote(test_arg)} --tk-replay={shlex.quote(path)}"


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
    shrunk: Mapping[str, Any] | None = None,
) -> Path:
    """Write the failure folder of ``record`` under ``directory``; return its path.

    A folder of the same test and seed is replaced. ``shrunk``, if given, is written
    as ``shrunk.json`` (see :func:`shrunk_document`). Then only the newest ``keep``
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
        _write_json(staging / "faults.json", faults_json(faults))
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
                "shrunk": record.shrunk or None,
                "shrinking": record.shrinking or None,
                "replay_shrunk": record.replay_shrunk or None,
            },
        )
        if shrunk is not None:
            _write_json(staging / SHRUNK_FILE, dict(shrunk))
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


def faults_json(faults: FaultSchedule) -> list[dict[str, Any]]:
    """A fault schedule as JSON-able data: ``[{"at": t, "fault": {"type": ...}}]``."""
    return [{"at": at, "fault": jsonable(fault)} for at, fault in faults]


def shrunk_document(
    *,
    nodeid: str,
    seed: int,
    choices: Sequence[tuple[int, int]],
    faults: FaultSchedule,
    description: str,
    shrinking: str,
    exception: str,
    trace_hash: str,
    replay: str,
    original: tuple[int, int],
    seconds: float,
) -> dict[str, Any]:
    """The content of ``shrunk.json``: what :func:`load_replay` reads back (``seed``,
    ``choices``, ``faults``, ``test``) and what a reader wants to know.

    ``original`` is the failing run's number of non-FIFO choices and of faults;
    ``seconds`` the real time shrinking took.
    """
    return {
        "test": nodeid,
        "seed": seed,
        "choices": [[step, index] for step, index in choices],
        "faults": faults_json(faults),
        "description": description,
        "shrinking": shrinking,
        "exception": exception,
        "trace_hash": trace_hash,
        "original": {"choices": original[0], "faults": original[1]},
        "seconds": round(seconds, 3),
        "replay": replay,
    }


_FAULT_TYPES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (Crash, Restart, Partition, Repair, Hold, Release, DropConnection, SetLatency)
}
_LATENCY_TYPES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls for cls in (Constant, Uniform, Normal, LogNormal, Empirical)
}


def _from_fields(types: Mapping[str, type[Any]], data: Any, what: str) -> Any:
    if not isinstance(data, Mapping) or not isinstance(data.get("type"), str):
        raise ValueError(f'a {what} must be an object with a "type", got {data!r}')
    cls = types.get(data["type"])
    if cls is None:
        raise ValueError(
            f"unknown {what} type {data['type']!r}: --tk-replay loads {', '.join(types)}"
        )
    fields = {k: v for k, v in data.items() if k != "type"}
    if what == "fault" and cls is SetLatency and fields.get("latency") is not None:
        fields["latency"] = _from_fields(_LATENCY_TYPES, fields["latency"], "latency model")
    try:
        return cls(**fields)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad {what} {data!r}: {exc}") from exc


def fault_from_json(data: Any) -> tuple[float, Fault]:
    """One ``{"at": t, "fault": {...}}`` entry of ``faults.json`` back as a fault.

    Raises:
        ValueError: It is not such an entry, or names a fault or latency model that is
            not built into transportkit (a latency model of your own cannot be loaded).
    """
    if not isinstance(data, Mapping) or set(data) != {"at", "fault"}:
        raise ValueError(f'a fault entry is {{"at": t, "fault": {{...}}}}, got {data!r}')
    at = data["at"]
    if isinstance(at, bool) or not isinstance(at, int | float) or not 0 <= at < float("inf"):
        raise ValueError(f"a fault's time must be a finite number >= 0, got {at!r}")
    fault: Fault = _from_fields(_FAULT_TYPES, data["fault"], "fault")
    return float(at), fault


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayRecord:
    """A run to replay with ``--tk-replay``, as :func:`load_replay` read it.

    Attributes:
        source: The file or folder it came from.
        kind: ``"shrunk"`` (a ``shrunk.json``) or ``"failure"`` (a failure folder: the
            original failing run).
        test: The node id of the test it belongs to, or None if the file names none.
        seed: The simulation's seed.
        choices: The non-FIFO choices, ``(step, index)``, for a ``ReplayScheduler``.
        faults: The fault schedule.
    """

    source: Path
    kind: str
    test: str | None
    seed: int
    choices: tuple[tuple[int, int], ...]
    faults: FaultSchedule


def _read_json(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_REPLAY_FILE_BYTES:
            raise ValueError(f"{path} is {size} bytes, more than {MAX_REPLAY_FILE_BYTES}")
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from exc


def _choices(data: Any, where: Path) -> tuple[tuple[int, int], ...]:
    if not isinstance(data, list):
        raise ValueError(f'{where}: "choices" must be a list of [step, index] pairs')
    pairs: list[tuple[int, int]] = []
    for item in data:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in item)
        ):
            raise ValueError(f"{where}: a choice is [step, index], ints >= 0, got {item!r}")
        pairs.append((item[0], item[1]))
    if len({step for step, _ in pairs}) != len(pairs):
        raise ValueError(f"{where}: a step is chosen twice")
    return tuple(sorted(pairs))


def _seed(data: Any, where: Path) -> int:
    seed = data.get("seed") if isinstance(data, Mapping) else None
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f'{where}: no integer "seed"')
    return seed


def _fault_list(data: Any, where: Path) -> FaultSchedule:
    if not isinstance(data, list):
        raise ValueError(f'{where}: the faults must be a list of {{"at", "fault"}} entries')
    try:
        return [fault_from_json(item) for item in data]
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def load_replay(path: Path | str) -> ReplayRecord:
    """Read a run to replay: a failure folder, its ``failure.json``, or a
    ``shrunk.json`` (any JSON object with ``seed``, ``choices`` and ``faults``).

    A folder (or its ``failure.json``) gives the original failing run: the seed of
    ``failure.json``, the choices of ``schedule.json`` and the faults of
    ``faults.json``. A ``shrunk.json`` gives the shrunk run.

    Raises:
        ValueError: The path cannot be read or does not hold such a record (the
            message says what is wrong).
    """
    source = Path(path)
    folder = source if source.is_dir() else None
    if folder is None and source.name == _RECORD:
        folder = source.parent
    if folder is not None:
        record = _read_json(folder / _RECORD)
        seed = _seed(record, folder / _RECORD)
        schedule = _read_json(folder / "schedule.json")
        if not isinstance(schedule, Mapping):
            raise ValueError(f"{folder / 'schedule.json'} is not a schedule record")
        choices = _choices(schedule.get("choices", []), folder / "schedule.json")
        faults = _fault_list(_read_json(folder / "faults.json"), folder / "faults.json")
        test = record.get("test")
        return ReplayRecord(
            source, "failure", test if isinstance(test, str) else None, seed, choices, faults
        )
    data = _read_json(source)
    if not isinstance(data, Mapping) or "choices" not in data:
        raise ValueError(
            f"{source} is neither a failure folder nor a shrunk.json "
            '(an object with "seed", "choices" and "faults")'
        )
    seed = _seed(data, source)
    choices = _choices(data["choices"], source)
    faults = _fault_list(data.get("faults", []), source)
    test = data.get("test")
    return ReplayRecord(
        source, "shrunk", test if isinstance(test, str) else None, seed, choices, faults
    )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
