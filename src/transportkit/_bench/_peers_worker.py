"""One measurement of the ``peers`` figure, run in a fresh process.

``python -m transportkit._bench._peers_worker LIB WORKLOAD N [MODE]`` runs one workload
once on one library and prints one JSON line: ``wall_s`` (the run, from building the
library's world to its end, not the imports), ``events`` (what was counted: deliveries
for echo and fan-out, wake-ups for timers), ``expected`` (what the workload sent) and
``virtual_s`` (the virtual time at the end of the workload). A run whose count differs
from what was sent raises, and the process exits non-zero with the error on stderr.

The libraries (``LIB``):

- ``tk``: transportkit's sim backend, a :class:`~transportkit.sim_backend.Simulation`
  with ``Constant`` latency; ``MODE`` ``fifo`` (the default scheduler) or ``explore``
  (``scheduler="random"``, the exploring scheduler).
- ``seedloop``: its ``World`` (run with ``seedloop.replay`` for one seed) and its
  network, ``world.net`` endpoints bound ``reliable=True`` (in order, no loss).
  seedloop schedules FIFO only (``fifo``). Its network has no latency setting: every
  send draws a latency from module constants (1 to 20 ms); the run sets both bounds
  to the workload's latency and puts them back afterwards.
- ``simloop``: a ``SimLoop`` seeded with the run's seed, hosts of its ``SimNetwork``
  pinned with ``Host.create_task``, asyncio streams between them
  (``asyncio.start_server``/``open_connection``) with ``set_defaults(latency=...)``.
  Its only scheduler is the seeded one (``explore``).
- ``simloom``: ``simloom.run`` with a ``World``, its hosts (``Host.spawn``), asyncio
  streams over its network with ``set_latency``. Its schedulers are the random walk
  (the default, ``explore``) and PCT; it has no FIFO mode.

The workloads are the same code shape on every library, written here for each:
``echo`` (lockstep round trips of a 100-byte message between two hosts), ``fanout``
(one publisher, three subscribers, batches of 100 messages every virtual millisecond,
every subscriber checks it got every message in order) and ``timers`` (100 tasks
sleeping seeded, varied lengths, ``N`` wake-ups in all).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import random
import sys
from collections.abc import Callable, Coroutine
from typing import Any, Final

from transportkit import _wallclock as wallclock

__all__ = [
    "DEFAULT_MODE",
    "LIBS",
    "MODES",
    "WORKLOADS",
    "expected_events",
    "measure",
    "timer_plan",
]

SEED: Final = 7
LATENCY_S: Final = 200e-6
"""One-way latency of echo and fan-out, fixed."""
MESSAGE_BYTES: Final = 100
SUBSCRIBERS: Final = 3
BATCH: Final = 100
BATCH_GAP_S: Final = 1e-3
TIMER_TASKS: Final = 100
TIMER_LOW_S: Final = 10e-6
TIMER_HIGH_S: Final = 2e-3
SETTLE_S: Final = 1e-3
"""Virtual time the fan-out's subscribers get to connect before the first batch."""
_ECHO_PORT: Final = 5555
_FANOUT_PORT: Final = 5556

LIBS: Final = ("tk", "seedloop", "simloop", "simloom")
WORKLOADS: Final = ("echo", "fanout", "timers")
MODES: Final[dict[str, tuple[str, ...]]] = {
    "tk": ("fifo", "explore"),
    "seedloop": ("fifo",),
    "simloop": ("explore",),
    "simloom": ("explore",),
}
"""The scheduling modes each library has: ``fifo`` (ready callbacks in asyncio's
order) or ``explore`` (a seeded random choice among ready callbacks)."""
DEFAULT_MODE: Final = {"tk": "fifo", "seedloop": "fifo", "simloop": "explore", "simloom": "explore"}

Result = tuple[int, float]
"""What a workload returns: (events counted, virtual seconds at its end)."""


def _frame(seq: int) -> bytes:
    return seq.to_bytes(8, "big") + b"x" * (MESSAGE_BYTES - 8)


def _seq(frame: bytes) -> int:
    return int.from_bytes(frame[:8], "big")


def expected_events(workload: str, n: int) -> int:
    """What a complete run of ``workload`` with count ``n`` counts.

    Raises:
        ValueError: unknown workload.
    """
    if workload == "echo":
        return 2 * n  # a request and a reply delivered per round trip
    if workload == "fanout":
        return SUBSCRIBERS * n
    if workload == "timers":
        return sum(len(plan) for plan in timer_plan(n))
    raise ValueError(f"unknown workload {workload!r}; choose from {WORKLOADS}")


