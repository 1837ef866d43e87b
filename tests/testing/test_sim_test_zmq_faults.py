"""``@sim_test(backends=("sim", "zmq"), faults=...)``: the zmq run applies the same
fault schedule through the fault proxy, so a body written once fails on both backends
when the code under test mishandles a fault, and passes on both when it handles it.

On the old code the zmq run had no faults at all: the client below that gives up on
its first timeout passed on zmq (``failed=1`` instead of 2), and the faults the proxy
cannot realise were never mentioned.
"""

from __future__ import annotations

import re

import pytest

pytest_plugins = ["pytester"]

# A client asks a server in another network for an answer every 0.3 s; the link
# between the two is cut from 0.3 s to 0.8 s (virtual seconds on the sim, real ones
# on zmq). ``patient`` retries like the Guide's Lazy Pirate (a new REQ socket per
# try); the impatient client takes its first timeout for an answer that never comes.
PARTITIONED = """
import asyncio

from transportkit import SocketOptions, Timeout
from transportkit.sim_backend import Partition, Repair
from transportkit.testing import sim_test

CUT = [(0.3, Partition("cli", "srv")), (0.8, Repair("cli", "srv"))]
FAST = SocketOptions(reconnect_ivl=20, linger=0)


async def serve(rep):
    while True:
        await rep.send(await rep.recv())


async def ask(cli, endpoint, order, *, patient):
    for _ in range(15 if patient else 1):
        with cli.requester(connect=endpoint, options=FAST) as req:
            await req.send([order])
            try:
                return await req.recv(timeout=0.2)
            except Timeout:
                if not patient:
                    raise
    raise AssertionError(f"no answer to {order!r}")


async def orders(h, *, patient):
    loop = asyncio.get_running_loop()
    start = loop.time()
    srv, cli = h.network("srv"), h.network("cli")
    with srv.worker(bind=h.bind_endpoint()) as rep:
        server = asyncio.ensure_future(serve(rep))
        try:
            answers = []
            for n in range(3):  # at 0.1 s, 0.4 s (inside the cut) and 0.7 s
                await asyncio.sleep(max(0.0, start + 0.1 + 0.3 * n - loop.time()))
                answers.append(await ask(cli, rep.last_endpoint, b"%d" % n, patient=patient))
            return answers
        finally:
            server.cancel()


@sim_test(seeds=2, backends=("sim", "zmq"), faults=CUT, zmq_timeout=8.0, shrink=False)
async def test_impatient(tk_harness):
    assert await orders(tk_harness, patient=False) == [[b"0"], [b"1"], [b"2"]]


@sim_test(seeds=2, backends=("sim", "zmq"), faults=CUT, zmq_timeout=8.0)
async def test_patient(tk_harness, tk_faults):
    assert tk_faults == CUT
    assert await orders(tk_harness, patient=True) == [[b"0"], [b"1"], [b"2"]]
"""


def test_a_body_written_once_fails_on_both_backends_when_it_mishandles_a_partition(
    pytester: pytest.Pytester,
) -> None:
    """The impatient client fails on the sim and on zmq; the patient one passes on
    both (one inner run for the four items: about 2.5 s)."""
    pytester.makepyfile(test_cut=PARTITIONED)
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(failed=2, passed=2)
    for line in (
        "*test_impatient?sim? FAILED*",
        "*test_impatient?zmq? FAILED*",
        "*test_patient?sim? PASSED*",
        "*test_patient?zmq? PASSED*",
    ):
        result.stdout.fnmatch_lines([line])
    out = result.stdout.str()
    zmq_part = out.split("test_impatient[zmq]", 2)[2]
    assert re.search(r"^E +transportkit\._errors\.Timeout: REQ socket", zmq_part, flags=re.M)
    # The zmq failure says which seed's schedule ran, what each fault did, and how to
    # run it again (on zmq, and the same seed on the sim).
    assert "zmq run of seed 0: real sockets in real time, the fault schedule of seed 0 " in out
    assert "not shrunk (shrinking needs the simulation)" in out
    assert re.search(
        r"0\.300 s  Partition\(a='cli', b='srv', both_ways=True\)  \(applied: cli->srv and "
        r"srv->cli cut on \d+ connection",
        out,
    ), out
    assert "0.800 s  Repair(a='cli', b='srv', both_ways=True)  (not reached" in out
    assert "replay: pytest 'test_cut.py::test_impatient[zmq]' --tk-seed=0" in out
    assert "the same seed on the sim: pytest 'test_cut.py::test_impatient[sim]' --tk-seed=0" in out
    summary = out.split("transportkit: replay the failing seeds", 1)[1]
    assert "replay: pytest 'test_cut.py::test_impatient[zmq]' --tk-seed=0" in summary


