"""``transportkit run SCENARIO``: run a scenario file and report on it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from transportkit.scenario._export import write_chrome_trace, write_plot
from transportkit.scenario._report import report_json, report_text
from transportkit.scenario._runner import ProgressHook, load, run_scenario
from transportkit.scenario._spec import ScenarioError

__all__ = ["main"]

EXIT_OK = 0
EXIT_INVARIANT_FAILED = 1
EXIT_BAD_SCENARIO = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transportkit run",
        description="Run a scenario (topology, load, faults, invariants) and report per "
        "stream: sent, delivered, dropped, gaps, latency percentiles, and each invariant. "
        "Exit status 1 when an invariant fails, 2 when the scenario file is invalid.",
    )
    parser.add_argument("scenario", help="scenario file (TOML), e.g. scenarios/*.toml")
    parser.add_argument(
        "--backend",
        choices=["sim", "zmq"],
        default="sim",
        help="sim: virtual time, deterministic (default); zmq: real sockets in real time",
    )
    parser.add_argument("--seed", type=int, help="override the scenario's seed (sim only)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--trace", metavar="FILE", help="write the run as Chrome trace-event JSON (Perfetto)"
    )
    parser.add_argument(
        "--plot", metavar="FILE", help="write a PNG: deliveries and faults over time, latencies"
    )
    parser.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    return parser


def _progress_bar(enabled: bool) -> tuple[ProgressHook | None, Any]:
    """A tqdm bar shown only if the run lasts more than two seconds (on stderr)."""
    if not enabled:
        return None, None
    from tqdm import tqdm  # noqa: PLC0415 - only when a bar may be shown

    bar = tqdm(total=100, delay=2.0, unit="%", leave=False, file=sys.stderr)

    def hook(done: float, total: float) -> None:
        target = int(100 * done / total) if total else 100
        if target > bar.n:
            bar.update(target - bar.n)

    return hook, bar


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``transportkit run``; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        scenario = load(args.scenario)
    except ScenarioError as exc:
        print(f"transportkit run: {exc}", file=sys.stderr)
        return EXIT_BAD_SCENARIO
    if args.backend == "zmq" and args.seed is not None:
        print("transportkit run: --seed applies to the sim backend only", file=sys.stderr)
        return EXIT_BAD_SCENARIO
    record = True if args.trace else None
    hook, bar = _progress_bar(not args.no_progress and not args.json)
    try:
        result = run_scenario(
            scenario, backend=args.backend, seed=args.seed, progress=hook, record_trace=record
        )
    finally:
        if bar is not None:
            bar.close()
    print(report_json(result) if args.json else report_text(result))
    if args.trace:
        try:
            count = write_chrome_trace(result, args.trace)
        except ValueError as exc:
            print(f"transportkit run: --trace: {exc}", file=sys.stderr)
        else:
            print(f"wrote {count} trace events to {args.trace}", file=sys.stderr)
    if args.plot:
        try:
            write_plot(result, args.plot)
        except RuntimeError as exc:
            print(f"transportkit run: --plot: {exc}", file=sys.stderr)
            return EXIT_BAD_SCENARIO
        print(f"wrote plot to {args.plot}", file=sys.stderr)
    return EXIT_OK if result.passed else EXIT_INVARIANT_FAILED
