"""What every broker of these patterns has: a ROUTER front end and a ROUTER back end."""

from __future__ import annotations

from transportkit._closing import Closeable
from transportkit._network import Network
from transportkit._options import SocketOptions
from transportkit._socket import Router

__all__ = ["RouterPair"]


class RouterPair(Closeable):
    """Two bound ROUTER sockets: :attr:`frontend` for clients, :attr:`backend` for workers.

    Both are bound on construction (if the second bind fails the first socket is closed,
    so nothing leaks) and closed by :meth:`close` or on leaving a ``with`` block.
    ``options`` applies to both unless ``backend_options`` is given for the back end
    (e.g. a CURVE front end on tcp, a plaintext back end on ipc).
    """

    def __init__(
        self,
        network: Network,
        *,
        frontend: str,
        backend: str,
        options: SocketOptions | None = None,
        backend_options: SocketOptions | None = None,
    ) -> None:
        self.frontend: Router = network.router(bind=frontend, options=options)
        try:
            self.backend: Router = network.router(
                bind=backend, options=options if backend_options is None else backend_options
            )
        except BaseException:
            self.frontend.close()
            raise

    @property
    def frontend_endpoint(self) -> str:
        """The front end's resolved endpoint (for clients to connect to)."""
        endpoint = self.frontend.last_endpoint
        assert endpoint is not None
        return endpoint

    @property
    def backend_endpoint(self) -> str:
        """The back end's resolved endpoint (for workers to connect to)."""
        endpoint = self.backend.last_endpoint
        assert endpoint is not None
        return endpoint

    def close(self) -> None:
        """Close both sockets (a running broker loop returns). Idempotent."""
        self.frontend.close()
        self.backend.close()
