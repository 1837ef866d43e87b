"""One way to close things on leaving a ``with`` or ``async with`` block."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

__all__ = ["Closeable", "Service"]


class Closeable(abc.ABC):
    """Something with an idempotent :meth:`close`, usable as a (async) context manager.

    Leaving a ``with`` or ``async with`` block closes it, whatever the exit.
    """

    @abc.abstractmethod
    def close(self) -> None:
        """Release what is held. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Service(abc.ABC):
    """A background service: :meth:`start` it, ``await`` :meth:`close` to stop it.

    ``async with service:`` starts it on entry and closes it on exit, whatever the exit.
    """

    @abc.abstractmethod
    def start(self) -> None:
        """Start the service's background work (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop the background work and release the sockets. Idempotent."""

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
