"""Socket kinds, named as ZeroMQ names them."""

from __future__ import annotations

import enum

__all__ = ["SocketKind"]


class SocketKind(enum.Enum):
    r"""The ZeroMQ socket types transportkit supports.

    XPUB and XSUB are PUB and SUB with the subscriptions in the open (RFC 29/PUBSUB):
    an XPUB receives its subscribers' subscription messages (``b"\x01" + topic``,
    ``b"\x00" + topic``) and publishes as a PUB does; an XSUB sends subscription
    messages upstream and receives as a SUB does, without filtering of its own.
    """

    PUB = "PUB"
    SUB = "SUB"
    REQ = "REQ"
    REP = "REP"
    PUSH = "PUSH"
    PULL = "PULL"
    PAIR = "PAIR"
    DEALER = "DEALER"
    ROUTER = "ROUTER"
    XPUB = "XPUB"
    XSUB = "XSUB"

    @property
    def can_send(self) -> bool:
        """Whether sockets of this kind send messages."""
        return self not in (SocketKind.SUB, SocketKind.PULL)

    @property
    def can_recv(self) -> bool:
        """Whether sockets of this kind receive messages."""
        return self not in (SocketKind.PUB, SocketKind.PUSH)


#: Which kinds may be connected to which (RFC 28/29/30/31 and libzmq's compatibility table:
#: XPUB talks to SUB and XSUB, XSUB to PUB and XPUB, as PUB and SUB do).
PEERS: dict[SocketKind, frozenset[SocketKind]] = {
    SocketKind.PUB: frozenset({SocketKind.SUB, SocketKind.XSUB}),
    SocketKind.SUB: frozenset({SocketKind.PUB, SocketKind.XPUB}),
    SocketKind.XPUB: frozenset({SocketKind.SUB, SocketKind.XSUB}),
    SocketKind.XSUB: frozenset({SocketKind.PUB, SocketKind.XPUB}),
    SocketKind.REQ: frozenset({SocketKind.REP, SocketKind.ROUTER}),
    SocketKind.REP: frozenset({SocketKind.REQ, SocketKind.DEALER}),
    SocketKind.PUSH: frozenset({SocketKind.PULL}),
    SocketKind.PULL: frozenset({SocketKind.PUSH}),
    SocketKind.PAIR: frozenset({SocketKind.PAIR}),
    SocketKind.DEALER: frozenset({SocketKind.REP, SocketKind.ROUTER, SocketKind.DEALER}),
    SocketKind.ROUTER: frozenset({SocketKind.REQ, SocketKind.DEALER, SocketKind.ROUTER}),
}
