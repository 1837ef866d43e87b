"""The latency table: REQ/REP round trips of 100-byte messages.

Every variant talks to the same raw pyzmq REP echo: a process of its own for ipc and
tcp (:mod:`transportkit._bench._peer`), a thread for inproc (which needs one context).
Variants:

- ``raw`` / ``tk``: raw blocking pyzmq (``send``/``recv``) against transportkit's
  :class:`~transportkit.zmq_backend.BlockingSocket`;
- ``raw_async`` / ``tk_async``: raw ``zmq.asyncio`` against transportkit's asyncio
  requester;
- ``raw_spin`` / ``tk_spin``: busy-polling receives (non-blocking receives in a loop)
  against the same, on a transportkit socket made with ``spin=True``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

from transportkit import _wallclock as wallclock
from transportkit._bench._common import (
    BenchConfig,
    Percentiles,
    endpoint_for,
    interleaved,
    median,
    paired_ratio,
    percentiles,
    temp_dir,
)
from transportkit._kinds import SocketKind
from transportkit._options import SocketOptions
from transportkit.zmq_backend import ZmqNetwork

__all__ = ["TRANSPORTS", "VARIANTS", "run_latency"]

TRANSPORTS = ("inproc", "ipc", "tcp")
VARIANTS = ("raw", "tk", "raw_async", "tk_async", "raw_spin", "tk_spin")
MESSAGE_SIZE = 100
_PEER_START_S = 10.0

RoundTrip = Callable[[int], list[int]]


@contextmanager
def _thread_peer(ctx: zmq.Context[Any], endpoint: str) -> Iterator[str]:
    rep = ctx.socket(zmq.REP)
    rep.setsockopt(zmq.LINGER, 0)
    rep.setsockopt(zmq.RCVTIMEO, 100)
    rep.bind(endpoint)
    stop = threading.Event()

    def echo() -> None:
        recv, send = rep.recv, rep.send
        while not stop.is_set():
            try:
                send(recv())
            except zmq.Again:
                continue

    thread = threading.Thread(target=echo, name="tk-bench-echo", daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        stop.set()
        thread.join(5)
        rep.close(linger=0)


@contextmanager
def _process_peer(endpoint: str) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "transportkit._bench._peer", endpoint],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        import select  # noqa: PLC0415

        ready, _, _ = select.select([proc.stdout], [], [], _PEER_START_S)
        if not ready:
            raise RuntimeError(f"the echo peer did not start within {_PEER_START_S} s")
        resolved = proc.stdout.readline().strip()
        if not resolved:
            raise RuntimeError("the echo peer exited before binding")
        yield resolved
    finally:
        proc.kill()
        proc.wait(5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def _blocking(sock: Any, message: Any) -> RoundTrip:
    """Round trips of ``message`` on a blocking socket: raw pyzmq's (``message`` is
    the payload) or transportkit's (``message`` is ``[payload]``).
    """
    send, recv = sock.send, sock.recv
    clock = wallclock.perf_counter_ns

    def run(n: int) -> list[int]:
        samples: list[int] = []
        append = samples.append
        for _ in range(n):
            t0 = clock()
            send(message)
            recv()
            append(clock() - t0)
        return samples

    return run


def _spin_raw(sock: zmq.Socket[bytes], payload: bytes, timeout_s: float) -> RoundTrip:
    send, recv = sock.send, sock.recv
    clock = wallclock.perf_counter_ns
    noblock, again = zmq.NOBLOCK, zmq.Again
    monotonic = wallclock.monotonic

    def run(n: int) -> list[int]:
        samples: list[int] = []
        append = samples.append
        for _ in range(n):
            t0 = clock()
            send(payload)
            deadline = monotonic() + timeout_s
            while True:
                try:
                    recv(noblock)
                    break
                except again:
                    if monotonic() > deadline:
                        raise TimeoutError("spinning receive timed out") from None
            append(clock() - t0)
        return samples

    return run


def _async_runner(
    loop: asyncio.AbstractEventLoop,
    send: Callable[[Any], Any],
    recv: Callable[[], Any],
    message: Any,
    timeout_s: float,
) -> RoundTrip:
    clock = wallclock.perf_counter_ns

    async def rounds(n: int) -> list[int]:
        samples: list[int] = []
        append = samples.append
        for _ in range(n):
            t0 = clock()
            await send(message)
            await recv()
            append(clock() - t0)
        return samples

    def run(n: int) -> list[int]:
        return loop.run_until_complete(asyncio.wait_for(rounds(n), timeout_s))

    return run


_KEYS = ("p50_us", "p99_us", "p999_us")


def _measure(
    config: BenchConfig, runners: dict[str, RoundTrip]
) -> tuple[dict[str, Any], dict[str, list[Percentiles]]]:
    """Medians of rounds per variant, and every round's percentiles."""

    def timed(run: RoundTrip) -> Callable[[], Percentiles]:
        def one_round() -> Percentiles:
            run(config.warmup)
            return percentiles(run(config.latency_samples))

        return one_round

    rounds = interleaved({name: timed(run) for name, run in runners.items()}, config.rounds)
    result: dict[str, Any] = {}
    for name, values in rounds.items():
        result[name] = {key: median([_at(v, key) for v in values]) for key in _KEYS}
    return result, rounds