def timer_plan(wakeups: int) -> list[list[float]]:
    """The timers workload's sleeps: one list per task, ``wakeups`` in all.

    Lengths are uniform from 10 us to 2 ms, drawn from an RNG seeded with the figure's
    seed, so every library sleeps exactly the same lengths in the same tasks.
    """
    rng = random.Random(f"transportkit.peers.timers/{SEED}")
    tasks = min(TIMER_TASKS, max(1, wakeups))
    base, extra = divmod(wakeups, tasks)
    return [
        [rng.uniform(TIMER_LOW_S, TIMER_HIGH_S) for _ in range(base + (1 if i < extra else 0))]
        for i in range(tasks)
    ]


def _now() -> float:
    return asyncio.get_running_loop().time()


async def _sleepers(plan: list[list[float]]) -> Result:
    """The timers workload on whatever loop runs it: plain ``asyncio.sleep``."""
    woken = [0]

    async def sleeper(lengths: list[float]) -> None:
        for length in lengths:
            await asyncio.sleep(length)
            woken[0] += 1

    await asyncio.gather(*(sleeper(lengths) for lengths in plan))
    return woken[0], _now()


# --- transportkit ------------------------------------------------------------------


def _tk_simulation(mode: str) -> Any:
    from transportkit.sim_backend import Constant, Simulation  # noqa: PLC0415

    return Simulation(
        seed=SEED, latency=Constant(LATENCY_S), scheduler="random" if mode == "explore" else "fifo"
    )


def _tk_echo(n: int, mode: str) -> Result:
    sim = _tk_simulation(mode)
    client, server = sim.node("client"), sim.node("server")

    async def main() -> Result:
        echo_side = server.pair(bind=f"tcp://server:{_ECHO_PORT}")
        asker = client.pair(connect=f"tcp://server:{_ECHO_PORT}")

        async def serve() -> int:
            for _ in range(n):
                await echo_side.send(await echo_side.recv())
            return n

        task = server.spawn(serve())
        replies = 0
        for i in range(n):
            await asker.send([_frame(i)])
            reply = await asker.recv()
            if _seq(reply[0]) != i:
                raise RuntimeError(f"echo: reply {_seq(reply[0])} to request {i}")
            replies += 1
        return await task + replies, _now()

    with sim:
        result: Result = sim.run(main())
    return result


def _tk_fanout(n: int, mode: str) -> Result:
    from transportkit._options import SocketOptions  # noqa: PLC0415

    unlimited = SocketOptions(sndhwm=0, rcvhwm=0)
    sim = _tk_simulation(mode)
    publisher_node = sim.node("publisher")
    nodes = [sim.node(f"subscriber{i}") for i in range(SUBSCRIBERS)]

    async def main() -> Result:
        pub = publisher_node.publisher(bind=f"tcp://publisher:{_FANOUT_PORT}", options=unlimited)
        subs = [
            node.subscriber(connect=f"tcp://publisher:{_FANOUT_PORT}", options=unlimited)
            for node in nodes
        ]

        async def receive(sub: Any) -> int:
            for i in range(n):
                got = _seq((await sub.recv())[0])
                if got != i:
                    raise RuntimeError(f"fan-out: message {got} where {i} was due")
            return n

        tasks = [node.spawn(receive(sub)) for node, sub in zip(nodes, subs, strict=True)]
        await asyncio.sleep(SETTLE_S)
        for start in range(0, n, BATCH):
            for i in range(start, min(start + BATCH, n)):
                await pub.send([_frame(i)])
            await asyncio.sleep(BATCH_GAP_S)
        counts = await asyncio.gather(*tasks)
        return sum(counts), _now()

    with sim:
        result: Result = sim.run(main())
    return result


def _tk_timers(n: int, mode: str) -> Result:
    sim = _tk_simulation(mode)
    with sim:
        result: Result = sim.run(_sleepers(timer_plan(n)))
    return result


# --- seedloop ----------------------------------------------------------------------


def _seedloop_run(scenario: Callable[[Any], Coroutine[Any, Any, Result]]) -> Result:
    import seedloop  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
    from seedloop import _net  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    out: list[Result] = []

    async def wrapped(world: Any) -> None:
        out.append(await scenario(world))

    saved = (_net._LAT_MIN, _net._LAT_MAX)
    _net._LAT_MIN = _net._LAT_MAX = LATENCY_S  # no per-link latency setting: fix both bounds
    try:
        seedloop.replay(wrapped, seed=SEED)
    finally:
        _net._LAT_MIN, _net._LAT_MAX = saved
    return out[0]


