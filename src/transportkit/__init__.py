"""transportkit: trading code over ZeroMQ-style sockets, on real pyzmq or in a
deterministic simulation.

Trading logic is an ``async def`` function that receives a :class:`Network` and uses
only the sockets it makes. Run it on :class:`transportkit.zmq_backend.ZmqNetwork` in
production, or inside :class:`transportkit.sim_backend.Simulation` in virtual time.
"""

import logging as _logging

from transportkit._endpoint import Endpoint, parse_endpoint
from transportkit._errors import (
    AddressInUseError,
    BrokenPeerError,
    ClosedError,
    EndpointError,
    FrameError,
    HostUnreachableError,
    InvariantViolation,
    OptionError,
    ProtocolError,
    ServiceUnavailableError,
    SimulationDeadlock,
    SimulationError,
    StaleDataError,
    StateError,
    TaskFailed,
    Timeout,
    TransportError,
    UnknownOptionError,
    UnsupportedError,
    WouldBlock,
)
from transportkit._extras import MissingExtraError
from transportkit._kinds import SocketKind
from transportkit._network import Network
from transportkit._options import (
    HIGH_THROUGHPUT,
    LOW_LATENCY,
    RELIABLE_REQUEST_REPLY,
    SocketOptions,
)
from transportkit._poll import poll
from transportkit._socket import (
    Dealer,
    Frame,
    Message,
    Monitor,
    MonitorEvent,
    Pair,
    Publisher,
    Puller,
    Pusher,
    Receiver,
    Requester,
    Router,
    Sender,
    Socket,
    SocketStats,
    Subscriber,
    Worker,
    XPublisher,
    XSubscriber,
    parse_subscription,
)

__version__ = "0.2.0.dev0"
"""The distribution's version (PEP 440), the one source: ``pyproject.toml`` reads it."""

_logging.getLogger(__name__).addHandler(_logging.NullHandler())  # a library configures no logging

__all__ = [
    "HIGH_THROUGHPUT",
    "LOW_LATENCY",
    "RELIABLE_REQUEST_REPLY",
    "AddressInUseError",
    "BrokenPeerError",
    "ClosedError",
    "Dealer",
    "Endpoint",
    "EndpointError",
    "Frame",
    "FrameError",
    "HostUnreachableError",
    "InvariantViolation",
    "Message",
    "MissingExtraError",
    "Monitor",
    "MonitorEvent",
    "Network",
    "OptionError",
    "Pair",
    "ProtocolError",
    "Publisher",
    "Puller",
    "Pusher",
    "Receiver",
    "Requester",
    "Router",
    "Sender",
    "ServiceUnavailableError",
    "SimulationDeadlock",
    "SimulationError",
    "Socket",
    "SocketKind",
    "SocketOptions",
    "SocketStats",
    "StaleDataError",
    "StateError",
    "Subscriber",
    "TaskFailed",
    "Timeout",
    "TransportError",
    "UnknownOptionError",
    "UnsupportedError",
    "Worker",
    "WouldBlock",
    "XPublisher",
    "XSubscriber",
    "__version__",
    "parse_endpoint",
    "parse_subscription",
    "poll",
]
