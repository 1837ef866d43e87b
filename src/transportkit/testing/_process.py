"""Child processes for real-crash tests on the zmq backend (SIGKILL, restart)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

from transportkit import _wallclock as wallclock

__all__ = ["ChildProcess"]


class ChildProcess:
    """A Python child (``python -m module args...``) that says ``READY`` when serving.

    The child must print a line starting with ``ready`` (default ``"READY"``) once it
    has bound its sockets; :meth:`start` waits for it, so a test never races the
    child's bind. :meth:`kill` is a real crash (SIGKILL: no linger, no cleanup);
    :meth:`restart` starts the same command again. Leaving the ``with`` block kills
    the child if it still runs. Every line the child printed is kept in :attr:`lines`.

    Args:
        argv: Arguments after ``python`` (e.g. ``"-m", "transportkit.examples.lpserver"``).
        ready: Prefix of the line that announces readiness.
        timeout: Seconds to wait for readiness before failing.
        env: Extra environment variables for the child.
    """

    def __init__(
        self,
        *argv: str,
        ready: str = "READY",
        timeout: float = 20.0,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.argv: Sequence[str] = argv
        self.ready = ready
        self.timeout = timeout
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.lines: list[str] = []
        self.ready_line: str | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether the child is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> str:
        """Start the child and return its readiness line.

        Raises:
            RuntimeError: The child exited or stayed silent past ``timeout``.
        """
        if self.running:
            raise RuntimeError("child already running")
        self._lines = queue.Queue()
        proc = subprocess.Popen(
            [sys.executable, *self.argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self.env,
        )
        self._proc = proc
        self._reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._reader.start()
        while True:
            try:
                line = self._lines.get(timeout=self.timeout)
            except queue.Empty:
                self.kill()
                raise RuntimeError(
                    f"{self._name()} printed no {self.ready!r} line in {self.timeout} s; "
                    f"output: {self.lines!r}"
                ) from None
            if line is None:
                code = proc.wait()
                self.kill()
                raise RuntimeError(f"{self._name()} exited with {code}; output: {self.lines!r}")
            if line.startswith(self.ready):
                self.ready_line = line
                return line

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def kill(self) -> None:
        """Crash the child with SIGKILL and reap it. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=self.timeout)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._reader is not None:
            self._reader.join(timeout=self.timeout)
        self._proc = None

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` to the child (SIGTERM: ask it to stop gracefully).

        Raises:
            RuntimeError: The child is not running.
        """
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError(f"{self._name()} is not running")
        self._proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait at most ``timeout`` seconds for the child to exit; return its exit status
        (negative: killed by that signal), with all it printed read into :attr:`lines`.

        Raises:
            RuntimeError: The child was never started.
            subprocess.TimeoutExpired: It still runs after ``timeout`` (it is left running:
                :meth:`kill` it).
        """
        if self._proc is None:
            raise RuntimeError(f"{self._name()} was never started")
        code = self._proc.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=timeout)
        return code

    def wait_for_line(self, prefix: str, timeout: float) -> str:
        """Wait at most ``timeout`` seconds for a line starting with ``prefix`` (printed
        since the start) and return it.

        Raises:
            RuntimeError: No such line came in time, or the child's output ended first.
        """
        deadline = wallclock.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                seen += 1
                if line.startswith(prefix):
                    return line
            left = deadline - wallclock.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"{self._name()} printed no {prefix!r} line in {timeout} s; "
                    f"output: {self.lines!r}"
                )
            try:
                if self._lines.get(timeout=left) is None:
                    if any(line.startswith(prefix) for line in self.lines[seen:]):
                        continue
                    raise RuntimeError(
                        f"{self._name()} ended its output without a {prefix!r} line; "
                        f"output: {self.lines!r}"
                    )
            except queue.Empty:
                continue

    def restart(self) -> str:
        """Kill the child (if alive) and start it again; return the readiness line."""
        self.kill()
        return self.start()

    def _name(self) -> str:
        return "child `python " + " ".join(self.argv) + "`"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()
