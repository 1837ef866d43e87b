"""Clone (ZeroMQ RFC 12/CHP, Guide chapter 5): a key-value map shared from a server.

The server owns a map of byte keys to byte values (for market data, a last-value cache
of ``MARKET.<symbol>`` -> serialized ``MarketData``; the pattern itself is generic over
bytes). Every change gets the next sequence number and is published; a client
subscribes first, then asks for a snapshot of the map, and from then on applies the
published changes strictly in sequence order. A sequence jump means it missed a change
(high-water-mark drops, a broken connection), so it takes a new snapshot; silence
longer than its timeout means the server is gone, so it reconnects (to the next server,
if it has several) and does the same. This covers the Guide's Clone models 1 to 6:

- :class:`CloneServer`: snapshots, updates, HUGZ; with ``collector``, the updates
  clients publish (KVSET), sequenced and republished; ephemeral values (``ttl``) that
  the server deletes, publishing the deletion, when they expire.
- :class:`CloneClient`: follows one server, or several in turn (``backups``), and
  publishes updates with :meth:`CloneClient.set` (``collector``).
- :class:`ClonePairServer`: a primary and a backup under Binary Star (model 6).

Wire format (CHP): a key-value message is five frames
``[key][sequence][uuid][properties][body]``, the sequence an unsigned 64-bit integer in
network byte order, the properties ``name=value`` lines each ending in a newline, an
empty body meaning "delete the key".

- Updates (KVPUB) go out on the PUB socket, frame 0 (the key) being the topic; they
  keep the uuid and properties of the KVSET they came from.
- A snapshot request to the ROUTER is ``[ICANHAZ?][subtree]``; the answer is one
  key-value message (KVSYNC) per key under ``subtree`` followed by
  ``[KTHXBAI][sequence][][][subtree]``, ``sequence`` being the one the snapshot
  reflects.
- ``[HUGZ][0][][][]`` is published every ``heartbeat`` seconds, so clients can tell a
  quiet server from a dead one.
- Clients send KVSET ``[key][0][uuid][properties][value]`` on a PUB connected to the
  server's collector SUB; a ``ttl=<seconds>`` property makes the value ephemeral.
  Opt-in, for the Guide's Clone model 5 (``clonesrv5``/``clonecli5``, which use PULL
  and PUSH there): ``CloneServer(collector_kind=SocketKind.PULL)`` and
  ``CloneClient(collector_kind=SocketKind.PUSH)``; same frames, same bounds and
  counters. A PUSH client's :meth:`CloneClient.set` may wait (never past the client's
  ``timeout``, then :class:`~transportkit.Timeout`) where a PUB drops.
- The Guide's ``clonesrv5`` answers no snapshot request with an empty subtree (CHP
  allows one): a client following the whole map (``subtree=b""``) then times out,
  counts ``stats.unanswered_snapshots`` and asks again every ``timeout``; follow a
  non-empty subtree against such a server.

Opt-in transportkit extensions, within the frame layout: with ``extensions=True`` HUGZ
carries the server's sequence (as the Guide's servers send it: clients then notice
losses at the tail of the stream) and KTHXBAI a ``count=N`` property (clients check
that no snapshot message was lost); with ``instance_id`` the uuid frame of KTHXBAI and
HUGZ carries it. Clients accept both forms, and the Guide's servers', which put a
random uuid in every message: no client ever relies on the uuid frame.

Parsing is exact: a sequence frame of 8 bytes, properties that are UTF-8 lines each
``name=value`` and each ending in a newline, no name twice; a message that is not CHP
(or a reserved key where it does not belong, a ``ttl`` that is not a finite number
>= 0) is counted as malformed and ignored, on the server and the client alike.

Bounds (see :mod:`transportkit.patterns._limits`). The server serves snapshots side by
side, each in its own task, so a client that reads slowly or not at all never delays
another's; at most ``max_snapshots`` are in progress and ``max_pending_snapshots`` wait,
one per client, and a request past that is refused and counted (the client retries
after its timeout). Requests and collector updates are at most ``max_message_bytes``
(default 1 MiB, also the ROUTER's and the collector's ``maxmsgsize``) with a subtree of
at most ``max_subtree_bytes``; collector updates may bring the map to at most
``max_keys`` keys, with a ``ttl`` of at most ``max_ttl``. The client holds at most
``max_keys`` keys and ``max_state_bytes`` bytes: a server whose map is larger cannot be
followed, which the client counts and retries after ``timeout`` seconds. A pair's
pending list holds at most ``max_pending_updates``.
"""

from transportkit.patterns.clone._client import (
    CLIENT_COLLECTOR_KINDS,
    DEFAULT_CLIENT_MAX_KEYS,
    DEFAULT_CLIENT_MAX_STATE_BYTES,
    CloneClient,
    CloneClientStats,
    CloneEvent,
)
from transportkit.patterns.clone._kvmsg import HUGZ, ICANHAZ, KTHXBAI, TTL, KVMsg
from transportkit.patterns.clone._pair import (
    DEFAULT_MAX_PENDING_UPDATES,
    ClonePairServer,
    ClonePairStats,
)
from transportkit.patterns.clone._server import (
    COLLECTOR_KINDS,
    DEFAULT_MAX_PENDING_SNAPSHOTS,
    DEFAULT_MAX_PROPERTIES_BYTES,
    DEFAULT_MAX_SNAPSHOTS,
    DEFAULT_MAX_SUBTREE_BYTES,
    DEFAULT_MAX_TTL,
    DEFAULT_SERVER_MAX_KEYS,
    CloneServer,
    CloneServerStats,
)

__all__ = [
    "CLIENT_COLLECTOR_KINDS",
    "COLLECTOR_KINDS",
    "DEFAULT_CLIENT_MAX_KEYS",
    "DEFAULT_CLIENT_MAX_STATE_BYTES",
    "DEFAULT_MAX_PENDING_SNAPSHOTS",
    "DEFAULT_MAX_PENDING_UPDATES",
    "DEFAULT_MAX_PROPERTIES_BYTES",
    "DEFAULT_MAX_SNAPSHOTS",
    "DEFAULT_MAX_SUBTREE_BYTES",
    "DEFAULT_MAX_TTL",
    "DEFAULT_SERVER_MAX_KEYS",
    "HUGZ",
    "ICANHAZ",
    "KTHXBAI",
    "TTL",
    "CloneClient",
    "CloneClientStats",
    "CloneEvent",
    "ClonePairServer",
    "ClonePairStats",
    "CloneServer",
    "CloneServerStats",
    "KVMsg",
]
