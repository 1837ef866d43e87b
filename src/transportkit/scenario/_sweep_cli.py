"""``transportkit sweep SCENARIO``: run a scenario once per seed in parallel, report the
failing seeds with their replay commands and a summary.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

from transportkit._extras import MissingExtraError, requires_extra
from transportkit.cli import EXIT_STATUS_HELP, ExitCode, int_argument, seed_argument
from transportkit.scenario._bounds import MAX_EVENTS, MAX_SEED
from transportkit.scenario._catalog import resolve_scenario
from transportkit.scenario._cli import (
    MAX_EVENTS_ALLOWED,
    _discard_stdout,
    _same_file,
    add_progress_option,
    check_output_path,
    progress_enabled,
)
from transportkit.scenario._progress import ProgressLine
from transportkit.scenario._spec import ScenarioError
from transportkit.scenario._sweep import (
    DEFAULT_MAX_SHOWN,
    MAX_SWEEP_SEEDS,
    MAX_WALL_BUDGET,
    SCHEDULERS,
    SeedResult,
    cpu_count,
    sweep,
)

__all__ = ["DASK_CONNECT_TIMEOUT", "main"]

EXIT_OK = ExitCode.OK
EXIT_SEED_FAILED = ExitCode.FAILED
EXIT_BAD_INPUT = ExitCode.USAGE
EXIT_OUTPUT_FAILED = ExitCode.OUTPUT_FAILED

DASK_CONNECT_TIMEOUT = 30.0
"""Seconds to reach a Dask scheduler before giving up."""

MAX_JOBS = 4096


def _budget(text: str) -> float:
    """An argparse type: seconds, > 0 and at most :data:`MAX_WALL_BUDGET`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text[:40]!r}") from None
    if not 0 < value <= MAX_WALL_BUDGET or math.isnan(value):
        raise argparse.ArgumentTypeError(
            f"must be more than 0 and at most {MAX_WALL_BUDGET:g} seconds, got {text[:40]}"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transportkit sweep",
        description="Run a scenario on the sim backend once per seed, in parallel "
        "processes (or on a Dask cluster), and print each failing seed with the command "
        "that replays it, then a summary. A seed fails when an invariant does not hold, "
        "the run raises (an InvariantViolation of the simulation counts under the "
        "invariant's name), its process dies, or it runs past its wall budget. Everything "
        "on the command line and the file are checked before any seed runs.",
        epilog=EXIT_STATUS_HELP + "\n\nexamples:\n"
        "  transportkit sweep risk_server_crash --seeds 200 --jobs 2\n"
        "  transportkit sweep trading_day --swarm --seeds 50 --json sweep.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "scenario",
        help="a shipped scenario by name (transportkit scenarios lists them) or a scenario "
        "file's path; the replay commands repeat it as given",
    )
    parser.add_argument(
        "--seeds",
        type=int_argument(1, MAX_SWEEP_SEEDS),
        default=100,
        metavar="N",
        help=f"how many seeds (default 100, at most {MAX_SWEEP_SEEDS:,})",
    )
    parser.add_argument(
        "--seed-start",
        type=seed_argument,
        default=0,
        metavar="S",
        help="the first seed (default 0): the seeds are S, S+1, ..., S+N-1",
    )
    parser.add_argument(
        "--jobs",
        type=int_argument(1, MAX_JOBS),
        metavar="J",
        help="seeds run at once (default: the CPUs this process may use; with --dask, "
        "the cluster's threads)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the whole sweep as JSON to PATH")
    parser.add_argument(
        "--fail-fast",
        action="store_true",
        help="stop starting seeds after the first failure (seeds running finish)",
    )
    parser.add_argument(
        "--swarm",
        action="store_true",
        help="swarm testing: each seed enables, from its seed, a random subset of the "
        "scenario's fault kinds; the replay command names it",
    )
    parser.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default="fifo",
        help="order of simultaneously ready tasks in each seed's run, as for transportkit "
        "run: fifo (default), random or pct to explore other interleavings; the replay "
        "command passes it",
    )
    parser.add_argument(
        "--wall-budget",
        type=_budget,
        metavar="SECONDS",
        help="wall seconds a seed may take before it is killed and counted a failure "
        "(default: 20 times the run's estimated cost, at least 120)",
    )
    parser.add_argument(
        "--max-events",
        type=int_argument(1, MAX_EVENTS_ALLOWED),
        default=MAX_EVENTS,
        metavar="N",
        help=f"as for transportkit run (default {MAX_EVENTS:,})",
    )
    parser.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run the seeds on the Dask distributed cluster whose scheduler is at "
        "ADDRESS (e.g. tcp://10.0.0.5:8786); needs pip install 'transportkit[dask]'",
    )
    parser.add_argument(
        "--max-shown",
        type=int_argument(0, 10_000),
        default=DEFAULT_MAX_SHOWN,
        metavar="N",
        help=f"failing seeds printed in full (default {DEFAULT_MAX_SHOWN}); the rest are "
        "counted, and all are in the --json file",
    )
    add_progress_option(parser, "seeds done, seeds per wall second, failures and an ETA")
    return parser


