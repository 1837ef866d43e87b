"""Decoding helpers shared by the trading components: one place turns bad bytes into
a :class:`~transportkit.ProtocolError` that says what was wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from transportkit import ProtocolError

__all__ = ["parse", "single_frame"]

M = TypeVar("M", bound=ProtoMessage)


def single_frame(message: Sequence[bytes], what: str) -> bytes:
    """Return the only frame of ``message``; raise ProtocolError if it has more or fewer."""
    if len(message) != 1:
        raise ProtocolError(f"{what} must be a single frame, got {len(message)} frames")
    return message[0]


def parse(cls: type[M], data: bytes, what: str) -> M:
    """Decode ``data`` as a ``cls`` protobuf message.

    Raises:
        ProtocolError: The bytes are not a valid encoding of ``cls``; the message names
            ``what`` was being decoded and protobuf's reason. Whatever the parser raises
            on bad bytes becomes this error: the C (upb) parser raises ``DecodeError``,
            the pure-Python one also ``UnicodeDecodeError`` and others.
    """
    message = cls()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolError(
            f"{what} does not decode as {cls.DESCRIPTOR.full_name} ({len(data)} bytes): {exc}"
        ) from exc
    except Exception as exc:  # the pure-Python parser's errors on bad bytes vary
        raise ProtocolError(
            f"{what} does not decode as {cls.DESCRIPTOR.full_name} ({len(data)} bytes): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return message
