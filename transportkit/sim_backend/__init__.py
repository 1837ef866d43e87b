"""The deterministic SimPy backend: ZeroMQ modelled in virtual time.

Build a :class:`Simulation`, take a :class:`Node` (a :class:`~transportkit.Network`) per
simulated process, and run unmodified ``async def`` trading logic with
:meth:`Simulation.run`. Latency, HWM drops, slow joiners, disconnects, partitions and
crashes are modelled; the same seed always gives the same run and the same trace hash.

What is modelled, and how (the choices where libzmq is inexact):

- A path from a sender to a receiver holds at most SNDHWM + RCVHWM messages, for every
  transport (libzmq's inproc capacity; real tcp adds kernel buffers on top).
- tcp ports and ipc paths are global to the simulation (one address space), tcp hosts
  are not checked on connect; inproc names are local to a node.
- Connecting takes one link delay; subscriptions take one more to reach a publisher
  (the slow joiner); inproc connects and subscribes at once.
- Reconnect attempts follow ``reconnect_ivl`` doubling up to ``reconnect_ivl_max``,
  without libzmq's jitter; as in libzmq, an interval of 0 or -1 never retries.
- A partition holds traffic (as TCP retransmission would) and delivers it on repair;
  with ZMTP heartbeats configured the connection is dropped after the heartbeat timeout.
  A peer's crash is noticed one link delay later, or, across a partition, on repair.
- ``maxmsgsize`` applies as in libzmq 4.3: to each frame (not to a message's total),
  over ipc and tcp only (never inproc). A frame over the limit loses its message,
  counted in the receiver's ``stats.dropped`` and traced as a ``maxmsgsize`` drop,
  and drops the connection like any other dropped connection (what is in flight
  behind it is lost; DISCONNECTED on both monitors); a connecting sender reconnects,
  a connecting receiver does not (libzmq ends a session on a protocol error).
- A conflating receiver keeps one frame, as libzmq 4.3 does: of a multipart message only
  the last frame survives (and a conflating SUB filters on that frame).
"""

from transportkit.sim_backend._faults import (
    Crash,
    DropConnection,
    Fault,
    FaultSchedule,
    Hold,
    Partition,
    Release,
    Repair,
    Restart,
    SetLatency,
    apply_fault,
    schedule_faults,
)
from transportkit.sim_backend._latency import (
    Constant,
    Empirical,
    LatencyModel,
    LogNormal,
    Normal,
    Uniform,
)
from transportkit.sim_backend._loop import SimEventLoop
from transportkit.sim_backend._trace import Trace, TraceEvent
from transportkit.sim_backend._world import Link, Node, Simulation

__all__ = [
    "Constant",
    "Crash",
    "DropConnection",
    "Empirical",
    "Fault",
    "FaultSchedule",
    "Hold",
    "LatencyModel",
    "Link",
    "LogNormal",
    "Node",
    "Normal",
    "Partition",
    "Release",
    "Repair",
    "Restart",
    "SetLatency",
    "SimEventLoop",
    "Simulation",
    "Trace",
    "TraceEvent",
    "Uniform",
    "apply_fault",
    "schedule_faults",
]
