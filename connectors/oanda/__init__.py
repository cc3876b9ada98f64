"""OANDA v20 pricing-stream collector (``tickstream collect oanda --config FILE``).

:func:`build` is what the CLI calls with the parsed YAML mapping; the modules are imported
lazily so that importing this package (or :mod:`connectors.oanda.parse`) stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.base.collector import RecordSink
    from connectors.oanda.collector import OandaCollector

__all__ = ["build"]


def build(
    config: Mapping[str, Any], sink: RecordSink, *, config_path: str | None = None
) -> OandaCollector:
    """An :class:`~connectors.oanda.collector.OandaCollector` from a parsed config mapping.

    The API token is read from the environment or a secret file now; raises
    :class:`~connectors.base.collector.CollectorConfigError` naming the file and the field.
    """
    from connectors.oanda.collector import OandaCollector
    from connectors.oanda.config import load_config

    return OandaCollector(load_config(config, config_path=config_path), sink)
