"""The ``mmap`` figure: 1 MB regions of a memory-mapped file, sent without a copy.

PUSH/PULL over inproc and ipc, the receiver a thread of the same process, HWMs
unlimited. Each run sends ``mmap_messages`` regions (cycling over a 16 MB temporary
file, in the page cache before the first run) and its rate is messages divided by the
time from the first send to the last receive. Variants:

- ``tk_mapped``: :meth:`transportkit.zmq_backend.MappedFile.send` (a tracked
  zero-copy send, the mapping safe from unmapping while libzmq holds a region), received
  with ``recv_buffers()``;
- ``tk_copy``: the copying path, ``send([region])`` (libzmq copies the region) and
  ``recv()``;
- ``raw_zerocopy``: raw pyzmq ``send(region, copy=False)`` and ``recv(copy=False)``,
  with no tracking and no ownership (the unsafe reference).

Rounds are interleaved (:func:`transportkit._bench._common.interleaved`) and ratios
paired within each round. After each run the last region received is compared with
the file, byte for byte, outside the timed part.
"""

from __future__ import annotations

import functools
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import zmq

from transportkit import _wallclock as wallclock
from transportkit._bench._common import (
    BenchConfig,
    check_target,
    endpoint_for,
    interleaved,
    median,
    paired_ratio,
    temp_dir,
)
from transportkit._kinds import SocketKind
from transportkit._options import SocketOptions
from transportkit.zmq_backend import MappedFile, ZmqNetwork

__all__ = ["TARGETS", "checks", "format_lines", "run"]

TARGETS: Final[dict[str, tuple[str, float]]] = {
    "mmap_zerocopy_vs_copy": (">=", 2.0),
}

REGION: Final = 1 << 20
REGIONS: Final = 16
TRANSPORTS: Final = ("inproc", "ipc")
VARIANTS: Final = ("tk_mapped", "tk_copy", "raw_zerocopy")
_PROBE: Final = b"P"


class _Run:
    """One timed run of one variant: sockets made, used and closed."""

    def __init__(
        self,
        variant: str,
        *,
        ctx: zmq.Context[Any],
        net: ZmqNetwork,
        mapped: MappedFile,
        view: memoryview,
        timeout_ms: int,
    ) -> None:
        self.variant = variant
        self._ctx = ctx
        self._net = net
        self._mapped = mapped
        self._view = view
        self._timeout_ms = timeout_ms

    def _sockets(self, endpoint: str) -> tuple[Any, Any]:
        if self.variant == "raw_zerocopy":
            push, pull = self._ctx.socket(zmq.PUSH), self._ctx.socket(zmq.PULL)
            for sock in (push, pull):
                for option, value in (
                    (zmq.LINGER, 0),
                    (zmq.SNDHWM, 0),
                    (zmq.RCVHWM, 0),
                    (zmq.RCVTIMEO, self._timeout_ms),
                    (zmq.SNDTIMEO, self._timeout_ms),
                ):
                    sock.setsockopt(option, value)
            push.bind(endpoint)
            pull.connect(push.getsockopt_string(zmq.LAST_ENDPOINT))
            return push, pull
        options = SocketOptions(
            linger=0, sndhwm=0, rcvhwm=0, rcvtimeo=self._timeout_ms, sndtimeo=self._timeout_ms
        )
        push = self._net.blocking(SocketKind.PUSH, options=options)
        pull = self._net.blocking(SocketKind.PULL, options=options)
        pull.connect(push.bind(endpoint))
        return push, pull

    def _sender(self, push: Any) -> Callable[[int], object]:
        view = self._view
        if self.variant == "tk_mapped":
            mapped = self._mapped
            return lambda offset: mapped.send(push, offset, REGION)
        if self.variant == "tk_copy":
            return lambda offset: push.send([view[offset : offset + REGION]])
        return lambda offset: push.send(view[offset : offset + REGION], copy=False)

    def _receiver(self, pull: Any) -> Callable[[], bytes | memoryview]:
        if self.variant == "tk_mapped":
            return lambda: pull.recv_buffers()[0]
        if self.variant == "tk_copy":
            return lambda: pull.recv()[0]
        return lambda: pull.recv(copy=False).buffer

    def __call__(self, endpoint: str, count: int) -> dict[str, Any]:
        push, pull = self._sockets(endpoint)
        try:
            return self._measure(push, pull, count)
        finally:
            if self.variant == "raw_zerocopy":
                push.close(linger=0)
                pull.close(linger=0)
            else:
                push.close()
                pull.close()

    def _measure(self, push: Any, pull: Any, count: int) -> dict[str, Any]:
        ready = threading.Event()
        done: dict[str, Any] = {}
        receive = self._receiver(pull)

        def drain() -> None:
            try:
                first = receive()
                if bytes(first) != _PROBE:
                    raise RuntimeError(f"expected the probe, got {len(first)} bytes")
                ready.set()
                got = 0
                last: bytes | memoryview = b""
                while got < count:
                    last = receive()
                    if len(last) != REGION:
                        raise RuntimeError(f"a region of {len(last)} bytes")
                    got += 1
                done["end"] = wallclock.perf_counter()
                done["received"] = got
                done["last"] = bytes(last)
            except BaseException as exc:  # reported by the sender
                done["error"] = exc
                ready.set()

        thread = threading.Thread(target=drain, daemon=True)
        thread.start()
        if self.variant == "raw_zerocopy":
            push.send(_PROBE)
        else:
            push.send([_PROBE])
        if not ready.wait(self._timeout_ms / 1000) or "error" in done:
            raise RuntimeError(f"{self.variant}: the receiver never started: {done}")
        send = self._sender(push)
        offsets = [(i % REGIONS) * REGION for i in range(count)]
        start = wallclock.perf_counter()
        for offset in offsets:
            send(offset)
        thread.join(self._timeout_ms / 1000)
        if thread.is_alive() or "error" in done:
            raise RuntimeError(f"{self.variant}: a receive failed or timed out: {done}")
        last_offset = offsets[-1]
        intact = done["last"] == bytes(self._view[last_offset : last_offset + REGION])
        return {
            "msgs_per_s": count / (done["end"] - start),
            "received": done["received"],
            "intact": intact,
        }