def _at(p: Percentiles, key: str) -> float:
    return {"p50_us": p.p50, "p99_us": p.p99, "p999_us": p.p999}[key]


def _one_transport(config: BenchConfig, transport: str, tmp: Path) -> dict[str, Any]:
    timeout_ms = int(config.timeout_s * 1000)
    payload = b"x" * MESSAGE_SIZE
    ctx: zmq.Context[Any] = zmq.Context()
    net = ZmqNetwork(context=ctx)
    loop = asyncio.new_event_loop()
    raw_sockets: list[Any] = []
    try:
        endpoint = endpoint_for(transport, tmp, "latency")
        peer = _thread_peer(ctx, endpoint) if transport == "inproc" else _process_peer(endpoint)
        with peer as resolved:

            def raw_req() -> Any:
                sock = ctx.socket(zmq.REQ)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
                sock.setsockopt(zmq.SNDTIMEO, timeout_ms)
                sock.connect(resolved)
                raw_sockets.append(sock)
                return sock

            options = SocketOptions(rcvtimeo=timeout_ms, sndtimeo=timeout_ms)
            tk = net.blocking(SocketKind.REQ, connect=resolved, options=options)
            tk_spin = net.blocking(SocketKind.REQ, connect=resolved, options=options, spin=True)

            async def make_async() -> tuple[Any, Any]:
                actx = zmq.asyncio.Context.shadow(ctx.underlying)
                raw = actx.socket(zmq.REQ)
                for option, value in (
                    (zmq.LINGER, 0),
                    (zmq.RCVTIMEO, timeout_ms),
                    (zmq.SNDTIMEO, timeout_ms),
                ):
                    raw.setsockopt(option, value)  # as the transportkit requester's
                raw.connect(resolved)
                raw_sockets.append(raw)
                return raw, net.requester(connect=resolved, options=options)

            raw_async, tk_async = loop.run_until_complete(make_async())
            runners: dict[str, RoundTrip] = {
                "raw": _blocking(raw_req(), payload),
                "tk": _blocking(tk, [payload]),
                "raw_async": _async_runner(
                    loop, raw_async.send, raw_async.recv, payload, config.timeout_s
                ),
                "tk_async": _async_runner(
                    loop, tk_async.send, tk_async.recv, [payload], config.timeout_s
                ),
                "raw_spin": _spin_raw(raw_req(), payload, config.timeout_s),
                "tk_spin": _blocking(tk_spin, [payload]),
            }
            result, rounds = _measure(config, runners)
    finally:
        for sock in raw_sockets:
            sock.close(linger=0)
        net.close()
        loop.close()
        ctx.destroy(linger=0)
    ratios: dict[str, Any] = {}
    for name, reference in (
        ("tk", "raw"),
        ("tk_async", "raw_async"),
        ("tk_spin", "raw_spin"),
        ("tk_spin_vs_tk", "tk"),
    ):
        measured = "tk_spin" if name == "tk_spin_vs_tk" else name
        ratios[name] = {
            key: paired_ratio(
                [_at(p, key) for p in rounds[measured]],
                [_at(p, key) for p in rounds[reference]],
            )
            for key in _KEYS
        }
    return {"absolute": result, "ratios": ratios}


def run_latency(config: BenchConfig, transports: tuple[str, ...] = TRANSPORTS) -> dict[str, Any]:
    """Round-trip percentiles (medians of rounds, microseconds) and ratios per transport."""
    with temp_dir() as tmp:
        return {
            "message_bytes": MESSAGE_SIZE,
            "samples_per_round": config.latency_samples,
            "rounds": config.rounds,
            "transports": {t: _one_transport(config, t, tmp) for t in transports},
        }
