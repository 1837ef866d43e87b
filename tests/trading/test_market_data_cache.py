"""Topics and symbols are remembered (bounded) so that a feed's updates are encoded and
decoded without turning the same symbol into a topic, and back, every time.
"""

from __future__ import annotations

import pytest

from transportkit import ProtocolError
from transportkit.trading import (
    MarketData,
    _market_data,
    decode_market_data,
    encode_market_data,
    topic_for,
)


def test_a_remembered_topic_is_the_same_and_bad_symbols_still_raise() -> None:
    assert topic_for("AAPL") == b"MARKET.AAPL"
    assert topic_for("AAPL") is topic_for("AAPL")
    for bad in ("", "A B", "A\tB"):
        with pytest.raises(ValueError, match="without whitespace"):
            topic_for(bad)
        with pytest.raises(ValueError):
            topic_for(bad)  # not remembered as valid


def test_decoding_a_remembered_topic_still_checks_the_payload() -> None:
    frames = encode_market_data(MarketData(symbol="MSFT", sequence=3), 42)
    update = decode_market_data(frames)
    assert (update.symbol, update.timestamp_ns, update.data.sequence) == ("MSFT", 42, 3)
    other = encode_market_data(MarketData(symbol="GOOG"), 1)
    with pytest.raises(ProtocolError, match="arrived on topic"):
        decode_market_data([frames[0], other[1], other[2]])
    with pytest.raises(ProtocolError, match="does not start with"):
        decode_market_data([b"OTHER.MSFT", frames[1], frames[2]])
    with pytest.raises(ProtocolError, match="not UTF-8"):
        decode_market_data([b"MARKET.\xff", frames[1], frames[2]])


def test_the_caches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_market_data, "_TOPICS", {})
    monkeypatch.setattr(_market_data, "_SYMBOLS", {})
    monkeypatch.setattr(_market_data, "_CACHED_SYMBOLS", 8)
    for i in range(50):
        assert topic_for(f"S{i}") == f"MARKET.S{i}".encode()
        decode_market_data(encode_market_data(MarketData(symbol=f"S{i}"), i))
        decode_market_data(
            [
                f"MARKET.T{i}".encode(),
                (0).to_bytes(8, "little"),
                MarketData(symbol=f"T{i}").SerializeToString(),
            ]
        )
    assert len(_market_data._TOPICS) == 8
    assert len(_market_data._SYMBOLS) == 8
