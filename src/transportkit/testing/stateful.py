"""A Hypothesis ``RuleBasedStateMachine`` that drives a simulated Majordomo deployment.

An example to copy: Hypothesis picks a sequence of rules (send requests, crash and
restart workers, partition and repair links, let time pass), the simulation advances
with :meth:`~transportkit.sim_backend.Simulation.run_for` between them, and the
invariants are checked after every step. When a property breaks, Hypothesis shrinks
the sequence of steps to a short one and prints it as a program.

The system: a :class:`~transportkit.patterns.MajordomoBroker` on node ``broker``, two
:class:`~transportkit.patterns.MajordomoWorker` nodes serving ``b"echo"`` and two client
nodes, each request made by a :class:`~transportkit.patterns.MajordomoClient` in a task
of its client node. The properties:

- every reply a client gets answers its own request (the body is echoed);
- no reply without a request: workers only ever see request bodies clients sent;
- a request ends at most once, in a reply or a
  :class:`~transportkit.ServiceUnavailableError`, within its retries' time (no hang);
- once every fault is healed, a request is served (checked in :meth:`teardown`).

A task that fails (a bug in the code under test) fails the step with
:class:`~transportkit.TaskFailed`, which Hypothesis shrinks like any other failure.

Run it from a test (this module imports Hypothesis: the ``testing`` extra)::

    from hypothesis import settings
    from transportkit.testing.stateful import MajordomoMachine

    MajordomoMachine.TestCase.settings = settings(
        max_examples=10, stateful_step_count=15, deadline=None
    )
    TestMajordomo = MajordomoMachine.TestCase

To adapt it, replace :meth:`MajordomoMachine.build` with your own nodes, the rules with
your traffic and faults, and the invariants with your properties.
"""

from __future__ import annotations

from dataclasses import dataclass

from transportkit import Message, ServiceUnavailableError
from transportkit._extras import requires_extra
from transportkit.patterns import MajordomoBroker, MajordomoClient, MajordomoWorker
from transportkit.sim_backend import Node, Simulation

with requires_extra("testing", "transportkit.testing.stateful"):
    from hypothesis import strategies as st
    from hypothesis.stateful import (
        RuleBasedStateMachine,
        initialize,
        invariant,
        precondition,
        rule,
    )

__all__ = ["MajordomoMachine", "Outcome"]

WORKERS = ("worker-0", "worker-1")
CLIENTS = ("client-0", "client-1")
SERVICE = b"echo"
BROKER = "tcp://broker:5555"
HEARTBEAT = 0.25
"""Seconds between Majordomo heartbeats (the Guide's 2.5 s, scaled down)."""
TIMEOUT = 0.5
"""Seconds a client waits for each attempt's reply."""
ATTEMPTS = 3
"""Attempts of a client in all."""
STEP = 0.25
"""Virtual seconds every rule lets pass after acting."""


@dataclass(slots=True)
class Outcome:
    """What became of one request.

    Attributes:
        sent_at: Virtual time the request was made.
        reply: The reply, once received.
        failed: True once the client gave up (ServiceUnavailableError).
        ends: How many times it ended (1 at most, or the client is broken).
    """

    sent_at: float
    reply: Message | None = None
    failed: bool = False
    ends: int = 0


