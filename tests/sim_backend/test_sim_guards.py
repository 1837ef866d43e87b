"""Inside a simulation, the ways out of virtual time raise SimulationError.

Each refused call is made in a simulated node's task; the run fails with the refusal.
The same calls work from other threads during a run and everywhere after it, and the
originals are back after a run however it ended.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import importlib
import inspect
import logging
import multiprocessing
import os
import queue
import select
import selectors
import shutil
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit import Puller, Pusher, SimulationError, SocketKind, TaskFailed
from transportkit.sim_backend import Node, Simulation
from transportkit.zmq_backend import BlockingSocket, ZmqNetwork

TRUE = shutil.which("true") or "/bin/true"
MISSING = object()


class Real:
    """Real threads, sockets and processes made outside the run (in the test's thread),
    for the refused calls to use; all closed in teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self._closers: list[Callable[[], object]] = []

    def close(self) -> None:
        for close in reversed(self._closers):
            close()

    @cached_property
    def listener(self) -> socket.socket:
        sock = socket.create_server(("127.0.0.1", 0))
        sock.settimeout(0.01)
        self._closers.append(sock.close)
        return sock

    @cached_property
    def pair(self) -> tuple[socket.socket, socket.socket]:
        a, b = socket.socketpair()
        for sock in (a, b):
            sock.settimeout(0.01)
            self._closers.append(sock.close)
        return a, b

    @cached_property
    def udp(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.01)
        self._closers.append(sock.close)
        return sock

    @cached_property
    def file(self) -> Any:
        path = self._tmp_path / "payload"
        path.write_bytes(b"x" * 10)
        f = path.open("rb")
        self._closers.append(f.close)
        return f

    @cached_property
    def blocker(self) -> threading.Thread:
        """A live thread (it ends within 10 s, or at teardown)."""
        release = threading.Event()
        thread = threading.Thread(target=release.wait, args=(10,), daemon=True)
        thread.start()
        self._closers.append(thread.join)
        self._closers.append(release.set)
        return thread

    @cached_property
    def held_semaphore(self) -> threading.Semaphore:
        """A semaphore at 0, released by a timer after 0.5 s (so no call hangs)."""
        sem = threading.Semaphore(0)
        timer = threading.Timer(0.5, sem.release)
        timer.start()
        self._closers.append(timer.join)
        self._closers.append(timer.cancel)
        return sem

    @cached_property
    def pool(self) -> concurrent.futures.ThreadPoolExecutor:
        pool = concurrent.futures.ThreadPoolExecutor(1)
        pool.submit(int).result(timeout=10)  # its worker thread runs before the run
        self._closers.append(pool.shutdown)
        return pool

    @cached_property
    def process_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        pool = concurrent.futures.ProcessPoolExecutor(1)
        self._closers.append(lambda: pool.shutdown(cancel_futures=True))
        return pool

    @cached_property
    def zmq_pair(self) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
        """A real PUSH -> PULL over inproc (receives time out after 0.1 s)."""
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
        for sock in (pull, push):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, 100)
            sock.setsockopt(zmq.SNDTIMEO, 100)
        pull.bind("inproc://guards")
        push.connect("inproc://guards")
        self._closers.append(ctx.term)
        self._closers.append(push.close)
        self._closers.append(pull.close)
        return push, pull

    @cached_property
    def zmq_network(self) -> ZmqNetwork:
        net = ZmqNetwork()
        self._closers.append(net.close)
        return net

    @cached_property
    def zmq_blocking(self) -> BlockingSocket:
        """A real blocking PULL of the zmq backend."""
        return self.zmq_network.blocking(SocketKind.PULL, bind="inproc://guards-blocking")

    @cached_property
    def zmq_async(self) -> tuple[Pusher, Puller]:
        """A real asyncio PUSH -> PULL of the zmq backend, one message queued at the PULL."""
        net = self.zmq_network
        pull = net.puller(bind="inproc://guards-async")
        push = net.pusher(connect="inproc://guards-async")
        asyncio.run(_send_and_settle(push, pull))
        return push, pull

    @cached_property
    def zmq_monitor(self) -> Any:
        """A monitor of a zmq backend socket."""
        return self.zmq_async[1].monitor()

    @cached_property
    def child(self) -> subprocess.Popen[bytes]:
        """A running child process (killed at teardown)."""
        proc = subprocess.Popen(["sleep", "10"])
        self._closers.append(proc.wait)
        self._closers.append(proc.kill)
        return proc


