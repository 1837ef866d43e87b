"""The ``limit`` figure of ``transportkit bench``: transportkit against libzmq alone, in C.

Two workloads of the bench run by a small C program (``_limit.c``, shipped in the
package) against the very libzmq pyzmq loaded, next to raw pyzmq and transportkit's
blocking socket, in interleaved rounds with paired ratios:

- **round trip**: REQ/REP of 100 B over ipc, P50/P99 from an HDR histogram. The
  three clients (the C program in its own process, raw pyzmq and transportkit in the
  bench's process) talk to the same peer: the C program's REP echo, in a process of
  its own. A C echo is the honest reference: with a Python echo every variant would
  carry the interpreter's cost on the far side, and the ratios would shrink towards 1.
- **throughput**: 1 KB PUSH/PULL over ipc, a sender and a receiver in two processes
  for all three variants (C and C, raw pyzmq and raw pyzmq, transportkit and
  transportkit: the Python ones are this module's
  :func:`worker_main`, each in a process of its own). The receiver
  binds; the sender connects and sends a one-byte probe; when the receiver has it,
  the sender is told to go, notes its start (``CLOCK_MONOTONIC``, which both C and
  Python's ``perf_counter_ns`` read on Linux) and sends; the rate is messages over
  the time from that start to the receiver's last receive.

The program is compiled at bench time into a temporary directory with ``$CC`` (or
``cc``, ``gcc``), ``-O2 -Wall -Werror``, linked to the libzmq file pyzmq's backend
has mapped. Without a compiler, or when the build fails, the figure says it was
skipped and why, and the bench goes on.
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from transportkit import _wallclock as wallclock
from transportkit._bench._common import (
    BenchConfig,
    Percentiles,
    check_target,
    endpoint_for,
    interleaved,
    median,
    paired_ratio,
    percentiles,
    temp_dir,
)

__all__ = [
    "TARGETS",
    "Build",
    "build_program",
    "checks",
    "find_compiler",
    "find_libzmq",
    "format_lines",
    "run",
    "worker_main",
]

TARGETS: Final[dict[str, tuple[str, float]]] = {
    "limit_rtt_p50": ("<=", 1.1),
    "limit_throughput": (">=", 0.9),
}

MESSAGE_SIZE = 100
STREAM_SIZE = 1024
TRANSPORT = "ipc"
SOURCE = "_limit.c"
CFLAGS: Final = ("-O2", "-Wall", "-Werror")
VARIANTS: Final = ("c", "raw", "tk")
_START_S = 10.0
"""Seconds a helper process has to start and say it is ready."""


@dataclass(frozen=True, slots=True)
class Build:
    """The outcome of building the C program.

    Attributes:
        program: The executable, or None when it could not be built.
        reason: Why not (empty when built).
        compiler: The compiler command used (empty when none was found).
        libzmq: The libzmq file linked (empty when none was found).
    """

    program: Path | None
    reason: str = ""
    compiler: str = ""
    libzmq: str = ""


def find_compiler() -> list[str] | None:
    """The C compiler command: ``$CC`` if set (split like a shell), else ``cc`` or ``gcc``."""
    cc = os.environ.get("CC", "").strip()
    if cc:
        return shlex.split(cc)
    for name in ("cc", "gcc"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


def find_libzmq() -> Path | None:
    """The libzmq shared library pyzmq's backend loaded, or None if it cannot be told.

    Read from the process's memory map (Linux), else from ``ldd`` of pyzmq's backend.
    """
    from zmq.backend.cython import _zmq  # noqa: PLC0415

    maps = Path("/proc/self/maps")
    try:
        for line in maps.read_text().splitlines():
            path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
            if Path(path).name.startswith("libzmq") and ".so" in Path(path).name:
                return Path(path)
    except OSError:
        pass
    ldd = shutil.which("ldd")
    if ldd is None:
        return None
    try:
        out = subprocess.run(
            [ldd, _zmq.__file__], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        name, _, rest = line.strip().partition(" => ")
        if name.startswith("libzmq") and rest:
            return Path(rest.split(" (")[0])
    return None


def build_program(
    out_dir: Path,
    *,
    compiler: Callable[[], list[str] | None] = find_compiler,
    extra_flags: Sequence[str] = (),
) -> Build:
    """Compile ``_limit.c`` into ``out_dir`` against pyzmq's libzmq.

    Never raises for a missing or failing compiler: the :class:`Build` says why.
    """
    cc = compiler()
    if cc is None:
        return Build(None, "no C compiler ($CC unset, no cc or gcc on PATH)")
    libzmq = find_libzmq()
    if libzmq is None:
        return Build(None, "the libzmq pyzmq loaded was not found", shlex.join(cc))
    source = out_dir / SOURCE
    source.write_bytes(resources.files("transportkit._bench").joinpath(SOURCE).read_bytes())
    program = out_dir / "tk-limit"
    command = [
        *cc,
        *CFLAGS,
        *extra_flags,
        "-o",
        str(program),
        str(source),
        str(libzmq),
        f"-Wl,-rpath,{libzmq.parent}",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Build(None, f"{shlex.join(cc)} could not run: {exc}", shlex.join(cc), str(libzmq))
    if result.returncode != 0 or not program.exists():
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return Build(
            None,
            f"{shlex.join(cc)} failed (exit {result.returncode}): {' '.join(detail)}".strip(),
            shlex.join(cc),
            str(libzmq),
        )
    return Build(program, "", shlex.join(cc), str(libzmq))


class _Lines:
    """Lines of a child's stdout, each awaited with a deadline (never a hang)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._proc = proc
        self._fd = proc.stdout.fileno()
        self._buffer = b""

    def next(self, timeout_s: float, what: str) -> str:
        deadline = wallclock.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - wallclock.monotonic()
            if left <= 0:
                raise RuntimeError(f"{what}: nothing within {timeout_s} s")
            ready, _, _ = select.select([self._fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._fd, 65536)
            if not chunk:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"{what}: the process ended ({err.strip()})")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


