"""Configuration of the OANDA v20 pricing-stream collector (``config/collectors/oanda.yaml``).

The API token is never written in the file: it comes from an environment variable
(``token_env``, default ``OANDA_API_TOKEN``), from the file that variable's ``_FILE``
twin names (``OANDA_API_TOKEN_FILE``, the docker/systemd secrets convention), or from
``token_file`` (relative paths are relative to the config file). It is held as a
:class:`~connectors.base.secrets.Secret`, so printing the config cannot reveal it. Every
error reads ``"{file}: {dotted.key}: {what is wrong}"`` (:mod:`connectors.base.config`) and
never quotes a secret.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

from connectors.base.config import ConfigReader, reconnect_from
from connectors.base.resilience import ReconnectPolicy
from connectors.base.secrets import Secret
from connectors.oanda.parse import symbol_to_instrument

PRACTICE_STREAM_URL: Final = "https://stream-fxpractice.oanda.com"
LIVE_STREAM_URL: Final = "https://stream-fxtrade.oanda.com"
STREAM_URLS: Final = {"practice": PRACTICE_STREAM_URL, "live": LIVE_STREAM_URL}
DEFAULT_TOKEN_ENV: Final = "OANDA_API_TOKEN"

NonTradeable = Literal["reject", "skip"]

_KEYS: Final = frozenset({
    "name", "broker", "environment", "stream_url", "account_id", "account_id_env",
    "instruments", "symbols", "token_env", "token_file", "snapshot", "heartbeat_timeout_s",
    "connect_timeout_s", "non_tradeable", "max_line_bytes", "max_retry_after_s",
    "connections_per_s", "reconnect", "position_every", "position_interval_s",
})


@dataclass(frozen=True, slots=True)
class OandaConfig:
    """Everything the collector needs; build it with :func:`load_config`."""

    account_id: str
    token: Secret
    instruments: tuple[str, ...]
    name: str = "oanda"
    broker: str = "OANDA"
    environment: str = "practice"
    stream_url: str = PRACTICE_STREAM_URL
    symbols: Mapping[str, str] = field(default_factory=dict)
    token_source: str = f"${DEFAULT_TOKEN_ENV}"
    snapshot: bool = True
    heartbeat_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    non_tradeable: NonTradeable = "reject"
    max_line_bytes: int = 1 << 20
    max_retry_after_s: float = 300.0
    connections_per_s: float = 2.0
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    position_every: int = 1000  # ticks between stored positions (connectors.positions)
    position_interval_s: float = 1.0  # ... or seconds

    @property
    def stream_endpoint(self) -> str:
        return f"{self.stream_url.rstrip('/')}/v3/accounts/{self.account_id}/pricing/stream"


def load_config(
    data: Mapping[str, Any],
    *,
    config_path: str | None = None,
    env: Mapping[str, str] | None = None,
) -> OandaConfig:
    """Validate a parsed YAML mapping; raises :class:`CollectorConfigError`."""
    r = ConfigReader.for_file(data, config_path, "oanda", env=env)
    r.refuse_plain_secrets("token_env", "token_file")
    r.only(_KEYS)
    token, token_source = r.secret(
        env_key="token_env", file_key="token_file", default_env=DEFAULT_TOKEN_ENV,
        what="OANDA API token",
    )
    environment = r.choice("environment", STREAM_URLS, "practice")
    stream_url = r.url("stream_url", STREAM_URLS[environment])
    if r.has("account_id"):
        account_id = r.text("account_id")
    else:
        var = r.text("account_id_env", "OANDA_ACCOUNT_ID")
        account_id = r.env.get(var, "").strip()
        if not account_id:
            raise r.error("account_id", f"required: set it, or export {var}")
    if "/" in account_id or "?" in account_id:
        raise r.expected("account_id", "an account id such as 101-004-1234567-001", account_id)
    raw_instruments = r.raw("instruments")
    if isinstance(raw_instruments, str):
        raw_instruments = [s for s in raw_instruments.split(",") if s.strip()]
    if not isinstance(raw_instruments, list) or not raw_instruments or not all(
        isinstance(i, str) for i in raw_instruments
    ):
        raise r.expected("instruments", "a non-empty list such as [EUR_USD, USD_JPY]",
                         raw_instruments)
    try:
        instruments = tuple(dict.fromkeys(symbol_to_instrument(i) for i in raw_instruments))
    except ValueError as exc:
        raise r.error("instruments", f"has an entry OANDA cannot take: {exc}") from None
    symbols = r.mapping("symbols")
    if not all(
        isinstance(k, str) and isinstance(v, str) and v.isalnum() for k, v in symbols.items()
    ):
        raise r.expected("symbols", "a mapping of OANDA instrument to symbol, e.g. "
                                    "{DE30_EUR: GER30}", dict(symbols))
    non_tradeable = r.choice("non_tradeable", ("reject", "skip"), "reject")
    config = OandaConfig(
        account_id=account_id,
        token=token,
        instruments=instruments,
        name=r.text("name", "oanda"),
        broker=r.text("broker", "OANDA"),
        environment=environment,
        stream_url=stream_url,
        symbols=dict(symbols),
        token_source=token_source,
        snapshot=r.flag("snapshot", True),
        heartbeat_timeout_s=r.number("heartbeat_timeout_s", 10.0, 0.01, 3600),
        connect_timeout_s=r.number("connect_timeout_s", 10.0, 0.01, 600),
        non_tradeable=cast(NonTradeable, non_tradeable),
        max_line_bytes=r.integer("max_line_bytes", 1 << 20, 1024, 1 << 30),
        max_retry_after_s=r.number("max_retry_after_s", 300.0, 0.0, 86_400),
        connections_per_s=r.number("connections_per_s", 2.0, 0.001, 1000),
        position_every=r.integer("position_every", 1000, 1, 10_000_000),
        position_interval_s=r.number("position_interval_s", 1.0, 0.001, 3600),
        reconnect=reconnect_from(r),
    )
    r.finish()
    return config