@pytest.fixture
def real(tmp_path: Path) -> Iterator[Real]:
    r = Real(tmp_path)
    yield r
    r.close()


async def _send_and_settle(push: Pusher, pull: Puller) -> None:
    await push.send([b"queued"])
    assert await pull.poll(5)


def _connect(real: Real) -> None:
    with socket.socket() as sock:
        sock.settimeout(1)
        sock.connect(real.listener.getsockname())


def _connect_ex(real: Real) -> None:
    with socket.socket() as sock:
        sock.settimeout(1)
        sock.connect_ex(real.listener.getsockname())


def _create_connection(real: Real) -> None:
    socket.create_connection(real.listener.getsockname(), timeout=1).close()


def _fork(real: Real) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child of an unguarded fork
        os._exit(0)
    os.waitpid(pid, 0)


def _forkpty(real: Real) -> None:
    pid, fd = os.forkpty()
    if pid == 0:  # pragma: no cover
        os._exit(0)
    os.close(fd)
    os.waitpid(pid, 0)


def _posix_spawn(real: Real) -> None:
    os.waitpid(os.posix_spawn(TRUE, [TRUE], dict(os.environ)), 0)


def _posix_spawnp(real: Real) -> None:
    os.waitpid(os.posix_spawnp("true", ["true"], dict(os.environ)), 0)


def _condition_wait(real: Real) -> None:
    cond = threading.Condition()
    with cond:
        cond.wait(0.01)


def _condition_wait_for(real: Real) -> None:
    cond = threading.Condition()
    with cond:
        cond.wait_for(lambda: False, 0.01)


def _semaphore_with(real: Real) -> None:
    with real.held_semaphore:
        pass


def _bounded_semaphore(real: Real) -> None:
    sem = threading.BoundedSemaphore(1)
    assert sem.acquire()  # free: no wait, allowed
    sem.acquire(timeout=0.01)


def _queue_put(real: Real) -> None:
    q: queue.Queue[int] = queue.Queue(1)
    q.put(1)
    q.put(2, timeout=0.01)


def _process_start(real: Real) -> None:
    proc = multiprocessing.get_context("fork").Process(target=int)
    proc.start()
    proc.join(10)


def _selector(kind: type[selectors.BaseSelector]) -> Callable[[Real], None]:
    def call(real: Real) -> None:
        with kind() as sel:
            sel.select(0.01)

    return call


