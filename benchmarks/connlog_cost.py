"""What ``ZmqNetwork(log_connections=True)`` costs: per socket (file descriptors, time
to make and close one) and per monitor event (CPU of the process per event read).

Run: ``python benchmarks/connlog_cost.py``. Prints one line per figure.
"""

from __future__ import annotations

import logging
import os
import resource
import time

from transportkit import SocketKind, SocketOptions
from transportkit.zmq_backend import ZmqNetwork

SOCKETS = 300


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def per_socket(log: bool) -> tuple[float, float, float]:
    """(fds per socket, ms to make one, ms to close the network per socket)."""
    net = ZmqNetwork(log_connections=log)
    base = fds()
    began = time.perf_counter()
    for _ in range(SOCKETS):
        net.blocking(SocketKind.PULL, options=SocketOptions(linger=0))
    made = time.perf_counter() - began
    per_fd = (fds() - base) / SOCKETS
    began = time.perf_counter()
    net.close()
    closed = time.perf_counter() - began
    return per_fd, made / SOCKETS * 1e3, closed / SOCKETS * 1e3


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def per_event(level: int, seconds: float = 2.0) -> tuple[int, float]:
    """(events read, process CPU microseconds per event) for a PUSH retrying a dead
    port every 1 ms, with the connection logger at ``level``.
    """
    logger = logging.getLogger("transportkit.zmq_backend.connections")
    logger.setLevel(level)
    logger.propagate = False
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        results = []
        for log in (False, True):
            net = ZmqNetwork(log_connections=log)
            probe = net.blocking(SocketKind.PULL, bind="tcp://127.0.0.1:*")
            endpoint = probe.last_endpoint
            assert endpoint is not None
            probe.close()
            opts = SocketOptions(linger=0, reconnect_ivl=1)
            net.blocking(SocketKind.PUSH, connect=endpoint, options=opts)
            start = cpu()
            time.sleep(seconds)
            used = cpu() - start
            events = 0 if net.connection_log is None else net.connection_log.events
            net.close()
            results.append((events, used))
        (_, off), (events, on) = results
        return events, (on - off) / max(events, 1) * 1e6
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)


def main() -> None:
    for log in (False, True):
        per_fd, make_ms, close_ms = per_socket(log)
        print(
            f"log_connections={log}: {per_fd:.1f} fds per socket, make {make_ms:.3f} ms, "
            f"close (network) {close_ms:.3f} ms per socket"
        )
    for name, level in (("DEBUG (every event formatted)", logging.DEBUG), ("WARNING", logging.WARNING)):
        events, us = per_event(level)
        print(f"logger at {name}: {events} events in 2 s, {us:.1f} us of CPU per event")


if __name__ == "__main__":
    main()
