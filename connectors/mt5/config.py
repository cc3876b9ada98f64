"""The configuration of one MetaTrader 5 collector: one broker terminal, one YAML file.

A file names the terminal (``name``, ``broker``, ``server``, ``login``, ``terminal_path``),
the symbols to collect and how to poll them. The account password is never written in the
file: ``password_env`` names an environment variable and ``password_file`` a file (a
Docker/Kubernetes secret) that holds it; with neither, the terminal's saved password is
used. A plain ``password`` field is refused, so a secret cannot slip into version control.

Every error is a :class:`~connectors.collector.CollectorConfigError` naming the field and
the file; it never shows a secret value.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.collector import CollectorConfigError
from connectors.secrets import Secret

#: ``copy_flags`` names → the MetaTrader5 ``COPY_TICKS_*`` values.
COPY_FLAGS = {"INFO": 1, "TRADE": 2, "ALL": -1}

_CANONICAL = re.compile(r"^[A-Z0-9]{3,12}$")
_HOSTPORT = re.compile(r"^(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")
_KNOWN = {
    "name", "broker", "server", "login", "password_env", "password_file", "terminal_path",
    "portable", "timeout_ms", "symbols", "priority", "poll_interval_s", "batch_size",
    "copy_flags", "server_utc_offset_hours", "detect_server_offset", "offset_redetect_s",
    "backfill_s", "bridge", "bridge_timeout_s", "max_requests_per_s", "backoff",
    "position_every", "position_interval_s",
}
_BACKOFF_KNOWN = {"base_s", "cap_s", "max_attempts"}


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
    """``host:port`` (``[v6addr]:port`` for IPv6) → ``(host, port)``."""
    m = _HOSTPORT.match(value.strip())
    port = int(m.group("port")) if m else 0
    if m is None or not 0 < port < 65536:
        raise CollectorConfigError(f"{where}: expected host:port, got {value!r}")
    return m.group("host").strip("[]"), port


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Mt5Config:
    """Read and validate a YAML collector file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CollectorConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CollectorConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise CollectorConfigError(f"{path}: expected a mapping of settings at the top level")
    return parse_config(data, source=str(path), env=env)


def parse_config(
    data: Mapping[str, Any], source: str | None = None, env: Mapping[str, str] | None = None
) -> Mt5Config:
    """Validate a mapping (a parsed YAML file); ``env`` defaults to ``os.environ``."""
    p = _Parser(data, source or "<config>", os.environ if env is None else env)
    return p.config()


