"""Reliability patterns of the ZeroMQ Guide (chapters 4 and 5) and the seed document.

Every pattern is written only against transportkit's interfaces, so it runs on the zmq
backend and in the simulator alike. Parameters default to the Guide's constants.

=====================  ==================================  ==============================
pattern                module                              main names
=====================  ==================================  ==============================
Lazy Pirate            :mod:`.lazy_pirate`                 LazyPirateClient
Load balancing,        :mod:`.load_balancing`              LoadBalancingBroker,
Simple Pirate                                              SimplePirateQueue
Paranoid Pirate        :mod:`.paranoid_pirate`             ParanoidPirateQueue/Worker
Majordomo (7/MDP)      :mod:`.majordomo`                   MajordomoBroker/Client/Worker
Clone (12/CHP)         :mod:`.clone`                       CloneServer, CloneClient,
                                                           ClonePairServer
Binary Star            :mod:`.binary_star`                 BinaryStarServer/Client
Conflation, LVC        :mod:`.conflation`                  ConflatingSubscriber,
                                                           LastValueCache
Resilience, heartbeat  :mod:`.resilience`                  ResilientSubscriber,
Suicidal Snail                                             HeartbeatPublisher,
                                                           SuicidalSubscriber
=====================  ==================================  ==============================
"""

from transportkit.patterns.binary_star import BinaryStarClient, BinaryStarServer, BStarState
from transportkit.patterns.clone import CloneClient, ClonePairServer, CloneServer, KVMsg
from transportkit.patterns.conflation import (
    ConflatingSubscriber,
    LastValueCache,
    LastValueSubscriber,
    conflated_subscriber,
)
from transportkit.patterns.lazy_pirate import LazyPirateClient, sequenced, serve_lazy_pirate
from transportkit.patterns.load_balancing import (
    LoadBalancingBroker,
    SimplePirateQueue,
    run_load_balancing_worker,
)
from transportkit.patterns.majordomo import MajordomoBroker, MajordomoClient, MajordomoWorker
from transportkit.patterns.paranoid_pirate import ParanoidPirateQueue, ParanoidPirateWorker
from transportkit.patterns.resilience import (
    HeartbeatMonitor,
    HeartbeatPublisher,
    ResilientSubscriber,
    StampedPublisher,
    SuicidalSubscriber,
)

__all__ = [
    "BStarState",
    "BinaryStarClient",
    "BinaryStarServer",
    "CloneClient",
    "ClonePairServer",
    "CloneServer",
    "ConflatingSubscriber",
    "HeartbeatMonitor",
    "HeartbeatPublisher",
    "KVMsg",
    "LastValueCache",
    "LastValueSubscriber",
    "LazyPirateClient",
    "LoadBalancingBroker",
    "MajordomoBroker",
    "MajordomoClient",
    "MajordomoWorker",
    "ParanoidPirateQueue",
    "ParanoidPirateWorker",
    "ResilientSubscriber",
    "SimplePirateQueue",
    "StampedPublisher",
    "SuicidalSubscriber",
    "conflated_subscriber",
    "run_load_balancing_worker",
    "sequenced",
    "serve_lazy_pirate",
]