REFUSED = """
import asyncio

from transportkit.sim_backend import Crash, DropConnection, Partition, Repair, Restart
from transportkit.testing import sim_test

SERVED = []


async def ping(h, transport="tcp"):
    srv, cli = h.network("srv"), h.network("cli")
    with srv.puller(bind=h.bind_endpoint(transport)) as pull:
        with cli.pusher(connect=pull.last_endpoint) as push:
            await push.send([b"order"])
            assert await pull.recv(timeout=2.0) == [b"order"]
            await asyncio.sleep(0.3)


@sim_test(seeds=1, backends=("sim", "zmq"),
          faults=[(0.1, DropConnection("cli", "srv", discard_queues=True))])
async def test_discard(tk_harness):
    await ping(tk_harness)


@sim_test(seeds=1, backends=("zmq",),
          faults=[(0.1, Partition("cli", "srv")), (0.2, Repair("cli", "srv"))])
async def test_ipc(tk_harness):
    await ping(tk_harness, "ipc")


@sim_test(seeds=1, backends=("sim", "zmq"), faults=[(0.05, Partition("cli", "audit"))])
async def test_nobody(tk_harness):
    tk_harness.network("audit")  # a network nobody connects to
    await ping(tk_harness)


@sim_test(seeds=1, backends=("sim", "zmq"))
async def test_own(tk_harness):
    srv, cli = tk_harness.network("srv"), tk_harness.network("cli")
    with srv.puller(bind=tk_harness.bind_endpoint()) as pull:
        with cli.pusher(connect=pull.last_endpoint) as push:
            await push.send([b"1"])
            assert await pull.recv(timeout=2.0) == [b"1"]
            tk_harness.apply(Partition("cli", "srv"))  # the body's own fault, now
            await push.send([b"2"])
            assert await pull.poll(0.2) is False
            tk_harness.apply(Repair("cli", "srv"))
            assert await pull.recv(timeout=2.0) == [b"2"]


async def server(net):
    with net.worker(bind="tcp://127.0.0.1:*") as rep:
        SERVED.append(rep.last_endpoint)
        while True:
            await rep.send(await rep.recv())


@sim_test(seeds=1, backends=("sim", "zmq"), nodes={"srv": server},
          faults=[(0.1, Crash("srv")), (0.2, Restart("srv"))])
async def test_restart(tk_harness):
    before = list(SERVED)  # the main bound once already (it starts first)
    await asyncio.sleep(0.4)
    assert len(SERVED) == len(before) + 1, SERVED  # it ran again after the restart
    with tk_harness.network("cli").requester(connect=SERVED[-1]) as req:
        await req.send([b"again"])
        assert await req.recv(timeout=2.0) == [b"again"]
"""


def test_faults_the_proxy_cannot_realise_are_refused_or_reported_not_applied(
    pytester: pytest.Pytester,
) -> None:
    """A dropped connection that discards queues, and a partition between networks
    joined over ipc, fail the zmq run with a clear error; a fault between networks
    that never connect is reported "not applied" (a warning); a crash and restart of a
    node with a main cancel it and start it again, and a body applies faults of its
    own through ``tk_harness``, on both backends (on the old code the zmq harness had
    no proxy: UnsupportedError)."""
    pytester.makepyfile(test_refused=REFUSED)
    # (The suite turns warnings into errors: the inner run shows this one.)
    warning = "always::transportkit.testing.FaultNotAppliedWarning"
    result = pytester.runpytest("-p", "no:cacheprovider", "-v", "-W", warning)
    for line in (
        "*test_discard?sim? PASSED*",
        "*test_discard?zmq? FAILED*",
        "*test_ipc?zmq? FAILED*",
        "*test_nobody?sim? PASSED*",
        "*test_nobody?zmq? PASSED*",
        "*test_restart?sim? PASSED*",
        "*test_restart?zmq? PASSED*",
        "*test_own?sim? PASSED*",
        "*test_own?zmq? PASSED*",
    ):
        result.stdout.fnmatch_lines([line])
    result.assert_outcomes(failed=2, passed=7, warnings=1)
    out = result.stdout.str()
    assert re.search(
        r"^E +transportkit\._errors\.UnsupportedError: DropConnection\(a='cli', b='srv', "
        r"discard_queues=True\) cannot be realised on zmq: the fault proxy resets",
        out,
        flags=re.M,
    ), out
    assert re.search(
        r"^E +transportkit\._errors\.UnsupportedError: .*cli connected to srv's ipc://"
        r".*which the fault proxy cannot sit in",
        out,
        flags=re.M,
    ), out
    assert re.search(
        r"FaultNotAppliedWarning: zmq run of seed 0: 1 fault\(s\) reached no connection .*"
        r"Partition\(a='cli', b='audit', both_ways=True\) at 0\.050 s: not applied: not "
        r"applicable on zmq",
        out,
    ), out
