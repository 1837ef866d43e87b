"""The transportkit error hierarchy.

Every error a backend raises is one of these; a backend's own exceptions (pyzmq's
``ZMQError`` and friends) are translated and chained (``raise ... from exc``), never
leaked. The names say whose fault it is, in the manner of trio: *Closed* means you closed
it, *Broken* means the peer or the network failed, *State* means the call came in the
wrong order.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "AddressInUseError",
    "BrokenPeerError",
    "ClosedError",
    "EndpointError",
    "FrameError",
    "HostUnreachableError",
    "InvariantViolation",
    "OptionError",
    "ProtocolError",
    "ServiceUnavailableError",
    "SimulationDeadlock",
    "SimulationError",
    "StaleDataError",
    "StateError",
    "TaskFailed",
    "Timeout",
    "TransportError",
    "UnknownOptionError",
    "UnsupportedError",
    "WouldBlock",
]


class TransportError(Exception):
    """Base class of every error transportkit raises."""


class ClosedError(TransportError):
    """The socket or network was closed by its owner and cannot be used any more."""


class BrokenPeerError(TransportError):
    """The peer or the network failed (the peer vanished, the connection broke)."""


class HostUnreachableError(BrokenPeerError):
    """A ROUTER with ``router_mandatory`` was asked to send to an unknown routing id."""


class Timeout(TransportError, builtins.TimeoutError):
    """A blocking send or receive did not complete within its timeout.

    Also a :class:`TimeoutError`, so ``except TimeoutError`` catches it.
    """


class WouldBlock(TransportError):
    """A non-blocking send could not proceed at once (the pipes are at their HWM)."""


class StateError(TransportError):
    """The call is not allowed in the socket's current state (REQ/REP lockstep, EFSM)."""


class OptionError(TransportError, ValueError):
    """A socket or network option is unknown, has the wrong type, or is out of range."""


class UnknownOptionError(OptionError, TypeError):
    """An option name that does not exist (a typo, say); the message suggests the
    closest known name.

    An :class:`OptionError`, and also a :class:`TypeError`, which is what Python raises
    for an unknown keyword argument: ``except TypeError`` still catches it.
    """


class EndpointError(TransportError, ValueError):
    """An endpoint string is malformed or names a transport that cannot be used."""


class AddressInUseError(EndpointError):
    """Binding failed because another socket is already bound to the endpoint."""


class UnsupportedError(TransportError):
    """The operation or transport is not available on this backend or this build."""


class FrameError(TransportError, TypeError):
    """A message breaks the rules of ``check_frames``, or libzmq refused one as too
    large for the transport (EMSGSIZE).

    The rules: a non-empty Sequence of C-contiguous bytes-like frames (see
    :func:`transportkit._socket.check_frames`). Not raised for a frame over the peer's
    ``maxmsgsize``: see :attr:`~transportkit.SocketOptions.maxmsgsize`.
    """


class ServiceUnavailableError(BrokenPeerError):
    """A reliable request gave up: no reply after every retry (Lazy Pirate, Majordomo)."""


class StaleDataError(TransportError):
    """A subscriber fell further behind its publisher than it may (Suicidal Snail)."""


class ProtocolError(TransportError):
    """A peer sent something that does not follow the protocol (malformed envelope, ...)."""


class SimulationError(TransportError):
    """Something inside a simulation tried to use real time, real I/O or threads."""


class SimulationDeadlock(SimulationError):
    """The simulation has no pending event, yet the main coroutine is still waiting."""


class InvariantViolation(SimulationError):
    """An invariant registered with ``Simulation.always`` or ``Simulation.eventually``
    did not hold: the run stops at the step where it broke.

    Attributes:
        name: The invariant's name.
        kind: ``"always"`` or ``"eventually"``.
        time: Virtual time of the violation, in seconds.
        seed: The simulation's seed.
        events: The last trace events (``TraceEvent``) up to the violation (at most
            50; empty when the simulation does not record its trace).
    """

    def __init__(
        self,
        message: str,
        *,
        name: str = "",
        kind: str = "always",
        time: float = 0.0,
        seed: int = 0,
        events: tuple[Any, ...] = (),
    ) -> None:
        super().__init__(message)
        self.name = name
        self.kind = kind
        self.time = time
        self.seed = seed
        self.events = events


class TaskFailed(SimulationError):
    """A task of a simulation ended with an exception that nobody retrieved.

    Raised out of ``Simulation.run``, ``run_for`` and ``run_until`` (and ``close``) at
    the virtual instant the failure became unhandled. Its ``__cause__`` is the task's
    own exception.

    Attributes:
        node: Name of the node the task belonged to, or None (a task of no node, or an
            exception that escaped a loop callback).
        task: The task's name (a node main is ``"NODE.main"``), or the callback's
            description.
        time: Virtual time of the failure, in seconds.
        seed: The simulation's seed, to replay the run.
    """

    def __init__(
        self,
        message: str,
        node: str | None = None,
        task: str = "",
        time: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(message)
        self.node = node
        self.task = task
        self.time = time
        self.seed = seed

    def __reduce__(self) -> tuple[type[TaskFailed], tuple[str, str | None, str, float, int]]:
        return (type(self), (str(self), self.node, self.task, self.time, self.seed))
