"""Metrics and check inputs across the process boundary (nodes run as processes on zmq).

A child process running a node's components writes a *snapshot* of its
:class:`RunContext` to a JSON file, regularly and when it stops: stream counts,
counters, per-receiver deliveries and gaps, latency histograms (HDR, encoded), drop
counts, what each rate-driven source offered, component errors, the timeline,
and what the custom checks need (orders answered and processed, Clone maps, conflated
latest updates, publisher sequences).
At the end of the run the parent adds every snapshot to its own context with
:func:`merge`, so reports and invariants see one run. A snapshot is cumulative for one
child process (one incarnation of a node): the parent merges the last one of each.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hdrh.histogram import HdrHistogram

from transportkit.scenario._context import RunContext
from transportkit.scenario._metrics import Timeline
from transportkit.scenario._spec import ComponentSpec

__all__ = ["merge", "read_snapshot", "snapshot", "write_atomic"]

FORMAT = 2


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def _dropped(ctx: RunContext, stream: str) -> int | None:
    total: int | None = 0
    for sock in ctx.sockets.get(stream, []):
        count = sock.stats.dropped
        total = None if count is None or total is None else total + count
    return total


def _streams(ctx: RunContext) -> dict[str, Any]:
    out = {}
    for name, stream in ctx.metrics.streams.items():
        out[name] = {
            "pattern": stream.pattern,
            "sent": stream.sent,
            "failures": stream.failures,
            "dropped": _dropped(ctx, name),
            "counters": dict(stream.counters),
            "sent_by_topic": {t.decode("latin-1"): n for t, n in stream.sent_by_topic.items()},
            "load": None if stream.load is None else dataclasses.asdict(stream.load),
            "receivers": {
                r.name: {
                    "delivered": r.delivered,
                    "gaps": r.gaps,
                    "latency": (
                        r.latency.encode().decode("ascii") if r.latency.get_total_count() else None
                    ),
                }
                for r in stream.receivers.values()
            },
        }
    return out


def _objects(ctx: RunContext, specs: Iterable[ComponentSpec]) -> dict[str, Any]:
    """What the custom checks read from ``ctx.objects``, as plain data."""
    objects = ctx.objects
    kinds: dict[str, dict[str, Any]] = {
        "publisher": {},
        "clone_server": {},
        "clone_client": {},
        "conflating": {},
    }
    for spec in specs:
        live = objects.get(spec.name)
        if live is None:
            continue
        if spec.kind == "market_data_publisher":
            kinds["publisher"][spec.name] = dict(live)
        elif spec.kind == "clone_server":
            kinds["clone_server"][spec.name] = {_b64(k): _b64(v) for k, v in live.values.items()}
        elif spec.kind == "clone_client":
            kinds["clone_client"][spec.name] = {_b64(k): _b64(v) for k, v in live.state.items()}
        elif spec.kind == "conflating_subscriber":
            kinds["conflating"][spec.name] = {
                _b64(k): [_b64(bytes(f)) for f in message] for k, message in live.latest.items()
            }
    return {
        **kinds,
        "processed": {
            key: dict(value) for key, value in objects.items() if key.endswith(".processed")
        },
        "answered": {
            key: sorted(value) for key, value in objects.items() if key.endswith(".answered")
        },
        "pairs": {
            key: [list(pair) for pair in objects.get(key, [])]
            for key in ("clone.pairs", "conflation.pairs")
        },
    }


def snapshot(
    ctx: RunContext, specs: Iterable[ComponentSpec], *, flushed_at: float, final: bool
) -> dict[str, Any]:
    """Everything the parent needs from this process's run, as JSON-ready data.

    Args:
        ctx: The child's run context.
        specs: The components this process runs (their objects are exported).
        flushed_at: Seconds since the run began (for "lost after" in fault outcomes).
        final: True for the snapshot written as the process stops (on SIGTERM).
    """
    return {
        "format": FORMAT,
        "pid": os.getpid(),
        "flushed_at": flushed_at,
        "final": final,
        "streams": _streams(ctx),
        "errors": [list(error) for error in ctx.errors],
        "timeline": ctx.metrics.timeline.as_dict(),
        "objects": _objects(ctx, specs),
    }


def write_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a temporary file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def read_snapshot(path: Path) -> dict[str, Any] | None:
    """The snapshot at ``path``, or None when there is none (the child never flushed)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a metrics snapshot of format {FORMAT}")
    return data


def _merge_streams(ctx: RunContext, streams: Mapping[str, Any]) -> None:
    for name, data in streams.items():
        stream = ctx.metrics.stream(name, data["pattern"])
        stream.sent += data["sent"]
        stream.failures += data["failures"]
        stream.add_dropped(data["dropped"])
        stream.counters.update(data["counters"])
        stream.sent_by_topic.update(
            {t.encode("latin-1"): n for t, n in data["sent_by_topic"].items()}
        )
        load = data.get("load")
        if load is not None:
            stream.offer(load["rate"], closed_loop=load["closed_loop"]).add(
                load["offered"], load["seconds"], load["max_behind"]
            )
        for rname, rdata in data["receivers"].items():
            receipt = stream.receiver(rname)
            receipt.delivered += rdata["delivered"]
            receipt.gaps += rdata["gaps"]
            if rdata["latency"]:
                receipt.latency.add(HdrHistogram.decode(rdata["latency"].encode("ascii")))


def _merge_objects(ctx: RunContext, objects: Mapping[str, Any]) -> None:
    live = ctx.objects
    # Per component, the latest incarnation's state wins (merge in incarnation order).
    for name, sequence in objects["publisher"].items():
        live[name] = dict(sequence)
    for name, values in objects["clone_server"].items():
        live[name] = SimpleNamespace(values={_unb64(k): _unb64(v) for k, v in values.items()})
    for name, state in objects["clone_client"].items():
        live[name] = SimpleNamespace(state={_unb64(k): _unb64(v) for k, v in state.items()})
    for name, latest in objects["conflating"].items():
        live[name] = SimpleNamespace(
            latest={_unb64(k): [_unb64(f) for f in frames] for k, frames in latest.items()}
        )
    for key, counts in objects["processed"].items():
        processed: Counter[str] = live.setdefault(key, Counter())
        processed.update(counts)
    for key, ids in objects["answered"].items():
        answered: set[str] = live.setdefault(key, set())
        answered.update(ids)
    for key, pairs in objects["pairs"].items():
        known: list[tuple[str, str]] = live.setdefault(key, [])
        for a, b in pairs:
            if (a, b) not in known:
                known.append((a, b))


def merge(ctx: RunContext, data: Mapping[str, Any]) -> None:
    """Add one child's snapshot to the parent's context (counts add up, histograms
    merge, errors and timeline entries are appended, check inputs are restored).
    """
    _merge_streams(ctx, data["streams"])
    ctx.errors.extend((str(name), str(error)) for name, error in data["errors"])
    ctx.metrics.timeline.merge(Timeline.from_dict(data["timeline"]))
    _merge_objects(ctx, data["objects"])
