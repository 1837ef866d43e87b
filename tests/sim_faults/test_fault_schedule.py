"""Fault schedules: plain data applied at virtual times."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings

from transportkit import SocketOptions, Timeout
from transportkit.sim_backend import (
    Constant,
    Crash,
    DropConnection,
    FaultSchedule,
    Node,
    Partition,
    Repair,
    Restart,
    SetLatency,
    Simulation,
    schedule_faults,
)
from transportkit.testing.strategies import fault_schedules


async def echo_server(node: Node) -> None:
    with node.worker(bind="tcp://*:7000") as rep:
        while True:
            msg = await rep.recv()
            await rep.send([b"ok", *msg])


def run_client(sim: Simulation, rounds: int) -> list[tuple[float, str]]:
    cli = sim.node("cli")

    async def main() -> list[tuple[float, str]]:
        out = []
        for i in range(rounds):
            with cli.requester(
                connect="tcp://srv:7000", options=SocketOptions(rcvtimeo=500)
            ) as req:
                try:
                    await req.request([b"%d" % i])
                    out.append((round(sim.now, 3), "reply"))
                except Timeout:
                    out.append((round(sim.now, 3), "timeout"))
            await asyncio.sleep(0.5)
        return out

    return sim.run(main())


def test_crash_and_restart_happen_at_their_virtual_times() -> None:
    sim = Simulation(seed=3)
    sim.node("srv", main=echo_server)
    schedule_faults(sim, [(3.0, Restart("srv")), (1.0, Crash("srv"))])
    out = run_client(sim, 6)
    assert [kind for _, kind in out] == ["reply", "reply", "timeout", "timeout", "reply", "reply"]
    faults = [(e.time, e.detail) for e in sim.trace.events if e.kind == "fault"]
    assert faults == [(1.0, "crash"), (3.0, "restart")]


def test_partition_holds_requests_until_repair() -> None:
    sim = Simulation(seed=3)
    sim.node("srv", main=echo_server)
    schedule_faults(sim, [(0.9, Partition("cli", "srv")), (2.2, Repair("cli", "srv"))])
    out = run_client(sim, 5)
    # The third request times out inside the partition; the fourth, sent at 2.0, is
    # held by the cut link and answered as soon as it heals at 2.2.
    assert out == [(0.0, "reply"), (0.5, "reply"), (1.5, "timeout"), (2.2, "reply"),
                   (2.701, "reply")]  # fmt: skip


def test_a_latency_spike_times_out_requests_until_it_ends() -> None:
    sim = Simulation(seed=3, latency=Constant(1e-4))
    sim.node("srv", main=echo_server)
    schedule_faults(
        sim,
        [
            (0.6, SetLatency("cli", "srv", Constant(0.4))),
            (1.6, SetLatency("cli", "srv", Constant(1e-4))),
        ],
    )
    out = run_client(sim, 5)
    # Under the spike a round trip (connect + request + reply) takes 1.2 s > 0.5 s.
    assert [kind for _, kind in out] == ["reply", "reply", "timeout", "reply", "reply"]
    details = [e.detail for e in sim.trace.events if e.kind == "fault"]
    assert details == ["set_latency Constant(delay=0.4)", "set_latency Constant(delay=0.0001)"]


def test_a_dropped_connection_is_reestablished_by_the_connecting_side() -> None:
    sim = Simulation(seed=3, latency=Constant(1e-3))
    schedule_faults(sim, [(1.0, DropConnection("cli", "srv"))])
    srv, cli = sim.node("srv"), sim.node("cli")

    async def main() -> list[bytes]:
        with srv.puller(bind="tcp://*:7001") as pull, cli.pusher(connect="tcp://srv:7001") as push:
            got = []
            for i in range(4):
                await push.send([b"%d" % i])
                got.extend((await pull.recv(timeout=1.0))[0:1])
                await asyncio.sleep(0.6)
            return got

    assert sim.run(main()) == [b"0", b"1", b"2", b"3"]
    kinds = [e.kind for e in sim.trace.events if e.kind in ("connect", "disconnect", "fault")]
    assert kinds == ["connect", "fault", "disconnect", "connect"]


def test_faults_in_the_past_are_refused() -> None:
    sim = Simulation()
    with pytest.raises(ValueError, match="times must be >= 0"):
        schedule_faults(sim, [(-1.0, Crash("x"))])


@settings(max_examples=50, deadline=None)
@given(schedule=fault_schedules(["a", "b", "c"], horizon=5.0, max_outage=2.0))
def test_generated_schedules_leave_the_system_whole(schedule: FaultSchedule) -> None:
    sim = Simulation(seed=1)
    for name in ("a", "b", "c"):
        sim.node(name)
    schedule_faults(sim, schedule)
    sim.run(asyncio.sleep(10.0))
    assert all(node.alive for node in sim.nodes.values())
    assert all(link.passes for link in sim.links.values())
    assert all(link.latency == sim.default_latency for link in sim.links.values())
    applied = {e.time for e in sim.trace.events if e.kind == "fault"}
    assert applied <= {when for when, _ in schedule}


@pytest.mark.parametrize(("discard", "delivered"), [(False, 10), (True, 5)])
def test_a_dropped_connection_keeps_or_discards_the_connecting_sides_queue(
    discard: bool, delivered: int
) -> None:
    """libzmq keeps the connecting side's queue across a reconnect (the default);
    ``discard_queues`` destroys both pipes. tcp's
    kernel buffers are off, so that 5 messages wait in the PUSH's pipe."""
    sim = Simulation(seed=3, latency=Constant(1e-3), kernel_buffers=False)
    srv, cli = sim.node("srv"), sim.node("cli")
    opts = SocketOptions(sndhwm=5, rcvhwm=5)

    async def main() -> tuple[int, int | None]:
        with (
            srv.puller(bind="tcp://*:7002", options=opts) as pull,
            cli.pusher(connect="tcp://srv:7002", options=opts) as push,
        ):
            await asyncio.sleep(0.01)
            for i in range(10):
                push.try_send([b"%d" % i])  # 5 reach the PULL, 5 wait in the PUSH
            await asyncio.sleep(0.01)
            sim.drop_connection("cli", "srv", discard_queues=discard)
            await asyncio.sleep(0.5)
            got = 0
            while pull.try_recv() is not None:
                got += 1
                await asyncio.sleep(0.01)
            return got, push.stats.dropped

    got, dropped = sim.run(main())
    assert got == delivered
    assert dropped == (5 if discard else 0)