CASES: list[tuple[str, tuple[str, ...], Callable[[Real], object], str]] = [
    # (id, what of Real to make before the run, the call, what the error must say)
    ("time.sleep", (), lambda r: time.sleep(0.01), r"time\.sleep\(0\.01\).*asyncio\.sleep"),
    (
        "Thread.start",
        (),
        lambda r: threading.Thread(target=int).start(),
        r"threading\.Thread\.start.*create_task",
    ),
    ("Timer.start", (), lambda r: threading.Timer(0.01, int).start(), r"Thread\.start"),
    (
        "_thread.start_new_thread",
        (),
        lambda r: __import__("_thread").start_new_thread(int, ()),
        r"_thread\.start_new_thread",
    ),
    ("Thread.join", ("blocker",), lambda r: r.blocker.join(0.01), r"Thread\.join"),
    (
        "Event.wait",
        (),
        lambda r: threading.Event().wait(0.01),
        r"threading\.Event\.wait.*asyncio\.Event",
    ),
    ("Condition.wait", (), _condition_wait, r"Condition\.wait.*asyncio\.Condition"),
    ("Condition.wait_for", (), _condition_wait_for, r"Condition\.wait"),
    (
        "Semaphore.acquire",
        (),
        lambda r: threading.Semaphore(0).acquire(timeout=0.01),
        r"Semaphore\.acquire.*asyncio\.Semaphore",
    ),
    ("Semaphore.__enter__", ("held_semaphore",), _semaphore_with, r"Semaphore\.acquire"),
    ("BoundedSemaphore.acquire", (), _bounded_semaphore, r"Semaphore\.acquire"),
    (
        "Barrier.wait",
        (),
        lambda r: threading.Barrier(2).wait(0.01),
        r"Barrier\.wait.*asyncio\.Barrier",
    ),
    ("Queue.get", (), lambda r: queue.Queue().get(timeout=0.01), r"Queue\.get.*asyncio\.Queue"),
    ("Queue.put", (), _queue_put, r"Queue\.put.*asyncio\.Queue"),
    (
        "Future.result",
        (),
        lambda r: concurrent.futures.Future().result(0.01),
        r"Future\.result.*await",
    ),
    ("Future.exception", (), lambda r: concurrent.futures.Future().exception(0.01), "exception"),
    ("ThreadPoolExecutor.submit", ("pool",), lambda r: r.pool.submit(int), r"ThreadPoolExecutor"),
    (
        "ProcessPoolExecutor.submit",
        ("process_pool",),
        lambda r: r.process_pool.submit(int),
        r"ProcessPoolExecutor.*simulated node",
    ),
    ("multiprocessing.Process.start", (), _process_start, r"multiprocessing\.Process\.start"),
    (
        "subprocess.run",
        (),
        lambda r: subprocess.run([TRUE], check=False),
        r"subprocess\.Popen.*real process.*simulated node",
    ),
    ("subprocess.check_output", (), lambda r: subprocess.check_output([TRUE]), r"Popen"),
    ("os.popen", (), lambda r: os.popen(TRUE).close(), r"subprocess\.Popen"),
    ("Popen.wait", ("child",), lambda r: r.child.wait(0.01), r"Popen\.wait"),
    ("Popen.communicate", ("child",), lambda r: r.child.communicate(timeout=0.01), "communicate"),
    ("os.system", (), lambda r: os.system("exit 0"), r"os\.system.*simulated node"),
    ("os.fork", (), _fork, r"os\.fork\b"),
    ("os.forkpty", (), _forkpty, r"os\.forkpty"),
    ("os.posix_spawn", (), _posix_spawn, r"os\.posix_spawn\b"),
    ("os.posix_spawnp", (), _posix_spawnp, r"os\.posix_spawnp"),
    ("os.spawnv", (), lambda r: os.spawnv(os.P_WAIT, TRUE, [TRUE]), r"os\.fork\b"),
    (
        "socket.create_connection",
        ("listener",),
        _create_connection,
        r"socket\.create_connection.*real network I/O.*simulated node's sockets",
    ),
    ("socket.connect", ("listener",), _connect, r"socket\.socket\.connect\b"),
    ("socket.connect_ex", ("listener",), _connect_ex, r"socket\.socket\.connect_ex"),
    ("socket.accept", ("listener",), lambda r: r.listener.accept(), r"socket\.socket\.accept"),
    ("socket.recv", ("pair",), lambda r: r.pair[0].recv(1), r"socket\.socket\.recv\b"),
    (
        "socket.recv_into",
        ("pair",),
        lambda r: r.pair[0].recv_into(bytearray(1)),
        r"recv_into",
    ),
    ("socket.recvfrom", ("udp",), lambda r: r.udp.recvfrom(1), r"socket\.socket\.recvfrom\b"),
    (
        "socket.recvfrom_into",
        ("udp",),
        lambda r: r.udp.recvfrom_into(bytearray(1)),
        r"recvfrom_into",
    ),
    ("socket.recvmsg", ("pair",), lambda r: r.pair[0].recvmsg(1), r"socket\.socket\.recvmsg\b"),
    (
        "socket.recvmsg_into",
        ("pair",),
        lambda r: r.pair[0].recvmsg_into([bytearray(1)]),
        r"recvmsg_into",
    ),
    ("socket.send", ("pair",), lambda r: r.pair[0].send(b"x"), r"socket\.socket\.send\b"),
    ("socket.sendall", ("pair",), lambda r: r.pair[0].sendall(b"x"), r"sendall"),
    (
        "socket.sendto",
        ("udp",),
        lambda r: r.udp.sendto(b"x", r.udp.getsockname()),
        r"socket\.socket\.sendto",
    ),
    ("socket.sendmsg", ("pair",), lambda r: r.pair[0].sendmsg([b"x"]), r"sendmsg"),
    ("socket.sendfile", ("pair", "file"), lambda r: r.pair[0].sendfile(r.file), r"sendfile"),
    (
        "socket.getaddrinfo",
        (),
        lambda r: socket.getaddrinfo("127.0.0.1", 80),
        r"socket\.getaddrinfo.*resolve nothing",
    ),
    ("socket.gethostbyname", (), lambda r: socket.gethostbyname("127.0.0.1"), "gethostbyname"),
    (
        "socket.gethostbyname_ex",
        (),
        lambda r: socket.gethostbyname_ex("127.0.0.1"),
        "gethostbyname_ex",
    ),
    ("socket.gethostbyaddr", (), lambda r: socket.gethostbyaddr("127.0.0.1"), "gethostbyaddr"),
    (
        "socket.getnameinfo",
        (),
        lambda r: socket.getnameinfo(("127.0.0.1", 80), 0),
        "getnameinfo",
    ),
    ("socket.getfqdn", (), lambda r: socket.getfqdn("127.0.0.1"), "gethostbyaddr"),
    ("select.select", (), lambda r: select.select([], [], [], 0.01), r"select\.select"),
    ("zmq.Socket.recv", ("zmq_pair",), lambda r: r.zmq_pair[1].recv(), r"zmq\.Socket\.recv\b"),
    ("zmq.Socket.send", ("zmq_pair",), lambda r: r.zmq_pair[0].send(b"x"), r"zmq\.Socket\.send\b"),
    (
        "zmq.Socket.recv_multipart",
        ("zmq_pair",),
        lambda r: r.zmq_pair[1].recv_multipart(),
        r"zmq\.Socket\.recv_multipart",
    ),
    (
        "zmq.Socket.send_string",
        ("zmq_pair",),
        lambda r: r.zmq_pair[0].send_string("x"),
        r"zmq\.Socket\.send\b",
    ),
    ("zmq.Socket.poll", ("zmq_pair",), lambda r: r.zmq_pair[1].poll(100), r"zmq\.Socket\.poll"),
    ("zmq.Poller.poll", (), lambda r: zmq.Poller().poll(100), r"zmq\.Poller\.poll"),
    (
        "BlockingSocket.recv",
        ("zmq_blocking",),
        lambda r: r.zmq_blocking.recv(timeout=0.1),
        r"BlockingSocket\.recv \(zmq backend\).*simulated node's sockets",
    ),
    (
        "BlockingSocket.try_recv",
        ("zmq_blocking",),
        lambda r: r.zmq_blocking.try_recv(),
        r"BlockingSocket\.try_recv",
    ),
    (
        "zmq backend recv",
        ("zmq_async",),
        lambda r: r.zmq_async[1].recv(timeout=0.1),
        r"recv of a zmq backend socket",
    ),
    (
        "zmq backend try_recv",
        ("zmq_async",),
        lambda r: r.zmq_async[1].try_recv(),
        r"try_recv of a zmq backend socket",
    ),
    (
        "zmq backend try_send",
        ("zmq_async",),
        lambda r: r.zmq_async[0].try_send([b"x"]),
        r"try_send of a zmq backend socket",
    ),
    (
        "zmq backend monitor try_recv",
        ("zmq_monitor",),
        lambda r: r.zmq_monitor.try_recv(),
        r"try_recv of a zmq backend socket",
    ),
    ("SelectSelector", (), _selector(selectors.SelectSelector), r"SelectSelector\.select"),
    ("PollSelector", (), _selector(selectors.PollSelector), r"PollSelector\.select"),
    ("DefaultSelector", (), _selector(selectors.DefaultSelector), r"Selector\.select"),
]


