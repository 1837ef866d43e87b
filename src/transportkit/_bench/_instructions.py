"""CPU instructions per message, counted by callgrind.

Run ``python -m transportkit._bench._instructions [PATH ...]`` (needs valgrind). Each
path sends and receives a 100-byte message (the ``*-md`` ones the market-data message
:data:`MARKET_DATA`) through an inproc PAIR in one thread, so
that nothing waits and the count is the CPU cost of the calls alone. It runs twice
under ``valgrind --tool=callgrind``, with ``N`` and ``2N`` messages: the difference
divided by ``N`` cancels the interpreter's start-up. Unlike wall time, these counts
repeat from run to run, to within about 1% (memory layout still varies).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Final

PATHS: Final = {
    "raw": "raw pyzmq send(bytes) + recv() (single frame)",
    "tk": "transportkit blocking send([bytes]) + recv()",
    "tk-pure": "the same with TRANSPORTKIT_PURE_PYTHON=1",
    "tk-3": "transportkit blocking send of 3 frames + recv()",
    "raw-multipart": "raw pyzmq send_multipart([bytes]) + recv_multipart()",
    "raw-md": "raw pyzmq send_multipart + recv_multipart of [topic][timestamp][1 KB data]",
    "tk-md": "transportkit blocking send + recv() of [topic][timestamp][1 KB data]",
    "tk-md-pure": "the same with TRANSPORTKIT_PURE_PYTHON=1",
}
"""Every measured path and what it is."""

MARKET_DATA: Final = (b"MD.AAPL", (1_700_000_000_123_456_789).to_bytes(8, "little"), b"D" * 1024)
"""The market-data message of the ``*-md`` paths: ``[topic][timestamp][data]``."""

_RUN_TIMEOUT_S = 1800
"""Seconds one run under callgrind may take (about 50x slower than without it)."""
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def _loop(path: str, count: int) -> None:
    """Send and receive ``count`` messages on ``path`` (run under callgrind)."""
    import zmq  # noqa: PLC0415

    from transportkit import SocketKind  # noqa: PLC0415
    from transportkit.zmq_backend import ZmqNetwork  # noqa: PLC0415

    payload = b"x" * 100
    market_data = list(MARKET_DATA)
    with ZmqNetwork() as net:
        if path.startswith("raw"):
            ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(net.context.underlying)
            a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
            a.linger = b.linger = 0
            a.bind("inproc://instructions")
            b.connect("inproc://instructions")
            step: Callable[[], object]
            if path == "raw":
                send, recv = a.send, b.recv

                def step() -> object:
                    send(payload)
                    return recv()

            else:
                send_m, recv_m = a.send_multipart, b.recv_multipart
                message = market_data if path == "raw-md" else [payload]

                def step() -> object:
                    send_m(message)
                    return recv_m()

            got: object = None
            for _ in range(count):
                got = step()
            a.close()
            b.close()
            _check(got, payload if path == "raw" else message, count)
            return
        ta = net.blocking(SocketKind.PAIR, bind="inproc://instructions")
        tb = net.blocking(SocketKind.PAIR, connect="inproc://instructions")
        message = [payload] * (3 if path == "tk-3" else 1)
        if path.startswith("tk-md"):
            message = market_data
        tsend, trecv = ta.send, tb.recv
        got = None
        for _ in range(count):
            tsend(message)
            got = trecv()
        ta.close()
        tb.close()
        _check(got, message, count)


def _check(got: object, sent: object, count: int) -> None:
    """Raise unless the last message received is the one sent (``count`` > 0)."""
    if count > 0 and got != sent:
        raise RuntimeError(f"received {got!r:.100}, sent {sent!r:.100}")


def callgrind_instructions(
    valgrind: str,
    module: str,
    worker_args: list[str],
    env: dict[str, str],
    *,
    worker_flag: str | None = "--worker",
) -> int:
    """CPU instructions of ``python -m MODULE --worker *WORKER_ARGS`` under callgrind
    (``worker_flag`` None: without ``--worker``).

    Raises:
        subprocess.CalledProcessError: The worker failed.
        subprocess.TimeoutExpired: It ran for more than 30 minutes.
        RuntimeError: callgrind reported no count.
    """
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [
                valgrind,
                "--tool=callgrind",
                f"--callgrind-out-file={tmp}/callgrind.out",
                sys.executable,
                "-m",
                module,
                *([] if worker_flag is None else [worker_flag]),
                *worker_args,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=_RUN_TIMEOUT_S,
        )
    found = _COLLECTED.findall(result.stderr)
    if not found:
        raise RuntimeError(f"no instruction count in callgrind's output: {result.stderr[-500:]}")
    return int(found[-1])


def _instructions(path: str, count: int, valgrind: str) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts every run
    env.pop("TRANSPORTKIT_PURE_PYTHON", None)
    if path.endswith("-pure"):
        env["TRANSPORTKIT_PURE_PYTHON"] = "1"
    return callgrind_instructions(
        valgrind, "transportkit._bench._instructions", [path, str(count)], env
    )


def measure(paths: list[str], count: int = 20_000) -> dict[str, float]:
    """Instructions per message of each of ``paths`` (see :data:`PATHS`).

    Raises:
        RuntimeError: valgrind is not installed, or callgrind reported no count.
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed")
    per_message = {}
    for path in paths:
        once = _instructions(path, count, valgrind)
        twice = _instructions(path, 2 * count, valgrind)
        per_message[path] = (twice - once) / count
    return per_message


def main(argv: list[str] | None = None) -> None:
    """Print the instructions per message of every path, and each one's ratio to raw."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker", nargs=2, metavar=("PATH", "COUNT"), help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=20_000, help="messages per run")
    parser.add_argument("paths", nargs="*", metavar="PATH", help=f"any of {', '.join(PATHS)}")
    args = parser.parse_args(argv)
    if args.worker:
        _loop(args.worker[0], int(args.worker[1]))
        return
    unknown = [path for path in args.paths if path not in PATHS]
    if unknown:
        parser.error(f"unknown path(s) {', '.join(unknown)}; known: {', '.join(PATHS)}")
    results = measure(args.paths or list(PATHS), args.count)
    raw = results.get("raw")
    for path, value in results.items():
        ratio = f" ({value / raw:.2f}x raw)" if raw else ""
        print(f"{path:14} {value:9,.0f} instructions per message{ratio}  {PATHS[path]}")


if __name__ == "__main__":
    main()
