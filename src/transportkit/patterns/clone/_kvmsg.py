"""The key-value message of 12/CHP, its reserved keys, and the ``ttl`` property."""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from transportkit._errors import ProtocolError

ICANHAZ: Final = b"ICANHAZ?"
"""Frame 0 of a snapshot request."""
KTHXBAI: Final = b"KTHXBAI"
"""Key of the message that ends a snapshot."""
HUGZ: Final = b"HUGZ"
"""Key of the server's heartbeat."""
TTL: Final = "ttl"
"""The property that makes a value ephemeral: seconds it lives, as decimal text."""

_SEQUENCE: Final = struct.Struct("!Q")
RESERVED: Final = frozenset({HUGZ, KTHXBAI, ICANHAZ})


@dataclass(frozen=True, slots=True)
class KVMsg:
    """One key-value message of CHP.

    Attributes:
        key: The key (and the PUB topic); for market data ``MARKET.<symbol>``.
        sequence: The server's sequence number of this change (0 before it is set).
        uuid: An identifier of the change chosen by its author; may be empty.
        properties: Text properties (names without ``=`` or newlines, values without
            newlines).
        body: The value; empty means the key was deleted.
    """

    key: bytes
    sequence: int = 0
    uuid: bytes = b""
    properties: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def encode(self) -> list[bytes]:
        """The five frames of this message.

        Raises:
            ValueError: The sequence does not fit in 64 unsigned bits, or a property
                name or value cannot be encoded.
        """
        if not 0 <= self.sequence < 2**64:
            raise ValueError(f"sequence must fit in 64 unsigned bits, got {self.sequence}")
        lines = []
        for name, value in self.properties.items():
            if not name or "=" in name or "\n" in name or "\n" in value:
                raise ValueError(f"property {name!r}={value!r} cannot be encoded")
            lines.append(f"{name}={value}\n")
        return [
            bytes(self.key),
            _SEQUENCE.pack(self.sequence),
            bytes(self.uuid),
            "".join(lines).encode(),
            bytes(self.body),
        ]

    @classmethod
    def decode(cls, frames: Sequence[bytes]) -> KVMsg:
        """Parse the five frames of a key-value message, exactly.

        Raises:
            ProtocolError: Not five frames; a sequence frame that is not 8 bytes; or a
                properties frame that is not UTF-8, or not a series of ``name=value``
                lines with a non-empty name, each ending in a newline, no name twice.
        """
        if len(frames) != 5:
            raise ProtocolError(f"a CHP key-value message has 5 frames, got {len(frames)}")
        key, seq, uuid, props, body = frames
        if len(seq) != _SEQUENCE.size:
            raise ProtocolError(f"CHP sequence frame must be 8 bytes, got {len(seq)}")
        (sequence,) = _SEQUENCE.unpack(seq)
        return cls(bytes(key), sequence, bytes(uuid), _decode_properties(props), bytes(body))


def _decode_properties(frame: bytes) -> dict[str, str]:
    properties: dict[str, str] = {}
    if not frame:
        return properties
    if not frame.endswith(b"\n"):
        raise ProtocolError(f"CHP properties must end in a newline: {frame[-40:]!r}")
    try:
        text = bytes(frame).decode()
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"CHP properties are not UTF-8: {frame[:40]!r}") from exc
    for line in text[:-1].split("\n"):
        name, sep, value = line.partition("=")
        if not sep or not name:
            raise ProtocolError(f"CHP property line {line[:40]!r} is not name=value")
        if name in properties:
            raise ProtocolError(f"CHP property {name[:40]!r} appears twice")
        properties[name] = value
    return properties


def parse_ttl(properties: Mapping[str, str]) -> float | None:
    """The ``ttl`` property in seconds, None when absent or 0 (the Guide's "no TTL").

    Raises:
        ProtocolError: The value is not a finite, non-negative decimal number.
    """
    text = properties.get(TTL)
    if text is None:
        return None
    try:
        ttl = float(text)
    except ValueError as exc:
        raise ProtocolError(f"CHP ttl {text[:40]!r} is not a number") from exc
    if not math.isfinite(ttl) or ttl < 0:
        raise ProtocolError(f"CHP ttl must be finite and >= 0, got {text[:40]!r}")
    return ttl or None


def format_ttl(seconds: float) -> str:
    """``seconds`` as the text of a ``ttl`` property (millisecond precision, >= 0.001)."""
    return f"{max(seconds, 0.001):.3f}"


def is_data_key(key: bytes) -> bool:
    """Whether ``key`` may name a value (non-empty, not reserved by CHP)."""
    return bool(key) and key not in RESERVED