@pytest.mark.parametrize(
    ("needs", "call", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_refused_call_in_a_node_task_fails_the_run(
    real: Real, needs: tuple[str, ...], call: Callable[[Real], object], match: str
) -> None:
    for name in needs:
        getattr(real, name)
    sim = Simulation(seed=1)
    reached: list[str] = []

    async def trader(node: Node) -> None:
        await asyncio.sleep(0.5)
        reached.append("call")
        result = call(real)
        if inspect.isawaitable(result):
            await result
        reached.append("returned")

    sim.node("trader", main=trader)
    with pytest.raises(SimulationError, match=match) as caught:
        sim.run(asyncio.sleep(1))
    # The task itself failed with the refusal (its cause); nothing ran past the call.
    assert isinstance(caught.value, TaskFailed)
    assert isinstance(caught.value.__cause__, SimulationError)
    assert reached == ["call"]
    assert sim.now == 0.5  # the run stopped at the failure (TaskFailed), not at its end
    sim.close()


def test_a_refusal_in_an_awaited_task_is_the_run_error_itself() -> None:
    sim = Simulation()
    node = sim.node("n")

    async def work() -> None:
        time.sleep(0.01)

    async def main() -> None:
        await node.spawn(work())

    with pytest.raises(SimulationError, match=r"time\.sleep") as caught:
        sim.run(main())
    assert "caught or lost" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_a_caught_refusal_still_fails_the_run() -> None:
    """Resilient loops catch Exception: the refusal must not vanish in them."""
    sim = Simulation()

    async def main() -> str:
        for _ in range(3):
            try:
                threading.Event().wait(1)
            except Exception:
                await asyncio.sleep(1)
        return "done"

    with pytest.raises(SimulationError, match=r"caught or lost.*2 more.*Event\.wait"):
        sim.run(main())


def test_a_loop_refusal_lost_in_a_node_task_fails_the_run() -> None:
    """The event loop's own refusals (executors) fail the run too, not only the task."""
    sim = Simulation()

    async def worker(node: Node) -> None:
        await asyncio.get_running_loop().run_in_executor(None, int)

    sim.node("w", main=worker)
    with pytest.raises(SimulationError, match="run_in_executor"):
        sim.run(asyncio.sleep(1))


def _exercise(listener: socket.socket) -> list[object]:
    """The refused calls, each in a form that must work outside a simulation."""
    out: list[object] = []
    time.sleep(0.001)
    done = threading.Event()
    thread = threading.Thread(target=done.set)
    thread.start()
    thread.join(5)
    out.append(done.wait(5))
    cond = threading.Condition()
    with cond:
        out.append(cond.wait(0.001))
    sem = threading.Semaphore(0)
    out.append(sem.acquire(timeout=0.001))
    q: queue.Queue[int] = queue.Queue(1)
    q.put(1, timeout=1)
    out.append(q.get(timeout=1))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        out.append(pool.submit(int, "7").result(5))
    out.append(subprocess.run([TRUE], check=False, timeout=10).returncode)
    with socket.create_connection(listener.getsockname(), timeout=5) as client:
        server, _ = listener.accept()
        with server:
            server.settimeout(5)
            client.sendall(b"ping")
            out.append(server.recv(4))
    out.append(socket.getaddrinfo("127.0.0.1", 80, proto=socket.IPPROTO_TCP)[0][4])
    out.append(select.select([], [], [], 0.001))
    return out


EXPECTED = [True, False, False, 1, 7, 0, b"ping", ("127.0.0.1", 80), ([], [], [])]


def test_other_threads_are_not_guarded_during_a_run_and_nothing_is_after(real: Real) -> None:
    listener = real.listener
    listener.settimeout(5)
    in_run, done = threading.Event(), threading.Event()
    results: list[object] = []

    def helper() -> None:
        try:
            if in_run.wait(10):
                results.extend(_exercise(listener))
        except BaseException as exc:
            results.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=helper)
    thread.start()
    try:

        async def main() -> None:
            in_run.set()
            for _ in range(5_000_000):  # bounded: the helper is done in well under that
                if done.is_set():
                    break
                await asyncio.sleep(0.001)
            time.sleep(0.001)  # the run's own thread is still guarded

        with pytest.raises(SimulationError, match=r"time\.sleep"):
            Simulation().run(main())
    finally:
        in_run.set()
        thread.join(30)
    assert results == EXPECTED  # in the other thread, during the run
    assert _exercise(listener) == EXPECTED  # here, after the run


GUARDED = [
    (time, "sleep"),
    (threading.Thread, "start"),
    (threading.Thread, "join"),
    (threading.Event, "wait"),
    (threading.Condition, "wait"),
    (threading.Semaphore, "acquire"),
    (threading.Semaphore, "__enter__"),
    (queue.Queue, "get"),
    (concurrent.futures.Future, "result"),
    (subprocess.Popen, "__init__"),
    (os, "system"),
    (os, "fork"),
    (socket, "create_connection"),
    (socket, "getaddrinfo"),
    (socket.socket, "connect"),  # inherited from the C socket: not in socket.socket's dict
    (socket.socket, "accept"),
    (select, "select"),
    (selectors.EpollSelector, "select"),  # inherited from a private base
]


def _snapshot() -> list[object]:
    return [vars(owner).get(name, MISSING) for owner, name in GUARDED]


async def _refuse_then(ending: str) -> None:
    try:
        time.sleep(0.01)
    except SimulationError as exc:
        if ending == "error":
            raise ValueError("the trading logic failed") from exc
        if ending == "keyboard-interrupt":
            raise KeyboardInterrupt from exc
        if ending == "cancelled":
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)
        if ending == "timeout":
            await asyncio.sleep(10)
        raise


