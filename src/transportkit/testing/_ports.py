"""Free local endpoints for tests that must bind the same address again (restarts)."""

from __future__ import annotations

import socket

__all__ = ["free_tcp_endpoint"]


def free_tcp_endpoint(host: str = "127.0.0.1") -> str:
    """A ``tcp://host:port`` whose port was free a moment ago.

    For tests where a server is killed and restarted on the same endpoint (a wildcard
    port would move). Another process could take the port in between; that is rare
    on a test machine.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    return f"tcp://{host}:{port}"