def _endpoint(transport: str, tmp: Path, counter: Iterator[int]) -> str:
    return endpoint_for(transport, tmp, f"mm{next(counter)}")


def _one(measure: _Run, endpoint: Callable[[], str], count: int) -> dict[str, Any]:
    return measure(endpoint(), count)


def _unmap(raw_map: mmap.mmap, timeout_s: float) -> None:
    """Unmap the raw variant's mapping once pyzmq dropped its last frame of it.

    The raw ``copy=False`` sends keep no account of what libzmq still holds (the
    hazard :class:`~transportkit.zmq_backend.MappedFile` removes): ``mmap.close()``
    raises BufferError until pyzmq's collector thread has let go of every region.
    """
    deadline = wallclock.monotonic() + timeout_s
    while True:
        try:
            raw_map.close()
            return
        except BufferError:
            if wallclock.monotonic() >= deadline:
                raise
            time.sleep(0.001)


def _prepare_file(path: Path) -> None:
    with path.open("wb") as f:
        for i in range(REGIONS):
            f.write(bytes([i]) * 4096 + os.urandom(REGION - 4096))
    # Into the page cache: no run pays the first read from disk.
    path.read_bytes()


def run(config: BenchConfig) -> dict[str, Any]:
    """Measure the figure with ``config``'s counts (``mmap_messages`` per run)."""
    ctx: zmq.Context[Any] = zmq.Context()
    net = ZmqNetwork(context=ctx)
    timeout_ms = int(config.timeout_s * 1000)
    counter = iter(range(1_000_000))
    try:
        with temp_dir() as tmp:
            path = tmp / "regions.bin"
            _prepare_file(path)
            with path.open("rb") as f:
                raw_map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            view = memoryview(raw_map)
            mapped = MappedFile(path)
            figures: dict[str, Any] = {}
            try:
                for transport in TRANSPORTS:
                    variants: dict[str, Callable[[], dict[str, Any]]] = {
                        name: functools.partial(
                            _one,
                            _Run(
                                name,
                                ctx=ctx,
                                net=net,
                                mapped=mapped,
                                view=view,
                                timeout_ms=timeout_ms,
                            ),
                            functools.partial(_endpoint, transport, tmp, counter),
                            config.mmap_messages,
                        )
                        for name in VARIANTS
                    }
                    figures[transport] = _summary(interleaved(variants, config.rounds))
            finally:
                mapped.close(config.timeout_s)
                view.release()
                _unmap(raw_map, config.timeout_s)
    finally:
        net.close()
        ctx.destroy(linger=0)
    return {
        "message_bytes": REGION,
        "messages_per_run": config.mmap_messages,
        "file_bytes": REGION * REGIONS,
        "figures": figures,
    }


def _summary(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    rates = {name: [r["msgs_per_s"] for r in rounds] for name, rounds in results.items()}
    return {
        "msgs_per_s": {name: median(values) for name, values in rates.items()},
        "ratios": {
            "tk_mapped_vs_tk_copy": paired_ratio(rates["tk_mapped"], rates["tk_copy"]),
            "raw_zerocopy_vs_tk_copy": paired_ratio(rates["raw_zerocopy"], rates["tk_copy"]),
            "tk_mapped_vs_raw_zerocopy": paired_ratio(rates["tk_mapped"], rates["raw_zerocopy"]),
        },
        "received": {name: sum(r["received"] for r in rounds) for name, rounds in results.items()},
        "intact": all(r["intact"] for rounds in results.values() for r in rounds),
        "rounds": rates,
    }


def format_lines(figure: dict[str, Any]) -> list[str]:
    """The figure as Markdown lines."""
    lines = [
        f"### Memory-mapped file, {figure['message_bytes']} B regions, PUSH/PULL "
        f"({figure['messages_per_run']} per run)",
        "",
        "| transport | variant | msgs/s | ratios | regions intact |",
        "|---|---|---:|---|---|",
    ]
    for transport, fig in figure["figures"].items():
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in fig["ratios"].items())
        intact = "yes" if fig["intact"] else "NO"
        for i, (variant, value) in enumerate(fig["msgs_per_s"].items()):
            first = i == 0
            lines.append(
                f"| {transport} | {variant} | {value:,.0f} | {ratios if first else ''} | "
                f"{intact if first else ''} |"
            )
    return [*lines, ""]


def checks(figure: dict[str, Any]) -> list[dict[str, Any]]:
    """The figure's rows of the report's targets."""
    return [
        check_target(
            TARGETS,
            "mmap_zerocopy_vs_copy",
            f"{transport} tk mapped zero-copy/tk copy",
            fig["ratios"]["tk_mapped_vs_tk_copy"],
        )
        for transport, fig in figure["figures"].items()
    ]