def _seedloop_echo(n: int, mode: str) -> Result:
    del mode

    async def scenario(world: Any) -> Result:
        client = world.net.bind(1, reliable=True)
        server = world.net.bind(2, reliable=True)

        async def serve() -> int:
            for _ in range(n):
                src, msg = await server.recv()
                await server.send(src, msg)
            return n

        task = asyncio.ensure_future(serve())
        replies = 0
        for i in range(n):
            await client.send(2, _frame(i))
            _, reply = await client.recv()
            if _seq(reply) != i:
                raise RuntimeError(f"echo: reply {_seq(reply)} to request {i}")
            replies += 1
        return await task + replies, _now()

    return _seedloop_run(scenario)


def _seedloop_fanout(n: int, mode: str) -> Result:
    del mode

    async def scenario(world: Any) -> Result:
        publisher = world.net.bind(0, reliable=True)
        addresses = list(range(1, SUBSCRIBERS + 1))
        subs = [world.net.bind(address, reliable=True) for address in addresses]

        async def receive(sub: Any) -> int:
            for i in range(n):
                _, msg = await sub.recv()
                if _seq(msg) != i:
                    raise RuntimeError(f"fan-out: message {_seq(msg)} where {i} was due")
            return n

        tasks = [asyncio.ensure_future(receive(sub)) for sub in subs]
        await asyncio.sleep(SETTLE_S)
        for start in range(0, n, BATCH):
            for i in range(start, min(start + BATCH, n)):
                frame = _frame(i)
                for address in addresses:
                    await publisher.send(address, frame)
            await asyncio.sleep(BATCH_GAP_S)
        counts = await asyncio.gather(*tasks)
        return sum(counts), _now()

    return _seedloop_run(scenario)


def _seedloop_timers(n: int, mode: str) -> Result:
    del mode
    plan = timer_plan(n)

    async def scenario(world: Any) -> Result:
        del world
        return await _sleepers(plan)

    return _seedloop_run(scenario)


# --- asyncio streams, for simloop and simloom -----------------------------------------

Spawn = Callable[[str, Callable[[], Coroutine[Any, Any, Any]]], "asyncio.Task[Any]"]
"""Start a coroutine (from its factory) pinned to the named host."""


async def _streams_echo(n: int, spawn: Spawn) -> Result:
    listening = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(n):
                writer.write(await reader.readexactly(MESSAGE_BYTES))
        finally:
            writer.close()

    async def server() -> asyncio.AbstractServer:
        srv = await asyncio.start_server(handle, "server", _ECHO_PORT)
        listening.set()
        return srv

    async def client() -> int:
        await listening.wait()
        reader, writer = await asyncio.open_connection("server", _ECHO_PORT)
        replies = 0
        for i in range(n):
            writer.write(_frame(i))
            reply = await reader.readexactly(MESSAGE_BYTES)
            if _seq(reply) != i:
                raise RuntimeError(f"echo: reply {_seq(reply)} to request {i}")
            replies += 1
        writer.close()
        return replies

    srv_task = spawn("server", server)
    replies = await spawn("client", client)
    srv = await srv_task
    srv.close()
    return 2 * replies, _now()


async def _streams_fanout(n: int, spawn: Spawn) -> Result:
    writers: list[asyncio.StreamWriter] = []
    all_connected = asyncio.Event()
    listening = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        del reader
        writers.append(writer)
        if len(writers) == SUBSCRIBERS:
            all_connected.set()

    async def publisher() -> asyncio.AbstractServer:
        srv = await asyncio.start_server(handle, "publisher", _FANOUT_PORT)
        listening.set()
        await all_connected.wait()
        await asyncio.sleep(SETTLE_S)
        for start in range(0, n, BATCH):
            for i in range(start, min(start + BATCH, n)):
                frame = _frame(i)
                for writer in writers:
                    writer.write(frame)
            await asyncio.sleep(BATCH_GAP_S)
        return srv

    async def subscriber() -> int:
        await listening.wait()
        reader, writer = await asyncio.open_connection("publisher", _FANOUT_PORT)
        for i in range(n):
            got = _seq(await reader.readexactly(MESSAGE_BYTES))
            if got != i:
                raise RuntimeError(f"fan-out: message {got} where {i} was due")
        writer.close()
        return n

    pub_task = spawn("publisher", publisher)
    sub_tasks = [spawn(f"subscriber{i}", subscriber) for i in range(SUBSCRIBERS)]
    counts = await asyncio.gather(*sub_tasks)
    srv = await pub_task
    for writer in writers:
        writer.close()
    srv.close()
    return sum(counts), _now()


