"""``transportkit bench``: transportkit measured side by side with raw pyzmq and SimPy.

Every figure runs its variants in interleaved rounds in one process and reports the
median of the rounds, as absolute numbers and as ratios to its reference, with the
machine it ran on. See ``benchmarks/README.md`` for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from typing import Any, Final

from transportkit import _wallclock as wallclock
from transportkit._bench._common import BenchConfig, machine
from transportkit._bench._report import FIGURE_MODULES, figure_module, format_report, targets
from transportkit.cli import EXIT_STATUS_HELP, int_argument

__all__ = ["FIGURES", "BenchConfig", "main", "run"]


def _latency(config: BenchConfig) -> dict[str, Any]:
    from transportkit._bench._latency import run_latency  # noqa: PLC0415

    return run_latency(config)


def _throughput(config: BenchConfig) -> dict[str, Any]:
    from transportkit._bench._throughput import run_throughput  # noqa: PLC0415

    return run_throughput(config)


def _zerocopy(config: BenchConfig) -> dict[str, Any]:
    from transportkit._bench._throughput import run_zerocopy  # noqa: PLC0415

    return run_zerocopy(config)


def _sim(config: BenchConfig) -> dict[str, Any]:
    from transportkit._bench._sim import run_sim  # noqa: PLC0415

    return run_sim(config)


def _module_figure(name: str) -> Callable[[BenchConfig], dict[str, Any]]:
    def run_figure(config: BenchConfig) -> dict[str, Any]:
        result: dict[str, Any] = figure_module(name).run(config)
        return result

    return run_figure


FIGURES: Final[dict[str, Callable[[BenchConfig], dict[str, Any]]]] = {
    "latency": _latency,
    "throughput": _throughput,
    "zerocopy": _zerocopy,
    "sim": _sim,
    **{name: _module_figure(name) for name in FIGURE_MODULES},
}
"""Every figure by name (``--only NAME``); busy polling is part of ``latency``."""


def run(config: BenchConfig, only: Sequence[str] = ()) -> dict[str, Any]:
    """Run the figures named in ``only`` (all if empty) and return the report."""
    names = list(only) or list(FIGURES)
    unknown = [name for name in names if name not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; choose from {list(FIGURES)}")
    started = wallclock.time()
    report: dict[str, Any] = {"machine": machine(), "config": _config_dict(config)}
    for name in names:
        report[name] = FIGURES[name](config)
    report["targets"] = targets(report)
    report["elapsed_s"] = wallclock.time() - started
    return report


def _config_dict(config: BenchConfig) -> dict[str, Any]:
    return {field: getattr(config, field) for field in config.__slots__}


MAX_ROUNDS = 1000
"""The most ``--rounds`` (each round runs every figure once more)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transportkit bench",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Measure transportkit side by side with raw pyzmq, C libzmq, bare SimPy and "
            "other simulators."
        ),
    )
    group = parser
    group.add_argument("--json", action="store_true", help="print the report as JSON")
    group.add_argument(
        "--quick", action="store_true", help="tiny counts: checks that every figure runs"
    )
    group.add_argument(
        "--only",
        action="append",
        choices=list(FIGURES),
        default=[],
        metavar="NAME",
        help=f"run only this figure (repeatable): {', '.join(FIGURES)}",
    )
    group.add_argument(
        "--rounds",
        type=int_argument(1, MAX_ROUNDS),
        default=None,
        metavar="N",
        help=f"interleaved rounds per figure (1 to {MAX_ROUNDS})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``transportkit bench`` with ``argv`` (its own options); print the report."""
    args = _parser().parse_args(argv)
    config = BenchConfig.quick() if args.quick else BenchConfig()
    if args.rounds is not None:
        config = BenchConfig(**{**_config_dict(config), "rounds": args.rounds})
    report = run(config, args.only)
    if args.json:
        print(json.dumps(report, indent=2, default=_jsonable, allow_nan=True))
    else:
        print(format_report(report))
    return 0


def _jsonable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return str(value)
