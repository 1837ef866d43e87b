"""The entry point every example program shares, and its signal handling.

A server program runs its server under :func:`serve_until_signalled`: the first
SIGTERM or SIGINT starts the server's graceful stop (``shutdown(timeout)``, see
:mod:`transportkit.patterns._shutdown`; ``--shutdown-timeout`` sets the bound, default
5 s; ``--linger`` the sockets' linger, default 1 s), prints ``STOPPING <signal>``, and
once the server has drained and closed its sockets prints ``STOPPED clean`` (nothing
in flight dropped) or ``STOPPED dropped``; the program then exits 0. A second signal
while it drains forces the stop: the serve loop is cancelled and the program exits
128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as a shell reports a
process killed by it. A Ctrl-C that arrives before the handlers are installed exits 130 too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

from transportkit._options import SocketOptions
from transportkit.patterns._shutdown import DEFAULT_SHUTDOWN_TIMEOUT, check_shutdown_timeout

__all__ = [
    "Servable",
    "add_attempts_option",
    "add_shutdown_option",
    "program_parser",
    "run_main",
    "serve_server",
    "serve_until_signalled",
    "shutdown_options",
]

DEFAULT_LINGER_MS = 1000
"""The server programs' ``linger``: transportkit's default of 0 would discard, over tcp
and ipc, a reply sent just before the sockets close at the end of a graceful stop."""

MAX_LINGER_MS = 60_000
"""The longest ``--linger`` accepted."""

STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
"""The signals that stop a server program."""


class Servable(Protocol):
    """A server with a serve loop and a graceful stop (every server pattern has both)."""

    def run(self) -> Awaitable[object]:
        """Serve until stopped."""
        ...

    def shutdown(self, timeout: float) -> Awaitable[bool]:
        """Stop gracefully within ``timeout`` seconds; True if nothing was dropped."""
        ...


def program_parser(program: str, description: str) -> argparse.ArgumentParser:
    """The argument parser of the example ``program``, run as ``python -m
    transportkit.examples.<program>``.
    """
    return argparse.ArgumentParser(
        prog=f"python -m transportkit.examples.{program}", description=description
    )


async def serve_server(server: Servable, args: argparse.Namespace, ready: str) -> int:
    """Run ``server`` under :func:`serve_until_signalled`: a signal stops it with
    ``server.shutdown(args.shutdown_timeout)``; ``ready`` is printed once the signal
    handlers are in place. Returns the program's exit status.
    """
    return await serve_until_signalled(
        server.run(), lambda: server.shutdown(args.shutdown_timeout), ready=ready
    )


def run_main(
    parse_args: Callable[[Sequence[str] | None], argparse.Namespace],
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv``, run the example's coroutine, and return its exit status
    (130 on a Ctrl-C that the program's own handling did not catch, as a shell would
    report it).
    """
    try:
        return asyncio.run(run(parse_args(argv)))
    except KeyboardInterrupt:
        return 130


class _RenamedRetries(argparse.Action):
    """``--retries N``: an error that says to write ``--attempts`` (the option's old
    name, for the client programs; ``convert`` gives the equivalent count).
    """

    def __init__(self, *args: Any, convert: Callable[[int], int], why: str, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.convert = convert
        self.why = why

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        try:
            advice = f": write --attempts {self.convert(int(values))}"
        except ValueError:
            advice = ""
        parser.error(f"--retries is now --attempts ({self.why}){advice}")


def add_attempts_option(
    parser: argparse.ArgumentParser,
    *,
    default: int,
    type: Callable[[str], int] = int,
    retries_meant: Callable[[int], int] = lambda n: n,
    why: str = "it counts every send of a request, the first included, as it always did",
) -> None:
    """Add ``--attempts N`` (sends of each request, the first included), and make the
    old ``--retries N`` an error naming the ``--attempts`` to write instead.
    """
    parser.add_argument(
        "--attempts",
        type=type,
        default=default,
        metavar="N",
        help="sends of each request before giving up, the first included (%(default)s)",
    )
    parser.add_argument(
        "--retries",
        action=_RenamedRetries,
        convert=retries_meant,
        why=why,
        help=argparse.SUPPRESS,
    )


def _timeout(text: str) -> float:
    try:
        return check_shutdown_timeout(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _linger(text: str) -> int:
    value = int(text)
    if not 0 <= value <= MAX_LINGER_MS:
        raise argparse.ArgumentTypeError(f"linger must be 0 to {MAX_LINGER_MS} ms, got {value}")
    return value


def add_shutdown_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--shutdown-timeout S`` (default 5 s, 0 to 3600) and ``--linger MS`` (default
    :data:`DEFAULT_LINGER_MS`, 0 to 60,000) to a server's parser.
    """
    parser.add_argument(
        "--shutdown-timeout",
        type=_timeout,
        default=DEFAULT_SHUTDOWN_TIMEOUT,
        metavar="S",
        help="seconds to finish the work in flight on SIGTERM or SIGINT (%(default)s); "
        "a second signal stops at once",
    )
    parser.add_argument(
        "--linger",
        type=_linger,
        default=DEFAULT_LINGER_MS,
        metavar="MS",
        help="milliseconds the last replies may take to leave once the sockets close (%(default)s)",
    )


def shutdown_options(args: argparse.Namespace, base: SocketOptions | None = None) -> SocketOptions:
    """``base`` (default: transportkit's options) with the ``--linger`` of ``args``."""
    return (base or SocketOptions()).replace(linger=args.linger)


async def serve_until_signalled(
    serve: Awaitable[object],
    shutdown: Callable[[], Awaitable[bool]],
    *,
    ready: str | None = None,
    signals: Sequence[signal.Signals] = STOP_SIGNALS,
) -> int:
    """Run ``serve`` until it returns, or until a signal of ``signals`` stops it.

    The first signal calls ``shutdown()`` (the server's graceful stop, which makes
    ``serve`` return); a second one cancels ``serve``. The handlers are removed on the
    way out.

    Args:
        serve: The server's loop (``server.run()``).
        shutdown: Starts the graceful stop and waits for it; True if nothing in flight
            was dropped.
        ready: A line to print once the handlers are installed (the program's
            ``READY ...``: a signal sent after it is seen is always handled).
        signals: The signals to handle (SIGTERM and SIGINT by default).

    Returns:
        0 if ``serve`` returned (by itself or after a graceful stop); 128 + the
        signal's number if a second signal forced the stop.

    Raises:
        Exception: Whatever ``serve`` raises.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(serve)
    received: list[signal.Signals] = []
    stopping: list[asyncio.Future[bool]] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum)
        if len(received) == 1:
            print(f"STOPPING {signum.name}", flush=True)
            stopping.append(asyncio.ensure_future(shutdown()))
        else:
            print(f"FORCED {signum.name}", flush=True)
            task.cancel()

    installed: list[signal.Signals] = []
    try:
        for signum in signals:
            with contextlib.suppress(NotImplementedError):  # not on Windows' loops
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
        if ready is not None:
            print(ready, flush=True)
        try:
            await task
        except asyncio.CancelledError:
            if len(received) < 2:
                raise
            for pending in stopping:
                pending.cancel()
            await asyncio.gather(*stopping, return_exceptions=True)
            return 128 + int(received[-1])
        if stopping:
            clean = await stopping[0]
            print("STOPPED clean" if clean else "STOPPED dropped", flush=True)
        return 0
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
