"""The bounds shared by the server patterns."""

from __future__ import annotations

import pytest

from transportkit import SocketOptions
from transportkit.patterns._limits import (
    DEFAULT_MAX_MESSAGE_BYTES,
    bounded_options,
    check_bound,
    check_finite_hwm,
    check_message_limit,
    message_bytes,
    too_large,
)


def test_message_bytes_counts_every_frame() -> None:
    assert message_bytes([b"ab", b"", b"cde"]) == 5


def test_too_large_is_strictly_over_the_limit_and_never_without_one() -> None:
    assert not too_large([b"x" * 4], 4)
    assert too_large([b"x" * 4, b"y"], 4)
    assert not too_large([b"x" * 10**6], None)


def test_bounded_options_sets_maxmsgsize_only_where_the_caller_left_it_unlimited() -> None:
    assert bounded_options(None, 100).maxmsgsize == 100
    assert bounded_options(SocketOptions(sndhwm=5), 100) == SocketOptions(sndhwm=5, maxmsgsize=100)
    assert bounded_options(SocketOptions(maxmsgsize=7), 100).maxmsgsize == 7
    assert bounded_options(None, None).maxmsgsize == -1


def test_default_limit_is_one_mebibyte() -> None:
    assert bounded_options(None, DEFAULT_MAX_MESSAGE_BYTES).maxmsgsize == 1 << 20


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "10"])
def test_bounds_must_be_positive_ints(bad: object) -> None:
    with pytest.raises(ValueError, match="max_message_bytes must be an int >= 1"):
        check_message_limit(bad)
    with pytest.raises(ValueError, match="queue must be an int >= 1"):
        check_bound("queue", bad)


def test_no_message_limit_is_none() -> None:
    assert check_message_limit(None) is None
    assert check_message_limit(64) == 64


@pytest.mark.parametrize("field", ["sndhwm", "rcvhwm"])
def test_an_unlimited_hwm_is_refused_by_name(field: str) -> None:
    with pytest.raises(ValueError, match=f"server: {field}=0 \\(unlimited\\)"):
        check_finite_hwm(SocketOptions(**{field: 0}), "server", "sndhwm", "rcvhwm")
    check_finite_hwm(SocketOptions(sndhwm=1, rcvhwm=1), "server", "sndhwm", "rcvhwm")
