"""Measure how many messages real ipc and tcp hold in flight (libzmq through pyzmq).

Run by hand, not by the test suite's default run::

    .venv/bin/python -m tests.sim_backend.data.measure_kernel_buffers [--repeats N]

It writes ``kernel_buffers.json`` next to this file: for each case, the count measured
in each repetition and their min/median/max, and the kernel's buffer settings of the
machine it ran on. ``tests/sim_backend/test_sim_kernel_buffers.py`` compares the
simulator's numbers with this file (fast), and re-measures with :func:`measure` in a
slow test.

The cases:

- ``push_stalled``: a PUSH (SNDHWM ``hwm``) connected to a PULL (RCVHWM ``hwm``) that
  never reads, after one probe message went through (the connection is up). Count
  the sends accepted until one times out (SNDTIMEO 500 ms; a blocked send wakes as
  soon as libzmq's I/O thread frees pipe space): what fits in the two pipes, libzmq's
  I/O threads and the kernel's socket buffers. A static capacity, the quantity the
  simulator models.
- ``pub_paced``: a PUB to a SUB that does not read until the end, sending in chunks
  with 1 ms pauses for long enough to fill every buffer on the path; count what the
  SUB then receives. The same capacity seen by a PUB, which drops instead of blocking.
- ``pub_burst``: a PUB sending ``burst`` messages in a tight loop, then the SUB reads
  all it got. The count depends on how fast the sender runs against libzmq's I/O
  thread (libzmq's sending thread learns of freed pipe space only when it processes
  commands, at most every ``max_command_delay`` of 3,000,000 CPU ticks, about 1 ms):
  fewer than the capacity, at least SNDHWM + RCVHWM.

Each runs over ipc and tcp with message sizes 10 B, 1 KiB and 64 KiB, HWMs 1, 10, 100,
1000, with ZMQ_SNDBUF/ZMQ_RCVBUF left at the OS default and set to ``EXPLICIT_BUFFER``
bytes (libzmq applies them to tcp sockets only), and over inproc as the reference.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

DATA_FILE = Path(__file__).with_name("kernel_buffers.json")
SIZES = (10, 1024, 65536)
HWMS = (1, 10, 100, 1000)
TRANSPORTS = ("ipc", "tcp")
EXPLICIT_BUFFER = 32768
"""ZMQ_SNDBUF/ZMQ_RCVBUF bytes of the "explicit" cases (Linux doubles it for its
bookkeeping and turns tcp's autotuning off for that socket)."""
BURST = 10_000
"""Messages of a ``pub_burst``."""
STALL = 0.5
"""SNDTIMEO in seconds: a PUSH whose send times out counts as full."""
PACED_SECONDS = 1.5
"""Wall seconds a ``pub_paced`` run sends for."""
PACED_CHUNK_BYTES = 1 << 20
KIND_CASES = ("push_stalled", "pub_paced", "pub_burst")


@dataclass(frozen=True)
class Case:
    """One measured configuration."""

    kind: str
    transport: str
    size: int
    hwm: int
    buffers: int | None  # ZMQ_SNDBUF = ZMQ_RCVBUF bytes; None = OS default

    @property
    def key(self) -> str:
        """The case's name in the data file."""
        buf = "default" if self.buffers is None else str(self.buffers)
        return f"{self.kind}/{self.transport}/size={self.size}/hwm={self.hwm}/buf={buf}"


def cases() -> list[Case]:
    """Every case the data file holds, in a fixed order."""
    found = []
    for kind in KIND_CASES:
        for transport, size, hwm in itertools.product(TRANSPORTS, SIZES, HWMS):
            for buffers in (None, EXPLICIT_BUFFER):
                found.append(Case(kind, transport, size, hwm, buffers))
        for size, hwm in itertools.product(SIZES, HWMS):
            found.append(Case(kind, "inproc", size, hwm, None))
    return found


@contextmanager
def _endpoints(transport: str) -> Iterator[tuple[str, str | None]]:
    """(bind endpoint, connect endpoint or None: use the bound one)."""
    if transport == "inproc":
        yield f"inproc://kbuf-{time.monotonic_ns()}", None
    elif transport == "ipc":
        folder = tempfile.mkdtemp(prefix="tk-kbuf-")
        try:
            yield f"ipc://{folder}/s", None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        yield "tcp://127.0.0.1:*", None


def _socket(ctx: zmq.Context[zmq.Socket[bytes]], kind: int, case: Case) -> zmq.Socket[bytes]:
    sock = ctx.socket(kind)
    sock.linger = 0
    sock.sndhwm = case.hwm
    sock.rcvhwm = case.hwm
    sock.sndtimeo = int(STALL * 1000)
    if case.buffers is not None:
        sock.sndbuf = case.buffers
        sock.rcvbuf = case.buffers
    return sock


def _push_stalled(ctx: zmq.Context[zmq.Socket[bytes]], case: Case) -> int:
    payload = b"m" * case.size
    with _endpoints(case.transport) as (endpoint, _):
        pull = _socket(ctx, zmq.PULL, case)
        push = _socket(ctx, zmq.PUSH, case)
        try:
            pull.bind(endpoint)
            push.connect(pull.last_endpoint.decode())
            push.send(b"p")  # the connection is up once this probe arrives
            if not pull.poll(5000):
                raise RuntimeError("the PUSH never connected")
            pull.recv()
            accepted = 0
            while True:
                try:
                    push.send(payload, copy=case.size < 4096)
                except zmq.Again:
                    return accepted
                accepted += 1
        finally:
            push.close()
            pull.close()


def _subscribed_pair(
    ctx: zmq.Context[zmq.Socket[bytes]], case: Case, endpoint: str
) -> tuple[zmq.Socket[bytes], zmq.Socket[bytes]]:
    pub = _socket(ctx, zmq.PUB, case)
    sub = _socket(ctx, zmq.SUB, case)
    pub.bind(endpoint)
    sub.subscribe(b"")
    sub.connect(pub.last_endpoint.decode())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # past the slow joiner
        pub.send(b"p")
        if sub.poll(10):
            break
    else:
        raise RuntimeError("the subscription never arrived")
    time.sleep(0.05)
    while sub.poll(20):
        sub.recv()
    return pub, sub


def _drain(sub: zmq.Socket[bytes]) -> int:
    got = 0
    while sub.poll(200):
        while True:
            try:
                sub.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            got += 1
    return got


def _pub(ctx: zmq.Context[zmq.Socket[bytes]], case: Case) -> int:
    payload = b"m" * case.size
    copy = case.size < 4096
    with _endpoints(case.transport) as (endpoint, _):
        pub, sub = _subscribed_pair(ctx, case, endpoint)
        try:
            if case.kind == "pub_burst":
                for _ in range(BURST):
                    pub.send(payload, copy=copy)
            else:
                chunk = max(1, min(1000, PACED_CHUNK_BYTES // case.size))
                end = time.monotonic() + PACED_SECONDS
                while time.monotonic() < end:
                    for _ in range(chunk):
                        pub.send(payload, copy=copy)
                    time.sleep(0.001)
            time.sleep(0.1)
            return _drain(sub)
        finally:
            pub.close()
            sub.close()


def measure(case: Case) -> int:
    """One measurement of ``case`` on this machine (a fresh context each time)."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        if case.kind == "push_stalled":
            return _push_stalled(ctx, case)
        return _pub(ctx, case)
    finally:
        ctx.term()


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def kernel_settings() -> dict[str, str | None]:
    """The kernel's socket-buffer settings (Linux ``/proc/sys``)."""
    names = {
        "net.core.wmem_default": "/proc/sys/net/core/wmem_default",
        "net.core.rmem_default": "/proc/sys/net/core/rmem_default",
        "net.core.wmem_max": "/proc/sys/net/core/wmem_max",
        "net.core.rmem_max": "/proc/sys/net/core/rmem_max",
        "net.ipv4.tcp_wmem": "/proc/sys/net/ipv4/tcp_wmem",
        "net.ipv4.tcp_rmem": "/proc/sys/net/ipv4/tcp_rmem",
        "net.ipv4.tcp_adv_win_scale": "/proc/sys/net/ipv4/tcp_adv_win_scale",
        "net.ipv4.tcp_moderate_rcvbuf": "/proc/sys/net/ipv4/tcp_moderate_rcvbuf",
        "net.unix.max_dgram_qlen": "/proc/sys/net/unix/max_dgram_qlen",
    }
    found = {name: _read(path) for name, path in names.items()}
    for name in ("wmem_default", "rmem_default"):  # AF_UNIX sockets start from these
        found[f"unix stream {name} (from net.core.{name})"] = found[f"net.core.{name}"]
    return found


def summary(counts: list[int]) -> dict[str, Any]:
    """min/median/max of a case's repetitions, with the counts themselves."""
    return {
        "min": min(counts),
        "median": statistics.median_low(counts),
        "max": max(counts),
        "counts": counts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="substring of the case keys to run")
    parser.add_argument("--out", type=Path, default=DATA_FILE)
    parser.add_argument("--print", action="store_true", help="print, do not write")
    parser.add_argument(
        "--merge", action="store_true", help="update these cases in the existing file"
    )
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    if args.merge:
        results = json.loads(args.out.read_text())["cases"]
    started = time.monotonic()
    for case in cases():
        if args.only not in case.key:
            continue
        counts = [measure(case) for _ in range(args.repeats)]
        results[case.key] = summary(counts)
        print(f"{case.key:60s} {results[case.key]['counts']}", flush=True)
    if args.print:
        return 0
    data = {
        "about": (
            "Messages in flight on real sockets, measured by "
            "tests/sim_backend/data/measure_kernel_buffers.py (see its docstring)."
        ),
        "libzmq": zmq.zmq_version(),
        "pyzmq": zmq.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "kernel": kernel_settings(),
        "parameters": {
            "repeats": args.repeats,
            "explicit_buffer": EXPLICIT_BUFFER,
            "burst": BURST,
            "stall_seconds": STALL,
            "paced_seconds": PACED_SECONDS,
        },
        "wall_seconds": round(time.monotonic() - started, 1),
        "cases": results,
    }
    args.out.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
