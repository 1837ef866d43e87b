"""The ``transportkit`` command (``python -m transportkit`` is the same).

- ``transportkit run SCENARIO``: run a scenario (a shipped one by name,
  ``transportkit run trading_day``, or a TOML file by path) and report.
- ``transportkit sweep SCENARIO --seeds N --jobs J``: run it once per seed in parallel
  processes (or on a Dask cluster: ``--dask ADDRESS``) and report the failing seeds
  with their replay commands.
- ``transportkit scenarios``: list the shipped scenarios, one line each.
- ``transportkit bench``: measure transportkit beside raw pyzmq, C libzmq, bare SimPy
  and other simulators.
- ``transportkit`` (or ``transportkit demo``): run the market-data and risk examples
  in a deterministic simulation; ``--backend zmq`` runs them on real sockets.

Every subcommand exits with one of :class:`ExitCode` (see ``docs/cli.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Final

from transportkit._extras import MissingExtraError

if TYPE_CHECKING:  # the demo's modules load when it runs: --help needs no trading extra
    from transportkit import Network
    from transportkit.trading import MarketDataSummary, RiskSummary

__all__ = [
    "COMMANDS",
    "EXIT_STATUS_HELP",
    "MAX_SEED",
    "ExitCode",
    "int_argument",
    "main",
    "seed_argument",
]


class ExitCode(IntEnum):
    """The exit status of every ``transportkit`` subcommand."""

    OK = 0
    """Success: every invariant held (run), every seed passed (sweep)."""
    FAILED = 1
    """An invariant failed (run), a seed failed or was not run (sweep)."""
    USAGE = 2
    """The command line or the scenario file is invalid: found before anything runs
    (options, numbers, output paths, a missing extra such as matplotlib for --plot)."""
    NOT_REPRESENTATIVE = 3
    """``run``: the machine could not offer the load the file asks for (an open-loop
    source fell short by more than ``load_tolerance``), whatever the invariants say."""
    OUTPUT_FAILED = 4
    """The run finished but an output could not be written after it: the report on
    stdout, ``--trace``, ``--plot``, sweep's ``--json`` (wins over 1 and 3)."""
    INTERRUPTED = 130
    """Interrupted (Ctrl-C, SIGINT), as shells report it (128 + 2)."""


EXIT_STATUS_HELP: Final = """exit status:
  0    success (every invariant held; every seed passed)
  1    an invariant failed (run); a seed failed or was not run (sweep)
  2    usage error: a bad option or number, an unwritable output path, a missing
       extra, an unknown scenario name or an invalid scenario file (all found
       before the run starts)
  3    run: not representative (the machine could not offer the file's load)
  4    an output could not be written after the run (report, --trace, --plot,
       --json); wins over 1 and 3
  130  interrupted (Ctrl-C)"""
"""The exit statuses, as every subcommand's ``--help`` ends."""

COMMANDS: Final = {
    "run": "run a scenario (a shipped one by name, or a TOML file) and report",
    "sweep": "run a scenario once per seed in parallel; report the failing seeds",
    "scenarios": "list the scenarios shipped with transportkit",
    "demo": "run the market-data and risk examples (the default command)",
    "bench": "measure transportkit beside raw pyzmq, C libzmq, bare SimPy and other simulators",
}
"""The subcommands and their one-line help."""

DEFAULT_SEED: Final = 1
MAX_SEED: Final = 2**63 - 1
"""Largest seed, here and in scenario files (transportkit.scenario._bounds.MAX_SEED),
defined here so that the demo does not import the scenario runner."""
MAX_SUBSCRIBERS: Final = 16
"""Most demo subscribers (each is a network of its own: a ZeroMQ context on zmq)."""
MAX_UPDATES: Final = 100_000
"""Most demo market-data updates (16 subscribers x 100,000 is about 20 s on the sim)."""
MAX_LATENCY_US: Final = 100_000.0
"""Largest demo link latency (100 ms): subscribers give up after 1 s without an update
and must join within the 5 s the publisher waits for them."""


@dataclass(frozen=True, slots=True)
class _DemoResult:
    market_data: MarketDataSummary
    risk: RiskSummary


async def _demo(
    exchange: Network,
    traders: Sequence[Network],
    endpoint: Callable[[str], str],
    updates: int,
) -> _DemoResult:
    from transportkit.trading import (  # noqa: PLC0415
        demo_orders,
        run_market_data_example,
        run_risk_example,
    )

    market_data = await run_market_data_example(
        exchange, traders, endpoint("market_data"), updates=updates
    )
    risk = await run_risk_example(
        exchange, traders[0], endpoint("risk"), demo_orders(), malformed_requests=1
    )
    return _DemoResult(market_data, risk)