class MajordomoMachine(RuleBasedStateMachine):
    """Traffic and faults against a simulated Majordomo broker with two workers.

    Attributes:
        sim: The simulation of the current example (closed in :meth:`teardown`).
        outcomes: Each request's body id -> its :class:`Outcome`.
        served: Request bodies the workers saw, in order.
        down: Workers crashed and not yet restarted.
        cut: Nodes partitioned from the broker and not yet repaired.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sim = Simulation(seed=0)
        self.outcomes: dict[bytes, Outcome] = {}
        self.served: list[bytes] = []
        self.down: set[str] = set()
        self.cut: set[str] = set()
        self._next_id = 0

    @initialize(seed=st.integers(min_value=0, max_value=2**32 - 1))
    def build(self, seed: int) -> None:
        """Make the world of this example: a broker, the workers, the client nodes."""
        self.sim.close()
        self.sim = Simulation(seed=seed)
        served = self.served

        async def broker_main(node: Node) -> None:
            with MajordomoBroker(
                node, "tcp://*:5555", heartbeat_interval=HEARTBEAT, request_ttl=2.0
            ) as broker:
                await broker.run()

        async def worker_main(node: Node) -> None:
            def echo(body: Message) -> Message:
                served.append(bytes(body[0]))
                return self.handle(body)

            async with MajordomoWorker(
                node,
                BROKER,
                SERVICE,
                heartbeat_interval=HEARTBEAT,
                reconnect_interval=HEARTBEAT,
            ) as worker:
                await worker.serve(echo)

        self.sim.node("broker", main=broker_main)
        for name in WORKERS:
            self.sim.node(name, main=worker_main)
        for name in CLIENTS:
            self.sim.node(name)
        self.sim.run_for(1.0)  # workers register

    def handle(self, body: Message) -> Message:
        """The service under test: the workers' handler (echoes the request)."""
        return [b"echo", *body]

    # -- traffic ------------------------------------------------------------------------

    @rule(client=st.sampled_from(CLIENTS))
    def send_request(self, client: str) -> None:
        """A client makes one request (in a task of its node) and time passes."""
        body = b"r%d" % self._next_id
        self._next_id += 1
        self.outcomes[body] = Outcome(self.sim.now)
        self.sim.nodes[client].spawn(self._request(client, body), name=f"request {body!r}")
        self.sim.run_for(STEP)

    async def _request(self, client: str, body: bytes) -> None:
        outcome = self.outcomes[body]
        mdp = MajordomoClient(self.sim.nodes[client], BROKER, timeout=TIMEOUT, attempts=ATTEMPTS)
        try:
            outcome.reply = await mdp.request(SERVICE, [body])
        except ServiceUnavailableError:
            outcome.failed = True
        finally:
            mdp.close()
        outcome.ends += 1

    @rule(seconds=st.floats(min_value=0.0, max_value=3.0))
    def wait(self, seconds: float) -> None:
        """Let virtual time pass."""
        self.sim.run_for(seconds)

    # -- faults -------------------------------------------------------------------------

    @precondition(lambda self: len(self.down) < len(WORKERS))
    @rule(worker=st.sampled_from(WORKERS))
    def crash_worker(self, worker: str) -> None:
        """Kill a worker process (its tasks and sockets go)."""
        self.sim.crash(worker)
        self.down.add(worker)
        self.sim.run_for(STEP)

    @precondition(lambda self: bool(self.down))
    @rule(data=st.data())
    def restart_worker(self, data: st.DataObject) -> None:
        """Start a crashed worker again (its main reruns)."""
        worker = data.draw(st.sampled_from(sorted(self.down)))
        self.sim.restart(worker)
        self.down.discard(worker)
        self.sim.run_for(STEP)

    @rule(node=st.sampled_from(WORKERS + CLIENTS))
    def partition(self, node: str) -> None:
        """Cut the links between the broker and ``node`` (traffic waits)."""
        self.sim.partition("broker", node)
        self.cut.add(node)
        self.sim.run_for(STEP)

    @precondition(lambda self: bool(self.cut))
    @rule(data=st.data())
    def repair(self, data: st.DataObject) -> None:
        """Heal a partition made by :meth:`partition`."""
        node = data.draw(st.sampled_from(sorted(self.cut)))
        self.sim.repair("broker", node)
        self.cut.discard(node)
        self.sim.run_for(STEP)

    # -- properties ---------------------------------------------------------------------

    @invariant()
    def replies_match_their_requests(self) -> None:
        """Every reply echoes its own request: never another client's or a stale one."""
        for body, outcome in self.outcomes.items():
            if outcome.reply is not None:
                assert outcome.reply == [b"echo", body], (body, outcome.reply)

    @invariant()
    def no_reply_without_a_request(self) -> None:
        """Workers see only what clients sent (served more than once is allowed: 7/MDP
        workers are idempotent and clients retry).
        """
        for body in self.served:
            assert body in self.outcomes, body

    @invariant()
    def every_request_ends_once_and_in_bounded_time(self) -> None:
        """A reply or a typed failure, once, within the client's retries (plus slack)."""
        bound = ATTEMPTS * TIMEOUT + 2 * STEP
        for body, outcome in self.outcomes.items():
            assert outcome.ends <= 1, body
            assert outcome.reply is None or not outcome.failed, body
            if self.sim.now - outcome.sent_at > bound:
                assert outcome.ends == 1, f"{body!r} still waiting after {bound} s"

    def teardown(self) -> None:
        """Heal every fault, check that a request is then served, and close the world."""
        try:
            if self.sim.loop is None:
                return  # build never ran
            for worker in sorted(self.down):
                self.sim.restart(worker)
            for node in sorted(self.cut):
                self.sim.repair("broker", node)
            self.down.clear()
            self.cut.clear()
            # A worker's reconnect and READY take a few heartbeats; queued requests
            # older than the broker's request_ttl are dropped meanwhile.
            self.sim.run_for(4 * HEARTBEAT * 3)
            body = b"after-repair"
            self.outcomes[body] = Outcome(self.sim.now)
            self.sim.run(self._request(CLIENTS[0], body), timeout=ATTEMPTS * TIMEOUT + 1)
            assert self.outcomes[body].reply == [b"echo", body], "not served after repair"
        finally:
            self.sim.close()