@contextmanager
def _child(command: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _tell(proc: subprocess.Popen[bytes], line: str) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()
    except BrokenPipeError:
        pass


def _worker_command(role: str, impl: str, *args: object) -> list[str]:
    # -c, not -m: the package imports this module first, and runpy warns about that.
    code = "from transportkit._bench._fig_limit import worker_main; worker_main()"
    return [sys.executable, "-c", code, role, impl, *map(str, args)]


# --- round trip -----------------------------------------------------------------


def _round_trips(config: BenchConfig, program: Path, tmp: Path) -> dict[str, Any]:
    import zmq  # noqa: PLC0415

    from transportkit._bench._latency import _blocking  # noqa: PLC0415
    from transportkit._kinds import SocketKind  # noqa: PLC0415
    from transportkit._options import SocketOptions  # noqa: PLC0415
    from transportkit.zmq_backend import ZmqNetwork  # noqa: PLC0415

    timeout_ms = int(config.timeout_s * 1000)
    payload = b"x" * MESSAGE_SIZE
    endpoint = endpoint_for(TRANSPORT, tmp, "limit-echo")
    ctx: zmq.Context[Any] = zmq.Context()
    net = ZmqNetwork(context=ctx)
    raw = ctx.socket(zmq.REQ)
    counts: dict[str, int] = dict.fromkeys(VARIANTS, 0)
    try:
        with _child([str(program), "echo", endpoint, str(timeout_ms)]) as peer:
            resolved = _Lines(peer).next(_START_S, "the C echo peer")
            for option, value in ((zmq.LINGER, 0), (zmq.RCVTIMEO, timeout_ms)):
                raw.setsockopt(option, value)
            raw.setsockopt(zmq.SNDTIMEO, timeout_ms)
            raw.connect(resolved)
            options = SocketOptions(rcvtimeo=timeout_ms, sndtimeo=timeout_ms)
            tk = net.blocking(SocketKind.REQ, connect=resolved, options=options)
            python_runs = {"raw": _blocking(raw, payload), "tk": _blocking(tk, [payload])}

            def c_round() -> Percentiles:
                command = [
                    str(program),
                    "rtt",
                    resolved,
                    str(MESSAGE_SIZE),
                    str(config.warmup),
                    str(config.limit_samples),
                    str(timeout_ms),
                ]
                result = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    timeout=config.timeout_s * 2 + _START_S,
                    check=False,
                )
                if result.returncode != 0:
                    raise RuntimeError(f"the C client failed: {result.stderr.strip()}")
                samples = [int(line) for line in result.stdout.split()]
                counts["c"] += len(samples)
                return percentiles(samples)

            def python_round(name: str) -> Callable[[], Percentiles]:
                def one() -> Percentiles:
                    python_runs[name](config.warmup)
                    samples = python_runs[name](config.limit_samples)
                    counts[name] += len(samples)
                    return percentiles(samples)

                return one

            rounds = interleaved(
                {"c": c_round, "raw": python_round("raw"), "tk": python_round("tk")},
                config.rounds,
            )
            tk.close()
    finally:
        raw.close(linger=0)
        net.close()
        ctx.destroy(linger=0)

    def p(values: list[Percentiles], key: str) -> list[float]:
        return [v.p50 if key == "p50_us" else v.p99 for v in values]

    keys = ("p50_us", "p99_us")
    return {
        "transport": TRANSPORT,
        "message_bytes": MESSAGE_SIZE,
        "samples_per_round": config.limit_samples,
        "rounds": config.rounds,
        "peer": "the C program's REP echo, in its own process (the same for every client)",
        "absolute": {
            name: {key: median(p(values, key)) for key in keys} for name, values in rounds.items()
        },
        "ratios": {
            f"{name}_vs_c": {
                key: paired_ratio(p(rounds[name], key), p(rounds["c"], key)) for key in keys
            }
            for name in ("tk", "raw")
        },
        "round_trips": counts,
    }


