"""Throughput of 1 KB messages (PUSH/PULL, PUB/SUB) and of 1 MB messages (zero-copy).

Senders run in the calling thread, receivers in threads of the same process, over
ipc unless said otherwise. A run's rate is messages divided by
the time from the first send to the last receive (the slowest subscriber's).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from transportkit import _wallclock as wallclock
from transportkit._bench._common import (
    BenchConfig,
    endpoint_for,
    interleaved,
    median,
    paired_ratio,
    temp_dir,
)
from transportkit._kinds import SocketKind
from transportkit._options import SocketOptions
from transportkit.zmq_backend import ZmqNetwork

__all__ = ["run_throughput", "run_zerocopy"]

SMALL = 1024
LARGE = 1024 * 1024
SUBSCRIBERS = 3
_PROBE_EVERY_S = 0.002


class _Ends:
    """Makes the raw or the transportkit sockets of one run, and closes them."""

    def __init__(self, impl: str, ctx: zmq.Context[Any], net: ZmqNetwork, timeout_ms: int):
        self.impl = impl
        self._ctx = ctx
        self._net = net
        self._timeout_ms = timeout_ms
        self._sockets: list[Any] = []

    def make(self, kind: SocketKind, endpoint: str, *, bind: bool) -> Any:
        if self.impl == "raw":
            sock = self._ctx.socket(getattr(zmq, kind.value))
            for option, value in (
                (zmq.LINGER, 0),
                (zmq.SNDHWM, 0),
                (zmq.RCVHWM, 0),
                (zmq.RCVTIMEO, self._timeout_ms),
                (zmq.SNDTIMEO, self._timeout_ms),
            ):
                sock.setsockopt(option, value)
            if kind is SocketKind.SUB:
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            if bind:
                sock.bind(endpoint)
                endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                sock.connect(endpoint)
        else:
            options = SocketOptions(
                sndhwm=0, rcvhwm=0, rcvtimeo=self._timeout_ms, sndtimeo=self._timeout_ms
            )
            sock = self._net.blocking(kind, options=options)
            if kind is SocketKind.SUB:
                sock.subscribe(b"")
            if bind:
                endpoint = sock.bind(endpoint)
            else:
                sock.connect(endpoint)
        self._sockets.append(sock)
        return sock, endpoint

    def close(self) -> None:
        for sock in self._sockets:
            sock.close() if self.impl == "tk" else sock.close(linger=0)


def _sender(
    impl: str, sock: Any, *, zerocopy: bool = False, copy: bool = True, multipart: bool = False
) -> Callable[[Any], None]:
    if multipart:
        # a list of frames: raw pyzmq's multipart-correct call, or transportkit's one
        return sock.send_multipart if impl == "raw" else sock.send  # type: ignore[no-any-return]
    if impl == "raw":
        if zerocopy:
            return lambda payload: sock.send(payload, copy=False)
        return sock.send  # type: ignore[no-any-return]
    if not copy:
        return lambda payload: sock.send([payload], copy=False)
    return lambda payload: sock.send([payload])


def _receiver(
    impl: str, sock: Any, *, zerocopy: bool = False, multipart: bool = False
) -> Callable[[], Any]:
    if multipart:
        return sock.recv_multipart if impl == "raw" else sock.recv  # type: ignore[no-any-return]
    if impl == "raw":
        return (lambda: sock.recv(copy=False)) if zerocopy else sock.recv
    return sock.recv_buffers if zerocopy else sock.recv  # type: ignore[no-any-return]


def _run_stream(
    ends: _Ends,
    endpoint: str,
    count: int,
    size: int,
    receivers: int,
    *,
    pubsub: bool,
    zerocopy: bool = False,
    copy: bool = True,
    frames: list[bytes] | None = None,
    last: list[Any] | None = None,
) -> float:
    """Messages per second of one run: ``count`` messages of ``size`` bytes.

    With ``frames``, each message is those frames instead (sent and received by the
    multipart calls: raw pyzmq's ``send_multipart``/``recv_multipart``), and the last
    message each receiver got is appended to ``last``.
    """
    multipart = frames is not None
    out_kind, in_kind = (
        (SocketKind.PUB, SocketKind.SUB) if pubsub else (SocketKind.PUSH, SocketKind.PULL)
    )
    try:
        sender, resolved = ends.make(out_kind, endpoint, bind=True)
        inputs = [ends.make(in_kind, resolved, bind=False)[0] for _ in range(receivers)]
        ready = [threading.Event() for _ in inputs]
        finished: list[float] = []
        errors: list[BaseException] = []
        payload: Any = frames if multipart else b"D" * size
        send = _sender(ends.impl, sender, zerocopy=zerocopy, copy=copy, multipart=multipart)

        def drain(sock: Any, seen: threading.Event) -> None:
            recv = _receiver(ends.impl, sock, zerocopy=zerocopy, multipart=multipart)
            try:
                got = 0
                msg = None
                while got < count:
                    msg = recv()
                    if _is_probe(msg):
                        seen.set()
                        continue
                    got += 1
                finished.append(wallclock.perf_counter())
                if last is not None:
                    last.append(msg)
            except BaseException as exc:  # reported by the sender
                errors.append(exc)

        threads = [
            threading.Thread(target=drain, args=(sock, seen), daemon=True)
            for sock, seen in zip(inputs, ready, strict=True)
        ]
        for thread in threads:
            thread.start()
        deadline = wallclock.monotonic() + ends._timeout_ms / 1000
        probe_send = _sender(ends.impl, sender)
        while not all(seen.is_set() for seen in ready):
            if errors or wallclock.monotonic() > deadline:
                raise RuntimeError(f"receivers never connected: {errors}")
            if pubsub or not any(seen.is_set() for seen in ready):
                probe_send(b"P")
            if not pubsub:
                # PUSH round-robins: one probe per receiver reaches them all.
                for _ in range(receivers - 1):
                    probe_send(b"P")
            time.sleep(_PROBE_EVERY_S)
        start = wallclock.perf_counter()
        for _ in range(count):
            send(payload)
        for thread in threads:
            thread.join(max(0.0, deadline - wallclock.monotonic()) + ends._timeout_ms / 1000)
        if errors or len(finished) != receivers:
            raise RuntimeError(f"a receiver failed or timed out: {errors}")
        return count / (max(finished) - start)
    finally:
        ends.close()


def _is_probe(msg: Any) -> bool:
    frame = msg[0] if isinstance(msg, list) else msg
    return len(frame) == 1


def _compare(
    config: BenchConfig,
    runs: dict[str, Callable[[], float]],
    reference: str,
) -> dict[str, Any]:
    rounds = interleaved(runs, config.rounds)
    return {
        "msgs_per_s": {name: median(values) for name, values in rounds.items()},
        "ratios": {
            f"{name}_vs_{reference}": paired_ratio(values, rounds[reference])
            for name, values in rounds.items()
            if name != reference
        },
        "rounds": rounds,
    }


def _setup(config: BenchConfig) -> tuple[zmq.Context[Any], ZmqNetwork, int]:
    ctx: zmq.Context[Any] = zmq.Context()
    return ctx, ZmqNetwork(context=ctx), int(config.timeout_s * 1000)


def run_throughput(config: BenchConfig, transport: str = "ipc") -> dict[str, Any]:
    """1 KB messages per second, raw pyzmq against transportkit's blocking sockets."""
    ctx, net, timeout_ms = _setup(config)
    counter = iter(range(1_000_000))
    try:
        with temp_dir() as tmp:
            figures: dict[str, Any] = {}
            for name, pubsub, receivers in (
                ("push_pull", False, 1),
                ("pub_sub_1", True, 1),
                (f"pub_sub_{SUBSCRIBERS}", True, SUBSCRIBERS),
            ):

                def run(impl: str, pubsub: bool = pubsub, receivers: int = receivers) -> float:
                    endpoint = endpoint_for(transport, tmp, f"tp{next(counter)}")
                    ends = _Ends(impl, ctx, net, timeout_ms)
                    return _run_stream(
                        ends,
                        endpoint,
                        config.throughput_messages,
                        SMALL,
                        receivers,
                        pubsub=pubsub,
                    )

                figures[name] = _compare(
                    config,
                    {"raw": functools.partial(run, "raw"), "tk": functools.partial(run, "tk")},
                    "raw",
                )
            return {
                "message_bytes": SMALL,
                "messages_per_run": config.throughput_messages,
                "transport": transport,
                "figures": figures,
            }
    finally:
        net.close()
        ctx.destroy(linger=0)


def run_zerocopy(
    config: BenchConfig, transports: tuple[str, ...] = ("inproc", "ipc")
) -> dict[str, Any]:
    """1 MB PUSH/PULL messages per second: transportkit zero-copy, copying, raw copy=False."""
    ctx, net, timeout_ms = _setup(config)
    counter = iter(range(1_000_000))
    try:
        with temp_dir() as tmp:
            figures: dict[str, Any] = {}
            for transport in transports:

                def run(impl: str, zerocopy: bool, transport: str = transport) -> float:
                    endpoint = endpoint_for(transport, tmp, f"zc{next(counter)}")
                    ends = _Ends(impl, ctx, net, timeout_ms)
                    return _run_stream(
                        ends,
                        endpoint,
                        config.zerocopy_messages,
                        LARGE,
                        1,
                        pubsub=False,
                        zerocopy=zerocopy,
                        copy=not zerocopy,
                    )

                result = _compare(
                    config,
                    {
                        "tk_copy": functools.partial(run, "tk", False),
                        "tk_zerocopy": functools.partial(run, "tk", True),
                        "raw_zerocopy": functools.partial(run, "raw", True),
                        "raw_copy": functools.partial(run, "raw", False),
                    },
                    "tk_copy",
                )
                zc = result["rounds"]
                result["ratios"]["tk_zerocopy_vs_raw_zerocopy"] = paired_ratio(
                    zc["tk_zerocopy"], zc["raw_zerocopy"]
                )
                figures[transport] = result
            return {
                "message_bytes": LARGE,
                "messages_per_run": config.zerocopy_messages,
                "figures": figures,
            }
    finally:
        net.close()
        ctx.destroy(linger=0)
