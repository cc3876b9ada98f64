"""Economic-calendar source: a weekly calendar export (XML or JSON) polled over HTTP.

``build(config, sink, config_path=...)`` is what ``tickstream collect calendar --config FILE``
calls; see :mod:`connectors.calendar.collector` and ``docs/collectors-calendar-news.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.base.collector import RecordSink
from connectors.calendar.collector import CalendarCollector, build_calendar

__all__ = ["CalendarCollector", "build"]


def build(
    config: Mapping[str, Any], sink: RecordSink, *, config_path: str | None = None
) -> CalendarCollector:
    """A calendar collector from its configuration mapping (the parsed YAML file).

    Raises :class:`~connectors.base.collector.CollectorConfigError` naming the field and the file.
    """
    return build_calendar(config, sink, config_path=config_path)
