"""CURVE key arithmetic without libzmq: Z85 (ZeroMQ RFC 32) and X25519 (RFC 7748).

Both backends need the same answers to "is this a valid key" and "which public key goes
with this secret key": the zmq backend to refuse a misconfiguration before libzmq sees
it, the sim backend to decide whether a handshake would succeed. These are pure
functions of their arguments, written from the two RFCs.
"""

from __future__ import annotations

import base64
import functools
from typing import Final

from transportkit._errors import OptionError

__all__ = ["KEY_BYTES", "Z85_KEY_CHARS", "curve_public", "key_z85", "z85_decode", "z85_encode"]

KEY_BYTES: Final = 32
"""A CURVE key in binary form."""
Z85_KEY_CHARS: Final = 40
"""A CURVE key in Z85 form (32 bytes, four to five characters)."""

_Z85: Final = (
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
# Python's base85 (RFC 1924 alphabet) encodes 4-byte groups big-endian, most significant
# digit first, as Z85 does: only the alphabets differ, so a translation table converts.
_B85: Final = (
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+-;<=>?@^_`{|}~"
)
_TO_Z85: Final = bytes.maketrans(_B85, _Z85)
_FROM_Z85: Final = bytes.maketrans(_Z85, _B85)
_Z85_SET: Final = frozenset(_Z85)


def z85_encode(data: bytes) -> bytes:
    """Z85-encode ``data`` (its length must be a multiple of 4, as RFC 32 requires)."""
    if len(data) % 4:
        raise ValueError(f"Z85 encodes multiples of 4 bytes, got {len(data)}")
    return base64.b85encode(data).translate(_TO_Z85)


def z85_decode(text: bytes) -> bytes:
    """Decode Z85 ``text`` (a multiple of 5 characters of the Z85 alphabet)."""
    if len(text) % 5 or not _Z85_SET.issuperset(text):
        raise ValueError("not Z85: the length must be a multiple of 5 and every character Z85")
    try:
        return base64.b85decode(text.translate(_FROM_Z85))
    except ValueError as exc:  # a group above 2**32 - 1
        raise ValueError(f"not Z85: {exc}") from None


def key_z85(name: str, key: object) -> bytes:
    """Normalise a CURVE key to its 40-byte Z85 form.

    Accepts 40 Z85 characters (``str`` or ``bytes``) or 32 raw bytes, as libzmq's
    ``ZMQ_CURVE_*KEY`` options do.

    Raises:
        OptionError: Naming ``name`` when ``key`` is neither.
    """
    if isinstance(key, str):
        try:
            key = key.encode("ascii")
        except UnicodeEncodeError:
            raise OptionError(f"option {name!r} must be a Z85 key (ASCII)") from None
    if not isinstance(key, bytes):
        raise OptionError(
            f"option {name!r} must be a CURVE key (40 Z85 characters or 32 bytes), "
            f"got {type(key).__name__}"
        )
    if len(key) == KEY_BYTES:
        return z85_encode(key)
    if len(key) == Z85_KEY_CHARS:
        try:
            z85_decode(key)
        except ValueError:
            raise OptionError(f"option {name!r} is 40 characters long but not Z85") from None
        return key
    raise OptionError(
        f"option {name!r} must be 40 Z85 characters or 32 raw bytes, got {len(key)} bytes"
    )


_P: Final = 2**255 - 19
_A24: Final = 121665


def _x25519(scalar: bytes, u: bytes) -> bytes:
    # RFC 7748, section 5: clamp the scalar, run the Montgomery ladder on u.
    k = int.from_bytes(scalar, "little")
    k = (k & ~7 & ((1 << 255) - 1)) | (1 << 254)
    x1 = int.from_bytes(u, "little") & ((1 << 255) - 1)
    x2, z2, x3, z3 = 1, 0, x1, 1
    swap = 0
    for t in range(254, -1, -1):
        bit = (k >> t) & 1
        if swap ^ bit:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b = x2 + z2, x2 - z2
        aa, bb = a * a % _P, b * b % _P
        e = aa - bb
        c, d = x3 + z3, x3 - z3
        da, cb = d * a % _P, c * b % _P
        x3, z3 = (da + cb) ** 2 % _P, x1 * (da - cb) ** 2 % _P
        x2, z2 = aa * bb % _P, e * (aa + _A24 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


@functools.lru_cache(maxsize=256)
def curve_public(secret_z85: bytes) -> bytes:
    """The Z85 public key of a Z85 secret key (X25519 with the base point 9)."""
    return z85_encode(_x25519(z85_decode(secret_z85), (9).to_bytes(32, "little")))