ENDINGS: list[tuple[str, type[BaseException], str | None]] = [
    ("refusal", SimulationError, r"time\.sleep"),
    ("error", ValueError, "trading logic"),
    ("keyboard-interrupt", KeyboardInterrupt, None),
    ("cancelled", asyncio.CancelledError, None),
    ("timeout", SimulationError, r"time\.sleep.*ended with Timeout"),
]


@pytest.mark.parametrize(("ending", "raised", "match"), ENDINGS, ids=[e[0] for e in ENDINGS])
def test_originals_are_restored_after_a_run_that_raised(
    ending: str, raised: type[BaseException], match: str | None
) -> None:
    before = _snapshot()
    sim = Simulation()
    with pytest.raises(raised, match=match):
        sim.run(_refuse_then(ending), timeout=1)
    assert _snapshot() == before
    if ending == "keyboard-interrupt":
        assert sim.closed  # an interrupt that went through the world ends it
        sim = Simulation()
    else:
        assert sim.loop is not None
        assert not sim.loop.is_running()  # the world stays, stopped, until close()
    time.sleep(0.001)  # works again here
    # and the next run of the same simulation is guarded again
    with pytest.raises(SimulationError, match=r"time\.sleep"):
        sim.run(_refuse_then("refusal"))
    assert _snapshot() == before
    sim.close()
    assert sim.loop is None
    assert _snapshot() == before


