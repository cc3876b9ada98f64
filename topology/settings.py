"""One frozen, typed settings object, resolved from ``TICKSTREAM_*`` variables at start-up.

Nothing here runs at import time: :meth:`Settings.from_env` is called by the app factory and
the CLI. A bad value raises :class:`SettingsError` naming the variable and the expected form,
so a worker stops at start-up rather than misbehaving later. Secrets are wrapped in
:class:`Secret`, whose ``repr``/``str`` never reveal the value, so a logged settings object
(or a traceback showing one) cannot leak a password.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import unquote, urlsplit

from connectors.base.secrets import Secret
from connectors.kafka_client import KafkaSecurity
from stages.config import ExitLimits, RiskLimits, SymbolSpec
from storage.errors import StorageError
from storage.retention import TIERS, RetentionPolicy
from storage.url import StoreURL, parse_store_url

PREFIX = "TICKSTREAM_"

ValidationLevel = Literal["basic", "advanced", "enterprise"]

DEFAULT_SYMBOLS = "EURUSD,GBPUSD,USDJPY,USDCHF,AUDUSD,USDCAD,NZDUSD,EURJPY,GBPJPY,EURGBP"


class SettingsError(ValueError):
    """A ``TICKSTREAM_*`` variable has a value of the wrong form."""

    def __init__(self, variable: str, expected: str, got: str | None = None) -> None:
        self.variable = variable
        self.expected = expected
        shown = "" if got is None else f" (got {got!r})"
        super().__init__(f"{variable}: expected {expected}{shown}")


@dataclass(frozen=True, slots=True)
class ClickHouseURL:
    """``chdb://PATH`` (embedded engine) or ``clickhouse://user:password@host:port/db``."""

    scheme: Literal["chdb", "clickhouse"]
    path: Path | None = None
    host: str = "127.0.0.1"
    port: int = 9000
    user: str = "default"
    password: Secret | None = None
    database: str = "default"

    def __str__(self) -> str:
        if self.scheme == "chdb":
            return f"chdb://{self.path}"
        cred = f"{self.user}:***@" if self.password else f"{self.user}@"
        return f"clickhouse://{cred}{self.host}:{self.port}/{self.database}"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker, collector or CLI command needs, resolved once."""

    app_id: str = "tickstream"
    kafka_bootstrap_servers: tuple[str, ...] = ("127.0.0.1:9092",)
    security: KafkaSecurity = field(default_factory=KafkaSecurity)
    topic_prefix: str = ""
    partitions: int = 12
    replication_factor: int = 1
    schema_registry_url: Secret | None = None
    clickhouse_url: ClickHouseURL = field(
        default_factory=lambda: ClickHouseURL(scheme="chdb", path=Path("var/chdb"))
    )
    model_dir: Path = Path("var/models")  # under var/: nothing litters the work tree
    data_dir: Path = Path("var/worker")
    table_store: str = "rocksdb://"
    web_port: int = 6066
    log_level: str = "info"
    session_timeout_s: float = 10.0
    fetch_wait_ms: int = 5
    #: Longest the worker's fetch wait grows to while a partition with lag gets empty
    #: fetches (the local broker answers short fetches empty on a long log).
    fetch_wait_max_ms: int = 5_000
    #: A source partition with lag and no progress for this long makes ``/health/`` not-ok.
    stall_warn_s: int = 30
    #: ... and for this long makes the worker exit non-zero (0: never).
    stall_exit_s: int = 120
    producer_linger_ms: int = 5
    producer_max_batch_bytes: int = 16_384
    checkpoint_interval_ms: int = 1_000
    #: Events a worker may hold fetched but not yet processed (Faust's stream buffer).
    stream_buffer_maxsize: int = 65_536
    #: Allocations between young garbage collections in a worker (CPython's default: 700).
    gc_gen0_threshold: int = 5_000
    group_instance_id: str | None = None  # static group membership (KIP-345), per worker
    symbols: Mapping[str, SymbolSpec] = field(default_factory=dict)
    #: Dedupe horizon in event time: a repeat older than this is no longer recognised.
    dedupe_window_ms: int = 600_000
    #: A broker whose latest quote is older than this (event time) leaves the consolidated
    #: best bid/offer until its next valid quote.
    broker_staleness_ms: int = 5_000
    #: An open bar with no tick for this long past its minute's end (event-time estimate)
    #: is closed by the worker's idle timer.
    bar_idle_flush_ms: int = 5_000
    #: Broker name -> priority (lower is preferred) for best-price ties, after quality.
    broker_priorities: Mapping[str, int] = field(default_factory=dict)
    validation_level: ValidationLevel = "advanced"
    risk: RiskLimits = field(default_factory=RiskLimits)
    #: Symbols a model scores although its metadata does not list them as trained on
    #: (``MODEL_ALLOW_SYMBOLS``: comma-separated symbols, or ``*`` for any).
    model_allow_symbols: frozenset[str] = frozenset()
    #: Where the storage sink writes and ``tickstream query`` reads (``STORE_URL``; when
    #: unset, ``CLICKHOUSE_URL``'s value; default the embedded engine at var/chdb).
    store_url: StoreURL = field(
        default_factory=lambda: StoreURL(scheme="chdb", path=Path("var/chdb"))
    )
    #: The sink inserts when it holds this many records, or the oldest is this old.
    sink_batch_rows: int = 50_000
    sink_batch_ms: int = 500
    #: An outage of the store longer than this stops the sink non-zero (0: retry forever).
    sink_outage_exit_s: int = 0
    #: Retention tier of every stored table, and per-table exceptions.
    store_retention: RetentionPolicy = field(default_factory=RetentionPolicy)

    def topic(self, name: str) -> str:
        """The physical topic name for a logical topic (prefix applied)."""
        return f"{self.topic_prefix}{name}"

    @property
    def bootstrap(self) -> str:
        return ",".join(self.kafka_bootstrap_servers)

    def confluent_config(self) -> dict[str, Any]:
        """librdkafka settings shared by every confluent-kafka client we create."""
        sec = self.security
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": sec.protocol,
        }
        if sec.ssl_ca_file is not None:
            conf["ssl.ca.location"] = str(sec.ssl_ca_file)
        if sec.protocol == "SASL_SSL":
            conf["sasl.mechanism"] = sec.sasl_mechanism
            conf["sasl.username"] = sec.sasl_username
            conf["sasl.password"] = sec.sasl_password.get() if sec.sasl_password else ""
        return conf

    def redacted(self) -> dict[str, str]:
        """A flat view safe to log: secrets are masked by :class:`Secret` itself."""
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, env_file: Path | str | None = ".env"
    ) -> Settings:
        """Resolve settings from ``env`` (default ``os.environ``) over an optional ``.env``.

        Real environment variables win over the file, as in docker and systemd.
        """
        merged: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            merged.update(_read_env_file(Path(env_file)))
        merged.update({k: v for k, v in (os.environ if env is None else env).items()})
        resolver = _Resolver(merged)
        settings = resolver.settings()
        check_unknown(merged, resolver.read)
        return settings


def _read_env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ")
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{path}:{lineno}", "KEY=VALUE lines")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


#: ``TICKSTREAM_*`` variables read outside :class:`Settings` (name without the prefix ->
#: where): known, so not reported as unknown.
READ_ELSEWHERE = {
    "STAGES_SOURCE": "stages/native.py",
    "TANSU_BIN": "devstack/broker.py",
    "FUZZ_EXAMPLES": "the fuzz tests",
}
_log = logging.getLogger(__name__)


def check_unknown(env: Mapping[str, str], known: set[str]) -> None:
    """A ``TICKSTREAM_*`` variable that is no setting: a misspelling of one (difflib finds
    a close match) is a :class:`SettingsError`, because the setting meant is silently left
    at its default otherwise; any other unknown name is logged as a warning."""
    names = {PREFIX + n for n in known | set(READ_ELSEWHERE)}
    for var in sorted(k for k in env if k.startswith(PREFIX) and k not in names):
        close = difflib.get_close_matches(var, sorted(names), n=1, cutoff=0.8)
        if close:
            raise UnknownSettingError(var, close[0])
        _log.warning("unknown setting %s: no tickstream setting has this name (ignored; "
                     "the settings are listed in the README)", var)


class UnknownSettingError(SettingsError):
    """A ``TICKSTREAM_*`` variable that looks like a misspelt setting."""

    def __init__(self, variable: str, meant: str) -> None:
        ValueError.__init__(self, f"unknown setting {variable} — did you mean {meant}?")
        self.variable, self.expected, self.meant = variable, meant, meant


T = TypeVar("T")
_HOSTPORT = re.compile(r"^[A-Za-z0-9_.\-]+:\d{1,5}$|^\[[0-9A-Fa-f:]+\]:\d{1,5}$")
_SYMBOL = re.compile(r"^[A-Z]{6}$")


class _Resolver:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.read: set[str] = set()  # every name looked up: the known settings

    def raw(self, name: str) -> str | None:
        self.read.add(name)
        value = self.env.get(PREFIX + name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def get(
        self, name: str, parse: Callable[[str], T], expected: str, default: T,
        sensitive: bool = False,
    ) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except (ValueError, TypeError):
            shown = None if sensitive else value
            raise SettingsError(PREFIX + name, expected, shown) from None

    def integer(self, name: str, lo: int, hi: int, default: int,
                unit: str = "an integer") -> int:
        """An integer within ``lo..hi``; the error names it as ``"{unit} {lo}..{hi}"``."""
        return self.get(name, _int_range(lo, hi), f"{unit} {lo}..{hi}", default)

    def millis(self, name: str, lo: int, hi: int, default: int) -> int:
        """A duration in milliseconds within ``lo..hi``."""
        return self.integer(name, lo, hi, default, "milliseconds")

    def secret(self, name: str) -> Secret | None:
        self.read.add(name + "_FILE")
        value = self.raw(name)
        if value is None:
            file_value = self.raw(name + "_FILE")
            if file_value is None:
                return None
            try:
                value = Path(file_value).read_text().strip()
            except OSError:
                raise SettingsError(PREFIX + name + "_FILE", "a readable file") from None
        return Secret(value)

    def settings(self) -> Settings:
        d = Settings()
        bootstrap = self.get(
            "KAFKA_BOOTSTRAP_SERVERS", _bootstrap, "comma-separated host:port list",
            d.kafka_bootstrap_servers,
        )
        partitions = self.integer("PARTITIONS", 1, 10_000, 12)
        replication = self.integer("REPLICATION_FACTOR", 1, 32, 1)
        prefix = self.get("TOPIC_PREFIX", _topic_prefix, "letters, digits, '.', '_' or '-'", "")
        registry = self.secret("SCHEMA_REGISTRY_URL")
        if registry is not None and not registry.get().startswith(("http://", "https://")):
            raise SettingsError(PREFIX + "SCHEMA_REGISTRY_URL", "an http:// or https:// URL")
        level_name: str = self.get(
            "VALIDATION_LEVEL", _choice("basic", "advanced", "enterprise"),
            "one of basic, advanced, enterprise", "advanced",
        )
        level = cast(ValidationLevel, level_name)
        symbols = self.symbols()
        return Settings(
            app_id=self.get("APP_ID", _topic_prefix, "letters, digits, '.', '_' or '-'", d.app_id),
            kafka_bootstrap_servers=bootstrap,
            security=self.security(),
            topic_prefix=prefix,
            partitions=partitions,
            replication_factor=replication,
            schema_registry_url=registry,
            clickhouse_url=self.get(
                "CLICKHOUSE_URL", _clickhouse_url,
                "chdb://PATH or clickhouse://user:password@host:port/db", d.clickhouse_url,
                sensitive=True,
            ),
            model_dir=self.get("MODEL_DIR", Path, "a directory path", d.model_dir),
            data_dir=self.get("DATA_DIR", Path, "a directory path", d.data_dir),
            table_store=self.get(
                "TABLE_STORE", _choice("rocksdb://", "memory://"),
                "rocksdb:// or memory://", d.table_store,
            ),
            web_port=self.integer("WEB_PORT", 1, 65535, 6066, "a TCP port"),
            log_level=self.get(
                "LOG_LEVEL", _choice("debug", "info", "warning", "error", "critical"),
                "one of debug, info, warning, error, critical", d.log_level,
            ),
            session_timeout_s=self.get(
                "SESSION_TIMEOUT_S", _float_range(1.0, 600.0), "seconds 1..600",
                d.session_timeout_s,
            ),
            fetch_wait_ms=self.millis("FETCH_WAIT_MS", 1, 5000, d.fetch_wait_ms),
            fetch_wait_max_ms=self.millis(
                "FETCH_WAIT_MAX_MS", 1, 60_000, d.fetch_wait_max_ms
            ),
            stall_warn_s=self.integer("STALL_WARN_S", 1, 86_400, d.stall_warn_s, "seconds"),
            stall_exit_s=self.integer("STALL_EXIT_S", 0, 86_400, d.stall_exit_s, "seconds"),
            producer_linger_ms=self.millis("PRODUCER_LINGER_MS", 0, 1000, d.producer_linger_ms),
            producer_max_batch_bytes=self.integer(
                "PRODUCER_MAX_BATCH_BYTES", 1, 16_777_216, d.producer_max_batch_bytes, "bytes",
            ),
            group_instance_id=self.get(
                "GROUP_INSTANCE_ID", _topic_prefix, "letters, digits, '.', '_' or '-'", None,
            ) or None,
            checkpoint_interval_ms=self.millis(
                "CHECKPOINT_INTERVAL_MS", 0, 60_000, d.checkpoint_interval_ms
            ),
            stream_buffer_maxsize=self.integer(
                "STREAM_BUFFER_MAXSIZE", 64, 1_048_576, d.stream_buffer_maxsize, "events",
            ),
            gc_gen0_threshold=self.integer(
                "GC_GEN0_THRESHOLD", 100, 1_000_000, d.gc_gen0_threshold, "allocations",
            ),
            symbols=symbols,
            model_allow_symbols=self.allow_symbols(),
            dedupe_window_ms=self.millis("DEDUPE_WINDOW_MS", 0, 86_400_000, d.dedupe_window_ms),
            broker_staleness_ms=self.millis(
                "BROKER_STALENESS_MS", 0, 86_400_000, d.broker_staleness_ms
            ),
            bar_idle_flush_ms=self.millis("BAR_IDLE_FLUSH_MS", 0, 3_600_000, d.bar_idle_flush_ms),
            broker_priorities=self.get(
                "BROKER_PRIORITIES", _priorities,
                "comma-separated BROKER=PRIORITY (an integer >= 0, lower is preferred), "
                "e.g. ICM=1,PEP=2", {},
            ),
            validation_level=level,
            risk=self.risk(symbols),
            store_url=self.store_url(),
            sink_batch_rows=self.integer("SINK_BATCH_ROWS", 1, 10_000_000, d.sink_batch_rows,
                                         "rows"),
            sink_batch_ms=self.millis("SINK_BATCH_MS", 1, 600_000, d.sink_batch_ms),
            sink_outage_exit_s=self.integer("SINK_OUTAGE_EXIT_S", 0, 86_400 * 7,
                                            d.sink_outage_exit_s, "seconds"),
            store_retention=self.retention(),
        )

    def store_url(self) -> StoreURL:
        name = "STORE_URL" if self.raw("STORE_URL") is not None else "CLICKHOUSE_URL"
        value = self.raw(name)
        if value is None:
            return StoreURL(scheme="chdb", path=Path("var/chdb"))
        try:
            return parse_store_url(value)
        except StorageError:  # the URL may hold a password: not echoed
            raise SettingsError(PREFIX + name, "chdb://PATH or "
                                "clickhouse://user:password@host:port/db") from None

    def retention(self) -> RetentionPolicy:
        tiers = ", ".join(TIERS)
        default = self.get("STORE_TIER", _choice(*TIERS), f"one of {tiers}", "free")
        expected = f"comma-separated TABLE=TIER (tiers: {tiers}), e.g. ticks=free,bars_m1=pro"
        per_table: dict[str, str] = self.get("STORE_TIERS", _pairs, expected, {})
        try:
            return RetentionPolicy(default, per_table)
        except StorageError:
            raise SettingsError(PREFIX + "STORE_TIERS", expected, self.raw("STORE_TIERS")
                                ) from None

    def security(self) -> KafkaSecurity:
        protocol = self.get(
            "KAFKA_SECURITY_PROTOCOL", _choice("PLAINTEXT", "SSL", "SASL_SSL"),
            "one of PLAINTEXT, SSL, SASL_SSL", "PLAINTEXT",
        )
        mechanism = self.get(
            "KAFKA_SASL_MECHANISM", _choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
            "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", None,
        )
        username = self.raw("KAFKA_SASL_USERNAME")
        password = self.secret("KAFKA_SASL_PASSWORD")
        ca_file = self.get("KAFKA_SSL_CA_FILE", Path, "a file path", None)
        if ca_file is not None and not ca_file.is_file():
            raise SettingsError(PREFIX + "KAFKA_SSL_CA_FILE", "an existing CA bundle file")
        if protocol == "SASL_SSL":
            if mechanism is None:
                raise SettingsError(
                    PREFIX + "KAFKA_SASL_MECHANISM",
                    "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 when the protocol is SASL_SSL",
                )
            if username is None:
                raise SettingsError(
                    PREFIX + "KAFKA_SASL_USERNAME", "a user name when the protocol is SASL_SSL"
                )
            if password is None:
                raise SettingsError(
                    PREFIX + "KAFKA_SASL_PASSWORD",
                    "a password (or KAFKA_SASL_PASSWORD_FILE) when the protocol is SASL_SSL",
                )
        return KafkaSecurity(
            protocol=protocol,  # type: ignore[arg-type]
            sasl_mechanism=mechanism,  # type: ignore[arg-type]
            sasl_username=username,
            sasl_password=password,
            ssl_ca_file=ca_file,
        )

    def symbols(self) -> dict[str, SymbolSpec]:
        max_spread = self.get(
            "MAX_SPREAD_PIPS", _float_range(0.01, 10_000.0), "pips > 0", 5.0
        )
        raw = self.raw("SYMBOLS") or DEFAULT_SYMBOLS
        out: dict[str, SymbolSpec] = {}
        expected = "comma-separated SYMBOL[:PIP_SIZE[:MAX_SPREAD_PIPS]], e.g. EURUSD,USDJPY:0.01"
        for item in raw.split(","):
            parts = [p.strip() for p in item.strip().split(":")]
            name = parts[0].upper()
            if not _SYMBOL.match(name) or len(parts) > 3:
                raise SettingsError(PREFIX + "SYMBOLS", expected, item)
            try:
                pip = float(parts[1]) if len(parts) > 1 and parts[1] else _default_pip(name)
                spread = float(parts[2]) if len(parts) > 2 else max_spread
            except ValueError:
                raise SettingsError(PREFIX + "SYMBOLS", expected, item) from None
            if not (0 < pip < 1) or spread <= 0:
                raise SettingsError(PREFIX + "SYMBOLS", expected, item)
            out[name] = SymbolSpec(name=name, pip_size=pip, max_spread_pips=spread)
        return out

    def allow_symbols(self) -> frozenset[str]:
        raw = self.raw("MODEL_ALLOW_SYMBOLS")
        if raw is None:
            return frozenset()
        if raw == "*":
            return frozenset({"*"})
        names = [n.strip().upper() for n in raw.split(",")]
        if not all(_SYMBOL.match(n) for n in names):
            raise SettingsError(PREFIX + "MODEL_ALLOW_SYMBOLS",
                                "comma-separated symbols (e.g. GBPJPY,USDJPY) or *", raw)
        return frozenset(names)

    def exits(self, symbols: Mapping[str, SymbolSpec]) -> tuple[ExitLimits,
                                                                dict[str, ExitLimits]]:
        """The exit limits: each variable is ``DEFAULT`` and/or ``SYMBOL=VALUE`` overrides,
        comma-separated (``30,GBPJPY=60``), like the per-symbol specs of ``SYMBOLS``."""
        d = ExitLimits()
        specs = (
            ("RISK_STOP_LOSS_PIPS", _float_range(0.0, 10_000.0), "pips 0..10000",
             d.stop_loss_pips),
            ("RISK_TAKE_PROFIT_PIPS", _float_range(0.0, 10_000.0), "pips 0..10000",
             d.take_profit_pips),
            ("RISK_MAX_HOLD_S", _int_range(0, 30 * 86_400), "seconds 0..2592000",
             d.max_hold_s),
        )
        defaults: list[Any] = []
        overrides: dict[str, dict[int, Any]] = {}
        for i, (name, parse, unit, default) in enumerate(specs):
            expected = (f"{unit} (0: off), optionally with per-symbol SYMBOL=VALUE overrides, "
                        f"comma-separated, e.g. {default},GBPJPY={default}")
            value, per = default, {}
            raw = self.raw(name)
            for item in (raw.split(",") if raw is not None else ()):
                sym, sep, text = (x.strip() for x in item.rpartition("="))
                sym = sym.upper()
                try:
                    parsed = parse(text)
                except (ValueError, TypeError):
                    raise SettingsError(PREFIX + name, expected, raw) from None
                if not sep:
                    value = parsed
                elif sym in symbols and sym not in per:
                    per[sym] = parsed
                else:
                    raise SettingsError(
                        PREFIX + name, expected + " (each symbol once, one of "
                        "TICKSTREAM_SYMBOLS)", raw)
            defaults.append(value)
            for sym, v in per.items():
                overrides.setdefault(sym, {})[i] = v
        base = ExitLimits(float(defaults[0]), float(defaults[1]), int(defaults[2]))
        by_symbol = {
            sym: ExitLimits(float(over.get(0, defaults[0])), float(over.get(1, defaults[1])),
                            int(over.get(2, defaults[2])))
            for sym, over in sorted(overrides.items())
        }
        return base, by_symbol

    def risk(self, symbols: Mapping[str, SymbolSpec]) -> RiskLimits:
        d = RiskLimits()
        prob = _float_range(0.0, 1.0)
        exits, exits_by_symbol = self.exits(symbols)
        return RiskLimits(
            lot_size=self.get("RISK_LOT_SIZE", _float_range(0.01, 100.0), "lots 0.01..100",
                              d.lot_size),
            max_position_per_symbol=self.integer(
                "RISK_MAX_POSITION_PER_SYMBOL", 0, 1000, d.max_position_per_symbol,
            ),
            max_total_positions=self.integer(
                "RISK_MAX_TOTAL_POSITIONS", 0, 10_000, d.max_total_positions,
            ),
            cooldown_s=self.integer("RISK_COOLDOWN_S", 0, 86_400, d.cooldown_s, "seconds"),
            entry_threshold=self.get("RISK_ENTRY_THRESHOLD", prob, "a probability 0..1",
                                     d.entry_threshold),
            exit_threshold=self.get("RISK_EXIT_THRESHOLD", prob, "a probability 0..1",
                                    d.exit_threshold),
            max_spread_pips=self.get(
                "RISK_MAX_SPREAD_PIPS", _float_range(0.0, 10_000.0), "pips >= 0",
                d.max_spread_pips,
            ),
            event_blackout_min=self.integer(
                "RISK_EVENT_BLACKOUT_MIN", 0, 1440, d.event_blackout_min, "minutes",
            ),
            atr_stop_mult=self.get("RISK_ATR_STOP_MULT", _float_range(0.0, 100.0),
                                   "a multiple 0..100", d.atr_stop_mult),
            atr_take_mult=self.get("RISK_ATR_TAKE_MULT", _float_range(0.0, 100.0),
                                   "a multiple 0..100", d.atr_take_mult),
            exits=exits,
            exits_by_symbol=exits_by_symbol,
        )


def _priorities(value: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in value.split(","):
        name, sep, prio = (p.strip() for p in item.partition("="))
        if not sep or not name or name in out:
            raise ValueError(item)
        n = int(prio)
        if n < 0:
            raise ValueError(item)
        out[name] = n
    return out


def _pairs(value: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in value.split(","):
        name, sep, tier = (p.strip() for p in item.partition("="))
        if not sep or not name or not tier or name in out:
            raise ValueError(item)
        out[name] = tier.lower()
    return out


def _default_pip(symbol: str) -> float:
    return 0.01 if symbol.endswith("JPY") else 0.0001


def _bootstrap(value: str) -> tuple[str, ...]:
    hosts = tuple(h.strip().removeprefix("kafka://") for h in value.split(",") if h.strip())
    if not hosts or not all(_HOSTPORT.match(h) for h in hosts):
        raise ValueError(value)
    for h in hosts:
        if not 0 < int(h.rsplit(":", 1)[1]) < 65536:
            raise ValueError(value)
    return hosts


def _topic_prefix(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._\-]*", value):
        raise ValueError(value)
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        for a in allowed:
            if value.lower() == a.lower():
                return a
        raise ValueError(value)

    return parse


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        n = int(value)
        if not lo <= n <= hi:
            raise ValueError(value)
        return n

    return parse


def _float_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        x = float(value)
        if not lo <= x <= hi:  # also rejects NaN
            raise ValueError(value)
        return x

    return parse


def _clickhouse_url(value: str) -> ClickHouseURL:
    if value.startswith("chdb://"):
        path = value.removeprefix("chdb://")
        if not path:
            raise ValueError(value)
        return ClickHouseURL(scheme="chdb", path=Path(path))
    parts = urlsplit(value)
    if parts.scheme != "clickhouse" or not parts.hostname:
        raise ValueError("<redacted>")
    try:
        port = parts.port or 9000
    except ValueError:
        raise ValueError("<redacted>") from None
    return ClickHouseURL(
        scheme="clickhouse",
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username else "default",
        password=Secret(unquote(parts.password)) if parts.password else None,
        database=parts.path.lstrip("/") or "default",
    )
