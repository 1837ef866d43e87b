"""One seed of a sweep: run in a child process of its own, supervised with a wall budget.

:func:`run_seed` is what a sweep hands to its executor (a process pool, a thread pool,
a Dask cluster): it starts ``python -m transportkit.scenario._sweep_child``, writes the
task to its standard input as JSON, waits at most the task's wall budget, and turns
whatever happens into a :class:`~transportkit.scenario._sweep.SeedResult`: the run's
verdicts, the exception it raised, the signal or exit status of a child that died, or
a timeout (the child is killed). The executor's worker only waits, so any executor
works, a crash or a hang of one seed never takes the worker or the sweep with it, and
each seed runs in a fresh interpreter, as ``transportkit run`` does.

The child reads the task, runs the scenario with
:func:`~transportkit.scenario.run_scenario` exactly as ``transportkit run SCENARIO
--seed S [--faults KINDS]`` would (so the replay command gives the same trace hash),
and writes one JSON object to the file descriptor that was its standard output (which
it first points at standard error, so that nothing the run prints can garble the
answer).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from typing import IO, Any

from transportkit.scenario._sweep_types import SeedResult, SeedTask, Status

__all__ = ["CHILD_COMMAND", "main", "run_seed", "run_task"]

CHILD_COMMAND: tuple[str, ...] = ("-m", "transportkit.scenario._sweep_child")
"""The arguments after the interpreter that start a seed's child process."""

_STDERR_TAIL_BYTES = 4096
"""How much of a dead child's standard error is read back (its end)."""

_STDERR_TAIL_LINES = 5
"""How many of its last lines a failure's detail quotes."""

_MAX_ANSWER_BYTES = 1 << 20
"""The largest answer a child may write (its verdicts; a few KB in practice)."""

_MAX_DETAIL_CHARS = 500
"""The longest detail of one failure (an invariant's, an exception's message)."""


def _cut(text: str, limit: int = _MAX_DETAIL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tail(stream: IO[bytes]) -> str:
    """The last lines of what a child wrote to standard error, cut short."""
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(max(0, size - _STDERR_TAIL_BYTES))
    lines = stream.read().decode("utf-8", "replace").strip().splitlines()
    return " | ".join(_cut(line.strip(), 200) for line in lines[-_STDERR_TAIL_LINES:])


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_seed(task: SeedTask) -> SeedResult:
    """Run one seed in a child process and report how it ended; never raises for
    anything the run does.

    Args:
        task: The seed, the scenario's text, the fault kinds, the budget.

    Returns:
        The seed's result: ``passed``, ``failed`` (an invariant did not hold),
        ``error`` (the run raised), ``crashed`` (the child died or answered nothing
        readable) or ``timeout`` (it ran past ``task.wall_budget`` seconds of wall
        time and was killed).
    """
    began = time.perf_counter()
    payload = json.dumps(task.to_json(), ensure_ascii=False).encode("utf-8")
    command = [task.python or sys.executable, *task.command]

    def ended(status: Status, detail: str) -> SeedResult:
        return SeedResult(
            task.seed, status, time.perf_counter() - began, _cut(detail),
            fault_kinds=task.fault_kinds, replay=task.replay,
        )  # fmt: skip

    with tempfile.TemporaryFile() as errors:
        try:
            child = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
            )
        except OSError as exc:
            return ended("crashed", f"the child process could not start: {exc}")
        try:
            answer, _ = child.communicate(payload, timeout=task.wall_budget)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return ended(
                "timeout",
                f"ran past its wall budget of {task.wall_budget:g} s and was killed "
                "(raise it with --wall-budget)",
            )
        except BaseException:  # KeyboardInterrupt in a thread pool's caller, ...
            child.kill()
            child.communicate()
            raise
        code = child.returncode
        if code < 0:
            tail = _tail(errors)
            return ended(
                "crashed",
                f"the child process was killed by {_signal_name(-code)}"
                + (f"; its last output: {tail}" if tail else ""),
            )
        try:
            if len(answer) > _MAX_ANSWER_BYTES:
                raise ValueError(f"an answer of {len(answer):,} bytes")
            data = json.loads(answer.decode("utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError:
            tail = _tail(errors)
            return ended(
                "crashed",
                f"the child process exited with status {code} without an answer"
                + (f"; its last output: {tail}" if tail else ""),
            )
    return SeedResult.from_answer(task, data, time.perf_counter() - began)


def _failed_invariants(verdicts: list[Any]) -> list[list[str]]:
    return [[_cut(v.description, 200), _cut(v.detail)] for v in verdicts if not v.passed]


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run the task a supervisor sent (see :meth:`SeedTask.to_json`) in this process.

    Returns:
        ``{"passed", "trace_hash", "run_seconds", "failed_invariants"}`` for a run that
        ended, or ``{"error", "traceback"}`` for one that raised an exception.
    """
    from transportkit.scenario._runner import run_scenario  # noqa: PLC0415
    from transportkit.scenario._sweep import scenario_from_text, with_fault_kinds  # noqa: PLC0415

    try:
        scenario = scenario_from_text(task["text"], task["source"], task["max_events"])
        kinds = task["fault_kinds"]
        if kinds is not None:
            scenario = with_fault_kinds(scenario, kinds)
        result = run_scenario(scenario, seed=task["seed"])
    except Exception as exc:
        lines = traceback.format_exception(exc)
        return {
            "error": _cut(f"{type(exc).__name__}: {exc}"),
            "error_type": type(exc).__name__,
            "invariant": _cut(str(getattr(exc, "name", "") or ""), 200) or None,
            "traceback": _cut("".join(lines[-6:]), 4000),
        }
    return {
        "passed": result.passed,
        "trace_hash": result.trace_hash,
        "run_seconds": result.wall_seconds,
        "failed_invariants": _failed_invariants(result.verdicts),
    }


def main() -> int:
    """The child: read a task on standard input, run it, write the answer."""
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    task = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    result = run_task(task)
    answer.write(json.dumps(result))
    answer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
