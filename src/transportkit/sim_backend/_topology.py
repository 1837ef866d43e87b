"""The topology of the simulated world: one-way links between nodes, and their faults.

A :class:`Link` is the path from one node to another: its latency model and whether
traffic passes (partitioned, held). :class:`Topology` keeps the table of links and
applies the link faults; it knows nothing of sockets or connections, so what a fault
does to connections (heartbeat timeouts) is the caller's hook.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from transportkit.sim_backend._latency import LatencyModel
from transportkit.sim_backend._trace import Trace

__all__ = ["Link", "Topology"]


@dataclass(eq=False, slots=True)
class Link:
    """The one-way path from node ``src`` to node ``dst``.

    Attributes:
        src: Sending node's name.
        dst: Receiving node's name.
        latency: The delay model of messages on this link.
        up: False while partitioned: messages wait (as TCP retransmits would) and are
            delivered, in order, on repair; new connections cannot be made.
        holding: True while held (:meth:`Simulation.hold`): messages wait for the
            release, but connections stay up and can still be made.
        spiked_from: During a latency spike (:meth:`Simulation.spike_latency`, a
            ``SetLatency`` fault with a model), the latency the link had before it,
            which the end of the spike restores; None otherwise.
    """

    src: str
    dst: str
    latency: LatencyModel
    up: bool = True
    holding: bool = False
    epoch: int = 0
    held: list[Callable[[], None]] = field(default_factory=list)
    spiked_from: LatencyModel | None = None

    @property
    def passes(self) -> bool:
        """Whether traffic gets through now (neither partitioned nor held)."""
        return self.up and not self.holding


def _directions(a: str, b: str, both_ways: bool) -> list[tuple[str, str]]:
    return [(a, b), (b, a)] if both_ways else [(a, b)]


class Topology:
    """The links between nodes, created on first use with the default latency.

    Args:
        default_latency: The latency model of every link until changed.
        trace: Where the link faults are recorded.
    """

    def __init__(self, default_latency: LatencyModel, trace: Trace) -> None:
        self.default_latency = default_latency
        self.trace = trace
        self.links: dict[tuple[str, str], Link] = {}

    def link(self, src: str, dst: str) -> Link:
        """The one-way link from node ``src`` to node ``dst``, created on first use."""
        key = (src, dst)
        link = self.links.get(key)
        if link is None:
            link = self.links[key] = Link(src, dst, self.default_latency)
        return link

    def set_latency(
        self, now: float, a: str, b: str, model: LatencyModel, *, both_ways: bool
    ) -> None:
        """Give the link ``a -> b`` (and ``b -> a``) a new latency model of its own.

        A spike in progress on a changed direction ends: the new model is what the
        link keeps.
        """
        for src, dst in _directions(a, b, both_ways):
            link = self.link(src, dst)
            link.latency = model
            link.spiked_from = None
        self.trace.add(now, "fault", f"{a}->{b}", f"set_latency {model}")

    def spike_latency(
        self, now: float, a: str, b: str, model: LatencyModel, *, both_ways: bool
    ) -> None:
        """Give the link(s) a temporary latency; each direction remembers the latency
        it had before its first spike, for :meth:`end_latency_spike`.
        """
        for src, dst in _directions(a, b, both_ways):
            link = self.link(src, dst)
            if link.spiked_from is None:
                link.spiked_from = link.latency
            link.latency = model
        self.trace.add(now, "fault", f"{a}->{b}", f"set_latency {model}")

    def end_latency_spike(self, now: float, a: str, b: str, *, both_ways: bool) -> None:
        """Give each direction back the latency it had before its spike (a direction
        without a spike keeps its latency).

        Traced as the latency ``a -> b`` now has, and, if ``b -> a`` now has another,
        a second event for it.
        """
        restored = []
        for src, dst in _directions(a, b, both_ways):
            link = self.link(src, dst)
            if link.spiked_from is not None:
                link.latency, link.spiked_from = link.spiked_from, None
            restored.append(link.latency)
        self.trace.add(now, "fault", f"{a}->{b}", f"set_latency {restored[0]}")
        if len(restored) == 2 and restored[1] != restored[0]:
            self.trace.add(now, "fault", f"{b}->{a}", f"set_latency {restored[1]}")

    def partition(
        self, now: float, a: str, b: str, *, both_ways: bool, on_cut: Callable[[Link], None]
    ) -> None:
        """Cut the link(s); ``on_cut`` is called with each link that was up."""
        for src, dst in _directions(a, b, both_ways):
            link = self.link(src, dst)
            if link.up:
                link.up = False
                link.epoch += 1
                self.trace.add(now, "fault", f"{src}->{dst}", "partition")
                on_cut(link)

    def repair(self, now: float, a: str, b: str, *, both_ways: bool) -> None:
        """Heal cut link(s); what they held is delivered in order."""
        for src, dst in _directions(a, b, both_ways):
            link = self.link(src, dst)
            if not link.up:
                link.up = True
                link.epoch += 1
                self.trace.add(now, "fault", f"{src}->{dst}", "repair")
                self.flush(link)

    def hold(self, now: float, a: str, b: str, *, both_ways: bool) -> None:
        """Hold the traffic of the link(s) until :meth:`release`."""
        for src, dst in _directions(a, b, both_ways):
            link = self.link(src, dst)
            if not link.holding:
                link.holding = True
                self.trace.add(now, "fault", f"{src}->{dst}", "hold")

    def release(self, now: float, a: str, b: str, *, both_ways: bool) -> None:
        """Let held traffic of the link(s) through, in order."""
        for src, dst in _directions(a, b, both_ways):
            link = self.link(src, dst)
            if link.holding:
                link.holding = False
                self.trace.add(now, "fault", f"{src}->{dst}", "release")
                self.flush(link)

    def flush(self, link: Link) -> None:
        """Deliver what ``link`` held back, if it lets traffic through now."""
        if link.passes:
            held, link.held = link.held, []
            for deliver in held:
                deliver()
