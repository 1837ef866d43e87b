"""``transportkit run SCENARIO``: run a scenario and report on it; ``transportkit
scenarios``: list the shipped ones.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from transportkit._log import TimeFormatter
from transportkit.cli import EXIT_STATUS_HELP, ExitCode, int_argument, seed_argument
from transportkit.scenario._bounds import MAX_EVENTS
from transportkit.scenario._catalog import resolve_scenario, shipped_scenarios
from transportkit.scenario._export import DEFAULT_TRACE_LIMIT, write_chrome_trace, write_plot
from transportkit.scenario._progress import ProgressLine, is_terminal
from transportkit.scenario._report import report_json, report_text
from transportkit.scenario._runner import ProgressHook, load, run_scenario
from transportkit.scenario._spec import ScenarioError
from transportkit.scenario._sweep import parse_fault_kinds, with_fault_kinds

__all__ = ["check_output_path", "main", "progress_enabled", "scenarios_main"]

EXIT_OK = ExitCode.OK
EXIT_INVARIANT_FAILED = ExitCode.FAILED
EXIT_BAD_SCENARIO = ExitCode.USAGE
EXIT_NOT_REPRESENTATIVE = ExitCode.NOT_REPRESENTATIVE
EXIT_OUTPUT_FAILED = ExitCode.OUTPUT_FAILED

MAX_EVENTS_ALLOWED = 10**12
"""The largest ``--max-events`` (a million times the default: a run of months)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transportkit run",
        description="Run a scenario (topology, load, faults, invariants) and report per "
        "stream: sent, delivered, dropped, gaps, latency percentiles, the load offered "
        "and achieved, each invariant, the faults. Everything on the command line and in "
        "the file (output paths included) is checked before the run starts.",
        epilog=EXIT_STATUS_HELP + "\n\nexamples:\n  transportkit run trading_day\n"
        "  transportkit run trading_day --seed 7 --json > run.json\n"
        "  transportkit run ./my_scenario.toml --trace run.trace.json --plot run.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "scenario",
        help="a shipped scenario by name (trading_day; transportkit scenarios lists them) "
        "or a scenario file's path (./my.toml)",
    )
    parser.add_argument(
        "--backend",
        choices=["sim", "zmq"],
        default="sim",
        help="sim: virtual time, deterministic (default); zmq: real sockets in real time",
    )
    parser.add_argument(
        "--seed", type=seed_argument, help="override the scenario's seed (sim only)"
    )
    parser.add_argument(
        "--scheduler",
        choices=["fifo", "random", "pct"],
        default="fifo",
        help="order of simultaneously ready tasks (sim only): fifo (default, the golden "
        "files' order), random or pct to explore other interleavings with the same seed",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--trace",
        metavar="FILE",
        help="write the run as Chrome trace-event JSON (Perfetto; sim only)",
    )
    parser.add_argument(
        "--trace-limit",
        type=int_argument(0, MAX_EVENTS_ALLOWED),
        metavar="N",
        help=f"--trace writes at most N events (default {DEFAULT_TRACE_LIMIT:,}, about 19 MB; "
        "0: no limit): faults and errors always, then whole messages, sampled; the file "
        "says what it left out",
    )
    parser.add_argument(
        "--trace-sample",
        type=_fraction,
        metavar="R",
        help="--trace writes only this fraction of the messages (0 < R <= 1, default 1)",
    )
    parser.add_argument(
        "--plot",
        metavar="FILE",
        help="write a PNG: each stream's deliveries and failures over time with the "
        "faults as bands, and its latency percentiles",
    )
    parser.add_argument(
        "--faults",
        metavar="KINDS",
        help="keep only these kinds of the scenario's faults, comma-separated, or none "
        "(crash, partition, hold, drop_connection, set_latency: what a swarm sweep's replay "
        "command passes)",
    )
    add_progress_option(parser, "virtual seconds run per wall second and an ETA")
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="write transportkit's log records of this level and above to stderr (on the "
        "sim with their virtual time, t=seconds); default: none",
    )
    parser.add_argument(
        "--log-connections",
        action="store_true",
        help="log every socket's connects, accepts, disconnects and handshake failures "
        "(both backends; nodes run as processes excepted); shown at --log-level, INFO "
        "if none is given",
    )
    parser.add_argument(
        "--max-events",
        type=int_argument(1, MAX_EVENTS_ALLOWED),
        default=MAX_EVENTS,
        metavar="N",
        help=f"refuse a run estimated to cost more events than this (default {MAX_EVENTS:,}, "
        "about 50 s on the sim); raise it to run a long scenario on purpose",
    )
    return parser


