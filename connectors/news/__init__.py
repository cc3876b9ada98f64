"""News source: RSS/Atom feeds polled over HTTP, headlines tagged with currencies and scored.

``build(config, sink, config_path=...)`` is what ``tickstream collect news --config FILE``
calls; see :mod:`connectors.news.collector` and ``docs/collectors-calendar-news.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.base.collector import RecordSink
from connectors.news.collector import NewsCollector, build_news

__all__ = ["NewsCollector", "build"]


def build(
    config: Mapping[str, Any], sink: RecordSink, *, config_path: str | None = None
) -> NewsCollector:
    """A news collector from its configuration mapping (the parsed YAML file).

    Raises :class:`~connectors.base.collector.CollectorConfigError` naming the field and the file.
    """
    return build_news(config, sink, config_path=config_path)
