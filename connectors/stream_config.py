"""Configuration helpers shared by the streaming collectors (OANDA, generic WebSocket).

:class:`ConfigFields` gives typed access to one mapping with errors that name the file and
the field; :func:`read_secret` reads a credential from an environment variable, its
``_FILE`` twin or a secret file, never from the config itself; :func:`reconnect_policy`
reads the ``reconnect`` section into a :class:`~connectors.resilience.ReconnectPolicy`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Final

from connectors.collector import CollectorConfigError
from connectors.resilience import ReconnectPolicy
from connectors.secrets import Secret

_RECONNECT_KEYS: Final = frozenset({"base_s", "cap_s", "max_attempts", "breaker_threshold",
                                    "breaker_reset_s"})


class ConfigFields:
    """Typed access to one mapping with errors naming the file and the field."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        self.data = data
        self.where = where

    def fail(self, name: str, expected: str) -> CollectorConfigError:
        return CollectorConfigError(f"{self.where}: '{name}' {expected}")

    def str_(self, name: str, default: str | None = None) -> str:
        value = self.data.get(name, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, "must be a non-empty string")
        return value.strip()

    def opt_str(self, name: str) -> str | None:
        if self.data.get(name) is None:
            return None
        return self.str_(name)

    def float_(self, name: str, default: float, lo: float, hi: float) -> float:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise self.fail(name, f"must be a number from {lo:g} to {hi:g}")
        return float(value)

    def int_(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(name, f"must be an integer from {lo} to {hi}")
        return value

    def section(self, name: str, allowed: Collection[str]) -> ConfigFields:
        """The optional sub-mapping ``name`` (empty when absent), with only ``allowed`` keys."""
        raw = self.data.get(name) or {}
        if not isinstance(raw, Mapping):
            raise self.fail(name, "must be a mapping")
        unknown = set(raw) - set(allowed)
        if unknown:
            raise self.fail(name, f"has unknown keys: {', '.join(sorted(map(str, unknown)))}")
        return ConfigFields(raw, f"{self.where}: {name}")

    def bool_(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, "must be true or false")
        return value


def read_secret(
    reader: ConfigFields, env: Mapping[str, str], *, env_key: str, file_key: str, default_env: str,
    base_dir: Path | None, what: str,
) -> tuple[Secret, str]:
    """A credential from ``file_key`` (a file), ``$<env>`` or ``$<env>_FILE``.

    Returns the secret and a description of where it came from (safe to log).
    """
    if "token" in reader.data or "api_key" in reader.data or "password" in reader.data:
        raise reader.fail(
            "token", f"must not be written in the config file: set {env_key} (an environment "
            f"variable name) or {file_key} (a secret file)",
        )
    path_value = reader.opt_str(file_key)
    var = reader.str_(env_key, default_env)
    if path_value is None and not env.get(var, "").strip() and env.get(f"{var}_FILE"):
        path_value = env[f"{var}_FILE"].strip()
    if path_value is not None:
        path = Path(path_value).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise reader.fail(file_key, f"names an unreadable file {str(path)!r}: "
                                        f"{exc.strerror}") from None
        if not value:
            raise reader.fail(file_key, f"names an empty file {str(path)!r}")
        return Secret(value), f"file {path}"
    value = env.get(var, "").strip()
    if not value:
        raise CollectorConfigError(
            f"{reader.where}: the {what} is not set: export {var} or point {file_key} "
            f"(or {var}_FILE) at a secret file"
        )
    return Secret(value), f"${var}"


def reconnect_policy(reader: ConfigFields) -> ReconnectPolicy:
    r = reader.section("reconnect", _RECONNECT_KEYS)
    d = ReconnectPolicy()
    return ReconnectPolicy(
        base_s=r.float_("base_s", d.base_s, 0.001, 3600),
        cap_s=r.float_("cap_s", d.cap_s, 0.001, 86_400),
        max_attempts=r.int_("max_attempts", d.max_attempts, 0, 1_000_000),
        breaker_threshold=r.int_("breaker_threshold", d.breaker_threshold, 1, 1_000_000),
        breaker_reset_s=r.float_("breaker_reset_s", d.breaker_reset_s, 0.0, 86_400),
    )


def where_of(config_path: str | None, default: str) -> str:
    return str(config_path) if config_path else default
