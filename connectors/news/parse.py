"""Parsers of news feeds (RSS 2.0, RSS 1.0/RDF, Atom 1.0) into :class:`NewsItem`, and the
items into per-currency :class:`MarketEvent` copies. Pure: no I/O.

An item without a title, or with a date that cannot be read, is returned as an
:class:`~connectors.base.documents.ItemError` (its own serialized bytes and a reason); an item
without any date is kept (``published_ms`` None: the collector dates it at first sight). A
document that is not a feed raises :class:`~connectors.base.documents.DocumentError`.

De-duplication keys (:func:`dedupe_keys`) let the same story be recognised across feeds and
polls: its canonical link (scheme, ``www.``, fragment, tracking parameters and trailing slash
dropped), its guid/id, and its normalised title with its publication day. The ``event_id``
(:func:`news_event_id`) comes from the first of link, guid and title, so it is stable too.
"""

from __future__ import annotations

import email.utils
import hashlib
import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit

from connectors.base.documents import DocumentError, ItemError
from schemas.records import MarketEvent

__all__ = [
    "DocumentError",
    "FeedParse",
    "ItemError",
    "NewsItem",
    "canonical_link",
    "dedupe_keys",
    "news_event_id",
    "news_events",
    "normalize_title",
    "parse_feed",
]

ATOM = "{http://www.w3.org/2005/Atom}"
RSS1 = "{http://purl.org/rss/1.0/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}RDF"
DC_DATE = "{http://purl.org/dc/elements/1.1/}date"

_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_SPACE = re.compile(r"\s+")
_TITLE_JUNK = re.compile(r"[^\w]+")
_TRACKING = re.compile(r"^(utm_\w+|fbclid|gclid|mc_cid|mc_eid|cmpid|ref|rss|feed)$", re.I)


_Reader = Callable[[ET.Element], "NewsItem"]


