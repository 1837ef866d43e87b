"""The zmq backend: transportkit's interfaces over real pyzmq sockets (production).

Make one :class:`ZmqNetwork` per process and hand it to trading code::

    async with ZmqNetwork() as net:
        pub = net.publisher(bind="tcp://127.0.0.1:*")
        ...

Asyncio sockets are the portable path (the same code runs in the simulator);
:meth:`ZmqNetwork.blocking` gives synchronous sockets for latency-critical loops,
optionally shared between threads (:class:`ThreadSafeSocket`).
:meth:`ZmqNetwork.start_authenticator` runs the network's ZAP handler
(:class:`ZmqAuthenticator`) for CURVE servers. Their send and receive
use an optional C accelerator, built at install when a C compiler is present;
:func:`accelerated` says whether it is in use. ``ZmqNetwork(log_connections=True)``
logs every socket's connects, drops and retries
(:mod:`transportkit.zmq_backend.connections`). Zero-copy sends whose memory is never
reused or unmapped while libzmq still holds it: :class:`BufferPool` (writable buffers
handed out again only once released) and :class:`MappedFile` (regions of a file mapped
read-only), each send returning libzmq's :class:`SendHold` on it (blocking sockets of the
zmq backend only).
"""

from transportkit.zmq_backend._accel import Acceleration, accelerated
from transportkit.zmq_backend._auth import ZmqAuthenticator
from transportkit.zmq_backend._blocking import BlockingSocket, ThreadSafeSocket
from transportkit.zmq_backend._network import ZmqNetwork
from transportkit.zmq_backend._options import EndpointMap
from transportkit.zmq_backend._sockets import (
    ZmqDealer,
    ZmqMonitor,
    ZmqPair,
    ZmqPublisher,
    ZmqPuller,
    ZmqPusher,
    ZmqRequester,
    ZmqRouter,
    ZmqSocket,
    ZmqSubscriber,
    ZmqWorker,
    ZmqXPublisher,
    ZmqXSubscriber,
)
from transportkit.zmq_backend._zerocopy import BufferPool, MappedFile, PooledBuffer, SendHold

__all__ = [
    "Acceleration",
    "BlockingSocket",
    "BufferPool",
    "EndpointMap",
    "MappedFile",
    "PooledBuffer",
    "SendHold",
    "ThreadSafeSocket",
    "ZmqAuthenticator",
    "ZmqDealer",
    "ZmqMonitor",
    "ZmqNetwork",
    "ZmqPair",
    "ZmqPublisher",
    "ZmqPuller",
    "ZmqPusher",
    "ZmqRequester",
    "ZmqRouter",
    "ZmqSocket",
    "ZmqSubscriber",
    "ZmqWorker",
    "ZmqXPublisher",
    "ZmqXSubscriber",
    "accelerated",
]
