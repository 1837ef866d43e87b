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
--seed S [--faults KINDS] [--scheduler MODE]`` would (so the replay command gives the
same trace hash), and writes one JSON object to the file descriptor that was its
standard output (which it first points at standard error, so that nothing the run
prints can garble the answer).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import weakref
from dataclasses import dataclass
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


@dataclass
class _Outcome:
    """How a seed's child process ended, before its answer is read."""

    code: int | None  # None: it ran past its budget and was killed
    answer: bytes = b""
    tail: str = ""
    problem: str | None = None  # the child could not run at all


def run_seed(task: SeedTask) -> SeedResult:
    """Run one seed in a child process and report how it ended; never raises for
    anything the run does.

    With ``task.fork`` (and where ``os.fork`` exists) the child is forked from a
    helper interpreter that has imported transportkit once (kept per thread of the
    executor's workers, see :class:`_Helper`); otherwise it is a fresh interpreter.

    Args:
        task: The seed, the scenario's text, the fault kinds, the budget.

    Returns:
        The seed's result: ``passed``, ``failed`` (an invariant did not hold),
        ``error`` (the run raised), ``crashed`` (the child died or answered nothing
        readable) or ``timeout`` (it ran past ``task.wall_budget`` seconds of wall
        time and was killed).
    """
    began = time.perf_counter()
    if task.fork and hasattr(os, "fork"):
        outcome = _helper(task).run(task, time.monotonic() + task.wall_budget)
    else:
        outcome = _run_fresh(task)
    wall = time.perf_counter() - began

    def ended(status: Status, detail: str) -> SeedResult:
        return SeedResult(
            task.seed, status, wall, _cut(detail),
            fault_kinds=task.fault_kinds, replay=task.replay,
        )  # fmt: skip

    last = f"; its last output: {outcome.tail}" if outcome.tail else ""
    if outcome.problem is not None:
        return ended("crashed", outcome.problem + last)
    if outcome.code is None:
        return ended(
            "timeout",
            f"ran past its wall budget of {task.wall_budget:g} s and was killed "
            "(raise it with --wall-budget)",
        )
    if outcome.code < 0:
        return ended(
            "crashed", f"the child process was killed by {_signal_name(-outcome.code)}{last}"
        )
    try:
        if len(outcome.answer) > _MAX_ANSWER_BYTES:
            raise ValueError(f"an answer of {len(outcome.answer):,} bytes")
        data = json.loads(outcome.answer.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except ValueError:
        return ended(
            "crashed",
            f"the child process exited with status {outcome.code} without an answer{last}",
        )
    return SeedResult.from_answer(task, data, wall)


def _run_fresh(task: SeedTask) -> _Outcome:
    """Run the seed in a new interpreter (``python -m ..._sweep_child``)."""
    payload = json.dumps(task.to_json(), ensure_ascii=False).encode("utf-8")
    command = [task.python or sys.executable, *task.command]
    with tempfile.TemporaryFile() as errors:
        try:
            child = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors
            )
        except OSError as exc:
            return _Outcome(None, problem=f"the child process could not start: {exc}")
        try:
            answer, _ = child.communicate(payload, timeout=task.wall_budget)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            return _Outcome(None)
        except BaseException:  # KeyboardInterrupt in a thread pool's caller, ...
            child.kill()
            child.communicate()
            raise
        return _Outcome(child.returncode, answer, _tail(errors))


_HELPER_GRACE = 30.0
"""Seconds past a seed's budget the supervisor waits for its helper to report (the
helper kills the seed at the budget itself); past that the helper is killed."""

_local = threading.local()


def _helper(task: SeedTask) -> _Helper:
    """This thread's helper for ``task``'s interpreter and command (started anew if
    there is none or it died).
    """
    key = (task.python or sys.executable, task.command)
    helper: _Helper | None = getattr(_local, "helper", None)
    if helper is None or helper.key != key or not helper.alive():
        if helper is not None:
            helper.close()
        helper = _local.helper = _Helper(key)
    return helper


