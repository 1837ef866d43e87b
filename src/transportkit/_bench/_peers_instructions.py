"""CPU instructions per event of the peers figure's workloads, counted by callgrind.

Run ``python -m transportkit._bench._peers_instructions [--scale S] [VARIANT ...]``
(needs valgrind, and Python >= 3.12 with the ``bench`` extra for the peers). Each
variant of each workload runs twice in its own process under ``valgrind
--tool=callgrind`` (the figure's worker, :mod:`transportkit._bench._peers_worker`),
with ``N`` and ``2N``; the difference divided by the events of ``N`` cancels the
interpreter's start-up and the imports. Unlike the figure's wall times, these counts
repeat from run to run to within about 1%, so on a shared machine they are what to
decide by; the ratios are peer instructions / transportkit instructions (higher:
transportkit does less work).
"""

from __future__ import annotations

import argparse
import os
import shutil
from typing import Final

from transportkit._bench._fig_peers import RATIOS, VARIANTS
from transportkit._bench._instructions import callgrind_instructions
from transportkit._bench._peers_worker import WORKLOADS, expected_events

__all__ = ["BASE_COUNTS", "measure"]

BASE_COUNTS: Final = {"echo": 1_000, "fanout": 1_000, "timers": 5_000}
"""``N`` of each workload at scale 1 (callgrind runs about 50 times slower)."""


def _instructions(valgrind: str, lib: str, mode: str, workload: str, n: int) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts every run
    return callgrind_instructions(
        valgrind,
        "transportkit._bench._peers_worker",
        [lib, workload, str(n), mode],
        env,
        worker_flag=None,
    )


def measure(variants: list[str], scale: float = 1.0) -> dict[str, dict[str, float]]:
    """Instructions per event, workload -> variant -> count, for ``variants``.

    Raises:
        RuntimeError: valgrind is not installed, or callgrind reported no count.
        subprocess.CalledProcessError: a worker failed (a peer not installed, a
            message missing).
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed")
    out: dict[str, dict[str, float]] = {}
    for workload in WORKLOADS:
        n = max(1, int(BASE_COUNTS[workload] * scale))
        out[workload] = {}
        for variant in variants:
            lib, mode = VARIANTS[variant]
            once = _instructions(valgrind, lib, mode, workload, n)
            twice = _instructions(valgrind, lib, mode, workload, 2 * n)
            out[workload][variant] = (twice - once) / expected_events(workload, n)
    return out


def main(argv: list[str] | None = None) -> None:
    """Print instructions per event of every variant and workload, then the ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every N")
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help=f"any of {list(VARIANTS)}")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    results = measure(args.variants or list(VARIANTS), args.scale)
    for workload, counts in results.items():
        for variant, value in counts.items():
            print(f"{workload:7} {variant:11} {value:10,.0f} instructions per event")
        for name, (tk, peer) in RATIOS.items():
            if tk in counts and peer in counts:
                print(f"{workload:7} {name:22} {counts[peer] / counts[tk]:6.2f}")


if __name__ == "__main__":
    main()
