"""The seed's trading components, written once against transportkit's interfaces.

- Risk validation over REQ/REP: :class:`RiskBook`, :func:`serve_risk`, :class:`RiskClient`;
  and over Lazy Pirate: :func:`risk_handler` and the seed's :class:`ReliableRiskClient`.
- Market data over PUB/SUB: :class:`MarketDataPublisher`, :class:`MarketDataSubscriber`,
  :func:`topic_for`.
- Orders over PUSH/PULL: :class:`OrderProducer`, :func:`run_order_worker`.
- A control channel over PAIR: :class:`PairChannel`.
- End-to-end examples that take networks and endpoints and return summaries:
  :func:`run_market_data_example`, :func:`run_risk_example`,
  :func:`run_order_pipeline_example`, :func:`run_pair_example`.

Wire formats are the protobuf messages :class:`Order`, :class:`ValidationResult`,
:class:`MarketData` and :class:`Heartbeat` (package ``transportkit.trading.v1``, schema in
``protos/``). Nothing here imports a backend: the same code runs on the zmq backend and
in the simulation.
"""

from transportkit.trading._examples import (
    DEMO_LIMITS,
    WARM_UP_SEQUENCE,
    MarketDataSummary,
    OrderPipelineSummary,
    PairSummary,
    RiskSummary,
    SubscriberReport,
    demo_orders,
    run_market_data_example,
    run_order_pipeline_example,
    run_pair_example,
    run_risk_example,
)
from transportkit.trading._market_data import (
    TOPIC_PREFIX,
    MarketDataPublisher,
    MarketDataSubscriber,
    MarketDataUpdate,
    decode_market_data,
    encode_market_data,
    topic_for,
)
from transportkit.trading._orders import (
    OrderHandler,
    OrderProducer,
    OrderWorkerStats,
    run_order_worker,
)
from transportkit.trading._pair import PairChannel
from transportkit.trading._pb.trading_pb2 import (
    SIDE_BUY,
    SIDE_SELL,
    SIDE_UNSPECIFIED,
    Heartbeat,
    MarketData,
    Order,
    Side,
    ValidationResult,
)
from transportkit.trading._risk import (
    INSUFFICIENT_CAPITAL,
    MALFORMED_ORDER,
    POSITION_LIMIT_EXCEEDED,
    ReliableRiskClient,
    RiskBook,
    RiskClient,
    RiskLimits,
    RiskServerStats,
    judge,
    risk_handler,
    serve_risk,
    signed_quantity,
    verdict_for,
)

__all__ = [
    "DEMO_LIMITS",
    "INSUFFICIENT_CAPITAL",
    "MALFORMED_ORDER",
    "POSITION_LIMIT_EXCEEDED",
    "SIDE_BUY",
    "SIDE_SELL",
    "SIDE_UNSPECIFIED",
    "TOPIC_PREFIX",
    "WARM_UP_SEQUENCE",
    "Heartbeat",
    "MarketData",
    "MarketDataPublisher",
    "MarketDataSubscriber",
    "MarketDataSummary",
    "MarketDataUpdate",
    "Order",
    "OrderHandler",
    "OrderPipelineSummary",
    "OrderProducer",
    "OrderWorkerStats",
    "PairChannel",
    "PairSummary",
    "ReliableRiskClient",
    "RiskBook",
    "RiskClient",
    "RiskLimits",
    "RiskServerStats",
    "RiskSummary",
    "Side",
    "SubscriberReport",
    "ValidationResult",
    "decode_market_data",
    "demo_orders",
    "encode_market_data",
    "judge",
    "risk_handler",
    "run_market_data_example",
    "run_order_pipeline_example",
    "run_order_worker",
    "run_pair_example",
    "run_risk_example",
    "serve_risk",
    "signed_quantity",
    "topic_for",
    "verdict_for",
]