def _close_helper(proc: subprocess.Popen[bytes], errors: IO[bytes], directory: str) -> None:
    """End a helper: close its input (it exits), wait a little, kill it if need be."""
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    errors.close()
    shutil.rmtree(directory, ignore_errors=True)


class _Helper:
    """An interpreter that has imported transportkit and forks one child per seed
    (``python -m transportkit.scenario._sweep_child --helper``).

    It saves each seed the interpreter's start and imports (about 0.3 s here). The
    helper only ever imports and forks, with one thread, so a forked child starts as
    clean as a new interpreter, and each seed gets a fresh child. The helper kills a
    child that runs past its budget (it is the child's parent, so the process id
    cannot be reused meanwhile) and reports how each ended; it exits when its
    standard input closes (its supervisor is gone or done).
    """

    def __init__(self, key: tuple[str, tuple[str, ...]]) -> None:
        self.key = key
        self.dir = tempfile.mkdtemp(prefix="transportkit-sweep-")
        self.errors = open(os.path.join(self.dir, "helper-stderr"), "w+b")  # noqa: SIM115
        self.count = 0
        self.buffer = b""
        self.proc: subprocess.Popen[bytes] | None = None
        self.problem: str | None = None
        try:
            self.proc = subprocess.Popen(
                [key[0], *key[1], "--helper", self.dir],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.errors,
            )
        except OSError as exc:
            self.problem = f"the helper process could not start: {exc}"
            self.errors.close()
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        self._finalizer = weakref.finalize(self, _close_helper, self.proc, self.errors, self.dir)

    def alive(self) -> bool:
        """Whether the helper is running."""
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Stop the helper (also done when it is garbage or at exit)."""
        if self.proc is not None:
            self._finalizer()

    def _line(self, deadline: float) -> bytes | None:
        """The helper's next line, or None at end of file or past ``deadline``."""
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line

    def _dead(self, why: str) -> _Outcome:
        tail = _tail(self.errors) if not self.errors.closed else ""
        self.close()
        return _Outcome(None, tail=tail, problem=why)

    def run(self, task: SeedTask, deadline: float) -> _Outcome:
        """Fork a child for ``task`` and wait until it ends or ``deadline`` (of
        ``time.monotonic``, the same clock in every process of the machine), when the
        helper kills it.
        """
        if self.proc is None or self.proc.stdin is None:
            return _Outcome(None, problem=self.problem or "no helper process")
        self.count += 1
        answer = os.path.join(self.dir, f"answer-{self.count}")
        errors = os.path.join(self.dir, f"stderr-{self.count}")
        request = {
            "task": task.to_json(),
            "answer": answer,
            "stderr": errors,
            "deadline": deadline,
        }
        try:
            self.proc.stdin.write(json.dumps(request).encode("ascii") + b"\n")
            self.proc.stdin.flush()
        except OSError:
            return self._dead("the helper process died before the seed could start")
        try:
            line = self._line(deadline + _HELPER_GRACE)
        except BaseException:
            self.close()
            raise
        if line is None:
            return self._dead("the helper process died or stopped answering")
        word, _, code = line.decode("ascii", "replace").partition(" ")
        try:
            with open(errors, "rb") as stream:
                tail = _tail(stream)
        except OSError:
            tail = ""
        try:
            with open(answer, "rb") as stream:
                data = stream.read(_MAX_ANSWER_BYTES + 1)
        except OSError:
            data = b""
        for path in (answer, errors):
            with contextlib.suppress(OSError):
                os.unlink(path)
        if word == "timeout":
            return _Outcome(None)
        if word != "ended":
            return self._dead(f"the helper process said {line[:100]!r}")
        return _Outcome(int(code), data, tail)


