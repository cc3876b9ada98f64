"""Configuration of the economic-calendar collector (``config/collectors/calendar.yaml``).

:func:`load_config` turns the parsed YAML mapping into a :class:`CalendarConfig`; every
error reads ``"{file}: {dotted.key}: {what is wrong}"`` (:mod:`connectors.base.config`).
Header values (an ``Authorization`` header) and credentials in the URL's query are never
quoted in an error nor shown by ``repr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connectors.base.config import (
    BackoffSettings,
    BreakerSettings,
    ConfigReader,
    RateLimitSettings,
    backoff_from,
    breaker_from,
    limiter_from,
)
from connectors.calendar.parse import FORMATS


@dataclass(frozen=True, slots=True)
class CalendarConfig:
    """Everything :func:`~connectors.calendar.collector.build_calendar` needs."""

    url: str = field(repr=False)
    name: str = "calendar"
    fmt: str = "auto"
    tz: tzinfo = UTC
    source: str = "calendar"
    poll_interval_s: float = 300.0
    timeout_s: float = 30.0
    state_path: str | None = None
    retention_s: float = 14 * 86_400.0
    currencies: frozenset[str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    max_bytes: int = 8 * 1024 * 1024
    max_retry_after_s: float = 600.0
    flush_timeout_s: float = 30.0
    conditional: bool = True
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    rate_limit: RateLimitSettings = field(default_factory=lambda: RateLimitSettings(0.2))


def load_config(
    config: Mapping[str, Any], *, config_path: str | None = None
) -> CalendarConfig:
    """Validate a parsed YAML mapping (``{calendar: {...}}`` too); raises
    :class:`~connectors.base.collector.CollectorConfigError`."""
    r = ConfigReader.for_file(config, config_path, "calendar")
    name = r.text("name", "calendar")
    url = r.url("url")
    fmt = r.choice("format", FORMATS, "auto")
    tzname = r.text("timezone", "UTC")
    try:
        tz: tzinfo = ZoneInfo(tzname)
    except (ZoneInfoNotFoundError, ValueError):
        raise r.expected("timezone", "an IANA time-zone name such as UTC or America/New_York",
                         tzname) from None
    cfg = CalendarConfig(
        url=url,
        name=name,
        fmt=fmt,
        tz=tz,
        source=r.text("source", name),
        poll_interval_s=r.number("poll_interval_s", 300.0, above=True),
        timeout_s=r.number("timeout_s", 30.0, above=True),
        state_path=r.optional_text("state_path"),
        retention_s=r.number("state_retention_days", 14.0, above=True) * 86_400.0,
        currencies=r.currencies("currencies"),
        headers=r.headers("headers"),
        max_bytes=r.integer("max_bytes", 8 * 1024 * 1024, lo=1024),
        max_retry_after_s=r.number("max_retry_after_s", 600.0),
        flush_timeout_s=r.number("flush_timeout_s", 30.0, above=True),
        conditional=r.flag("conditional_requests", True),
        backoff=backoff_from(r.section("backoff")),
        breaker=breaker_from(r.section("circuit")),
        rate_limit=limiter_from(r.section("rate_limit"), per_s=0.2),
    )
    r.finish()
    return cfg
