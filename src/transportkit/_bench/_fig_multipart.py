"""The ``multipart`` figure of ``transportkit bench``: market-data messages of three frames.

The message is ``[topic][timestamp][data]`` (a 7-byte topic, an 8-byte timestamp,
1 KB of data), over PUSH/PULL and PUB/SUB (one subscriber) on ipc, with the sender
in the calling thread and the receiver in a thread of the same process, as in the
throughput figure (:mod:`transportkit._bench._throughput`). transportkit's blocking
``send(frames)``/``recv()`` run against raw pyzmq's ``send_multipart``/
``recv_multipart``: what a multipart-correct raw loop costs. Interleaved rounds;
the ratio is the median of each round's tk msgs/s over raw msgs/s.

The wall-time figure is backed by callgrind's instructions per message of both (one
send and one receive over an inproc PAIR in one thread: no waiting, no noise from
the machine's load; :mod:`transportkit._bench._instructions`, paths ``raw-md`` and
``tk-md``), when valgrind is installed and ``multipart_instructions`` is not 0.
"""

from __future__ import annotations

import functools
import shutil
from typing import Any, Final

from transportkit._bench._common import (
    BenchConfig,
    check_target,
    endpoint_for,
    interleaved,
    median,
    paired_ratio,
    temp_dir,
)

__all__ = ["PATTERNS", "TARGETS", "checks", "format_lines", "run"]

TARGETS: Final[dict[str, tuple[str, float]]] = {"multipart_vs_raw": (">=", 2.0)}

PATTERNS: Final = {"push_pull": False, "pub_sub": True}
"""Every pattern measured, and whether it is PUB/SUB."""
TRANSPORT = "ipc"
_INSTRUCTION_PATHS: Final = {"raw": "raw-md", "tk": "tk-md"}


def _instructions(config: BenchConfig) -> dict[str, Any]:
    if config.multipart_instructions <= 0:
        return {"measured": False, "reason": "not asked for (multipart_instructions is 0)"}
    if shutil.which("valgrind") is None:
        return {"measured": False, "reason": "valgrind is not installed"}
    from transportkit._bench._instructions import measure  # noqa: PLC0415

    counts = measure(list(_INSTRUCTION_PATHS.values()), config.multipart_instructions)
    per_message = {name: counts[path] for name, path in _INSTRUCTION_PATHS.items()}
    return {
        "measured": True,
        "messages_per_run": config.multipart_instructions,
        "per_message": per_message,
        "raw_vs_tk": per_message["raw"] / per_message["tk"] if per_message["tk"] else float("inf"),
    }


def run(config: BenchConfig) -> dict[str, Any]:
    """Measure both patterns with ``config``'s counts (``multipart_messages``, ``rounds``).

    Raises:
        RuntimeError: A receiver failed, got a message of the wrong shape, or did not
            get every message within ``timeout_s``.
    """
    import zmq  # noqa: PLC0415

    # Imported here: the figure modules are imported with the package, and
    # _instructions is also run as a program (python -m), which must find it unloaded.
    from transportkit._bench._instructions import MARKET_DATA  # noqa: PLC0415
    from transportkit._bench._throughput import _Ends, _run_stream  # noqa: PLC0415
    from transportkit.zmq_backend import ZmqNetwork  # noqa: PLC0415

    frames = list(MARKET_DATA)
    ctx: zmq.Context[Any] = zmq.Context()
    net = ZmqNetwork(context=ctx)
    timeout_ms = int(config.timeout_s * 1000)
    counter = iter(range(1_000_000))
    patterns: dict[str, Any] = {}
    try:
        with temp_dir() as tmp:
            for name, pubsub in PATTERNS.items():
                received: dict[str, list[int]] = {"raw": [], "tk": []}

                def one(impl: str, pubsub: bool = pubsub, received: Any = received) -> float:
                    last: list[Any] = []
                    rate = _run_stream(
                        _Ends(impl, ctx, net, timeout_ms),
                        endpoint_for(TRANSPORT, tmp, f"mp{next(counter)}"),
                        config.multipart_messages,
                        0,
                        1,
                        pubsub=pubsub,
                        frames=frames,
                        last=last,
                    )
                    if [list(map(bytes, m)) for m in last] != [frames]:
                        raise RuntimeError(f"{impl} received {last!r:.200}, not the message sent")
                    received[impl].append(config.multipart_messages)
                    return rate

                rounds = interleaved(
                    {"raw": functools.partial(one, "raw"), "tk": functools.partial(one, "tk")},
                    config.rounds,
                )
                patterns[name] = {
                    "msgs_per_s": {impl: median(values) for impl, values in rounds.items()},
                    "tk_vs_raw": paired_ratio(rounds["tk"], rounds["raw"]),
                    "received": {impl: sum(counts) for impl, counts in received.items()},
                    "per_round": rounds,
                }
    finally:
        net.close()
        ctx.destroy(linger=0)
    return {
        "message": "[topic][timestamp][data]",
        "frame_bytes": [len(f) for f in frames],
        "transport": TRANSPORT,
        "messages_per_run": config.multipart_messages,
        "rounds": config.rounds,
        "patterns": patterns,
        "instructions": _instructions(config),
    }


def format_lines(figure: dict[str, Any]) -> list[str]:
    """The figure as Markdown lines."""
    sizes = "+".join(map(str, figure["frame_bytes"]))
    lines = [
        "### Multipart market data",
        "",
        f"{figure['message']} ({sizes} B) over {figure['transport']}, "
        f"{figure['messages_per_run']} per run, {figure['rounds']} rounds: transportkit "
        "send(frames)/recv() against raw send_multipart/recv_multipart.",
        "",
        "| pattern | raw msgs/s | tk msgs/s | tk/raw |",
        "|---|---:|---:|---:|",
    ]
    for name, fig in figure["patterns"].items():
        rates = fig["msgs_per_s"]
        lines.append(
            f"| {name} | {rates['raw']:,.0f} | {rates['tk']:,.0f} | {fig['tk_vs_raw']:.2f} |"
        )
    instructions = figure["instructions"]
    lines.append("")
    if instructions["measured"]:
        per = instructions["per_message"]
        lines.append(
            f"Instructions per message (callgrind, send + receive, inproc): raw "
            f"{per['raw']:,.0f}, tk {per['tk']:,.0f} ({instructions['raw_vs_tk']:.2f}x fewer)."
        )
    else:
        lines.append(f"Instructions per message: not counted ({instructions['reason']}).")
    return [*lines, ""]


def checks(figure: dict[str, Any]) -> list[dict[str, Any]]:
    """The figure's rows of the report's targets: one per pattern."""
    return [
        check_target(TARGETS, "multipart_vs_raw", f"{name} tk/raw", fig["tk_vs_raw"])
        for name, fig in figure["patterns"].items()
    ]
