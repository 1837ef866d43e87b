"""CPU instructions per message of the sim backend, counted by callgrind.

Run ``python -m transportkit._bench._sim_instructions [WORKLOAD ...]`` (needs valgrind).
Each workload is one of the sim bench's (:mod:`transportkit._bench._sim`): PUB/SUB with
a reading subscriber, and REQ/REP round trips. Like
:mod:`transportkit._bench._instructions`, it runs each twice under
``valgrind --tool=callgrind``, with ``N`` and ``2N`` messages, and divides the
difference by ``N``, which cancels start-up. Unlike the bench's wall-clock rates, the
counts do not depend on the load of the machine (they repeat to within about 1%), so
they compare two versions of the simulator on a busy machine.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
from typing import Final

from transportkit._bench._instructions import callgrind_instructions

WORKLOADS: Final = {
    "pubsub": "sim PUB/SUB, one reading subscriber (instructions per message)",
    "pubsub_traced": "the same with record_trace=True (instructions per message)",
    "reqrep": "sim REQ/REP (instructions per round trip: two messages)",
    "bare_pubsub": "bare SimPy doing pubsub's deliveries (instructions per message)",
    "bare_reqrep": "bare SimPy doing reqrep's deliveries (instructions per round trip)",
}
"""Every measured workload and what one unit of it is."""


def run_workload(workload: str, count: int) -> int:
    """Run ``count`` units of ``workload`` in the simulation; return deliveries.

    Raises:
        ValueError: ``workload`` is not one of :data:`WORKLOADS`.
    """
    # Imported by name: the package's ``_sim`` attribute is a function, not the module.
    sim = importlib.import_module("transportkit._bench._sim")
    if workload == "pubsub":
        return int(sim.sim_pubsub(count))
    if workload == "pubsub_traced":
        return int(sim.sim_pubsub(count, record_trace=True))
    if workload == "reqrep":
        return int(sim.sim_reqrep(count))
    if workload == "bare_pubsub":
        return int(sim.bare_pubsub(count))
    if workload == "bare_reqrep":
        return int(sim.bare_reqrep(count))
    raise ValueError(f"unknown workload {workload!r}; known: {', '.join(WORKLOADS)}")


def _instructions(workload: str, count: int, valgrind: str) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts every run
    return callgrind_instructions(
        valgrind, "transportkit._bench._sim_instructions", [workload, str(count)], env
    )


def measure(workloads: list[str], count: int = 5_000) -> dict[str, float]:
    """Instructions per unit of each of ``workloads`` (see :data:`WORKLOADS`).

    Raises:
        RuntimeError: valgrind is not installed, or callgrind reported no count.
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed")
    return {
        workload: (
            _instructions(workload, 2 * count, valgrind) - _instructions(workload, count, valgrind)
        )
        / count
        for workload in workloads
    }


def main(argv: list[str] | None = None) -> None:
    """Print the instructions per unit of every workload asked (all by default)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=2, metavar=("WORKLOAD", "COUNT"), help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=5_000, help="units per run (%(default)s)")
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD", help=", ".join(WORKLOADS))
    args = parser.parse_args(argv)
    if args.worker:
        run_workload(args.worker[0], int(args.worker[1]))
        return
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    for workload, value in measure(args.workloads or list(WORKLOADS), args.count).items():
        print(f"{workload:8} {value:9,.0f} instructions  {WORKLOADS[workload]}")


if __name__ == "__main__":
    main()
