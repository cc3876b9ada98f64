"""Configuration of the news collector (``config/collectors/news.yaml``).

:func:`load_config` turns the parsed YAML mapping into a :class:`NewsConfig`; every error
reads ``"{file}: {dotted.key}: {what is wrong}"`` (:mod:`connectors.base.config`), a feed's
settings named ``feeds[i].key``. Header values and credentials in a feed URL's query are
never quoted in an error nor shown by ``repr``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from connectors.base.config import (
    BackoffSettings,
    ConfigReader,
    RateLimitSettings,
    backoff_from,
    limiter_from,
)
from connectors.news.currencies import MAJORS
from connectors.news.sentiment import Lexicon, default_lexicon


@dataclass(frozen=True, slots=True)
class FeedConfig:
    """One feed: its name (``MarketEvent.source``) and URL."""

    name: str
    url: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class NewsConfig:
    """Everything :func:`~connectors.news.collector.build_news` needs."""

    feeds: tuple[FeedConfig, ...]
    name: str = "news"
    poll_interval_s: float = 120.0
    timeout_s: float = 20.0
    max_age_s: float | None = 6 * 3600.0  # None: no age limit
    dedupe_window_s: float = 7 * 86_400.0
    currencies: Collection[str] = MAJORS
    use_summary: bool = True
    lexicon: Lexicon | None = None  # None: the packaged word list
    state_path: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    max_bytes: int = 4 * 1024 * 1024
    max_retry_after_s: float = 900.0
    flush_timeout_s: float = 30.0
    #: Per feed: unbounded attempts (a dead feed must not stop the others).
    backoff: BackoffSettings = field(
        default_factory=lambda: BackoffSettings(base_s=5.0, cap_s=900.0, max_attempts=0)
    )
    rate_limit: RateLimitSettings = field(default_factory=lambda: RateLimitSettings(1.0, 2))


def _feeds(r: ConfigReader) -> tuple[FeedConfig, ...]:
    feeds: list[FeedConfig] = []
    names: set[str] = set()
    for i, entry in enumerate(r.entries("feeds")):
        fr = r.child({"url": entry} if isinstance(entry, str) else entry, f"feeds[{i}]")
        url = fr.url("url")
        name = fr.text("name", urlsplit(url).hostname or url)
        fr.finish()
        if name in names:
            raise fr.expected("name", "a name unique among the feeds", name)
        names.add(name)
        feeds.append(FeedConfig(name=name, url=url))
    return tuple(feeds)


def load_config(config: Mapping[str, Any], *, config_path: str | None = None) -> NewsConfig:
    """Validate a parsed YAML mapping (``{news: {...}}`` too); raises
    :class:`~connectors.base.collector.CollectorConfigError`."""
    r = ConfigReader.for_file(config, config_path, "news")
    backoff = backoff_from(r.section("backoff"), base_s=5.0, cap_s=900.0, max_attempts=0)
    feeds = _feeds(r)
    word_list = r.optional_text("word_list")
    try:
        lexicon = Lexicon.load(word_list) if word_list else default_lexicon()
    except OSError as exc:
        raise r.error("word_list", f"cannot read {word_list!r}: {exc.strerror}") from None
    except ValueError as exc:
        raise r.error("word_list", f"not a word list: {exc}") from None
    max_age_s = r.number("max_age_s", 6 * 3600.0)
    cfg = NewsConfig(
        feeds=feeds,
        name=r.text("name", "news"),
        poll_interval_s=r.number("poll_interval_s", 120.0, above=True),
        timeout_s=r.number("timeout_s", 20.0, above=True),
        max_age_s=max_age_s or None,
        dedupe_window_s=r.number("dedupe_window_days", 7.0, above=True) * 86_400.0,
        currencies=r.currencies("currencies") or MAJORS,
        use_summary=r.flag("use_summary", True),
        lexicon=lexicon,
        state_path=r.optional_text("state_path"),
        headers=r.headers("headers"),
        max_bytes=r.integer("max_bytes", 4 * 1024 * 1024, lo=1024),
        max_retry_after_s=r.number("max_retry_after_s", 900.0),
        flush_timeout_s=r.number("flush_timeout_s", 30.0, above=True),
        backoff=backoff,
        rate_limit=limiter_from(r.section("rate_limit"), per_s=1.0, burst=2),
    )
    r.finish()
    return cfg
