"""A ``poll`` left waiting when its task is dropped ends quietly when its coroutine is
closed: it used to await in its ``finally``, so closing it (a simulation garbage
collected without ``close()``, a loop dropped with the task pending) made Python report
"coroutine ignored GeneratorExit", which failed a pytest session at its end."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

QUEUE_IN_POLL = textwrap.dedent(
    """
    import asyncio, gc
    from transportkit.patterns.paranoid_pirate import ParanoidPirateQueue
    from transportkit.sim_backend import Simulation

    def run():
        sim = Simulation(seed=2)  # never closed: its tasks are freed with it

        async def queue(node):
            with ParanoidPirateQueue(node, frontend="tcp://*:5555", backend="tcp://*:5556") as q:
                await q.run()  # waits in poll()

        sim.node("queue", main=queue)
        sim.run(asyncio.sleep(0.5))

    run()
    gc.collect()
    print("done")
    """
)

# The trading loops' old receive step (``recv_or_stop``) awaited in its ``finally`` too.
TRADING_LOOPS = textwrap.dedent(
    """
    import asyncio, gc
    from transportkit.sim_backend import Simulation
    from transportkit.trading import RiskBook, RiskLimits, run_order_worker, serve_risk

    def run():
        sim = Simulation(seed=2)  # never closed: its tasks are freed with it

        async def risk(node):
            with node.worker(bind="tcp://*:5555") as rep:
                await serve_risk(rep, RiskBook(RiskLimits(capital=1.0)), stop=asyncio.Event())

        async def orders(node):
            with node.puller(bind="tcp://*:5556") as pull:
                await run_order_worker(pull, "w", lambda order: None, stop=asyncio.Event())

        sim.node("risk", main=risk)
        sim.node("orders", main=orders)
        sim.run(asyncio.sleep(0.5))

    run()
    gc.collect()
    print("done")
    """
)


@pytest.mark.parametrize("script", [QUEUE_IN_POLL, TRADING_LOOPS], ids=["queue", "trading"])
def test_a_dropped_simulation_with_a_task_waiting_exits_cleanly(script: str) -> None:
    out = subprocess.run(
        [sys.executable, "-X", "dev", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert "GeneratorExit" not in out.stderr, out.stderr
    assert "Exception ignored" not in out.stderr, out.stderr
