"""The trading loops receive through GracefulStop.recv (trading._loop.LoopStop): a
stop by event, by GracefulStop or by closing the socket ends them, and a loop left
waiting when its simulation is dropped ends quietly (the old receive step awaited in
its ``finally``: "coroutine ignored GeneratorExit")."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from transportkit.sim_backend import Simulation
from transportkit.trading import RiskBook, RiskLimits, run_order_worker, serve_risk

REPRODUCTION = textwrap.dedent(
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


def test_dropped_simulation_with_trading_loops_waiting_exits_cleanly() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "dev", "-c", REPRODUCTION],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "done"
    assert "GeneratorExit" not in out.stderr, out.stderr
    assert "Exception ignored" not in out.stderr, out.stderr


def test_an_event_set_while_the_loop_waits_ends_it_and_one_set_before_never_starts_it() -> None:
    with Simulation(seed=1) as sim:
        node = sim.node("risk")

        async def main() -> tuple[float, int, int]:
            book = RiskBook(RiskLimits(capital=1.0))
            with node.worker(bind="tcp://*:5555") as rep, node.puller(bind="inproc://o") as pull:
                stop = asyncio.Event()
                server = asyncio.ensure_future(serve_risk(rep, book, stop=stop))
                worker = asyncio.ensure_future(
                    run_order_worker(pull, "w", lambda order: None, stop=stop)
                )
                await asyncio.sleep(1.0)
                assert not server.done() and not worker.done()
                stop.set()
                stats = await asyncio.wait_for(server, 1.0)
                orders = await asyncio.wait_for(worker, 1.0)
                ended = asyncio.get_running_loop().time()
                again = await asyncio.wait_for(serve_risk(rep, book, stop=stop), 1.0)
                return ended, stats.requests + again.requests, orders.processed

        ended, requests, processed = sim.run(main(), timeout=10)
    assert ended == 1.0  # at the instant the event was set, no wait
    assert (requests, processed) == (0, 0)
