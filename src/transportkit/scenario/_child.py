"""One node of a scenario in its own process (``[[node]] process = true`` on zmq).

``python -m transportkit.scenario._child SCENARIO NODE --dir DIR --go FILE --metrics FILE``

The child loads the scenario, builds the node's components on its own
:class:`~transportkit.zmq_backend.ZmqNetwork` with the parent's endpoint mapping (node
hosts on 127.0.0.1, ipc names in ``DIR``), prints ``READY``, then waits for the parent
to write the run's wall-clock start time to ``--go`` (already there for a restart), so
its clock, load and duration line up with the parent's. It writes a metrics snapshot
to ``--metrics`` every 0.2 s and once more on SIGTERM (after stopping its server
components gracefully and then cancelling the rest, so their ``finally`` blocks
count); SIGKILL is a real crash and loses what came after the last snapshot. It stops
by itself if the parent dies or the run overstays.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from transportkit import _wallclock as wallclock
from transportkit.scenario._context import RunContext
from transportkit.scenario._metrics import Metrics
from transportkit.scenario._runner import guarded, load, shutdown_servers, with_real_endpoints
from transportkit.scenario._spec import ComponentSpec
from transportkit.scenario._transfer import snapshot, write_atomic
from transportkit.zmq_backend import ZmqNetwork

__all__ = ["main"]

FLUSH_EVERY = 0.2
GO_TIMEOUT = 60.0
STOP_TIMEOUT = 2.0
OVERSTAY = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m transportkit.scenario._child")
    parser.add_argument("scenario", help="the scenario file")
    parser.add_argument("node", help="the node whose components this process runs")
    parser.add_argument("--dir", required=True, help="the run's private directory (ipc)")
    parser.add_argument("--go", required=True, help="file holding the run's wall-clock start")
    parser.add_argument("--metrics", required=True, help="where to write metric snapshots")
    return parser


async def _wait_for_start(go: Path, stop: asyncio.Event) -> float | None:
    """The run's wall-clock start, once the parent wrote it (None: told to stop)."""
    deadline = wallclock.monotonic() + GO_TIMEOUT
    while wallclock.monotonic() < deadline and not stop.is_set():
        try:
            text = go.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            text = ""
        if text:
            return float(text)
        await asyncio.sleep(0.005)
    return None


async def run_node(args: argparse.Namespace) -> int:
    """Run the node until SIGTERM (or the parent's death); 0 on a clean stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    scenario = load(args.scenario)
    specs = [spec for spec in scenario.components if spec.node == args.node]
    if not specs:
        print(f"node {args.node!r} runs no component in {args.scenario}", file=sys.stderr)
        return 2
    real = [
        ComponentSpec(
            spec.name, spec.kind, spec.node, with_real_endpoints(spec, scenario.nodes, args.dir)
        )
        for spec in specs
    ]
    metrics_file = Path(args.metrics)
    parent = os.getppid()
    net = ZmqNetwork(name=args.node)
    print("READY", args.node, os.getpid(), flush=True)
    try:
        wall_start = await _wait_for_start(Path(args.go), stop)
        if wall_start is None:
            return 0
        metrics = Metrics()
        start = loop.time() - (wallclock.time() - wall_start)
        ctx = RunContext(metrics, scenario.duration, scenario.seed, start=start)
        tasks = [loop.create_task(guarded(spec, net, ctx)) for spec in real]
        deadline = scenario.duration + scenario.drain + OVERSTAY

        def flush(final: bool) -> None:
            data = snapshot(ctx, real, flushed_at=ctx.elapsed(), final=final)
            write_atomic(metrics_file, data)

        for _ in range(3):  # let the components bind before the first snapshot
            await asyncio.sleep(0)
        flush(False)  # which tells the parent this node has started
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_EVERY)
            if os.getppid() != parent or ctx.elapsed() > deadline:
                stop.set()
            if not stop.is_set():
                flush(False)
        await shutdown_servers(ctx)  # what they have in flight is answered first
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        flush(True)
        return 0
    finally:
        net.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments and run the node."""
    # Ctrl-C reaches the whole process group: the parent stops its children itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return asyncio.run(run_node(_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
