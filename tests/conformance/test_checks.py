"""The conformance checks, each collected once per backend ([sim] and [zmq])."""

from __future__ import annotations

import pytest

from transportkit.testing import (
    Harness,
    check_bad_input,
    check_conflate,
    check_dealer_router,
    check_hwm,
    check_pair,
    check_poll,
    check_pub_sub_filtering,
    check_push_pull,
    check_req_rep,
    check_slow_joiner,
)

TRANSPORTS = ["tcp", "ipc", "inproc"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_pub_sub_delivers_matching_topics_in_order(tk_harness: Harness, transport: str) -> None:
    check_pub_sub_filtering(
        tk_harness,
        [[b"MARKET.AAPL"], [b"MARKET."], [b"NEWS", b"MARKET.M"], []],
        [
            [b"MARKET.AAPL", b"\x00" * 8, b"px=1"],
            [b"MARKET.MSFT", b"\x01" * 8, b"px=2"],
            [b"NEWS.fed", b"rates"],
            [b"MARKET.AAPL", b"\x02" * 8, b"px=3"],
        ],
        transport=transport,
    )


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_slow_joiner_loses_only_a_prefix(tk_harness: Harness, transport: str) -> None:
    check_slow_joiner(tk_harness, transport=transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_req_rep_lockstep(tk_harness: Harness, transport: str) -> None:
    check_req_rep(tk_harness, [[b"order-%d" % i, b"qty"] for i in range(5)], transport=transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_push_pull_exactly_once_round_robin(tk_harness: Harness, transport: str) -> None:
    check_push_pull(tk_harness, transport=transport)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_pair_both_ways(tk_harness: Harness, transport: str) -> None:
    check_pair(tk_harness, transport=transport)


@pytest.mark.parametrize("transport", ["tcp", "ipc"])
def test_dealer_router_routing(tk_harness: Harness, transport: str) -> None:
    check_dealer_router(tk_harness, transport=transport)


def test_hwm_pub_drops_push_blocks(tk_harness: Harness) -> None:
    check_hwm(tk_harness)


@pytest.mark.parametrize("transport", ["tcp", "inproc"])
def test_conflate_keeps_last(tk_harness: Harness, transport: str) -> None:
    check_conflate(tk_harness, transport=transport)


def test_bad_input_raises_typed_errors(tk_harness: Harness) -> None:
    check_bad_input(tk_harness)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_poll_reports_waiting_messages_without_taking_them(
    tk_harness: Harness, transport: str
) -> None:
    check_poll(tk_harness, transport=transport)