def _fail(message: str) -> int:
    print(f"transportkit sweep: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def dask_executor(address: str) -> tuple[Any, Executor, int]:
    """Connect to the Dask scheduler at ``address``: (client, executor, threads).

    Raises:
        RuntimeError: ``distributed`` is not installed (the message names the extra),
            or the scheduler cannot be reached within :data:`DASK_CONNECT_TIMEOUT`.
    """
    try:
        with requires_extra("dask", "--dask"):
            distributed: Any = importlib.import_module("distributed")
    except MissingExtraError as exc:
        raise RuntimeError(str(exc)) from None
    try:
        client = distributed.Client(address, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise RuntimeError(f"--dask: cannot reach the scheduler at {address}: {exc}") from None
    threads = sum(client.nthreads().values())
    return client, client.get_executor(pure=False), max(1, threads)


def _progress(enabled: bool, total: int) -> tuple[Any, ProgressLine | None]:
    if not enabled:
        return None, None
    line = ProgressLine(sys.stderr, "seeds")
    done = failed = 0

    def hook(result: SeedResult) -> None:
        nonlocal done, failed
        done += 1
        failed += not result.passed
        line.suffix = f"{failed:,} failed" if failed else ""
        line.update(done, total)

    return hook, line


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``transportkit sweep``; return the exit status.

    0: every seed passed; 1: a seed failed (an invariant, an error, a crash, a
    timeout) or was not run; 2: the scenario name, the file or the command line is
    invalid, checked before any seed runs; 4: the report or ``--json`` could not be
    written after the sweep (see :class:`~transportkit.cli.ExitCode`).
    """
    args = _parser().parse_args(argv)
    try:
        path = str(resolve_scenario(args.scenario))
    except ScenarioError as exc:
        return _fail(str(exc))
    if args.seed_start + args.seeds - 1 > MAX_SEED:
        return _fail(f"--seed-start + --seeds - 1 must be at most {MAX_SEED}")
    if args.json is not None:
        if os.path.exists(args.json) and _same_file(args.json, path):
            return _fail(f"--json: {args.json} is the scenario file")
        problem = check_output_path(args.json)
        if problem is not None:
            return _fail(f"--json: {problem}")
    client = None
    executor: Executor | None = None
    jobs = args.jobs
    if args.dask:
        try:
            client, executor, threads = dask_executor(args.dask)
        except RuntimeError as exc:
            return _fail(str(exc))
        jobs = jobs or threads
    hook, bar = _progress(progress_enabled(args.progress), args.seeds)
    try:
        result = sweep(
            args.scenario,
            range(args.seed_start, args.seed_start + args.seeds),
            executor=executor,
            jobs=jobs or cpu_count(),
            swarm=args.swarm,
            fail_fast=args.fail_fast,
            wall_budget=args.wall_budget,
            max_events=args.max_events,
            on_result=hook,
            scheduler=args.scheduler,
        )
    except (ScenarioError, ValueError) as exc:
        return _fail(str(exc))
    finally:
        if bar is not None:
            bar.close()
        if client is not None:
            client.close()
    if args.dask:
        result = replace(result, executor=f"dask {args.dask}")
    try:
        print(result.report_text(args.max_shown), flush=True)
    except OSError as exc:
        _discard_stdout()
        message = f"cannot write the report: {exc.strerror or exc}"
        print(f"transportkit sweep: {message}", file=sys.stderr)
        return EXIT_OUTPUT_FAILED
    status: int = EXIT_OK if result.passed else EXIT_SEED_FAILED
    if args.json is not None:
        try:
            with open(args.json, "w", encoding="utf-8") as file:
                json.dump(result.to_dict(), file, indent=2)
                file.write("\n")
        except OSError as exc:
            message = f"--json: cannot write {args.json}: {exc.strerror or exc}"
            print(f"transportkit sweep: {message}", file=sys.stderr)
            return EXIT_OUTPUT_FAILED
        print(f"wrote the sweep to {args.json}", file=sys.stderr)
    return status
