"""Configuration of the generic WebSocket collector (``config/collectors/websocket-example.yaml``).

A file names the ``url`` (with ``headers``), the ``subscribe`` messages to send after
connecting (templates: see :func:`expand`), the ``mapping`` of vendor quotes to ticks
(:class:`~connectors.websocket.parse.MappingSpec`, read by :func:`spec_from_config`), the
``fatal`` messages that stop the collector, timeouts and the ``reconnect`` policy.

The credential (``${token}`` in the URL, a header or a message) is never written in the
file: it comes from ``token_env`` (default ``WEBSOCKET_TOKEN``), that variable's ``_FILE``
twin or ``token_file`` (relative to the config file), and is only read when a template
uses it or one of those keys is set. Every error reads ``"{file}: {dotted.key}: {what is
wrong}"`` (:mod:`connectors.base.config`) and never quotes the credential.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from connectors.base.config import ConfigReader, reconnect_from
from connectors.base.resilience import ReconnectPolicy
from connectors.base.secrets import Secret
from connectors.websocket.parse import TIME_FORMATS, FieldPath, MappingSpec

_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
_NAMES: Final = frozenset({"token", "symbols", "symbol", "symbols_list"})
_KEYS: Final = frozenset({
    "kind", "name", "broker", "url", "headers", "token_env", "token_file", "subscribe",
    "mapping", "fatal", "heartbeat_timeout_s", "ping_interval_s", "connect_timeout_s",
    "max_message_bytes", "max_retry_after_s", "connections_per_s", "reconnect",
    "skip_replayed_quote",
})
_SUBSCRIBE_KEYS: Final = frozenset({"symbols", "symbol_format", "separator", "messages",
                                    "per_symbol"})
_MAPPING_KEYS: Final = frozenset({"fields", "match", "symbols", "time_format", "records",
                                  "only_mapped_symbols"})
_REQUIRED_FIELDS: Final = ("symbol", "bid", "ask", "time")
_OPTIONAL_FIELDS: Final = ("last", "volume", "seq")


def expand(template: Any, values: Mapping[str, Any]) -> Any:
    """Substitute ``${name}`` in every string of a JSON-like template.

    A string that is exactly one placeholder takes the value as is (so ``${symbols_list}``
    becomes a list); otherwise values are inserted as text. Unknown names raise KeyError.
    """
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole is not None:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)
    if isinstance(template, Mapping):
        return {expand(k, values): expand(v, values) for k, v in template.items()}
    if isinstance(template, list | tuple):
        return [expand(v, values) for v in template]
    return template


def _placeholders(template: Any) -> set[str]:
    """The ``${name}`` names used anywhere in a JSON-like template."""
    if isinstance(template, str):
        return set(_PLACEHOLDER.findall(template))
    if isinstance(template, Mapping):
        return set().union(*(_placeholders(k) | _placeholders(v) for k, v in template.items()))
    if isinstance(template, list | tuple):
        return set().union(*(_placeholders(v) for v in template))
    return set()


@dataclass(frozen=True, slots=True)
class SubscribeSpec:
    """What to send after connecting (see :mod:`connectors.websocket.collector`)."""

    symbols: tuple[str, ...] = ()
    symbol_format: str = "${symbol}"
    separator: str = ","
    messages: tuple[Any, ...] = ()
    per_symbol: bool = False


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    """Everything the collector needs; build it with :func:`load_config`."""

    url: str
    mapping: MappingSpec
    name: str = "websocket"
    broker: str = "WEBSOCKET"
    token: Secret | None = None
    token_source: str = "none"
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    subscribe: SubscribeSpec = field(default_factory=SubscribeSpec)
    fatal: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    heartbeat_timeout_s: float = 30.0
    ping_interval_s: float | None = None
    connect_timeout_s: float = 10.0
    max_message_bytes: int = 4 << 20
    max_retry_after_s: float = 300.0
    connections_per_s: float = 2.0
    skip_replayed_quote: bool = True
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)

    def values(self, symbol: str | None = None) -> dict[str, Any]:
        """Placeholder values (the real token: never log the result)."""
        sub = self.subscribe
        written = [expand(sub.symbol_format, {"symbol": s}) for s in sub.symbols]
        return {
            "token": self.token.get() if self.token is not None else "",
            "symbols": sub.separator.join(written),
            "symbols_list": written,
            "symbol": expand(sub.symbol_format, {"symbol": symbol}) if symbol else "",
        }

    def subscribe_messages(self) -> list[Any]:
        sub = self.subscribe
        if sub.per_symbol:
            return [expand(m, self.values(s)) for s in sub.symbols for m in sub.messages]
        return [expand(m, self.values()) for m in sub.messages]


def _subscribe(r: ConfigReader) -> SubscribeSpec:
    symbols = r.raw("symbols")
    if symbols is None:
        symbols = []
    if not isinstance(symbols, list) or not all(isinstance(s, str) and s for s in symbols):
        raise r.expected("symbols", "a list of vendor symbols", symbols)
    messages = r.raw("messages")
    if messages is None:
        messages = []
    if not isinstance(messages, list):
        raise r.expected("messages", "a list of messages (mappings or strings)", messages)
    separator = r.raw("separator")
    if separator is None:
        separator = ","
    if not isinstance(separator, str):
        raise r.expected("separator", "a string", separator)
    return SubscribeSpec(
        symbols=tuple(symbols),
        symbol_format=r.text("symbol_format", "${symbol}"),
        separator=separator,
        messages=tuple(messages),
        per_symbol=r.flag("per_symbol", False),
    )


def _compiled(r: ConfigReader, key: str, path: str) -> str:
    try:
        FieldPath(path)
    except ValueError as exc:
        raise r.error(key, str(exc)) from None
    return path


def _field_path(r: ConfigReader, key: str) -> str | None:
    """A field path: a dotted string, or a number (a list index); absent: None."""
    value = r.raw(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise r.expected(key, "a field path (dotted, list indices as numbers)", value)
    return _compiled(r, key, str(value))


def spec_from_config(r: ConfigReader) -> MappingSpec:
    """A :class:`MappingSpec` from the ``mapping`` section of a collector config (``r``)."""
    r.only(_MAPPING_KEYS)
    fr = r.section("fields", (*_REQUIRED_FIELDS, *_OPTIONAL_FIELDS))
    paths = {k: _field_path(fr, k) for k in (*_REQUIRED_FIELDS, *_OPTIONAL_FIELDS)}
    missing = [k for k in _REQUIRED_FIELDS if paths[k] is None]
    if missing:
        raise r.error("fields", f"lacks {', '.join(missing)} (the field paths of symbol, "
                                "bid, ask and time are required)")
    match = {
        _compiled(r, "match", str(k)): tuple(v) if isinstance(v, list | tuple) else (v,)
        for k, v in r.mapping("match").items()
    }
    records = r.optional_text("records")
    if records is not None:
        _compiled(r, "records", records)
    symbols = r.mapping("symbols")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in symbols.items()):
        raise r.expected("symbols", "a mapping of vendor symbol to symbol like EURUSD",
                         dict(symbols))
    symbol, bid, ask, time = (paths[k] for k in _REQUIRED_FIELDS)
    assert symbol is not None and bid is not None and ask is not None and time is not None
    spec = MappingSpec(
        symbol=symbol, bid=bid, ask=ask, time=time,
        time_format=r.choice("time_format", TIME_FORMATS, "epoch_ms"),
        last=paths["last"], volume=paths["volume"], seq=paths["seq"],
        records=records, match=match, symbols=dict(symbols),
        only_mapped_symbols=r.flag("only_mapped_symbols", False),
    )
    r.finish()
    return spec


def load_config(
    data: Mapping[str, Any],
    *,
    config_path: str | None = None,
    env: Mapping[str, str] | None = None,
) -> WebSocketConfig:
    """Validate a parsed YAML mapping; raises :class:`CollectorConfigError`."""
    r = ConfigReader.for_file(data, config_path, "websocket", env=env)
    r.refuse_plain_secrets("token_env", "token_file")
    r.only(_KEYS)
    url = r.url("url", schemes=("wss", "ws", "https", "http"), what="a ws:// or wss:// URL")
    headers = r.headers("headers")
    sr = r.section("subscribe", _SUBSCRIBE_KEYS)
    subscribe = _subscribe(sr)
    for key, template, reader in (("url", url, r), ("headers", headers, r),
                                  ("messages", list(subscribe.messages), sr)):
        unknown = sorted(_placeholders(template) - _NAMES)
        if unknown:
            raise reader.error(key, f"uses an unknown placeholder ${{{unknown[0]}}} (known: "
                                    f"{', '.join(sorted(_NAMES))})")
    token: Secret | None = None
    token_source = "none"
    if r.has("token_env") or r.has("token_file") or "token" in _placeholders(
        [url, headers, list(subscribe.messages)]
    ):
        token, token_source = r.secret(
            env_key="token_env", file_key="token_file", default_env="WEBSOCKET_TOKEN",
            what="feed credential",
        )
    if r.raw("mapping") is None:
        raise r.error("mapping", "required (a mapping with at least 'fields')")
    mapping = spec_from_config(r.section("mapping"))
    fatal_raw = r.mapping("fatal")
    fatal = {str(k): tuple(v) if isinstance(v, list) else (v,) for k, v in fatal_raw.items()}
    config = WebSocketConfig(
        url=url,
        mapping=mapping,
        name=r.text("name", "websocket"),
        broker=r.text("broker", "WEBSOCKET"),
        token=token,
        token_source=token_source,
        headers=headers,
        subscribe=subscribe,
        fatal=fatal,
        heartbeat_timeout_s=r.number("heartbeat_timeout_s", 30.0, 0.01, 3600),
        ping_interval_s=r.optional_number("ping_interval_s", 0.01, 3600),
        connect_timeout_s=r.number("connect_timeout_s", 10.0, 0.01, 600),
        max_message_bytes=r.integer("max_message_bytes", 4 << 20, 1024, 1 << 30),
        max_retry_after_s=r.number("max_retry_after_s", 300.0, 0.0, 86_400),
        connections_per_s=r.number("connections_per_s", 2.0, 0.001, 1000),
        skip_replayed_quote=r.flag("skip_replayed_quote", True),
        reconnect=reconnect_from(r),
    )
    r.finish()
    return config