def _run_sim(args: argparse.Namespace) -> tuple[_DemoResult, list[str]]:
    from transportkit.sim_backend import Constant, Simulation, Uniform  # noqa: PLC0415

    mean, jitter = args.latency_us * 1e-6, args.jitter_us * 1e-6
    latency = Uniform(mean - jitter, mean + jitter) if jitter else Constant(mean)
    sim = Simulation(seed=args.seed, latency=latency)
    exchange = sim.node("exchange")
    traders = [sim.node(f"trader-{i}") for i in range(1, args.subscribers + 1)]
    ports = {"market_data": 5556, "risk": 5555}
    result = sim.run(
        _demo(exchange, traders, lambda name: f"tcp://exchange:{ports[name]}", args.updates)
    )
    footer = [
        f"backend: sim (seed {args.seed}, latency {args.latency_us:g} +/- {args.jitter_us:g} us)",
        f"virtual time elapsed: {sim.now * 1e3:.3f} ms",
        f"trace hash: {sim.trace.hash}",
    ]
    return result, footer


def _run_zmq(args: argparse.Namespace) -> tuple[_DemoResult, list[str]]:
    from transportkit.zmq_backend import ZmqNetwork  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="transportkit-") as tmp:

        def endpoint(name: str) -> str:
            if args.transport == "ipc":
                return f"ipc://{Path(tmp) / name}.ipc"
            return "tcp://127.0.0.1:*"

        exchange = ZmqNetwork(name="exchange")
        traders = [ZmqNetwork(name=f"trader-{i}") for i in range(1, args.subscribers + 1)]
        try:
            result = asyncio.run(_demo(exchange, traders, endpoint, args.updates))
        finally:
            for net in (exchange, *traders):
                net.close()
    footer = [f"backend: zmq ({args.transport})"]
    return result, footer


def _format(result: _DemoResult, footer: Sequence[str]) -> str:
    md, risk = result.market_data, result.risk
    lines = [
        f"market data (PUB/SUB on {md.endpoint}, symbols {', '.join(md.symbols)})",
        f"  published: {md.published} updates after {md.warm_up} warm-up",
    ]
    for sub in md.subscribers:
        latency = "-" if sub.mean_latency_ns is None else f"{sub.mean_latency_ns / 1e3:.1f} us"
        lines.append(
            f"  {sub.name}: delivered {sub.received}, lost {sub.lost}, "
            f"malformed {sub.malformed}, mean latency {latency}"
        )
    lines += [
        f"  elapsed: {md.elapsed_s * 1e3:.3f} ms",
        f"risk validation (REQ/REP on {risk.endpoint})",
        f"  orders: {risk.approved} approved, {risk.rejected} rejected",
    ]
    lines += [f"    {count} x {reason}" for reason, count in risk.reasons.items()]
    positions = ", ".join(f"{s} {q:+d}" for s, q in risk.positions.items()) or "flat"
    lines += [
        f"  malformed requests answered: {risk.malformed}",
        f"  positions: {positions}; capital left: {risk.available_capital:,.2f}",
        f"  elapsed: {risk.elapsed_s * 1e3:.3f} ms",
        *footer,
    ]
    return "\n".join(lines)


def int_argument(minimum: int, maximum: int) -> Callable[[str], int]:
    """An argparse type: an integer from ``minimum`` to ``maximum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text[:40]!r}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"must be from {minimum:,} to {maximum:,}, got {text[:40]}"
            )
        return value

    return parse


seed_argument: Final = int_argument(0, MAX_SEED)
"""An argparse type: a seed, an integer from 0 to :data:`MAX_SEED`."""


def _micros(text: str) -> float:
    """An argparse type: microseconds, a finite number from 0 to ``MAX_LATENCY_US``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text[:40]!r}") from None
    if not 0 <= value <= MAX_LATENCY_US:  # also refuses nan
        raise argparse.ArgumentTypeError(
            f"must be from 0 to {MAX_LATENCY_US:g} microseconds, got {text[:40]}"
        )
    return value


def _demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="transportkit demo",
        description="Run the market-data (PUB/SUB) and risk-validation (REQ/REP) examples "
        "on the simulated or the real ZeroMQ backend. Also what `transportkit` alone runs "
        "(with these options: transportkit --backend zmq).",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--backend", choices=["sim", "zmq"], default="sim", help="transport backend (default: sim)"
    )
    parser.add_argument(
        "--seed",
        type=seed_argument,
        default=DEFAULT_SEED,
        help=f"simulation seed (sim backend only, default {DEFAULT_SEED})",
    )
    parser.add_argument(
        "--latency-us",
        type=_micros,
        default=50.0,
        help="mean one-way link latency in microseconds (sim backend only, default 50, "
        f"at most {MAX_LATENCY_US:g})",
    )
    parser.add_argument(
        "--jitter-us",
        type=_micros,
        default=10.0,
        help="latency is uniform in mean +/- jitter microseconds (sim backend only, default 10)",
    )
    parser.add_argument(
        "--transport",
        choices=["tcp", "ipc"],
        default="tcp",
        help="zmq backend transport: tcp on 127.0.0.1 random ports, or ipc in a temp dir",
    )
    parser.add_argument(
        "--subscribers",
        type=int_argument(1, MAX_SUBSCRIBERS),
        default=2,
        help=f"market-data subscribers (default 2, at most {MAX_SUBSCRIBERS})",
    )
    parser.add_argument(
        "--updates",
        type=int_argument(1, MAX_UPDATES),
        default=100,
        help=f"market-data updates (default 100, at most {MAX_UPDATES:,})",
    )
    return parser