def _wait_child(pid: int, deadline: float) -> str:
    """In the helper: wait for child ``pid`` until ``deadline`` (``time.monotonic``,
    killing it then), or until standard input closes; return the line to report.
    """
    pidfd: int | None = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(pid)  # Linux: a wake-up when the child ends
    stdin = sys.stdin.fileno()
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return f"ended {os.waitstatus_to_exitcode(status)}"
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "timeout -9"
            watch = [stdin] if pidfd is None else [stdin, pidfd]
            ready, _, _ = select.select(watch, [], [], min(left, 0.01 if pidfd is None else left))
            if stdin in ready:  # end of file: the supervisor is gone (it sends nothing now)
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "timeout -9"
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _forked_child(request: dict[str, Any]) -> None:
    """In a child forked by the helper: run the task, write the answer, never return."""
    code = 70
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(err, 1)
        os.dup2(err, 2)
        result = run_task(request["task"])
        tmp = request["answer"] + ".tmp"
        with open(tmp, "w", encoding="utf-8") as file:
            json.dump(result, file)
        os.replace(tmp, request["answer"])
        code = 0
    except SystemExit as exc:  # as a new interpreter would exit
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _helper_main(directory: str | None) -> int:
    """The helper: import the scenario runner once, then fork one child per request;
    at the end of its input, remove ``directory`` (its supervisor's files: a process
    pool's worker ends without running its own clean-up) and exit.
    """
    try:
        return _serve()
    finally:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


def _serve() -> int:
    importlib.import_module("transportkit.scenario._runner")
    out = sys.stdout.buffer
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            return 0
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _forked_child(request)
        report = _wait_child(pid, float(request["deadline"]))
        try:
            out.write(report.encode("ascii") + b"\n")
            out.flush()
        except BrokenPipeError:  # the supervisor is gone
            return 0


_EVENTS_SUFFIX = "; last trace events:"
"""How an :class:`~transportkit.InvariantViolation`'s message introduces the trace
events it lists, one a line (see ``sim_backend._invariants``)."""


def _first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, for a detail of one line (an invariant
    violation's trace events, one a line, stay in the traceback).
    """
    line, newline, _ = str(exc).partition("\n")
    if line.endswith(_EVENTS_SUFFIX):
        return line.removesuffix(_EVENTS_SUFFIX)
    return line + " ..." if newline else line


def _failed_invariants(verdicts: list[Any]) -> list[list[str]]:
    return [[_cut(v.description, 200), _cut(v.detail)] for v in verdicts if not v.passed]


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run the task a supervisor sent (see :meth:`SeedTask.to_json`) in this process.

    Returns:
        ``{"passed", "trace_hash", "run_seconds", "failed_invariants"}`` for a run that
        ended, or ``{"error", "error_type", "invariant", "traceback"}`` for one that
        raised an exception: ``error`` is one line, ``invariant`` the name of the
        invariant an :class:`~transportkit.InvariantViolation` names (else None).
    """
    from transportkit._errors import InvariantViolation  # noqa: PLC0415
    from transportkit.scenario._runner import run_scenario  # noqa: PLC0415
    from transportkit.scenario._sweep import scenario_from_text, with_fault_kinds  # noqa: PLC0415

    try:
        scenario = scenario_from_text(task["text"], task["source"], task["max_events"])
        kinds = task["fault_kinds"]
        if kinds is not None:
            scenario = with_fault_kinds(scenario, kinds)
        result = run_scenario(scenario, seed=task["seed"], scheduler=task["scheduler"])
    except Exception as exc:
        lines = traceback.format_exception(exc)
        # Only an InvariantViolation names an invariant (an AttributeError's or an
        # ImportError's ``name`` is an attribute's or a module's).
        invariant = exc.name if isinstance(exc, InvariantViolation) else ""
        return {
            "error": _cut(f"{type(exc).__name__}: {_first_line(exc)}"),
            "error_type": type(exc).__name__,
            "invariant": _cut(invariant, 200) or None,
            "traceback": _cut("".join(lines[-6:]), 4000),
        }
    return {
        "passed": result.passed,
        "trace_hash": result.trace_hash,
        "run_seconds": result.wall_seconds,
        "failed_invariants": _failed_invariants(result.verdicts),
    }


def main(argv: list[str] | None = None) -> int:
    """The child: read a task on standard input, run it, write the answer; with
    ``--helper``, be a helper (see :class:`_Helper`).
    """
    args = sys.argv[1:] if argv is None else argv
    if "--helper" in args:
        rest = args[args.index("--helper") + 1 :]
        return _helper_main(rest[0] if rest else None)
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