# --- throughput -----------------------------------------------------------------


def _stream_once(
    config: BenchConfig, program: Path, impl: str, endpoint: str, sender_impl: str = ""
) -> tuple[float, int, int]:
    """One two-process PUSH/PULL run: (messages per second, received, bytes received).

    ``impl`` is the receiver's and, unless ``sender_impl`` says otherwise, the sender's.
    """
    timeout_ms = int(config.timeout_s * 1000)
    count = config.limit_messages
    sender_impl = sender_impl or impl
    if impl == "c":
        recv_cmd = [str(program), "recv", endpoint, str(count), str(timeout_ms)]
    else:
        recv_cmd = _worker_command("recv", impl, endpoint, count, timeout_ms)
    with _child(recv_cmd) as receiver:
        from_receiver = _Lines(receiver)
        ready = from_receiver.next(_START_S, f"the {impl} receiver")
        resolved = ready.removeprefix("ready ")
        if sender_impl == "c":
            send_cmd = [
                str(program),
                "send",
                resolved,
                str(count),
                str(STREAM_SIZE),
                str(timeout_ms),
            ]
        else:
            send_cmd = _worker_command(
                "send", sender_impl, resolved, count, STREAM_SIZE, timeout_ms
            )
        with _child(send_cmd) as sender:
            from_sender = _Lines(sender)
            if from_receiver.next(_START_S, f"the {impl} receiver's probe") != "probe":
                raise RuntimeError(f"the {impl} receiver did not get the probe")
            _tell(sender, "go")
            start = int(from_sender.next(config.timeout_s, f"the {impl} sender").split()[1])
            done = from_receiver.next(config.timeout_s * 2, f"the {impl} receiver").split()
            _tell(sender, "done")
            sender.wait(config.timeout_s)
            receiver.wait(config.timeout_s)
            if sender.returncode or receiver.returncode:
                raise RuntimeError(
                    f"the {impl} pair failed (sender exit {sender.returncode}, "
                    f"receiver exit {receiver.returncode})"
                )
    last, got, nbytes = int(done[1]), int(done[2]), int(done[3])
    return got / max(last - start, 1) * 1e9, got, nbytes


