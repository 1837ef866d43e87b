"""The kernel's socket buffers on ipc and tcp connections: a byte-based model.

On libzmq a message sent over ipc or tcp waits in up to four places: the sender's pipe
(SNDHWM messages), the kernel's socket buffers (bytes), libzmq's I/O threads (one
message the receiver's decoder could not push) and the receiver's pipe (RCVHWM
messages). inproc has no kernel buffer: its single pipe holds SNDHWM + RCVHWM.

The simulator models the two pipes as message queues (``_pipes``) and, between them,
for each direction of an ipc or tcp connection, a byte budget (:func:`capacity`) that
messages past the receiver's RCVHWM occupy, each charged :func:`charge` bytes of it,
until the receiver reads and the oldest of them moves into its pipe. The first message
past the HWM always fits (the decoder's pending message, or one larger than the whole
buffer, which the kernel takes in part); tcp, which checks its memory before each
write, admits messages while the budget is not used up. It also models libzmq's pipe
notifications (``pipe.cpp``): the reader tells the writer about what it read only
every :func:`low_water_mark` messages, so a sending socket sees its pipe full up to
that many messages early.

What the model cannot know, and the tolerance it states: the ratio of the sim's count
to the median of the real ones (three runs each, measured on Linux 6.x with libzmq
4.3.5: ``tests/sim_backend/data/kernel_buffers.json``, checked by
``tests/sim_backend/test_sim_kernel_buffers.py``):

- tcp's autotuning: with the OS-default buffers Linux grows the sender's buffer up to
  ``net.ipv4.tcp_wmem``'s maximum as it sees fit; the sim takes that maximum. Real
  capacities measured 2.9 to 4.3 MB: 0.9 to 1.6.
- how many messages share one kernel write: libzmq's I/O thread writes whatever the
  pipe holds when it runs (up to an 8 KiB batch, ``out_batch_size``), which depends on
  how fast the sending thread runs against it. The sim charges each message as
  written alone, which is what happens to messages of 8 KiB and more and at SNDHWM 1
  (there the counts agree to a message or two, or within the tolerance below); real
  ipc at larger HWMs packs several small messages into each write and held up to
  about eight times as many (10 B at HWM 100, on a loaded machine), or (1 KiB at
  HWM 10) about half: 0.1 to 2.2 for messages under 8 KiB at HWMs above 1.
- everything else (the kernel's exact per-skb accounting, tcp's coalescing): 0.7 to
  1.6.
- a PUB does not wait for room: a real one delivers what libzmq's I/O thread moved
  while it sent, and for small messages over tcp, or in a tight burst, that is less
  than the capacity (libzmq's sending thread learns of freed pipe space only when it
  processes commands, at most every ``max_command_delay``, about 1 ms, while it
  sends). The sim's sends take no virtual time, so its PUB fills the path: there the
  sim's count is an upper bound (the lower end of the tolerance still holds), and the
  real count at least SNDHWM - 1.
- inproc: exactly SNDHWM + RCVHWM (libzmq's own pipe notifications on inproc, which
  can cost a message or more, are not modelled): 1.0 to 1.06.

Sizes set explicitly (``SocketOptions.sndbuf``/``rcvbuf``, libzmq's ZMQ_SNDBUF and
ZMQ_RCVBUF) apply to tcp only, as in libzmq, which sets them on tcp sockets only.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from transportkit.sim_backend._pipes import Peer

__all__ = [
    "BATCH_BYTES",
    "SKB_OVERHEAD",
    "TCP_RCVBUF_DEFAULT",
    "TCP_SNDBUF_AUTOTUNED",
    "UNIX_SNDBUF_DEFAULT",
    "attach",
    "capacity",
    "charge",
    "low_water_mark",
    "wire_bytes",
]

BATCH_BYTES: Final = 8192
"""libzmq's ``in_batch_size`` and ``out_batch_size`` (``options.cpp``): what its
encoder and decoder move per system call."""

TCP_SNDBUF_AUTOTUNED: Final = 4_194_304
"""``net.ipv4.tcp_wmem``'s maximum (Linux's default, 4 MiB): where autotuning takes
the send buffer of a tcp socket whose ZMQ_SNDBUF is left to the OS."""

TCP_RCVBUF_DEFAULT: Final = 131_072
"""``net.ipv4.tcp_rmem``'s default (Linux's, 128 KiB): the receive buffer of a tcp
socket whose ZMQ_RCVBUF is left to the OS. Autotuning grows it only as the application
reads, which a stalled receiver does not."""

UNIX_SNDBUF_DEFAULT: Final = 212_992
"""``net.core.wmem_default`` (Linux's default): the send buffer of an AF_UNIX socket,
which holds what an ipc stream socket wrote until the peer reads it (a unix stream
socket's receive buffer does not limit it)."""

SOCKET_BUFFER_MAX: Final = 212_992
"""``net.core.wmem_max`` and ``rmem_max`` (Linux's defaults): SO_SNDBUF/SO_RCVBUF are
capped there before Linux doubles them."""

SOCK_MIN_SNDBUF: Final = 4608
"""Linux's smallest send buffer (``SOCK_MIN_SNDBUF``, 2 x (2048 + 256))."""

SOCK_MIN_RCVBUF: Final = 2304
"""Linux's smallest receive buffer (``SOCK_MIN_RCVBUF``, 2048 + 256)."""

SKB_OVERHEAD: Final = 256 + 320
"""What Linux charges for an skb besides its data: the ``sk_buff`` (256 bytes,
cache-aligned) and the ``skb_shared_info`` at the end of its head (320)."""

_PAGE: Final = 4096
_SKB_MAX_HEAD: Final = _PAGE - 320
"""A unix stream write's largest linear head; the rest goes in whole pages."""

_MAX_WM_DELTA: Final = 1024
"""libzmq's ``max_wm_delta`` (``config.hpp``)."""


def wire_bytes(frames: list[bytes]) -> int:
    """The bytes a message takes in a ZMTP 3 stream: per frame a flags byte and a size
    of one byte (frames up to 255 bytes) or eight, then the frame.
    """
    total = 0
    for frame in frames:
        size = len(frame)
        total += size + (2 if size < 256 else 9)
    return total


def charge(transport: str, size: int) -> int:
    """Bytes of the kernel's buffer a message of ``size`` wire bytes occupies.

    ipc: the truesize of the skb a unix stream socket allocates for a write of that
    size: its head rounded up to a power-of-two slab (at least 512 bytes) plus the
    ``sk_buff``, and what does not fit in a head in whole pages. tcp: the ZMTP bytes
    (tcp coalesces small writes into large segments, whose overhead is small).
    """
    if transport != "ipc":
        return size
    paged = 0
    if size > _SKB_MAX_HEAD:
        paged = min(size, -(-(size - _SKB_MAX_HEAD) // _PAGE) * _PAGE)
    head = size - paged
    slab = 512
    aligned = -(-head // 64) * 64 + 320
    while slab < aligned:
        slab *= 2
    return slab + 256 + paged


def capacity(transport: str, sndbuf: int | None, rcvbuf: int | None) -> int:
    """The kernel's byte budget for one direction of a connection (0 for inproc).

    Args:
        transport: ``"tcp"``, ``"ipc"`` or ``"inproc"``.
        sndbuf: The sending socket's ZMQ_SNDBUF (None: the OS default).
        rcvbuf: The receiving socket's ZMQ_RCVBUF (None: the OS default).

    tcp: the sender's send buffer plus the receiver's receive buffer, each the OS
    default (:data:`TCP_SNDBUF_AUTOTUNED`, :data:`TCP_RCVBUF_DEFAULT`) or twice the
    value set, capped and floored as Linux does. ipc: an AF_UNIX socket's send buffer
    (:data:`UNIX_SNDBUF_DEFAULT`); libzmq does not apply ZMQ_SNDBUF/ZMQ_RCVBUF there.
    """
    if transport == "ipc":
        return UNIX_SNDBUF_DEFAULT
    if transport != "tcp":
        return 0
    snd = (
        TCP_SNDBUF_AUTOTUNED
        if sndbuf is None
        else max(SOCK_MIN_SNDBUF, 2 * min(sndbuf, SOCKET_BUFFER_MAX))
    )
    rcv = (
        TCP_RCVBUF_DEFAULT
        if rcvbuf is None
        else max(SOCK_MIN_RCVBUF, 2 * min(rcvbuf, SOCKET_BUFFER_MAX))
    )
    return snd + rcv


def low_water_mark(hwm: int) -> int:
    """How often a pipe's reader tells its writer how much it read, in messages.

    libzmq's ``pipe_t::compute_lwm``; 0 for an unlimited pipe (no notifications).
    """
    if hwm <= 0:
        return 0
    return hwm - _MAX_WM_DELTA if hwm > 2 * _MAX_WM_DELTA else (hwm + 1) // 2


def attach(a: Peer, b: Peer, transport: str) -> None:
    """Give both directions of a new ipc or tcp connection between ``a`` and ``b``
    their kernel buffers (kept on the receiving peer) and pipe notification periods.
    """
    for sender, receiver in ((a, b), (b, a)):
        receiver.kcap = capacity(
            transport, sender.sock.options.sndbuf, receiver.sock.options.rcvbuf
        )
        receiver.kused = 0
        receiver.kq = deque()
        receiver.kipc = transport == "ipc"
        sender.lwm = low_water_mark(sender.sock.sndhwm)


def admit(receiver: Peer, frames: list[bytes]) -> bool:
    """Whether a message past ``receiver``'s RCVHWM fits in the kernel; if so, book it."""
    kq = receiver.kq
    if kq is None or not receiver.kcap:
        return False
    size = wire_bytes(frames)
    if receiver.kipc:
        cost = charge("ipc", size)
        if kq and receiver.kused + cost > receiver.kcap:
            return False
    else:
        # tcp checks its memory before it queues a write (sk_stream_memory_free), so
        # the last write may go past the budget.
        cost = size
        if receiver.kused >= receiver.kcap:
            return False
    kq.append(cost)
    receiver.kused += cost
    return True


def reset(peer: Peer) -> None:
    """The connection into ``peer`` is gone: so is what its kernel buffer held."""
    if peer.kq is not None:
        peer.kq.clear()
    peer.kused = 0
