"""Pipes and connections: how messages move between simulated sockets.

Each socket holds one :class:`Peer` per connection (libzmq's pipe pair). A message sent
to a peer goes straight onto the wire if the receiving peer's queue has room, and
otherwise waits in the sender's ``out_q``; so an inproc path holds at most the sender's
SNDHWM plus the receiver's RCVHWM messages (exactly libzmq's inproc capacity). An ipc
or tcp path also holds what fits in the kernel's socket buffers between the two
(``_kernel``: a byte budget per direction, kept on the receiving peer). Wire delays come
from the link's latency model, but a pipe never reorders: each arrival is at or after
the previous one. Arrivals are SimPy timeout events with a callback, never a process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transportkit.sim_backend._sockets import SimSocket
    from transportkit.sim_backend._topology import Link

__all__ = ["Connection", "Item", "Peer"]

Item = tuple[int, list[bytes]]
"""A message in flight: (message id, frames)."""


class Peer:
    """One socket's end of one connection (kept across reconnects on the connecting side)."""

    __slots__ = (
        "conflate",
        "conn",
        "connecter",
        "dead",
        "endpoint",
        "in_flight",
        "in_q",
        "inproc",
        "kcap",
        "kipc",
        "kq",
        "kused",
        "last_arrival",
        "lwm",
        "out_q",
        "pending_command",
        "queued",
        "remote",
        "routing_id",
        "sock",
        "stranded",
        "sub_gen",
        "subs",
        "unseen",
    )

    def __init__(
        self, sock: SimSocket, endpoint: str, *, connecter: bool, inproc: bool = False
    ) -> None:
        self.sock = sock
        self.endpoint = endpoint
        self.connecter = connecter
        # An inproc pipe exists from connect() on, whatever ``immediate`` says, and
        # conflates as its connecting socket says (set for both ends on connect).
        self.inproc = inproc
        self.conflate = sock.conflate
        # A connecting peer that will never connect (reconnect_ivl <= 0 after a failed
        # attempt): what it is given is counted as dropped when it is queued.
        self.stranded = False
        self.remote: Peer | None = None
        self.conn: Connection | None = None
        self.out_q: deque[Item] = deque()
        self.in_q: deque[Item] = deque()
        self.in_flight = 0
        self.queued = False
        self.dead = False
        self.routing_id = b""
        self.subs: list[bytes] = []
        self.sub_gen = 0
        self.pending_command: Callable[[], None] | None = None
        self.last_arrival = 0.0
        # The kernel's buffer into this peer (ipc/tcp; see _kernel): its byte budget,
        # the bytes used, the charge of each message in it (oldest first).
        self.kcap = 0
        self.kused = 0
        self.kq: deque[int] | None = None
        self.kipc = False
        # libzmq's pipe notifications (see _kernel.low_water_mark): messages that left
        # out_q since the sender was last told, and how often it is told (0: always).
        self.unseen = 0
        self.lwm = 0

    @property
    def connected(self) -> bool:
        """Whether a live connection is attached."""
        return self.remote is not None

    def matches(self, topic: bytes) -> bool:
        """Whether the remote subscriber subscribed to a prefix of ``topic``."""
        return any(topic.startswith(prefix) for prefix in self.subs)

    def room(self) -> bool:
        """Whether a message sent now is accepted (queued or put on the wire)."""
        hwm = self.sock.sndhwm
        return hwm == 0 or len(self.out_q) + self.unseen < hwm

    def __repr__(self) -> str:
        state = "dead" if self.dead else ("up" if self.remote else "pending")
        return f"<Peer {self.sock.name} {self.endpoint} {state}>"


class Connection:
    """A live connection between a connecting peer ``a`` and a binding peer ``b``."""

    __slots__ = ("a", "alive", "b", "link_ab", "link_ba")

    def __init__(self, a: Peer, b: Peer, link_ab: Link | None, link_ba: Link | None) -> None:
        self.a = a
        self.b = b
        self.alive = True
        self.link_ab = link_ab
        self.link_ba = link_ba

    def link_from(self, peer: Peer) -> Link | None:
        """The link a message from ``peer`` travels (None for inproc: no delay)."""
        return self.link_ab if peer is self.a else self.link_ba

    def other(self, peer: Peer) -> Peer:
        """The peer at the other end."""
        return self.b if peer is self.a else self.a

    def __repr__(self) -> str:
        return f"<Connection {self.a.sock.name}->{self.b.sock.name} alive={self.alive}>"
