"""The configuration of one MetaTrader 5 collector: one broker terminal, one YAML file.

A file names the terminal (``name``, ``broker``, ``server``, ``login``, ``terminal_path``),
the symbols to collect and how to poll them. The account password is never written in the
file: ``password_env`` names an environment variable (or its ``_FILE`` twin) and
``password_file`` a file (a Docker/Kubernetes secret; relative to the config file) that
holds it; with neither, the terminal's saved password is used. A plain ``password`` field
is refused, so a secret cannot slip into version control.

Every error is a :class:`~connectors.base.collector.CollectorConfigError` that reads
``"{file}: {dotted.key}: {what is wrong}"`` (:mod:`connectors.base.config`); it never shows a
secret value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from connectors.base.collector import CollectorConfigError
from connectors.base.config import ConfigReader, read_yaml
from connectors.base.secrets import Secret

#: ``copy_flags`` names → the MetaTrader5 ``COPY_TICKS_*`` values.
COPY_FLAGS = {"INFO": 1, "TRADE": 2, "ALL": -1}

_CANONICAL = re.compile(r"^[A-Z0-9]{3,12}$")
_HOSTPORT = re.compile(r"^(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")
_KNOWN: Final = frozenset({
    "name", "broker", "server", "login", "password_env", "password_file", "terminal_path",
    "portable", "timeout_ms", "symbols", "priority", "poll_interval_s", "batch_size",
    "copy_flags", "server_utc_offset_hours", "detect_server_offset", "offset_redetect_s",
    "backfill_s", "bridge", "bridge_timeout_s", "max_requests_per_s", "backoff",
    "position_every", "position_interval_s",
})
_BACKOFF_KNOWN: Final = frozenset({"base_s", "cap_s", "max_attempts"})


@dataclass(frozen=True, slots=True)
class BackoffConfig:
    base_s: float = 0.5
    cap_s: float = 30.0
    max_attempts: int = 0  # 0: retry for ever (a terminal restart can take minutes)


@dataclass(frozen=True, slots=True)
class Mt5Config:
    """One terminal's collector settings, validated (see the module docstring)."""

    name: str
    broker: str
    symbols: Mapping[str, str]  # canonical symbol (Kafka key) -> symbol name in the terminal
    server: str | None = None
    login: int | None = None
    password: Secret | None = field(default=None, repr=False)
    terminal_path: str | None = None
    portable: bool = False
    timeout_ms: int = 60_000
    # Accepted for existing configs and not used: best-price ties are broken by the
    # worker's TICKSTREAM_BROKER_PRIORITIES (the collector cannot reach consolidation).
    priority: int = 100
    poll_interval_s: float = 0.1
    batch_size: int = 1000
    copy_flags: str = "INFO"
    server_utc_offset_hours: float = 0.0
    detect_server_offset: bool = False
    offset_redetect_s: float = 600.0
    backfill_s: float = 0.0
    bridge: tuple[str, int] | None = None
    bridge_timeout_s: float = 30.0
    max_requests_per_s: float | None = None
    backoff: BackoffConfig = field(default_factory=BackoffConfig)
    position_every: int = 1000  # records between stored positions (connectors.positions)
    position_interval_s: float = 1.0  # ... or seconds, whichever comes first
    source_file: str | None = None

    @property
    def copy_flags_value(self) -> int:
        return COPY_FLAGS[self.copy_flags]

    @property
    def server_utc_offset_ms(self) -> int:
        return round(self.server_utc_offset_hours * 3_600_000)

    def secrets(self) -> list[str]:
        """Values that must never appear in a log line or an error message."""
        return [self.password.get()] if self.password is not None else []


def parse_bridge(value: str, where: str = "bridge") -> tuple[str, int]:
    """``host:port`` (``[v6addr]:port`` for IPv6) → ``(host, port)``.

    ``where`` starts the error message (``"mt5.yaml: bridge"``, ``"--bridge"``).
    """
    m = _HOSTPORT.match(value.strip())
    port = int(m.group("port")) if m else 0
    if m is None or not 0 < port < 65536:
        raise CollectorConfigError(f"{where}: expected host:port, got {value!r}")
    return m.group("host").strip("[]"), port


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Mt5Config:
    """Read and validate a YAML collector file."""
    return parse_config(read_yaml(path), source=str(path), env=env)


