"""Hypothesis properties of ZeroMQ behaviour, each run on both backends."""

from __future__ import annotations

import asyncio
from contextlib import ExitStack

from hypothesis import given, settings
from hypothesis import strategies as st

from transportkit import StateError, Timeout
from transportkit.testing import (
    check_conflate,
    check_dealer_router,
    check_hwm,
    check_pair,
    check_pub_sub_filtering,
    check_push_pull,
    check_slow_joiner,
    collect_pub_sub,
    open_harness,
)
from transportkit.testing.strategies import frames, messages, subscription_sets

# Real sockets cost milliseconds per example; the sim runs many more in the same time.
FEW = settings(max_examples=15, deadline=None)


@FEW
@given(subscriptions=subscription_sets(), msgs=st.lists(messages(), max_size=25))
def test_subscribers_get_exactly_their_topics_in_order_and_whole(
    tk_backend: str, subscriptions: list[list[bytes]], msgs: list[list[bytes]]
) -> None:
    with open_harness(tk_backend) as h:
        check_pub_sub_filtering(h, subscriptions, msgs)


@settings(max_examples=10, deadline=None)
@given(subscriptions=subscription_sets(), msgs=st.lists(messages(), max_size=25))
def test_sim_and_zmq_deliver_the_same_messages_in_the_same_order(
    subscriptions: list[list[bytes]], msgs: list[list[bytes]]
) -> None:
    with open_harness("sim") as sim, open_harness("zmq") as real:
        simulated = collect_pub_sub(sim, subscriptions, msgs)
        actual = collect_pub_sub(real, subscriptions, msgs)
    assert simulated == actual


@FEW
@given(pullers=st.integers(1, 4), count=st.integers(0, 40))
def test_push_pull_delivers_each_message_once_round_robin(
    tk_backend: str, pullers: int, count: int
) -> None:
    with open_harness(tk_backend) as h:
        check_push_pull(h, pullers=pullers, count=count)


@FEW
@given(count=st.integers(1, 30), transport=st.sampled_from(["tcp", "inproc"]))
def test_pair_is_ordered_both_ways(tk_backend: str, count: int, transport: str) -> None:
    with open_harness(tk_backend) as h:
        check_pair(h, count=count, transport=transport)


@FEW
@given(hwm=st.integers(1, 20))
def test_at_the_hwm_pub_drops_and_push_blocks(tk_backend: str, hwm: int) -> None:
    with open_harness(tk_backend) as h:
        check_hwm(h, hwm=hwm)


@settings(max_examples=8, deadline=None)
@given(count=st.integers(1, 30))
def test_conflate_keeps_only_the_last_message(tk_backend: str, count: int) -> None:
    with open_harness(tk_backend) as h:
        check_conflate(h, count=count)


OPS = st.lists(st.sampled_from(["req.send", "req.recv", "rep.recv", "rep.send"]), max_size=12)


@FEW
@given(ops=OPS, payload=frames())
def test_req_rep_calls_follow_the_lockstep_model(
    tk_backend: str, ops: list[str], payload: bytes
) -> None:
    """Every call succeeds exactly when the REQ/REP state machine allows it, and
    otherwise raises StateError; receives are only attempted when a message is due."""

    async def body() -> None:
        with ExitStack() as stack:
            rep = stack.enter_context(h.network("server").worker(bind=h.bind_endpoint("tcp")))
            assert rep.last_endpoint is not None
            req = stack.enter_context(h.network("client").requester(connect=rep.last_endpoint))
            req_may_send, rep_may_recv = True, True
            requests_due = replies_due = 0
            for n, op in enumerate(ops):
                allowed = {
                    "req.send": req_may_send,
                    "req.recv": not req_may_send,
                    "rep.recv": rep_may_recv,
                    "rep.send": not rep_may_recv,
                }[op]
                if allowed and op == "req.recv" and not replies_due:
                    continue
                if allowed and op == "rep.recv" and not requests_due:
                    continue
                try:
                    if op == "req.send":
                        await req.send([payload, b"%d" % n])
                    elif op == "rep.send":
                        await rep.send([b"reply", b"%d" % n])
                    elif op == "req.recv":
                        reply = await req.recv(timeout=5.0)
                        assert reply[0] == b"reply", reply
                    else:
                        request = await rep.recv(timeout=5.0)
                        assert request[0] == payload, request
                except StateError:
                    assert not allowed, f"{op} raised StateError but the lockstep allows it"
                    continue
                except Timeout as exc:
                    raise AssertionError(f"{op} timed out although a message was due") from exc
                assert allowed, f"{op} succeeded but the lockstep forbids it"
                if op == "req.send":
                    req_may_send, requests_due = False, requests_due + 1
                elif op == "rep.recv":
                    rep_may_recv, requests_due = False, requests_due - 1
                elif op == "rep.send":
                    rep_may_recv, replies_due = True, replies_due + 1
                else:
                    req_may_send, replies_due = True, replies_due - 1
            await asyncio.sleep(0)

    with open_harness(tk_backend) as h:
        h.run(body(), timeout=60)


ROUTING_IDS = st.binary(min_size=1, max_size=8).filter(lambda b: b[0] != 0 and b != b"nobody")


@FEW
@given(ids=st.lists(ROUTING_IDS, min_size=1, max_size=3, unique=True))
def test_router_routes_by_the_dealers_routing_ids(tk_backend: str, ids: list[bytes]) -> None:
    with open_harness(tk_backend) as h:
        check_dealer_router(h, routing_ids=ids)


@settings(max_examples=6, deadline=None)
@given(count=st.integers(20, 120))
def test_a_slow_joiner_sees_a_gap_free_suffix(tk_backend: str, count: int) -> None:
    with open_harness(tk_backend) as h:
        check_slow_joiner(h, count=count)


@FEW
@given(msgs=st.lists(messages(), min_size=1, max_size=20))
def test_async_iteration_yields_every_message_then_stops_on_close(
    tk_backend: str, msgs: list[list[bytes]]
) -> None:
    async def body() -> list[list[bytes]]:
        net = h.network("local")
        with net.pusher(bind=h.bind_endpoint("inproc")) as push:
            assert push.last_endpoint is not None
            pull = net.puller(connect=push.last_endpoint)
            for msg in msgs:
                await push.send(msg)
            got = []
            async for msg in pull:
                got.append(msg)
                if len(got) == len(msgs):
                    pull.close()
            return got

    with open_harness(tk_backend) as h:
        assert h.run(body(), timeout=30) == msgs