def _simloop_run(workload: str, n: int) -> Result:
    import simloop  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    loop = simloop.SimLoop(SEED)
    net = loop.net
    net.set_defaults(latency=(LATENCY_S, LATENCY_S))

    def spawn(host: str, factory: Callable[[], Coroutine[Any, Any, Any]]) -> asyncio.Task[Any]:
        return net.host(host).create_task(factory())  # type: ignore[no-any-return,unused-ignore]

    async def main() -> Result:
        if workload == "echo":
            return await _streams_echo(n, spawn)
        if workload == "fanout":
            return await _streams_fanout(n, spawn)
        return await _sleepers(timer_plan(n))

    try:
        return loop.run_until_complete(main())  # type: ignore[no-any-return,unused-ignore]
    finally:
        loop.close()


def _simloom_run(workload: str, n: int) -> Result:
    import simloom  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415

    async def main(world: Any) -> Result:
        world.net.set_latency(LATENCY_S, LATENCY_S)

        def spawn(host: str, factory: Callable[[], Coroutine[Any, Any, Any]]) -> asyncio.Task[Any]:
            return world.host(host).spawn(factory)  # type: ignore[no-any-return,unused-ignore]

        if workload == "echo":
            return await _streams_echo(n, spawn)
        if workload == "fanout":
            return await _streams_fanout(n, spawn)
        return await _sleepers(timer_plan(n))

    result = simloom.run(main, seed=SEED, scheduler="random")
    return result.value  # type: ignore[no-any-return,unused-ignore]


_PRELOAD: Final = {
    "tk": ("transportkit.sim_backend", "transportkit._options"),
    "seedloop": ("seedloop",),
    "simloop": ("simloop",),
    "simloom": ("simloom",),
}


def _preload(lib: str) -> None:
    """Import ``lib`` before the clock starts: the figure times runs, not imports."""
    for name in _PRELOAD[lib]:
        importlib.import_module(name)


_RUNNERS: Final[dict[tuple[str, str], Callable[[int, str], Result]]] = {
    ("tk", "echo"): _tk_echo,
    ("tk", "fanout"): _tk_fanout,
    ("tk", "timers"): _tk_timers,
    ("seedloop", "echo"): _seedloop_echo,
    ("seedloop", "fanout"): _seedloop_fanout,
    ("seedloop", "timers"): _seedloop_timers,
    **{
        ("simloop", w): (lambda n, mode, w=w: _simloop_run(w, n))  # type: ignore[misc,unused-ignore]
        for w in WORKLOADS
    },
    **{
        ("simloom", w): (lambda n, mode, w=w: _simloom_run(w, n))  # type: ignore[misc,unused-ignore]
        for w in WORKLOADS
    },
}


def measure(lib: str, workload: str, n: int, mode: str | None = None) -> dict[str, Any]:
    """Run ``workload`` with count ``n`` once on ``lib`` in this process.

    Returns:
        ``lib``, ``workload``, ``mode``, ``n``, ``wall_s``, ``events``, ``expected``,
        ``virtual_s``.

    Raises:
        ValueError: unknown library, workload or mode, or ``n`` < 1.
        RuntimeError: the run counted other than what it sent (a message missing or
            out of order).
        ImportError: the peer library is not installed.
    """
    if lib not in LIBS:
        raise ValueError(f"unknown library {lib!r}; choose from {LIBS}")
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; choose from {WORKLOADS}")
    mode = DEFAULT_MODE[lib] if mode is None else mode
    if mode not in MODES[lib]:
        raise ValueError(f"{lib} has no mode {mode!r}; it has {MODES[lib]}")
    if n < 1:
        raise ValueError(f"the count must be at least 1, got {n}")
    runner = _RUNNERS[lib, workload]
    _preload(lib)
    start = wallclock.perf_counter()
    events, virtual_s = runner(n, mode)
    wall_s = wallclock.perf_counter() - start
    expected = expected_events(workload, n)
    if events != expected:
        raise RuntimeError(f"{lib} {workload}: counted {events} of {expected} events")
    return {
        "lib": lib,
        "workload": workload,
        "mode": mode,
        "n": n,
        "wall_s": wall_s,
        "events": events,
        "expected": expected,
        "virtual_s": virtual_s,
    }


def main(argv: list[str]) -> int:
    """The command line: ``LIB WORKLOAD N [MODE]``; one JSON line on stdout."""
    if len(argv) not in (3, 4):
        print("usage: python -m transportkit._bench._peers_worker LIB WORKLOAD N [MODE]")
        return 2
    lib, workload, count = argv[:3]
    mode = argv[3] if len(argv) == 4 else None
    print(json.dumps(measure(lib, workload, int(count), mode)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
