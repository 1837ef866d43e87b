"""A control channel over an exclusive pair (the PAIR example)."""

from __future__ import annotations

from typing import Final

from transportkit import Pair, ProtocolError
from transportkit.trading._codec import single_frame

__all__ = ["PairChannel"]


class PairChannel:
    """Sends and receives text commands, one UTF-8 frame each, over a PAIR socket."""

    def __init__(self, pair: Pair) -> None:
        """Use ``pair`` (bound or connected to its one peer; not closed here)."""
        self.pair: Final = pair

    async def send(self, command: str) -> None:
        """Send ``command``; waits while the pipe is at its HWM, up to ``sndtimeo``.

        Raises:
            Timeout: ``sndtimeo`` elapsed at the HWM.
            ClosedError: The socket is closed.
        """
        await self.pair.send([command.encode()])

    async def receive(self, timeout: float | None = None) -> str:
        """Wait for the next command.

        Args:
            timeout: Seconds to wait; ``math.inf`` waits for ever; None uses ``rcvtimeo``.

        Raises:
            Timeout: Nothing arrived in time.
            ProtocolError: The message is not a single UTF-8 frame (it is consumed).
            ClosedError: The socket is closed.
        """
        frame = single_frame(await self.pair.recv(timeout), "command")
        try:
            return frame.decode()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"command {frame!r:.40} is not UTF-8: {exc}") from exc