def add_progress_option(parser: argparse.ArgumentParser, shows: str) -> None:
    """``--progress`` / ``--no-progress`` (default: shown if stderr is a terminal)."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"show a progress line on stderr ({shows}); default: only when stderr is a "
        "terminal, never in redirected output",
    )


def progress_enabled(choice: bool | None) -> bool:
    """``--progress``: forced on (True), off (False), or on when stderr is a terminal."""
    return is_terminal(sys.stderr) if choice is None else choice


def _fraction(text: str) -> float:
    """An argparse type: a number above 0 and at most 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text[:40]!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {text[:40]}")
    return value


def check_output_path(path: str) -> str | None:
    """What keeps ``path`` from being written as an output file, or None if nothing.

    The directory must exist; an existing ``path`` must be a file this process may
    write (a directory, a FIFO or a socket is refused: writing to a FIFO with no
    reader would block). Nothing is truncated: a new file is created and removed
    again, an existing one is opened for appending and closed.
    """
    if not path:
        return "the file name is empty"
    file = Path(path)
    try:
        mode = os.stat(file).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return _creatable(file)
    except OSError as exc:
        return f"cannot use {file}: {exc.strerror}"
    if stat.S_ISDIR(mode):
        return f"{file} is a directory"
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return f"{file} is a {'FIFO' if stat.S_ISFIFO(mode) else 'socket'}, not a file"
    flags = os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        os.close(os.open(file, flags))
    except OSError as exc:
        return f"cannot write {file}: {exc.strerror}"
    return None


def _creatable(file: Path) -> str | None:
    directory = file.parent
    try:
        mode = os.stat(directory).st_mode
    except FileNotFoundError:
        return f"directory {directory} does not exist"
    except NotADirectoryError:
        return f"{directory} is not a directory"
    except OSError as exc:
        return f"cannot use directory {directory}: {exc.strerror}"
    if not stat.S_ISDIR(mode):
        return f"{directory} is not a directory"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        os.close(os.open(file, flags, 0o666))
    except OSError as exc:
        return f"cannot create {file}: {exc.strerror}"
    os.unlink(file)
    return None


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def _command_line_problem(args: argparse.Namespace, scenario: str) -> str | None:
    """What is wrong with the command line (outputs included), before anything runs."""
    if args.backend == "zmq" and args.seed is not None:
        return "--seed applies to the sim backend only"
    if args.backend == "zmq" and args.scheduler != "fifo":
        return "--scheduler applies to the sim backend only"
    if args.trace is None and (args.trace_limit is not None or args.trace_sample is not None):
        return "--trace-limit and --trace-sample apply to --trace only"
    if args.backend == "zmq" and args.trace:
        return "--trace applies to the sim backend only (a zmq run records no trace)"
    outputs = [(name, path) for name, path in (("--trace", args.trace), ("--plot", args.plot))]
    outputs = [(name, path) for name, path in outputs if path is not None]
    for name, path in outputs:
        if _same_file(path, scenario):
            return f"{name}: {path} is the scenario file"
        problem = check_output_path(path)
        if problem is not None:
            return f"{name}: {problem}"
    if len(outputs) == 2 and _same_file(outputs[0][1], outputs[1][1]):
        return "--trace and --plot name the same file"
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        return "--plot needs matplotlib: pip install 'transportkit[plot]'"
    return None


def _progress_line(enabled: bool, unit: str) -> tuple[ProgressHook | None, ProgressLine | None]:
    """A progress line on stderr, shown after a second of running (if enabled)."""
    if not enabled:
        return None, None
    line = ProgressLine(sys.stderr, unit)
    return line.update, line


def _discard_stdout() -> None:
    """Point stdout at the null device, so that what is still buffered for a stdout
    that failed (a full disk, a closed pipe) cannot fail again at exit.
    """
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (OSError, ValueError):  # no file descriptor behind sys.stdout
        pass


def _fail(message: str) -> int:
    print(f"transportkit run: {message}", file=sys.stderr)
    return EXIT_BAD_SCENARIO


