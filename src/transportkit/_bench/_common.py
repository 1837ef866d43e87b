"""Shared pieces of the benchmarks: sizes, interleaved rounds, percentiles, the machine."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import zmq

from transportkit._extras import requires_extra

__all__ = [
    "BenchConfig",
    "Percentiles",
    "check_target",
    "endpoint_for",
    "interleaved",
    "machine",
    "median",
    "paired_ratio",
    "percentiles",
    "ratio",
    "temp_dir",
]

T = TypeVar("T")

_LOWEST_NS = 1
_HIGHEST_NS = 60_000_000_000
_SIGNIFICANT_DIGITS = 3


def _knob(default: Any, quick: Any) -> Any:
    """A :class:`BenchConfig` field: its full-size default and its ``--quick`` value."""
    return field(default=default, metadata={"quick": quick})


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """How much work each figure does.

    Every field has a full-size default and a tiny ``--quick`` value
    (:meth:`quick`); each figure reads only its own fields.

    Attributes:
        rounds: Interleaved rounds per figure (the report gives medians of rounds, and
            ratios as the median of each round's ratio).
        latency_samples: Round trips per variant per round.
        warmup: Untimed round trips before each variant's timed ones.
        throughput_messages: 1 KB messages per throughput run.
        zerocopy_messages: 1 MB messages per zero-copy run.
        sim_messages: Messages of the sim throughput runs.
        sim_scaling: Message counts of the sim cost-per-message runs.
        sim_memory_messages: Messages of the sim peak-memory run.
        peers_echo_round_trips: Lockstep round trips of the peers figure's echo.
        peers_fanout_messages: Messages per subscriber of the peers figure's fan-out.
        peers_timer_wakeups: ``asyncio.sleep`` wake-ups in all of the peers figure's timers.
        peers_python: The interpreter of the peers figure's worker processes (empty:
            the current one).
        peers_run_timeout_s: Upper bound of one worker process of the peers figure
            (one run of one workload on one library).
        limit_samples: Round trips per variant per round of the C-limit figure.
        limit_messages: 1 KB messages per throughput run of the C-limit figure.
        multipart_messages: ``[topic][timestamp][data]`` messages per multipart run.
        multipart_instructions: Messages per callgrind run of the multipart figure's
            instruction counts (0: not counted; they need valgrind and take a minute).
        scenario_names: Shipped scenarios the scenario figure runs.
        scenario_duration_s: Virtual seconds each of them runs (0: the file's own).
        mmap_messages: Regions sent per run of the memory-mapped zero-copy figure.
        timeout_s: Upper bound of any single wait (nothing hangs).
    """

    rounds: int = _knob(7, 2)
    latency_samples: int = _knob(5_000, 200)
    warmup: int = _knob(500, 20)
    throughput_messages: int = _knob(200_000, 2_000)
    zerocopy_messages: int = _knob(400, 10)
    sim_messages: int = _knob(20_000, 500)
    sim_scaling: tuple[int, ...] = _knob((10_000, 100_000, 1_000_000), (200, 1_000))
    sim_memory_messages: int = _knob(1_000_000, 1_000)
    # peers
    peers_echo_round_trips: int = _knob(20_000, 200)
    peers_fanout_messages: int = _knob(20_000, 200)
    peers_timer_wakeups: int = _knob(100_000, 1_000)
    peers_python: str = _knob("", "")
    peers_run_timeout_s: float = _knob(600.0, 120.0)
    # limit
    limit_samples: int = _knob(5_000, 200)
    limit_messages: int = _knob(200_000, 2_000)
    # multipart
    multipart_messages: int = _knob(200_000, 2_000)
    multipart_instructions: int = _knob(20_000, 0)
    # scenario
    scenario_names: tuple[str, ...] = _knob(
        ("trading_day", "market_data_fanout", "risk_server_crash"), ("trading_day",)
    )
    scenario_duration_s: float = _knob(0.0, 1.0)
    # mmap
    mmap_messages: int = _knob(400, 10)
    # every figure
    timeout_s: float = _knob(30.0, 10.0)

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        """Tiny counts: checks that every figure runs and has the report's shape."""
        values = {f.name: f.metadata["quick"] for f in fields(cls)}
        return cls(**{**values, **overrides})


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Round-trip percentiles of one round, in microseconds."""

    p50: float
    p99: float
    p999: float


def percentiles(samples_ns: Sequence[int]) -> Percentiles:
    """P50/P99/P99.9 of ``samples_ns`` from an HDR histogram (3 significant digits)."""
    with requires_extra("scenarios", "transportkit bench"):
        from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped,unused-ignore]  # noqa: PLC0415

    hist = HdrHistogram(_LOWEST_NS, _HIGHEST_NS, _SIGNIFICANT_DIGITS)
    for value in samples_ns:
        hist.record_value(max(value, _LOWEST_NS))
    return Percentiles(
        p50=hist.get_value_at_percentile(50.0) / 1e3,
        p99=hist.get_value_at_percentile(99.0) / 1e3,
        p999=hist.get_value_at_percentile(99.9) / 1e3,
    )


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (the report's statistic across rounds)."""
    return float(statistics.median(values))


def ratio(value: float, reference: float) -> float:
    """``value / reference``; inf when the reference is 0."""
    return value / reference if reference else float("inf")


def interleaved(variants: Mapping[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Run every variant once per round, in the given order and then reversed, by turns.

    Interleaving spreads the machine's drifts (frequency, other tenants, a VM's idle
    vCPU waking slowly or fast) over every variant alike. Listing each variant next to
    its reference keeps the two adjacent in every round (so :func:`paired_ratio`
    compares runs made moments apart), and reversing the order every other round
    removes any advantage of going first.
    """
    names = list(variants)
    results: dict[str, list[T]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(variants[name]())
    return results


def paired_ratio(values: Sequence[float], references: Sequence[float]) -> float:
    """The median over rounds of ``value / reference`` within each round.

    On a machine whose speed drifts between rounds, a ratio of medians mixes rounds
    of different states; the median of per-round ratios compares like with like.
    """
    return median([ratio(v, r) for v, r in zip(values, references, strict=True)])


def check_target(
    targets: Mapping[str, tuple[str, float]], name: str, figure: str, value: float
) -> dict[str, Any]:
    """One row of the report's targets: ``value`` of ``figure`` against ``targets[name]``.

    A NaN value (a figure that could not be measured) is never met.
    """
    op, limit = targets[name]
    met = value <= limit if op == "<=" else value >= limit
    return {"target": name, "figure": figure, "value": value, "limit": f"{op} {limit}", "met": met}


@contextmanager
def temp_dir() -> Iterator[Path]:
    """A temporary directory for ipc endpoints, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="tk-bench-") as tmp:
        yield Path(tmp)


def endpoint_for(transport: str, tmp: Path, name: str) -> str:
    """A bindable endpoint of ``transport``: tcp on a random 127.0.0.1 port."""
    if transport == "inproc":
        return f"inproc://tk-bench-{name}-{os.getpid()}"
    if transport == "ipc":
        return f"ipc://{tmp / name}.ipc"
    return "tcp://127.0.0.1:*"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """The machine and software the figures come from."""
    import simpy  # noqa: PLC0415

    from transportkit.zmq_backend import accelerated  # noqa: PLC0415

    acceleration = accelerated()
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "simpy": simpy.__version__,
        "accelerator": "C" if acceleration else f"none ({acceleration.reason})",
    }
