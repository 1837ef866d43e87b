"""Reliability patterns of the ZeroMQ Guide (chapters 3 to 5), and market-data resilience.

Every pattern is written only against transportkit's interfaces, so it runs on the zmq
backend and in the simulator alike. Parameters default to the Guide's constants.

=====================  ==================================  ==============================
pattern                module                              main names
=====================  ==================================  ==============================
Lazy Pirate            :mod:`.lazy_pirate`                 LazyPirateClient
Load balancing,        :mod:`.load_balancing`              LoadBalancingBroker,
Simple Pirate                                              SimplePirateQueue
Paranoid Pirate        :mod:`.paranoid_pirate`             ParanoidPirateQueue/Worker
Majordomo (7/MDP)      :mod:`.majordomo`                   MajordomoBroker/Client/Worker,
                                                           AsyncMajordomoClient
Titanic (9/TSP)        :mod:`.titanic`                     Titanic, TitanicClient
Clone (12/CHP)         :mod:`.clone`                       CloneServer, CloneClient,
                                                           ClonePairServer
Binary Star            :mod:`.binary_star`                 BinaryStarServer/Client
Freelance (10/FLP)     :mod:`.freelance`                   FreelanceClient/Server
Conflation, LVC        :mod:`.conflation`                  ConflatingSubscriber,
                                                           LastValueCache
Proxies (devices)      :mod:`.proxy`                       Proxy, queue_device,
                                                           streamer, forwarder
Resilience, heartbeat  :mod:`.resilience`                  ResilientSubscriber,
Suicidal Snail                                             HeartbeatPublisher,
                                                           SuicidalSubscriber
=====================  ==================================  ==============================

Every long-running server stops gracefully with ``await server.shutdown(timeout=5.0)``
(the function servers with a :class:`GracefulStop` given as ``stop=``): see
:mod:`._shutdown` for the contract.
"""

from transportkit.patterns._shutdown import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    MAX_SHUTDOWN_TIMEOUT,
    DrainTimeout,
    GracefulStop,
)
from transportkit.patterns.binary_star import BinaryStarClient, BinaryStarServer, BStarState
from transportkit.patterns.clone import CloneClient, ClonePairServer, CloneServer, KVMsg
from transportkit.patterns.conflation import (
    ConflatingSubscriber,
    LastValueCache,
    LastValueSubscriber,
    conflated_subscriber,
)
from transportkit.patterns.freelance import FreelanceClient, FreelanceServer
from transportkit.patterns.lazy_pirate import (
    LazyPirateClient,
    LazyPirateWire,
    sequenced,
    serve_lazy_pirate,
)
from transportkit.patterns.load_balancing import (
    LoadBalancingBroker,
    SimplePirateQueue,
    run_load_balancing_worker,
)
from transportkit.patterns.majordomo import (
    AsyncMajordomoClient,
    MajordomoBroker,
    MajordomoClient,
    MajordomoReply,
    MajordomoWorker,
)
from transportkit.patterns.paranoid_pirate import ParanoidPirateQueue, ParanoidPirateWorker
from transportkit.patterns.proxy import (
    Proxy,
    ProxyState,
    ProxyStats,
    forwarder,
    parse_statistics,
    queue_device,
    streamer,
)
from transportkit.patterns.resilience import (
    HeartbeatMonitor,
    HeartbeatPublisher,
    ResilientSubscriber,
    StampedPublisher,
    SuicidalSubscriber,
)
from transportkit.patterns.titanic import Titanic, TitanicClient, TitanicError

__all__ = [
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "MAX_SHUTDOWN_TIMEOUT",
    "AsyncMajordomoClient",
    "BStarState",
    "BinaryStarClient",
    "BinaryStarServer",
    "CloneClient",
    "ClonePairServer",
    "CloneServer",
    "ConflatingSubscriber",
    "DrainTimeout",
    "FreelanceClient",
    "FreelanceServer",
    "GracefulStop",
    "HeartbeatMonitor",
    "HeartbeatPublisher",
    "KVMsg",
    "LastValueCache",
    "LastValueSubscriber",
    "LazyPirateClient",
    "LazyPirateWire",
    "LoadBalancingBroker",
    "MajordomoBroker",
    "MajordomoClient",
    "MajordomoReply",
    "MajordomoWorker",
    "ParanoidPirateQueue",
    "ParanoidPirateWorker",
    "Proxy",
    "ProxyState",
    "ProxyStats",
    "ResilientSubscriber",
    "SimplePirateQueue",
    "StampedPublisher",
    "SuicidalSubscriber",
    "Titanic",
    "TitanicClient",
    "TitanicError",
    "conflated_subscriber",
    "forwarder",
    "parse_statistics",
    "queue_device",
    "run_load_balancing_worker",
    "sequenced",
    "serve_lazy_pirate",
    "streamer",
]