def _log_to_stderr(level: str) -> Callable[[], None]:
    """Send transportkit's records of ``level`` and above to stderr; return the undo."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(TimeFormatter())
    package = logging.getLogger("transportkit")
    old_level = package.level
    package.addHandler(handler)
    package.setLevel(level)

    def undo() -> None:
        package.removeHandler(handler)
        package.setLevel(old_level)

    return undo


def _output_failed(message: str) -> int:
    print(f"transportkit run: {message}", file=sys.stderr)
    return EXIT_OUTPUT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``transportkit run``; return the exit status (:class:`~transportkit.cli.ExitCode`).

    0: every invariant held; 1: an invariant failed; 2: the scenario name, the file or
    the command line is invalid (found before the run: the file's form and bounds, the
    options, the output files, matplotlib for ``--plot``); 3: the run was not
    representative (an open-loop source fell short of the load it offered by more than
    ``load_tolerance``: see :attr:`~transportkit.scenario.RunResult.representative`),
    whatever the invariants say; 4: an output could not be written after the run (the
    report, ``--trace``, ``--plot``), which wins over 1 and 3. Every error is one line
    on stderr, without a traceback.
    """
    args = _parser().parse_args(argv)
    try:
        path = resolve_scenario(args.scenario)
    except ScenarioError as exc:
        return _fail(str(exc))
    problem = _command_line_problem(args, str(path))
    if problem is not None:
        return _fail(problem)
    try:
        scenario = load(path, max_events=args.max_events)
        if args.faults is not None:
            scenario = with_fault_kinds(scenario, parse_fault_kinds(args.faults))
    except (ScenarioError, ValueError) as exc:
        return _fail(str(exc))
    record = True if args.trace else None
    level = args.log_level
    if level is None and args.log_connections:
        level = "INFO"  # the connection log's connects and accepts; its warnings too
    undo_logging = _log_to_stderr(level) if level is not None else None
    unit = "s virtual" if args.backend == "sim" else "s"
    # Log records on stderr would land in the middle of a redrawn line: with a log,
    # progress is shown only if asked for.
    shown = progress_enabled(args.progress) if level is None else bool(args.progress)
    hook, bar = _progress_line(shown, unit)
    try:
        result = run_scenario(
            scenario,
            backend=args.backend,
            seed=args.seed,
            progress=hook,
            record_trace=record,
            scheduler=args.scheduler,
            log_connections=args.log_connections,
        )
    except ScenarioError as exc:  # refused before it started (see run_scenario)
        return _fail(str(exc))
    finally:
        if bar is not None:
            bar.close()
        if undo_logging is not None:
            undo_logging()
    status: int = EXIT_OK if result.passed else EXIT_INVARIANT_FAILED
    if not result.representative:
        status = EXIT_NOT_REPRESENTATIVE
    try:
        print(report_json(result) if args.json else report_text(result), flush=True)
    except OSError as exc:
        _discard_stdout()
        return _output_failed(f"cannot write the report: {exc.strerror or exc}")
    if args.trace:
        try:
            written = write_chrome_trace(
                result,
                args.trace,
                limit=DEFAULT_TRACE_LIMIT if args.trace_limit is None else args.trace_limit or None,
                sample=1.0 if args.trace_sample is None else args.trace_sample,
            )
        except (ValueError, OSError) as exc:
            status = _output_failed(f"--trace: {exc}")
        else:
            left = sum(written["left_out"].values())
            note = f" ({left:,} left out: see the file's otherData.export)" if left else ""
            print(
                f"wrote {written['events_written']:,} trace events, {written['bytes']:,} bytes, "
                f"to {args.trace}{note}",
                file=sys.stderr,
            )
    if args.plot:
        try:
            write_plot(result, args.plot)
        except (ImportError, OSError) as exc:
            status = _output_failed(f"--plot: {exc}")
        else:
            print(f"wrote plot to {args.plot}", file=sys.stderr)
    return status


def _scenarios_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transportkit scenarios",
        description="List the scenarios shipped with transportkit, one line each: the "
        "name transportkit run and transportkit sweep take, and the file's description.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--paths",
        action="store_true",
        help="print each file's path instead of its description (to copy one and edit it)",
    )
    return parser


def scenarios_main(argv: Sequence[str] | None = None) -> int:
    """Run ``transportkit scenarios``: one line per shipped scenario; return 0."""
    args = _scenarios_parser().parse_args(argv)
    shipped = shipped_scenarios()
    width = max((len(s.name) for s in shipped), default=0)
    lines = []
    for item in shipped:
        said = str(resolve_scenario(item.name)) if args.paths else item.description
        lines.append(f"{item.name:<{width}}  {said}".rstrip())
    try:
        print("\n".join(lines), flush=True)
    except OSError as exc:
        _discard_stdout()
        return _output_failed(f"cannot write the list: {exc.strerror or exc}")
    return EXIT_OK
