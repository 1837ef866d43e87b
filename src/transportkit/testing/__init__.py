"""Testing kit: conformance checks, harnesses and (in ``strategies``) Hypothesis strategies.

The checks import no test framework, like trio's ``check_one_way_stream``: call them
from any test runner, with a harness for the backend under test::

    from transportkit.testing import check_req_rep, open_harness

    with open_harness("sim") as h:
        check_req_rep(h, [[b"order-1"]])

:func:`sim_test` runs an ``async def`` pytest test body in a fresh simulation once per
seed, with a replay line, a failure folder and a shrunk, replayable run for the first
seed that fails (its docstring and the documentation's Testing page, docs/testing.md,
say how).

The pytest plugin (``transportkit.testing.pytest_plugin``, registered automatically
when transportkit is installed) provides a ``tk_backend`` fixture parametrized over
``sim`` and ``zmq`` and a ``tk_harness`` fixture on it (all its names start with
``tk_``, so a project's own fixtures keep theirs). Hypothesis strategies live in
:mod:`transportkit.testing.strategies` (imported separately: Hypothesis comes with
the ``testing`` extra, ``pip install 'transportkit[testing]'``), and an example
``RuleBasedStateMachine`` that steps a simulated Majordomo deployment through traffic
and faults, to copy, in
:mod:`transportkit.testing.stateful`.
"""

from transportkit.testing._checks import (
    SYNC_TOPIC,
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
    check_xpub_subscriptions,
    collect_pub_sub,
    expected_pub_sub,
    recv_data,
    sync_subscribers,
    wait_for_event,
)
from transportkit.testing._determinism import check_determinism
from transportkit.testing._faultproxy import FaultProxy, ProxyStats
from transportkit.testing._harness import (
    BACKENDS,
    FaultNotAppliedWarning,
    Harness,
    SimHarness,
    ZmqHarness,
    open_harness,
)
from transportkit.testing._ports import free_tcp_endpoint
from transportkit.testing._process import ChildProcess
from transportkit.testing._simtest import sim_test

__all__ = [
    "BACKENDS",
    "SYNC_TOPIC",
    "ChildProcess",
    "FaultNotAppliedWarning",
    "FaultProxy",
    "Harness",
    "ProxyStats",
    "SimHarness",
    "ZmqHarness",
    "check_bad_input",
    "check_conflate",
    "check_dealer_router",
    "check_determinism",
    "check_hwm",
    "check_pair",
    "check_poll",
    "check_pub_sub_filtering",
    "check_push_pull",
    "check_req_rep",
    "check_slow_joiner",
    "check_xpub_subscriptions",
    "collect_pub_sub",
    "expected_pub_sub",
    "free_tcp_endpoint",
    "open_harness",
    "recv_data",
    "sim_test",
    "sync_subscribers",
    "wait_for_event",
]
