"""The raw pyzmq REP echo peer, run in its own process for the ipc and tcp latency figures.

``python -m transportkit._bench._peer ENDPOINT`` binds a REP socket, prints the resolved
endpoint on one line, and echoes every request until its parent goes away or stdin
closes. Both sides of every comparison talk to this same peer.
"""

from __future__ import annotations

import os
import select
import sys

import zmq

_CHECK_MS = 200


def serve(endpoint: str) -> None:
    """Echo requests on ``endpoint`` until the parent process is gone or stdin closes."""
    parent = os.getppid()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REP)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, _CHECK_MS)
    try:
        sock.bind(endpoint)
        print(sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
        recv, send = sock.recv, sock.send
        while True:
            try:
                send(recv())
            except zmq.Again:
                readable, _, _ = select.select([sys.stdin], [], [], 0)
                if os.getppid() != parent or (readable and not sys.stdin.read(1)):
                    return
    finally:
        sock.close(linger=0)
        ctx.term()


if __name__ == "__main__":
    serve(sys.argv[1])