def _throughput(config: BenchConfig, program: Path, tmp: Path) -> dict[str, Any]:
    counter = iter(range(1_000_000))
    received: dict[str, list[tuple[int, int]]] = {name: [] for name in VARIANTS}

    def variant(impl: str) -> Callable[[], float]:
        def one() -> float:
            endpoint = endpoint_for(TRANSPORT, tmp, f"limit-tp{next(counter)}")
            rate, got, nbytes = _stream_once(config, program, impl, endpoint)
            received[impl].append((got, nbytes))
            return rate

        return one

    rounds = interleaved({name: variant(name) for name in VARIANTS}, config.rounds)
    return {
        "transport": TRANSPORT,
        "message_bytes": STREAM_SIZE,
        "messages_per_run": config.limit_messages,
        "rounds": config.rounds,
        "processes": "a sender and a receiver process for every variant",
        "msgs_per_s": {name: median(values) for name, values in rounds.items()},
        "ratios": {
            f"{name}_vs_c": paired_ratio(rounds[name], rounds["c"]) for name in ("tk", "raw")
        },
        "received": {
            name: {
                "messages": sum(g for g, _ in runs),
                "bytes": sum(b for _, b in runs),
                "runs": len(runs),
            }
            for name, runs in received.items()
        },
        "per_round": rounds,
    }


def run(config: BenchConfig, *, builder: Callable[[Path], Build] = build_program) -> dict[str, Any]:
    """Build the C program and measure both workloads with ``config``'s counts.

    Args:
        config: The counts (``limit_samples``, ``limit_messages``, ``warmup``,
            ``rounds``, ``timeout_s``).
        builder: Builds the program into a directory (tests replace it).

    Returns:
        The figure; ``{"built": False, "skipped": REASON, ...}`` when the program
        could not be built (nothing is measured then).

    Raises:
        RuntimeError: A helper process failed or did not answer within the timeout.
    """
    with temp_dir() as tmp:
        build = builder(tmp)
        figure: dict[str, Any] = {
            "built": build.program is not None,
            "compiler": build.compiler,
            "libzmq": build.libzmq,
            "cflags": " ".join(CFLAGS),
        }
        if build.program is None:
            return {**figure, "skipped": build.reason}
        figure["round_trip"] = _round_trips(config, build.program, tmp)
        figure["throughput"] = _throughput(config, build.program, tmp)
        return figure


