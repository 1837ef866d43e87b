"""The market-data wire format: [b"MARKET.<symbol>", u64 LE timestamp, MarketData]."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from transportkit import ProtocolError
from transportkit.trading import (
    MarketData,
    decode_market_data,
    encode_market_data,
    topic_for,
)


def test_topic_is_market_dot_symbol() -> None:
    assert topic_for("AAPL") == b"MARKET.AAPL"
    assert topic_for("BRK.B") == b"MARKET.BRK.B"


@pytest.mark.parametrize("bad", ["", "A B", "\t"])
def test_topic_refuses_empty_or_spaced_symbols(bad: str) -> None:
    with pytest.raises(ValueError, match="symbol"):
        topic_for(bad)


def test_frames_are_topic_little_endian_timestamp_and_payload() -> None:
    md = MarketData(symbol="AAPL", bid=1.0, ask=1.5, sequence=7)
    topic, stamp, payload = encode_market_data(md, 0x0102030405060708)
    assert topic == b"MARKET.AAPL"
    assert stamp == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert MarketData.FromString(payload) == md


symbols = st.text(
    alphabet=st.characters(categories=["Lu", "Ll", "Nd"], include_characters="."),
    min_size=1,
    max_size=12,
)


@given(symbols, st.integers(0, 2**64 - 1), st.floats(allow_nan=False), st.integers(0, 2**63))
def test_decode_inverts_encode(symbol: str, ts: int, bid: float, seq: int) -> None:
    md = MarketData(symbol=symbol, bid=bid, sequence=seq)
    update = decode_market_data(encode_market_data(md, ts))
    assert (update.symbol, update.timestamp_ns, update.data) == (symbol, ts, md)


def test_encode_refuses_timestamps_outside_u64() -> None:
    with pytest.raises(ValueError, match="64"):
        encode_market_data(MarketData(symbol="A"), -1)


GOOD = encode_market_data(MarketData(symbol="AAPL"), 1)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (GOOD[:2], "3 frames"),
        ([*GOOD, b"x"], "3 frames"),
        ([b"QUOTE.AAPL", GOOD[1], GOOD[2]], "does not start with"),
        ([GOOD[0], b"\x01", GOOD[2]], "8 bytes"),
        ([GOOD[0], GOOD[1], b"\xff\xff\xff"], "does not decode"),
        ([b"MARKET.MSFT", GOOD[1], GOOD[2]], "arrived on topic"),
        ([b"MARKET.\xff", GOOD[1], GOOD[2]], "UTF-8"),
    ],
)
def test_malformed_messages_raise_protocol_error_naming_the_fault(
    frames: list[bytes], message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_market_data(frames)


def test_timestamp_frame_is_unsigned() -> None:
    frames = encode_market_data(MarketData(symbol="X"), 2**64 - 1)
    assert struct.unpack("<Q", frames[1]) == (2**64 - 1,)