def _version() -> str:
    from transportkit import __version__  # noqa: PLC0415

    return f"transportkit {__version__}"


def _top_parser() -> argparse.ArgumentParser:
    width = max(len(name) for name in COMMANDS)
    listed = "\n".join(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="transportkit",
        usage="transportkit [-h] [--version] COMMAND [OPTIONS]",
        description="Trading code over ZeroMQ-style sockets, on real pyzmq or in a "
        "deterministic simulation.\n\ncommands:\n"
        + listed
        + "\n\n`transportkit COMMAND --help` describes each; `transportkit` alone runs "
        "the demo.",
        epilog=EXIT_STATUS_HELP + "\n\nexamples:\n  transportkit scenarios\n"
        "  transportkit run trading_day\n  transportkit run trading_day --backend zmq\n"
        "  transportkit sweep risk_server_crash --seeds 100",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    return parser


def _route(arguments: list[str]) -> tuple[str | None, list[str]]:
    """The subcommand and its arguments.

    Options given before the subcommand (``transportkit --backend zmq run X``) are
    passed to it, as if written after it; arguments without a subcommand are the
    demo's (``transportkit --updates 5``). None: the top-level parser answers
    (``--help``, ``--version``, or a word that is no command).
    """
    if not arguments:
        return "demo", []
    first = arguments[0]
    if first in COMMANDS:
        return first, arguments[1:]
    if first in ("-h", "--help", "--version") or not first.startswith("-"):
        return None, arguments
    for i, word in enumerate(arguments):
        if word in COMMANDS:
            return word, arguments[:i] + arguments[i + 1 :]
        if word in ("-h", "--help", "--version"):
            break
    return "demo", arguments


def _unknown_command(word: str) -> int:
    shown = word if len(word) <= 60 else word[:57] + "..."
    close = difflib.get_close_matches(word, list(COMMANDS), n=1)
    hint = f"; did you mean transportkit {close[0]}?" if close else ""
    if not close and not word.startswith("-"):
        hint = f"; to run a scenario: transportkit run {shown}"
    print(
        f"usage: transportkit [-h] [--version] COMMAND [OPTIONS]\n"
        f"transportkit: unknown command {shown!r} (commands: {', '.join(COMMANDS)}){hint}",
        file=sys.stderr,
    )
    return ExitCode.USAGE


def _dispatch(command: str, rest: list[str]) -> int:
    if command == "run":
        from transportkit.scenario._cli import main as run_main  # noqa: PLC0415

        return run_main(rest)
    if command == "sweep":
        from transportkit.scenario._sweep_cli import main as sweep_main  # noqa: PLC0415

        return sweep_main(rest)
    if command == "scenarios":
        from transportkit.scenario._cli import scenarios_main  # noqa: PLC0415

        return scenarios_main(rest)
    if command == "bench":
        from transportkit._bench import main as bench_main  # noqa: PLC0415

        return bench_main(rest)
    return _demo_main(rest)


def _demo_main(arguments: list[str]) -> int:
    parser = _demo_parser()
    args = parser.parse_args(arguments)
    if not 0 <= args.jitter_us <= args.latency_us:
        parser.error("--jitter-us must be between 0 and --latency-us")
    runner = _run_sim if args.backend == "sim" else _run_zmq
    result, footer = runner(args)
    print(_format(result, footer))
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``transportkit`` command line; return the process exit status.

    The status is one of :class:`ExitCode` (:data:`EXIT_STATUS_HELP`). A command that
    needs an extra that is not installed prints which one
    (:class:`~transportkit.MissingExtraError`'s message) on stderr and returns
    ``ExitCode.USAGE``. Usage errors
    found by argparse (a bad option or number) raise ``SystemExit(2)`` after printing
    the usage, as argparse does; ``--help`` and ``--version`` raise ``SystemExit(0)``.

    Args:
        argv: Arguments without the program name; None reads ``sys.argv``.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    command, rest = _route(arguments)
    try:
        if command is None:
            if rest and not rest[0].startswith("-"):
                return _unknown_command(rest[0])
            _top_parser().parse_args(rest)  # --help or --version: exits
            return ExitCode.USAGE  # pragma: no cover - argparse exits above
        return _dispatch(command, rest)
    except KeyboardInterrupt:
        print("transportkit: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except MissingExtraError as exc:  # the message says what to install
        print(f"transportkit: {exc}", file=sys.stderr)
        return ExitCode.USAGE
