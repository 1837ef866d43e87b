"""Trading components, written once against transportkit's interfaces.

- Risk validation over REQ/REP: :class:`RiskBook` (with :class:`RiskLimits` and the
  rejection reasons, which are part of the wire protocol), :func:`serve_risk` (its
  socket made with :func:`risk_server_options`), :class:`RiskClient`; and over Lazy
  Pirate: :func:`risk_handler` and :class:`ReliableRiskClient`.
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

from transportkit._extras import requires_extra as _requires_extra

with _requires_extra("trading", "transportkit.trading"):
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
        CAPITAL_LIMIT_EXCEEDED,
        DEFAULT_MAX_CAPITAL,
        DEFAULT_MAX_ORDER_ID_LENGTH,
        DEFAULT_MAX_ORDER_NOTIONAL,
        DEFAULT_MAX_SYMBOL_LENGTH,
        DEFAULT_MAX_SYMBOLS,
        INSUFFICIENT_CAPITAL,
        INVALID_ORDER_PREFIX,
        INVALID_PRICE,
        INVALID_QUANTITY,
        INVALID_SIDE,
        INVALID_SYMBOL,
        MALFORMED_ORDER,
        MAX_POSITION_LIMIT,
        MAX_SERVICE_TIME,
        MISSING_ID,
        MISSING_SYMBOL,
        NOTIONAL_LIMIT_EXCEEDED,
        ORDER_ID_TOO_LONG,
        POSITION_LIMIT_EXCEEDED,
        REQUEST_TOO_LARGE,
        RISK_CHECK_FAILED,
        SYMBOL_LIMIT_EXCEEDED,
        SYMBOL_TOO_LONG,
        ReliableRiskClient,
        RiskBook,
        RiskClient,
        RiskLimits,
        RiskServerStats,
        judge,
        risk_handler,
        risk_server_options,
        serve_risk,
        signed_quantity,
        verdict_for,
    )

__all__ = [
    "CAPITAL_LIMIT_EXCEEDED",
    "DEFAULT_MAX_CAPITAL",
    "DEFAULT_MAX_ORDER_ID_LENGTH",
    "DEFAULT_MAX_ORDER_NOTIONAL",
    "DEFAULT_MAX_SYMBOLS",
    "DEFAULT_MAX_SYMBOL_LENGTH",
    "DEMO_LIMITS",
    "INSUFFICIENT_CAPITAL",
    "INVALID_ORDER_PREFIX",
    "INVALID_PRICE",
    "INVALID_QUANTITY",
    "INVALID_SIDE",
    "INVALID_SYMBOL",
    "MALFORMED_ORDER",
    "MAX_POSITION_LIMIT",
    "MAX_SERVICE_TIME",
    "MISSING_ID",
    "MISSING_SYMBOL",
    "NOTIONAL_LIMIT_EXCEEDED",
    "ORDER_ID_TOO_LONG",
    "POSITION_LIMIT_EXCEEDED",
    "REQUEST_TOO_LARGE",
    "RISK_CHECK_FAILED",
    "SIDE_BUY",
    "SIDE_SELL",
    "SIDE_UNSPECIFIED",
    "SYMBOL_LIMIT_EXCEEDED",
    "SYMBOL_TOO_LONG",
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
    "risk_server_options",
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
