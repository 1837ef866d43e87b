"""The progress line of ``transportkit run`` and ``transportkit sweep``, on stderr.

Shown by default only when stderr is a terminal: there it is one line redrawn in place
(a carriage return), cleared at the end. Forced onto something else (``--progress`` with stderr
redirected to a log), it writes whole lines, at most one every
:data:`LOG_INTERVAL` seconds, so that a log holds no carriage-return frames. Wall time
comes from :mod:`transportkit._wallclock` (inside a simulation ``time.monotonic``
reads virtual time).
"""

from __future__ import annotations

import math
from typing import TextIO

from transportkit import _wallclock as wallclock

__all__ = [
    "DELAY",
    "LOG_INTERVAL",
    "REDRAW_INTERVAL",
    "ProgressLine",
    "eta_text",
    "is_terminal",
]

DELAY = 1.0
"""Wall seconds before anything is shown: a short run shows no progress at all."""
REDRAW_INTERVAL = 0.1
"""Least wall seconds between two redraws on a terminal."""
LOG_INTERVAL = 5.0
"""Least wall seconds between two lines when not on a terminal (forced)."""


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal (False for a closed or detached stream)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def eta_text(seconds: float) -> str:
    """A remaining wall time: ``ETA 42 s``, ``ETA 3 min 05 s``, ``ETA 2 h 10 min``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "ETA -"
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"ETA {whole} s"
    if whole < 3600:
        return f"ETA {whole // 60} min {whole % 60:02d} s"
    return f"ETA {whole // 3600} h {whole % 3600 // 60:02d} min"


class ProgressLine:
    """A progress line: ``update(done, total)`` as work advances, ``close()`` at the end.

    The line says how far (``12.3 of 22.6 s virtual, 54%``), how fast (``6.1 virtual
    s per wall s``, or ``3.2 seeds/s``) and the ETA from that rate.

    Args:
        stream: Where to write (stderr).
        unit: What ``done`` counts: ``"s virtual"``, ``"s"`` (real seconds of a zmq
            run, whose rate is not shown: it is 1) or ``"seeds"``.
        terminal: Redraw one line in place (a terminal) or write whole lines (a log);
            default: whether ``stream`` is a terminal.
        delay: Wall seconds before the first line (default :data:`DELAY`).
    """

    def __init__(
        self,
        stream: TextIO,
        unit: str,
        *,
        terminal: bool | None = None,
        delay: float | None = None,
    ) -> None:
        self._stream = stream
        self._unit = unit
        self._terminal = is_terminal(stream) if terminal is None else terminal
        self._delay = DELAY if delay is None else delay
        self._started = wallclock.monotonic()
        self._last_drawn: float | None = None
        self._width = 0
        self._broken = False
        self.suffix = ""
        """Appended to the line (the sweep's ``2 failed``)."""

    def text(self, done: float, total: float, elapsed: float) -> str:
        """The line for ``done`` of ``total`` after ``elapsed`` wall seconds."""
        share = 100.0 * done / total if total > 0 else 100.0
        if self._unit == "seeds":
            where = f"{int(done):,}/{int(total):,} seeds"
        else:
            where = f"{done:.1f} of {total:.1f} {self._unit}"
        parts = [f"{where}, {share:.0f}%"]
        rate = done / elapsed if elapsed > 0 else 0.0
        if self._unit == "seeds":
            parts.append(f"{rate:.2f} seeds/s")
        elif self._unit != "s":
            parts.append(f"{rate:.2f} {self._unit.split()[-1]} s per wall s")
        parts.append(eta_text((total - done) / rate) if rate > 0 else "ETA -")
        if self.suffix:
            parts.append(self.suffix)
        return "  ".join(parts)

    def update(self, done: float, total: float) -> None:
        """Show ``done`` of ``total`` (drawn if the delay and the interval allow)."""
        if self._broken:
            return
        now = wallclock.monotonic()
        elapsed = now - self._started
        if elapsed < self._delay:
            return
        interval = REDRAW_INTERVAL if self._terminal else LOG_INTERVAL  # read at each call
        final = done >= total
        if self._last_drawn is not None and now - self._last_drawn < interval and not final:
            return
        if not self._terminal and final and self._last_drawn is None:
            return  # a log line saying only "done" adds nothing to the report
        self._last_drawn = now
        line = self.text(done, total, elapsed)
        try:
            if self._terminal:
                pad = " " * max(0, self._width - len(line))
                self._stream.write(f"\r{line}{pad}")
                self._width = len(line)
            else:
                self._stream.write(f"{line}\n")
            self._stream.flush()
        except (OSError, ValueError):  # stderr went away: progress is not worth an error
            self._broken = True

    def close(self) -> None:
        """Clear the line on a terminal (nothing is left behind the report)."""
        if self._terminal and self._width:
            try:
                self._stream.write("\r" + " " * self._width + "\r")
                self._stream.flush()
            except (OSError, ValueError):
                pass
        self._width = 0