def parse_config(
    data: Mapping[str, Any], source: str | None = None, env: Mapping[str, str] | None = None
) -> Mt5Config:
    """Validate a mapping (a parsed YAML file); ``env`` defaults to ``os.environ``.

    ``source`` is the file: errors name it, and a relative ``password_file`` is relative to
    its folder.
    """
    r = ConfigReader.for_file(data, source, "mt5", env=env)
    r.refuse_plain_secrets("password_env", "password_file")
    r.only(_KNOWN)
    name = r.text("name")
    flags = r.text("copy_flags", "INFO").upper()
    if flags not in COPY_FLAGS:
        raise r.expected("copy_flags", f"one of {', '.join(COPY_FLAGS)}", flags)
    bridge = r.optional_text("bridge")
    password, _ = r.optional_secret(env_key="password_env", file_key="password_file",
                                    what="account password")
    return Mt5Config(
        name=name,
        broker=r.optional_text("broker") or name,
        symbols=_symbols(r),
        server=r.optional_text("server"),
        login=r.optional_integer("login", lo=1),
        password=password,
        terminal_path=r.optional_text("terminal_path"),
        portable=r.flag("portable", False),
        timeout_ms=r.integer("timeout_ms", 60_000, lo=1),
        priority=r.integer("priority", 100, lo=0),
        poll_interval_s=r.number("poll_interval_s", 0.1, 0.001, 60.0),
        batch_size=r.integer("batch_size", 1000, 1, 1_000_000),
        copy_flags=flags,
        server_utc_offset_hours=r.number("server_utc_offset_hours", 0.0, -14.0, 14.0),
        detect_server_offset=r.flag("detect_server_offset", False),
        offset_redetect_s=r.number("offset_redetect_s", 600.0, 1.0, 86_400.0),
        backfill_s=r.number("backfill_s", 0.0, 0.0, 7 * 86_400.0),
        bridge=parse_bridge(bridge, r.where + ": bridge") if bridge else None,
        bridge_timeout_s=r.number("bridge_timeout_s", 30.0, 0.1, 600.0),
        max_requests_per_s=r.optional_number("max_requests_per_s", 0.01),
        backoff=_backoff(r.section("backoff", _BACKOFF_KNOWN)),
        position_every=r.integer("position_every", 1000, lo=1),
        position_interval_s=r.number("position_interval_s", 1.0, 0.001, 3600.0),
        source_file=r.where,
    )


def _symbols(r: ConfigReader) -> dict[str, str]:
    raw = r.raw("symbols")
    if raw is None:
        raise r.error("symbols", "required (a list of symbols or a mapping canonical symbol "
                                 "-> terminal symbol)")
    pairs: list[tuple[Any, Any]]
    if isinstance(raw, Mapping):
        pairs = [(k, v if v is not None else k) for k, v in raw.items()]
    elif isinstance(raw, list):
        pairs = []
        for item in raw:
            if isinstance(item, Mapping) and len(item) == 1:
                pairs.append(next(iter(item.items())))
            else:
                pairs.append((item, item))
    else:
        raise r.expected("symbols", "a list or a mapping", raw)
    out: dict[str, str] = {}
    for canonical, terminal in pairs:
        if not isinstance(canonical, str) or not _CANONICAL.match(canonical):
            raise r.error(
                "symbols", f"{canonical!r} is not a canonical symbol (upper case, no "
                           "separators, e.g. EURUSD); map it: {EURUSD: EURUSD.a}",
            )
        if not isinstance(terminal, str) or not terminal.strip():
            raise r.error("symbols", f"{canonical}: terminal symbol must be a string")
        if canonical in out:
            raise r.error("symbols", f"{canonical} is listed twice")
        out[canonical] = terminal.strip()
    if not out:
        raise r.error("symbols", "at least one symbol is required")
    return out


def _backoff(r: ConfigReader) -> BackoffConfig:
    return BackoffConfig(
        base_s=r.number("base_s", 0.5, 0.0, 3600.0),
        cap_s=r.number("cap_s", 30.0, 0.0, 3600.0),
        max_attempts=r.integer("max_attempts", 0, lo=0),
    )
