"""The trading loops receive through GracefulStop.recv (trading._loop.LoopStop): a
stop by event, by GracefulStop or by closing the socket ends them. That a loop left
waiting when its simulation is dropped ends quietly is checked with ``poll``'s case in
``tests/core/test_poll_close.py``."""

from __future__ import annotations

import asyncio

from transportkit.sim_backend import Simulation
from transportkit.trading import RiskBook, RiskLimits, run_order_worker, serve_risk


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