class _Bad(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class NewsItem:
    """One headline as the feed gave it (text cleaned of markup and entities)."""

    title: str
    link: str | None = None
    guid: str | None = None
    published_ms: int | None = None
    summary: str = ""


@dataclass(slots=True)
class FeedParse:
    """What a feed yielded: items in document order and the items that failed."""

    items: list[NewsItem] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    feed_format: str = ""


# ---- parsing ----------------------------------------------------------------------------


def parse_feed(payload: bytes) -> FeedParse:
    """Parse RSS 2.0, RSS 1.0 (RDF) or Atom; DocumentError for anything else."""
    try:
        root = ET.fromstring(payload)
    except (ET.ParseError, LookupError, ValueError) as exc:  # also: an unknown encoding
        raise DocumentError("malformed_document", f"XML: {exc}") from None
    if root.tag == "rss":
        channel = root.find("channel")
        if channel is None:
            raise DocumentError("unexpected_document", "<rss> without <channel>")
        return _parse_items(channel.findall("item"), _rss_item, "rss")
    if root.tag == RDF:
        return _parse_items(root.findall(f"{RSS1}item"), _rss1_item, "rdf")
    if root.tag == f"{ATOM}feed":
        return _parse_items(root.findall(f"{ATOM}entry"), _atom_entry, "atom")
    raise DocumentError(
        "unexpected_document", f"root element <{root.tag}> is not <rss>, <rdf:RDF> or <feed>"
    )


def _parse_items(elems: Sequence[ET.Element], reader: _Reader, fmt: str) -> FeedParse:
    out = FeedParse(feed_format=fmt)
    for elem in elems:
        try:
            out.items.append(reader(elem))
        except _Bad as bad:
            out.errors.append(ItemError(_element_bytes(elem), bad.reason, bad.detail))
    return out


def _rss_item(elem: ET.Element) -> NewsItem:
    title = _title(elem.findtext("title"))
    stamp = (elem.findtext("pubDate") or elem.findtext(DC_DATE) or "").strip()
    return NewsItem(
        title=title,
        link=_opt(elem.findtext("link")),
        guid=_opt(elem.findtext("guid")),
        published_ms=_date_ms(stamp),
        summary=clean_text(elem.findtext("description") or ""),
    )


def _rss1_item(elem: ET.Element) -> NewsItem:
    title = _title(elem.findtext(f"{RSS1}title"))
    link = _opt(elem.findtext(f"{RSS1}link"))
    return NewsItem(
        title=title,
        link=link,
        guid=_opt(elem.get("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}about")),
        published_ms=_date_ms((elem.findtext(DC_DATE) or "").strip()),
        summary=clean_text(elem.findtext(f"{RSS1}description") or ""),
    )


def _atom_entry(elem: ET.Element) -> NewsItem:
    title_elem = elem.find(f"{ATOM}title")
    title = _title(None if title_elem is None else "".join(title_elem.itertext()))
    link: str | None = None
    for candidate in elem.findall(f"{ATOM}link"):
        if candidate.get("rel", "alternate") == "alternate" and candidate.get("href"):
            link = candidate.get("href", "").strip() or None
            break
    stamp = (elem.findtext(f"{ATOM}published") or elem.findtext(f"{ATOM}updated") or "").strip()
    summary_elem = elem.find(f"{ATOM}summary")
    if summary_elem is None:
        summary_elem = elem.find(f"{ATOM}content")
    summary = "" if summary_elem is None else "".join(summary_elem.itertext())
    return NewsItem(
        title=title,
        link=link,
        guid=_opt(elem.findtext(f"{ATOM}id")),
        published_ms=_date_ms(stamp),
        summary=clean_text(summary),
    )


# ---- fields -----------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """Markup removed, entities decoded, whitespace collapsed."""
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    text = _TAG.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def _title(text: str | None) -> str:
    title = clean_text(text or "")
    if not title:
        raise _Bad("missing_field", "item has no title")
    return title


def _opt(text: str | None) -> str | None:
    value = (text or "").strip()
    return value or None


def _date_ms(stamp: str) -> int | None:
    """RFC 822 (RSS) or RFC 3339 (Atom, dc:date); None when absent, _Bad when unreadable."""
    if not stamp:
        return None
    when: datetime | None = None
    try:
        when = email.utils.parsedate_to_datetime(stamp)
    except (TypeError, ValueError, IndexError):
        try:
            when = datetime.fromisoformat(stamp)
        except ValueError:
            raise _Bad("bad_date", f"date {stamp!r} is neither RFC 822 nor ISO 8601") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        when.astimezone(UTC)  # the instant must be a date in UTC too (dedupe_keys needs it)
    except OverflowError:
        raise _Bad("bad_date", f"date {stamp!r} is out of range in UTC") from None
    return round(when.timestamp() * 1000)


def _element_bytes(elem: ET.Element) -> bytes:
    tail, elem.tail = elem.tail, None
    try:
        return bytes(ET.tostring(elem, encoding="utf-8"))
    finally:
        elem.tail = tail


# ---- identity ---------------------------------------------------------------------------


def canonical_link(url: str) -> str:
    """``host/path?query`` with scheme, ``www.``, fragment, tracking parameters and a
    trailing slash dropped, so one article linked from two feeds compares equal."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:  # e.g. an unclosed IPv6 bracket: the text itself is the key
        return url.strip()
    host = (parts.hostname or "").lower().removeprefix("www.")
    path = parts.path.rstrip("/") or ""
    query = urlencode(
        sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
               if not _TRACKING.match(k))
    )
    return f"{host}{path}" + (f"?{query}" if query else "")


def normalize_title(title: str) -> str:
    """Case-folded words only (punctuation and spacing differences ignored)."""
    return _TITLE_JUNK.sub(" ", title.casefold()).strip()


def _guid_key(guid: str, feed: str) -> str:
    # A URL or URN guid is global; a bare number is only unique within its feed.
    return f"g:{guid}" if ":" in guid else f"g:{feed}:{guid}"


def dedupe_keys(item: NewsItem, feed: str) -> list[str]:
    """Keys under which ``item`` is remembered; an item matching any of them is a repeat."""
    keys: list[str] = []
    if item.link:
        keys.append(f"l:{canonical_link(item.link)}")
    if item.guid:
        keys.append(_guid_key(item.guid, feed))
    title = normalize_title(item.title)
    if item.published_ms is not None:
        day = datetime.fromtimestamp(item.published_ms / 1000, UTC).date().isoformat()
        keys.append(f"t:{day}:{title}")
    else:
        keys.append(f"t:{title}")
    return keys


def news_event_id(item: NewsItem, feed: str) -> str:
    """``news-<hash>`` of the first of canonical link, guid and title key."""
    return "news-" + hashlib.sha1(dedupe_keys(item, feed)[0].encode()).hexdigest()[:20]


def news_events(
    item: NewsItem,
    *,
    event_id: str,
    currencies: Sequence[str],
    sentiment: float | None,
    source: str,
    published_ms: int,
) -> list[MarketEvent]:
    """One event per concerned currency, all with the same ``event_id``.

    ``event_time_ms`` is the publication time (the first-sight time when the feed gives none,
    and never later than ``published_ms``, the time the collector learned of the item).
    """
    when = published_ms if item.published_ms is None else min(item.published_ms, published_ms)
    listed = sorted(set(currencies))
    return [
        MarketEvent(
            event_id=event_id,
            kind="NEWS",
            currency=c,
            currencies=list(listed),
            title=item.title,
            event_time_ms=when,
            published_ms=published_ms,
            impact="NONE",
            sentiment=sentiment,
            source=source,
            url=item.link,
        )
        for c in listed
    ]
