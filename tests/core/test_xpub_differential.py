"""The sim's XPUB against libzmq's: one random script of subscriber actions (SUBs and
an XSUB that also sends data upstream), run on both backends, must show the XPUB the
same messages after every step.

Slow (each zmq step waits for the messages to settle): ``pytest -m slow``.
"""

from __future__ import annotations

import random
from contextlib import ExitStack
from typing import Any

import pytest

from transportkit import Message, SocketOptions, Subscriber, Timeout
from transportkit.testing import Harness, open_harness

pytestmark = pytest.mark.slow

TOPICS = (b"A", b"AB", b"B", b"")
SUBSCRIBERS = 3
XSUB = SUBSCRIBERS  # the script's actor number for the one XSUB
STEPS = 25

Step = tuple[str, int, Any]


def script(seed: int) -> list[Step]:
    """A random sequence of actions, each by one subscriber or by the XSUB (so its
    messages, on its one pipe, have one order on every backend).
    """
    rng = random.Random(seed)
    steps: list[Step] = [("connect", i, [rng.choice(TOPICS)]) for i in range(SUBSCRIBERS)]
    steps.append(("connect-xsub", XSUB, []))
    for _ in range(STEPS):
        who = rng.randrange(SUBSCRIBERS + 1)
        if who == XSUB:
            action = rng.choice(["subscribe", "unsubscribe", "data"])
            steps.append((action, who, rng.choice(TOPICS)))
            continue
        action = rng.choice(["subscribe", "subscribe", "unsubscribe", "unsubscribe", "reconnect"])
        if action == "reconnect":
            steps.append(("reconnect", who, rng.sample(TOPICS, rng.randint(0, 3))))
        else:
            steps.append((action, who, rng.choice(TOPICS)))
    return steps


Seen = list[tuple[str, list[Message]]]


def play(backend: str, steps: list[Step], options: SocketOptions) -> Seen:
    with open_harness(backend) as h:
        return h.run(_play(h, steps, options), timeout=120)


async def _settle(h: Harness, pub: Any) -> list[Message]:
    """What the XPUB receives until it has received nothing for the settle time.

    A waiting receive, not a sleep and a ``try_recv``: libzmq's XPUB learns that a
    pipe ended only after two rounds of commands with its I/O thread, each run when
    the socket is used, which a waiting receive does as they arrive.
    """
    got: list[Message] = []
    while True:
        try:
            got.append(await pub.recv(timeout=h.settle))
        except Timeout:
            return got


async def _play(h: Harness, steps: list[Step], options: SocketOptions) -> Seen:
    seen: Seen = []
    with ExitStack() as stack:
        pub = stack.enter_context(
            h.network("pub").xpublisher(bind=h.bind_endpoint(), options=options)
        )
        endpoint = pub.last_endpoint
        subs: dict[int, Subscriber] = {}
        xsub = stack.enter_context(h.network("xsub").xsubscriber())
        generation = 0
        for action, who, arg in steps:
            if who == XSUB:
                if action == "connect-xsub":
                    xsub.connect(endpoint)
                elif action == "subscribe":
                    xsub.subscribe(arg)
                elif action == "unsubscribe":
                    xsub.unsubscribe(arg)
                else:
                    await xsub.send([b"data " + arg])
            elif action in ("connect", "reconnect"):
                if who in subs:
                    subs[who].close()
                    seen.append((f"close sub{who}", await _settle(h, pub)))
                generation += 1
                net = h.network(f"sub{who}-{generation}")
                subs[who] = net.subscriber(connect=endpoint, topics=arg)
            elif action == "subscribe":
                subs[who].subscribe(arg)
            else:
                subs[who].unsubscribe(arg)
            seen.append((f"{action} sub{who} {arg!r}", await _settle(h, pub)))
        for sub in subs.values():
            sub.close()
    return seen


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    "mode",
    [{}, {"xpub_verbose": True}, {"xpub_verboser": True}],
    ids=["plain", "verbose", "verboser"],
)
def test_the_sim_xpub_sees_what_libzmq_sees(seed: int, mode: dict[str, bool]) -> None:
    steps = script(seed)
    options = SocketOptions(**mode)
    sim = play("sim", steps, options)
    real = play("zmq", steps, options)
    assert len(sim) == len(real)
    for i, ((what, s), (_, z)) in enumerate(zip(sim, real, strict=True)):
        assert s == z, f"step {i}, {what}: sim saw {s!r}, libzmq saw {z!r}"