def format_lines(figure: dict[str, Any]) -> list[str]:
    """The figure as Markdown lines."""
    lines = ["### The C limit (libzmq alone)", ""]
    if not figure.get("built"):
        return [*lines, f"Skipped: {figure.get('skipped', 'not built')}.", ""]
    rt, tp = figure["round_trip"], figure["throughput"]
    lines += [
        f"Round trips, REQ/REP {rt['message_bytes']} B over {rt['transport']} against "
        f"{rt['peer']}; {rt['samples_per_round']} per round, {rt['rounds']} rounds.",
        "",
        "| client | P50 us | P99 us | P50 vs C | P99 vs C |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in VARIANTS:
        row = rt["absolute"][name]
        ratio = rt["ratios"].get(f"{name}_vs_c", {"p50_us": 1.0, "p99_us": 1.0})
        lines.append(
            f"| {name} | {row['p50_us']:.1f} | {row['p99_us']:.1f} | "
            f"{ratio['p50_us']:.2f} | {ratio['p99_us']:.2f} |"
        )
    lines += [
        "",
        f"Throughput, PUSH/PULL {tp['message_bytes']} B over {tp['transport']}, "
        f"{tp['processes']}; {tp['messages_per_run']} per run, {tp['rounds']} rounds.",
        "",
        "| pair | msgs/s | vs C |",
        "|---|---:|---:|",
    ]
    for name in VARIANTS:
        ratio = tp["ratios"].get(f"{name}_vs_c", 1.0)
        lines.append(f"| {name} | {tp['msgs_per_s'][name]:,.0f} | {ratio:.2f} |")
    return [*lines, ""]


def checks(figure: dict[str, Any]) -> list[dict[str, Any]]:
    """The figure's rows of the report's targets (NaN, never met, when skipped)."""
    if not figure.get("built"):
        what = f"skipped: {figure.get('skipped', 'not built')}"
        return [
            check_target(TARGETS, "limit_rtt_p50", what, float("nan")),
            check_target(TARGETS, "limit_throughput", what, float("nan")),
        ]
    rt, tp = figure["round_trip"], figure["throughput"]
    return [
        check_target(
            TARGETS, "limit_rtt_p50", f"{rt['transport']} tk/C", rt["ratios"]["tk_vs_c"]["p50_us"]
        ),
        check_target(
            TARGETS, "limit_throughput", f"{tp['transport']} tk/C", tp["ratios"]["tk_vs_c"]
        ),
    ]


# --- the Python sides of the throughput pairs (worker_main, each in its own process) ---


def _wait_line(timeout_s: float) -> bool:
    """Wait for a line on stdin: True for a line, False for end of file or timeout."""
    ready, _, _ = select.select([sys.stdin], [], [], timeout_s)
    return bool(ready) and bool(sys.stdin.readline())


def _worker(role: str, impl: str, args: list[str]) -> int:
    import zmq  # noqa: PLC0415

    from transportkit._kinds import SocketKind  # noqa: PLC0415
    from transportkit._options import SocketOptions  # noqa: PLC0415
    from transportkit.zmq_backend import ZmqNetwork  # noqa: PLC0415

    endpoint = args[0]
    count = int(args[1])
    timeout_ms = int(args[-1])
    ctx: zmq.Context[Any] = zmq.Context()
    net = ZmqNetwork(context=ctx)
    kind = SocketKind.PULL if role == "recv" else SocketKind.PUSH
    if impl == "raw":
        sock: Any = ctx.socket(getattr(zmq, kind.value))
        for option, value in (
            (zmq.LINGER, 0),
            (zmq.SNDHWM, 0),
            (zmq.RCVHWM, 0),
            (zmq.RCVTIMEO, timeout_ms),
            (zmq.SNDTIMEO, timeout_ms),
        ):
            sock.setsockopt(option, value)
    else:
        options = SocketOptions(sndhwm=0, rcvhwm=0, rcvtimeo=timeout_ms, sndtimeo=timeout_ms)
        sock = net.blocking(kind, options=options)
    try:
        if role == "recv":
            if impl == "raw":
                sock.bind(endpoint)
                resolved = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                resolved = sock.bind(endpoint)
            print(f"ready {resolved}", flush=True)
            recv = sock.recv
            recv()
            print("probe", flush=True)
            got = nbytes = last = 0
            clock = wallclock.perf_counter_ns
            if impl == "raw":
                for _ in range(count):
                    nbytes += len(recv())
                    last = clock()
            else:
                for _ in range(count):
                    nbytes += len(recv()[0])
                    last = clock()
            got = count
            print(f"done {last} {got} {nbytes}", flush=True)
            return 0
        size = int(args[2])
        sock.connect(endpoint)
        send = sock.send
        payload = b"D" * size
        message: Any = payload if impl == "raw" else [payload]
        send(b"P" if impl == "raw" else [b"P"])
        if not _wait_line(timeout_ms / 1000):
            print("no go on stdin", file=sys.stderr)
            return 3
        print(f"start {wallclock.perf_counter_ns()}", flush=True)
        for _ in range(count):
            send(message)
        _wait_line(timeout_ms / 1000)
        return 0
    finally:
        sock.close() if impl == "tk" else sock.close(linger=0)
        net.close()
        ctx.destroy(linger=0)


def worker_main(argv: Sequence[str] | None = None) -> None:
    """Run one Python side of a throughput pair: ``send|recv raw|tk ENDPOINT COUNT ...``.

    Exits with 0 when done, 3 when no go came on stdin in time; a failed receive
    (timeout included) raises, which exits with 1.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 4 or args[0] not in ("send", "recv") or args[1] not in ("raw", "tk"):
        sys.exit("usage: send|recv raw|tk ENDPOINT COUNT [SIZE] TIMEOUT_MS")
    sys.exit(_worker(args[0], args[1], args[2:]))
