"""A Faust schema that hands a message's key and value bytes over as they are.

Every tickstream topic carries bytes that the agents decode themselves (Avro with a
framing, ``schemas/codec.py``), so Faust's topics are declared ``key_type=bytes,
value_type=bytes`` with the ``raw`` serializer. Faust still runs each key and value
through its serializer registry for that (``Registry.loads_key``/``loads_value``, the
``raw`` codec, ``want_bytes``): py-spy put it at ~5% of the worker's time. Faust's
``Schema.loads_key``/``loads_value`` are its documented extension points for this;
:class:`RawBytes` returns the bytes straight away (``None`` stays ``None``, as with
``raw``). Serialising on send is Faust's, unchanged.
"""

from __future__ import annotations

from typing import Any

import faust


class RawBytes(faust.Schema):  # type: ignore[misc,type-arg]
    """``key_type=bytes, value_type=bytes`` without the serializer registry on receive."""

    def __init__(self) -> None:
        super().__init__(key_type=bytes, value_type=bytes,
                         key_serializer="raw", value_serializer="raw")

    def loads_key(self, app: Any, message: Any, *, loads: Any = None,
                  serializer: Any = None) -> bytes | None:
        key: bytes | None = message.key
        return key

    def loads_value(self, app: Any, message: Any, *, loads: Any = None,
                    serializer: Any = None) -> bytes | None:
        value: bytes | None = message.value
        return value