class _Parser:
    def __init__(self, data: Mapping[str, Any], source: str, env: Mapping[str, str]) -> None:
        self.data = data
        self.source = source
        self.env = env

    def fail(self, key: str, message: str) -> CollectorConfigError:
        return CollectorConfigError(f"{self.source}: {key}: {message}")

    def config(self) -> Mt5Config:
        d = self.data
        if "password" in d:
            raise self.fail(
                "password",
                "plain passwords are not accepted in collector files; "
                "use password_env (an environment variable name) or password_file",
            )
        unknown = sorted(str(k) for k in d if k not in _KNOWN)
        if unknown:
            raise self.fail(unknown[0], f"unknown setting (known: {', '.join(sorted(_KNOWN))})")
        name = self.string("name", required=True)
        assert name is not None
        login = self.integer("login", None, lo=1)
        flags = (self.string("copy_flags") or "INFO").upper()
        if flags not in COPY_FLAGS:
            raise self.fail("copy_flags", f"expected one of {', '.join(COPY_FLAGS)}, got {flags!r}")
        bridge = self.string("bridge")
        return Mt5Config(
            name=name,
            broker=self.string("broker") or name,
            symbols=self.symbols(),
            server=self.string("server"),
            login=login,
            password=self.password(),
            terminal_path=self.string("terminal_path"),
            portable=self.boolean("portable", False),
            timeout_ms=self.integer("timeout_ms", 60_000, lo=1),
            priority=self.integer("priority", 100, lo=0),
            poll_interval_s=self.number("poll_interval_s", 0.1, lo=0.001, hi=60.0),
            batch_size=self.integer("batch_size", 1000, lo=1, hi=1_000_000),
            copy_flags=flags,
            server_utc_offset_hours=self.number(
                "server_utc_offset_hours", 0.0, lo=-14.0, hi=14.0
            ),
            detect_server_offset=self.boolean("detect_server_offset", False),
            offset_redetect_s=self.number("offset_redetect_s", 600.0, lo=1.0, hi=86_400.0),
            backfill_s=self.number("backfill_s", 0.0, lo=0.0, hi=7 * 86_400.0),
            bridge=parse_bridge(bridge, f"{self.source}: bridge") if bridge else None,
            bridge_timeout_s=self.number("bridge_timeout_s", 30.0, lo=0.1, hi=600.0),
            max_requests_per_s=self.optional_number("max_requests_per_s", lo=0.01),
            backoff=self.backoff(),
            position_every=self.integer("position_every", 1000, lo=1),
            position_interval_s=self.number("position_interval_s", 1.0, lo=0.001, hi=3600.0),
            source_file=self.source,
        )

    # ---- field parsers ------------------------------------------------------------------
    def string(self, key: str, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.fail(key, "required")
            return None
        if not isinstance(value, str | int) or isinstance(value, bool) or not str(value).strip():
            raise self.fail(key, f"expected a non-empty string, got {value!r}")
        return str(value).strip()

    def integer(self, key: str, default: Any, lo: int | None = None, hi: int | None = None) -> Any:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise self.fail(key, f"expected an integer, got {value!r}")
        try:
            n = int(value)
        except ValueError:
            raise self.fail(key, f"expected an integer, got {value!r}") from None
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            raise self.fail(key, f"expected an integer in [{lo}, {hi}], got {n}")
        return n

    def optional_number(self, key: str, lo: float) -> float | None:
        if self.data.get(key) is None:
            return None
        return self.number(key, 0.0, lo=lo, hi=math.inf)

    def number(self, key: str, default: float, lo: float, hi: float) -> float:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self.fail(key, f"expected a number, got {value!r}")
        try:
            x = float(value)
        except ValueError:
            raise self.fail(key, f"expected a number, got {value!r}") from None
        if not math.isfinite(x) or x < lo or x > hi:
            raise self.fail(key, f"expected a number in [{lo}, {hi}], got {value!r}")
        return x

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}")
        return value

    def symbols(self) -> dict[str, str]:
        raw = self.data.get("symbols")
        if raw is None:
            raise self.fail("symbols", "required (a list of symbols or a mapping "
                                       "canonical symbol -> terminal symbol)")
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
            raise self.fail("symbols", f"expected a list or a mapping, got {raw!r}")
        out: dict[str, str] = {}
        for canonical, terminal in pairs:
            if not isinstance(canonical, str) or not _CANONICAL.match(canonical):
                raise self.fail(
                    "symbols", f"{canonical!r} is not a canonical symbol (upper case, no "
                               "separators, e.g. EURUSD); map it: {EURUSD: EURUSD.a}",
                )
            if not isinstance(terminal, str) or not terminal.strip():
                raise self.fail("symbols", f"{canonical}: terminal symbol must be a string")
            if canonical in out:
                raise self.fail("symbols", f"{canonical} is listed twice")
            out[canonical] = terminal.strip()
        if not out:
            raise self.fail("symbols", "at least one symbol is required")
        return out

    def password(self) -> Secret | None:
        var = self.string("password_env")
        file = self.string("password_file")
        if var and file:
            raise self.fail("password_env", "set password_env or password_file, not both")
        if var:
            value = self.env.get(var)
            if value is None or value == "":
                raise self.fail("password_env", f"environment variable {var} is not set")
            return Secret(value)
        if file:
            try:
                text = Path(file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise self.fail("password_file", f"cannot read {file}: {exc.strerror}") from None
            if not text:
                raise self.fail("password_file", f"{file} is empty")
            return Secret(text)
        return None

    def backoff(self) -> BackoffConfig:
        raw = self.data.get("backoff")
        if raw is None:
            return BackoffConfig()
        if not isinstance(raw, Mapping):
            raise self.fail("backoff", f"expected a mapping, got {raw!r}")
        unknown = sorted(str(k) for k in raw if k not in _BACKOFF_KNOWN)
        if unknown:
            raise self.fail(f"backoff.{unknown[0]}", "unknown setting")
        sub = _Parser(raw, self.source, self.env)
        try:
            return BackoffConfig(
                base_s=sub.number("base_s", 0.5, lo=0.0, hi=3600.0),
                cap_s=sub.number("cap_s", 30.0, lo=0.0, hi=3600.0),
                max_attempts=sub.integer("max_attempts", 0, lo=0),
            )
        except CollectorConfigError as exc:
            raise CollectorConfigError(
                str(exc).replace(f"{self.source}: ", f"{self.source}: backoff.", 1)
            ) from None