def test_a_run_inside_a_run_is_refused_and_leaves_the_outer_guards() -> None:
    async def main() -> None:
        inner = asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="runs do not nest"):
            Simulation().run(inner)
        inner.close()
        time.sleep(0.01)

    with pytest.raises(SimulationError, match=r"time\.sleep"):
        Simulation().run(main())


def test_nested_guards_end_in_order_and_only_the_last_restores() -> None:
    """Runs do not nest in one thread (asyncio), but the guards do: an inner guard's end
    leaves the outer's in force."""
    guards = importlib.import_module("transportkit.sim_backend._guards")
    before = _snapshot()
    with guards.RunGuard() as outer:
        with guards.RunGuard() as inner:
            assert guards.current() is inner
        assert guards.current() is outer
        with pytest.raises(SimulationError, match=r"time\.sleep"):
            time.sleep(0.01)
        assert len(outer.refused) == 1
        assert inner.refused == []
    assert guards.current() is None
    assert _snapshot() == before


def test_consecutive_runs_are_each_guarded() -> None:
    before = _snapshot()
    for seed in range(3):
        with pytest.raises(SimulationError, match=r"Thread\.start"):
            Simulation(seed).run(_start_a_thread())
        assert _snapshot() == before


async def _start_a_thread() -> None:
    threading.Thread(target=int).start()


