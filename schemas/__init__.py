"""Avro schemas, typed records and wire codecs shared by every tickstream component.

Importing this package is cheap: no schema file is read, no network is touched and no
environment variable is consulted until a codec or schema is actually used.
"""

from .codec import (
    Codec,
    ConfluentFraming,
    Framing,
    MalformedRecord,
    SingleObjectFraming,
    make_codec,
)
from .records import (
    RECORD_TYPES,
    Bar,
    CleanTick,
    CollectorHealth,
    ControlMessage,
    FeatureVector,
    MarketEvent,
    RawTick,
    Record,
    RejectedRecord,
    TradingCommand,
)
from .registry import SchemaRegistryClient, SchemaRegistryError

__all__ = [
    "RECORD_TYPES",
    "Bar",
    "CleanTick",
    "Codec",
    "CollectorHealth",
    "ConfluentFraming",
    "ControlMessage",
    "FeatureVector",
    "Framing",
    "MalformedRecord",
    "MarketEvent",
    "RawTick",
    "Record",
    "RejectedRecord",
    "SchemaRegistryClient",
    "SchemaRegistryError",
    "SingleObjectFraming",
    "TradingCommand",
    "make_codec",
]
