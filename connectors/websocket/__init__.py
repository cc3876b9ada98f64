"""Generic WebSocket quote collector (``tickstream collect websocket --config FILE``).

One configurable collector for vendors that push JSON quotes over WebSocket: a subscribe
message template, a field mapping, a time format and a symbol mapping
(:mod:`connectors.websocket.config`, :mod:`connectors.websocket.parse`). :func:`build` is
what the CLI calls; modules are imported lazily so :mod:`connectors.websocket.parse` can be
imported on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.base.collector import RecordSink
    from connectors.websocket.collector import WebSocketCollector

__all__ = ["build"]


def build(
    config: Mapping[str, Any], sink: RecordSink, *, config_path: str | None = None
) -> WebSocketCollector:
    """A :class:`~connectors.websocket.collector.WebSocketCollector` from a config mapping.

    Credentials are read from the environment or a secret file now; raises
    :class:`~connectors.base.collector.CollectorConfigError` naming the file and the field.
    """
    from connectors.websocket.collector import WebSocketCollector
    from connectors.websocket.config import load_config

    return WebSocketCollector(load_config(config, config_path=config_path), sink)
