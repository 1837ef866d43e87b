from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Side(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIDE_UNSPECIFIED: _ClassVar[Side]
    SIDE_BUY: _ClassVar[Side]
    SIDE_SELL: _ClassVar[Side]
SIDE_UNSPECIFIED: Side
SIDE_BUY: Side
SIDE_SELL: Side

class Order(_message.Message):
    __slots__ = ("id", "symbol", "side", "quantity", "price", "client_id", "timestamp_ns")
    ID_FIELD_NUMBER: _ClassVar[int]
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    id: str
    symbol: str
    side: Side
    quantity: int
    price: float
    client_id: str
    timestamp_ns: int
    def __init__(self, id: _Optional[str] = ..., symbol: _Optional[str] = ..., side: _Optional[_Union[Side, str]] = ..., quantity: _Optional[int] = ..., price: _Optional[float] = ..., client_id: _Optional[str] = ..., timestamp_ns: _Optional[int] = ...) -> None: ...

class ValidationResult(_message.Message):
    __slots__ = ("order_id", "approved", "reason")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    approved: bool
    reason: str
    def __init__(self, order_id: _Optional[str] = ..., approved: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class MarketData(_message.Message):
    __slots__ = ("symbol", "bid", "ask", "last", "bid_size", "ask_size", "sequence", "timestamp_ns")
    SYMBOL_FIELD_NUMBER: _ClassVar[int]
    BID_FIELD_NUMBER: _ClassVar[int]
    ASK_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    BID_SIZE_FIELD_NUMBER: _ClassVar[int]
    ASK_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    symbol: str
    bid: float
    ask: float
    last: float
    bid_size: int
    ask_size: int
    sequence: int
    timestamp_ns: int
    def __init__(self, symbol: _Optional[str] = ..., bid: _Optional[float] = ..., ask: _Optional[float] = ..., last: _Optional[float] = ..., bid_size: _Optional[int] = ..., ask_size: _Optional[int] = ..., sequence: _Optional[int] = ..., timestamp_ns: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("source", "sequence", "timestamp_ns")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    source: str
    sequence: int
    timestamp_ns: int
    def __init__(self, source: _Optional[str] = ..., sequence: _Optional[int] = ..., timestamp_ns: _Optional[int] = ...) -> None: ...