def test_simulations_in_two_threads_at_once_are_each_guarded() -> None:
    """The first run to end must not lift the guards of the other, still running."""
    started = {"a": threading.Event(), "b": threading.Event()}
    a_done = threading.Event()
    outcome: dict[str, object] = {}

    def body(me: str, other: str) -> None:
        async def main() -> None:
            started[me].set()
            for _ in range(5_000_000):  # both runs overlap; bounded
                if started[other].is_set() and (me == "a" or a_done.is_set()):
                    break
                await asyncio.sleep(0.001)
            time.sleep(0.01)

        try:
            Simulation().run(main())
            outcome[me] = "not refused"
        except SimulationError as exc:
            outcome[me] = str(exc)
        finally:
            started[me].set()
            if me == "a":
                a_done.set()

    threads = [
        threading.Thread(target=body, args=("a", "b")),
        threading.Thread(target=body, args=("b", "a")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert set(outcome) == {"a", "b"}
    for text in outcome.values():
        assert isinstance(text, str)
        assert "time.sleep" in text


@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_hypothesis_drives_a_simulation_and_the_guards_hold(data: st.DataObject) -> None:
    sim = Simulation(seed=data.draw(st.integers(0, 100)))

    async def main() -> int:
        delays = [data.draw(st.floats(0, 1)) for _ in range(3)]
        for d in delays:
            await asyncio.sleep(d)
        time.sleep(0.001)
        return len(delays)

    with pytest.raises(SimulationError, match=r"time\.sleep"):
        sim.run(main())


def test_logging_warnings_print_and_async_generators_work_inside_a_run(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    async def ticks() -> Any:
        for i in range(10):
            yield i

    async def main() -> None:
        logging.getLogger("trader").warning("order %d sent", 7)
        with pytest.warns(UserWarning, match="stale"):
            warnings.warn("stale quote", UserWarning, stacklevel=1)
        print("fill")
        agen = ticks()
        assert await agen.__anext__() == 0
        del agen  # asyncio's finalizer closes it through call_soon_threadsafe
        gc.collect()
        await asyncio.sleep(0.1)
        time.sleep(0)  # a zero sleep only yields: not refused
        assert threading.Event().wait(0) is False  # polls never wait: not refused
        q: queue.Queue[int] = queue.Queue()
        q.put(1)
        assert q.get() == 1  # an item is there: no wait

    with caplog.at_level(logging.WARNING):
        Simulation().run(main())
    assert "order 7 sent" in caplog.text
    assert capsys.readouterr().out == "fill\n"


def test_a_child_forked_by_another_thread_during_a_run_starts_unguarded() -> None:
    """The child has no simulation running (its thread did not come along): it gets the
    originals back."""
    original_sleep = time.sleep
    in_run, done = threading.Event(), threading.Event()
    status: list[int] = []

    def forker() -> None:
        try:
            if not in_run.wait(10):
                return
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
                pid = os.fork()
            if pid == 0:  # pragma: no cover - the child: exit at once, with the verdict
                os._exit(0 if time.sleep is original_sleep else 1)
            status.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        finally:
            done.set()

    thread = threading.Thread(target=forker)
    thread.start()
    try:

        async def main() -> None:
            assert time.sleep is not original_sleep  # guarded here, during the run
            in_run.set()
            for _ in range(5_000_000):
                if done.is_set():
                    break
                await asyncio.sleep(0.001)

        Simulation().run(main())
    finally:
        in_run.set()
        thread.join(30)
    assert status == [0]
