"""The one typed reader of collector configuration files, shared by every venue.

:class:`ConfigReader` gives typed access to one mapping (a parsed YAML file, or a section
of one). Every error is a :class:`~connectors.base.collector.CollectorConfigError` that
reads ``"{file}: {dotted.key}: {what is wrong}"``, for example::

    oanda.yaml: reconnect.base_s: expected a number from 0.001 to 3600, got 'x'
    news.yaml: feeds[0].nme: unknown setting (known: name, url)

Rules every venue gets from it:

* a key set to ``null`` counts as *not set* only where the setting is optional
  (``optional_*``, sections, lists that may be empty); anywhere else it is an error;
* numbers are finite ints or floats (never strings, never booleans) within their range;
* unknown keys are refused, naming them: declared up front (:meth:`ConfigReader.only`) or,
  after the venue has read what it knows, every key it did not read
  (:meth:`ConfigReader.finish`);
* a credential is never written in the file (``token``, ``api_key`` and ``password`` keys
  are refused); :meth:`ConfigReader.secret` reads it from an environment variable, its
  ``_FILE`` twin or a secret file, and no error quotes a secret (nor a header value, nor a
  URL's credential query values).

The policy factories (:func:`backoff_from`, :func:`breaker_from`, :func:`limiter_from`,
:func:`reconnect_from`) read the usual sections into frozen settings; the collector makes
its live :class:`~connectors.base.resilience.Backoff` & co. from them.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from connectors.base.collector import CollectorConfigError
from connectors.base.resilience import Backoff, CircuitBreaker, RateLimiter, ReconnectPolicy
from connectors.base.secrets import Secret, url_secrets

#: Keys that would hold a credential in the file itself: refused wherever they appear.
PLAIN_SECRET_KEYS: Final = ("token", "api_key", "password")
#: What an environment variable name looks like (a value that does not is never echoed).
_ENV_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Longest ``repr`` of a wrong value quoted in an error.
_SHOWN_MAX: Final = 80
_ABSENT: Final = object()
_RECONNECT_KEYS: Final = frozenset({"base_s", "cap_s", "max_attempts", "breaker_threshold",
                                    "breaker_reset_s"})


def shown(value: object) -> str:
    """``repr(value)``, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _SHOWN_MAX else text[:_SHOWN_MAX - 3] + "..."


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _masked_url(url: str) -> str:
    """``url`` with its credentials (query values, a password in it) replaced by ``***``."""
    secrets = url_secrets(url)
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in [*secrets, *([password] if password else [])]:
        url = url.replace(secret, "***")
    return url


def unwrap(config: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """Accept ``{kind: {...}}`` as well as the flat mapping."""
    if set(config) == {kind} and isinstance(config[kind], Mapping):
        inner: Mapping[str, Any] = config[kind]
        return inner
    return config


def read_yaml(path: str | Path) -> Any:
    """The parsed YAML document at ``path``; unreadable or invalid: a config error."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CollectorConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise CollectorConfigError(f"{path}: not a YAML text file (not UTF-8 at byte "
                                   f"{exc.start})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark is not None else ""
        raise CollectorConfigError(f"{path}: not valid YAML{line}") from None


class ConfigReader:
    """Typed access to one configuration mapping; see the module docstring.

    ``where`` names the file, ``prefix`` the section (``"reconnect."``, ``"feeds[0]."``).
    ``env`` (default ``os.environ``) and ``base_dir`` (relative secret files) are what
    :meth:`secret` reads with; sections and entries inherit them.
    """

    def __init__(
        self,
        data: object,
        where: str,
        prefix: str = "",
        *,
        env: Mapping[str, str] | None = None,
        base_dir: Path | None = None,
    ) -> None:
        if not isinstance(data, Mapping):
            if prefix:
                raise CollectorConfigError(
                    f"{where}: {prefix.rstrip('.')}: expected a mapping, got {shown(data)}"
                )
            raise CollectorConfigError(f"{where}: expected a mapping of settings, "
                                       f"got {shown(data)}")
        self.data: Mapping[str, Any] = data
        self.where = where
        self.prefix = prefix
        self.env: Mapping[str, str] = os.environ if env is None else env
        self.base_dir = base_dir
        self._used: set[str] = set()
        self._known: set[str] = set()

    @classmethod
    def for_file(
        cls,
        data: object,
        config_path: str | None,
        kind: str,
        *,
        env: Mapping[str, str] | None = None,
    ) -> ConfigReader:
        """The reader of one venue's file (``{kind: {...}}`` accepted too).

        Errors name ``config_path`` (``<kind config>`` without one); relative secret files
        are relative to its folder. A ``kind`` key, when present, must be ``kind``.
        """
        where = str(config_path) if config_path else f"<{kind} config>"
        base_dir = Path(config_path).resolve().parent if config_path else None
        if isinstance(data, Mapping):
            data = unwrap(data, kind)
        r = cls(data, where, env=env, base_dir=base_dir)
        if r.has("kind") and r.raw("kind") != kind:
            raise r.expected("kind", repr(kind), r.raw("kind"))
        return r

    # ---- errors ------------------------------------------------------------------------
    def name(self, key: str) -> str:
        """The dotted name of ``key`` (what errors show)."""
        return f"{self.prefix}{key}"

    def error(self, key: str, what: str) -> CollectorConfigError:
        """``"{file}: {dotted.key}: {what}"``, to raise."""
        return CollectorConfigError(f"{self.where}: {self.name(key)}: {what}")

    def expected(self, key: str, expected: str, got: object) -> CollectorConfigError:
        """``"{file}: {dotted.key}: expected {expected}, got {value}"``, to raise."""
        return self.error(key, f"expected {expected}, got {shown(got)}")

    # ---- raw access --------------------------------------------------------------------
    def has(self, key: str) -> bool:
        """Whether ``key`` is written in the mapping (``null`` included)."""
        return key in self.data

    def raw(self, key: str) -> Any:
        """The value as written (None when absent), marked as read; the caller checks it."""
        self._used.add(key)
        return self.data.get(key)

    def _value(self, key: str) -> Any:
        self._used.add(key)
        return self.data.get(key, _ABSENT)

    # ---- unknown keys ------------------------------------------------------------------
    def only(self, known: Collection[str]) -> None:
        """Refuse now every key not in ``known`` (nor read already)."""
        self._known.update(known)
        self.finish()

    def finish(self) -> None:
        """Refuse every key nobody read (a typo must not silently fall back to a default)."""
        self._refuse(k for k in self.data if k not in self._known and k not in self._used)

    def _refuse(self, keys: Iterable[Any]) -> None:
        unknown = sorted(str(k) for k in keys)
        if not unknown:
            return
        names = ", ".join(self.name(k) for k in unknown)
        known = ", ".join(sorted(self._known | self._used))
        plural = "s" if len(unknown) > 1 else ""
        raise CollectorConfigError(
            f"{self.where}: {names}: unknown setting{plural} (known: {known or 'none'})"
        )

    # ---- typed values ------------------------------------------------------------------
    def text(self, key: str, default: str | None = None) -> str:
        """A non-empty string, stripped; absent: ``default`` (None: the key is required)."""
        value = self._value(key)
        if value is _ABSENT or (value is None and default is None):
            if default is None:
                raise self.error(key, "required (a non-empty string)")
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.expected(key, "a non-empty string", value)
        return value.strip()

    def optional_text(self, key: str) -> str | None:
        """A non-empty string, stripped; absent or ``null``: None."""
        value = self._value(key)
        if value is _ABSENT or value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.expected(key, "a non-empty string", value)
        return value.strip()

    def choice(self, key: str, choices: Collection[str], default: str) -> str:
        value = self.text(key, default)
        if value not in choices:
            raise self.expected(key, f"one of {', '.join(map(repr, choices))}", value)
        return value

    def url(
        self, key: str, default: str | None = None, *,
        schemes: Collection[str] = ("http", "https"), what: str = "an http(s) URL",
    ) -> str:
        """A URL with one of ``schemes`` and a host (its credentials are never quoted)."""
        if default is None and self.data.get(key) is None:
            self._used.add(key)
            raise self.error(key, f"required ({what})")
        value = self.text(key, default)
        try:
            parts = urlsplit(value)
            ok = parts.scheme in schemes and bool(parts.hostname)
        except ValueError:  # e.g. an unclosed [IPv6 bracket
            ok = False
        if not ok:
            raise self.expected(key, what, _masked_url(value))
        return value

    def number(
        self, key: str, default: float, lo: float = 0.0, hi: float = math.inf, *,
        above: bool = False,
    ) -> float:
        """A finite number from ``lo`` (excluded with ``above``) to ``hi``."""
        value = self._value(key)
        if value is _ABSENT:
            return default
        return self._number(key, value, lo, hi, above)

    def optional_number(
        self, key: str, lo: float = 0.0, hi: float = math.inf, *, above: bool = False
    ) -> float | None:
        """As :meth:`number`; absent or ``null``: None."""
        value = self._value(key)
        if value is _ABSENT or value is None:
            return None
        return self._number(key, value, lo, hi, above)

    def _number(self, key: str, value: Any, lo: float, hi: float, above: bool) -> float:
        if (
            isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value < lo or (above and value == lo) or value > hi
        ):
            if hi == math.inf:
                expected = f"a number {'>' if above else '>='} {_fmt(lo)}"
            elif above:
                expected = f"a number above {_fmt(lo)} and at most {_fmt(hi)}"
            else:
                expected = f"a number from {_fmt(lo)} to {_fmt(hi)}"
            raise self.expected(key, expected, value)
        return float(value)

    def integer(self, key: str, default: int, lo: int = 0, hi: int | None = None) -> int:
        """An integer from ``lo`` to ``hi`` (None: no upper bound)."""
        value = self._value(key)
        if value is _ABSENT:
            return default
        return self._integer(key, value, lo, hi)

    def optional_integer(self, key: str, lo: int = 0, hi: int | None = None) -> int | None:
        """As :meth:`integer`; absent or ``null``: None."""
        value = self._value(key)
        if value is _ABSENT or value is None:
            return None
        return self._integer(key, value, lo, hi)

    def _integer(self, key: str, value: Any, lo: int, hi: int | None) -> int:
        if (
            isinstance(value, bool) or not isinstance(value, int) or value < lo
            or (hi is not None and value > hi)
        ):
            expected = (f"an integer >= {lo}" if hi is None
                        else f"an integer from {lo} to {hi}")
            raise self.expected(key, expected, value)
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self._value(key)
        if value is _ABSENT:
            return default
        if not isinstance(value, bool):
            raise self.expected(key, "true or false", value)
        return value

    def currencies(self, key: str) -> frozenset[str] | None:
        """A list of 3-letter codes (upper-cased); absent, ``null`` or empty: None."""
        value = self._value(key)
        if value is _ABSENT or value is None or value == []:
            return None
        if not isinstance(value, list) or not all(
            isinstance(c, str) and len(c.strip()) == 3 and c.strip().isalpha() for c in value
        ):
            raise self.expected(key, "a list of 3-letter currency codes", value)
        return frozenset(c.strip().upper() for c in value)

    def headers(self, key: str) -> dict[str, str]:
        """Header name -> value (absent or ``null``: none). Values are never quoted."""
        value = self._value(key)
        if value is _ABSENT or value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(key, "expected a mapping of header name to string value, "
                                  f"got type {type(value).__name__}")
        for name, v in value.items():
            if not isinstance(name, str) or not name:
                raise self.error(key, f"expected header names, got {shown(name)}")
            if not isinstance(v, str):
                raise self.error(f"{key}.{name}", "expected a string value, "
                                                  f"got type {type(v).__name__}")
        return dict(value)

    def mapping(self, key: str) -> Mapping[Any, Any]:
        """A mapping as written (absent or ``null``: empty); its entries are the caller's."""
        value = self._value(key)
        if value is _ABSENT or value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.expected(key, "a mapping", value)
        return value

    # ---- nesting -----------------------------------------------------------------------
    def section(self, key: str, known: Collection[str] | None = None) -> ConfigReader:
        """The sub-mapping ``key`` (absent or ``null``: empty), its keys named ``key.x``.

        With ``known``, other keys are refused now; otherwise call ``finish()`` on it.
        """
        value = self._value(key)
        sub = self.child({} if value is _ABSENT or value is None else value, key)
        if known is not None:
            sub.only(known)
        return sub

    def entries(self, key: str) -> list[Any]:
        """A non-empty list (read its mappings with :meth:`child`, ``key[i]``)."""
        value = self._value(key)
        if not isinstance(value, list) or not value:
            if value is _ABSENT:
                raise self.error(key, "required (a non-empty list)")
            raise self.expected(key, "a non-empty list", value)
        return value

    def child(self, value: object, name: str) -> ConfigReader:
        """A reader of ``value`` (a mapping) named ``name`` within this one."""
        return ConfigReader(value, self.where, f"{self.prefix}{name}.", env=self.env,
                            base_dir=self.base_dir)

    # ---- credentials -------------------------------------------------------------------
    def refuse_plain_secrets(self, env_key: str, file_key: str) -> None:
        """Refuse a credential written in the file (its value is never shown)."""
        for key in PLAIN_SECRET_KEYS:
            if key in self.data:
                raise self.error(
                    key, f"must not be written in the config file: set {env_key} (the name "
                         f"of an environment variable) or {file_key} (a secret file)",
                )

    def secret(
        self, *, env_key: str, file_key: str, what: str, default_env: str | None = None
    ) -> tuple[Secret, str]:
        """A required credential; see :meth:`optional_secret`."""
        secret, source = self.optional_secret(
            env_key=env_key, file_key=file_key, what=what, default_env=default_env
        )
        if secret is None:
            raise self.error(env_key, f"the {what} is not set: set {env_key} (the name of an "
                                      f"environment variable) or {file_key} (a secret file)")
        return secret, source

    def optional_secret(
        self, *, env_key: str, file_key: str, what: str, default_env: str | None = None
    ) -> tuple[Secret | None, str]:
        """A credential from ``file_key`` (a file), ``$<env>`` or ``$<env>_FILE``.

        ``<env>`` is the value of ``env_key`` (default ``default_env``). Returns the secret
        and where it came from (safe to log), or ``(None, "none")`` when neither key is set
        and there is no ``default_env``. Relative files are relative to ``base_dir``.
        """
        self.refuse_plain_secrets(env_key, file_key)
        if self.has(env_key) and self.has(file_key):
            raise self.error(env_key, f"set {env_key} or {file_key}, not both")
        path_value = self.optional_text(file_key)
        if path_value is not None:
            return self._secret_file(path_value, file_key, None), f"file {self._path(path_value)}"
        var = self._env_name(env_key, default_env)
        if var is None:
            return None, "none"
        value = self.env.get(var, "").strip()
        if value:
            return Secret(value), f"${var}"
        twin = self.env.get(f"{var}_FILE", "").strip()
        if twin:
            return self._secret_file(twin, env_key, f"${var}_FILE"), f"file {self._path(twin)}"
        raise self.error(env_key, f"the {what} is not set: export {var} or point {file_key} "
                                  f"(or {var}_FILE) at a secret file")

    def _env_name(self, env_key: str, default_env: str | None) -> str | None:
        value = self._value(env_key)
        if value is _ABSENT or value is None:
            return default_env
        if not isinstance(value, str) or not _ENV_NAME.match(value.strip()):
            # not quoted: a credential pasted here by mistake must not reach a log
            raise self.error(env_key, "expected the name of an environment variable "
                                      "(letters, digits and _)")
        return value.strip()

    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        return path

    def _secret_file(self, value: str, key: str, named_by: str | None) -> Secret:
        path = self._path(value)
        origin = f" (named by {named_by})" if named_by else ""
        try:
            text = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise self.error(key, f"cannot read {str(path)!r}{origin}: {reason}") from None
        if not text:
            raise self.error(key, f"{str(path)!r}{origin} is empty")
        return Secret(text)


# ---- policy settings -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackoffSettings:
    """A ``backoff`` section: exponential backoff with jitter."""

    base_s: float = 2.0
    factor: float = 2.0
    cap_s: float = 300.0
    max_attempts: int = 0  # 0: retry for ever

    def backoff(self) -> Backoff:
        return Backoff(base_s=self.base_s, factor=self.factor, cap_s=self.cap_s,
                       max_attempts=self.max_attempts)


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """A ``circuit`` section: the circuit breaker."""

    threshold: int = 5
    reset_s: float = 60.0

    def breaker(self) -> CircuitBreaker:
        return CircuitBreaker(self.threshold, self.reset_s)


@dataclass(frozen=True, slots=True)
class RateLimitSettings:
    """A ``rate_limit`` section: requests per second and burst."""

    per_s: float
    burst: int = 1

    def limiter(self) -> RateLimiter:
        return RateLimiter(self.per_s, burst=self.burst)


def backoff_from(
    r: ConfigReader, *, base_s: float = 2.0, cap_s: float = 300.0, max_attempts: int = 0
) -> BackoffSettings:
    """A ``backoff`` section (``base_s``, ``factor``, ``cap_s``, ``max_attempts``)."""
    b = BackoffSettings(
        base_s=r.number("base_s", base_s, above=True),
        factor=r.number("factor", 2.0, lo=1.0),
        cap_s=r.number("cap_s", cap_s, above=True),
        max_attempts=r.integer("max_attempts", max_attempts),
    )
    r.finish()
    return b


def breaker_from(r: ConfigReader) -> BreakerSettings:
    """A ``circuit`` section (``threshold``, ``reset_s``)."""
    b = BreakerSettings(threshold=r.integer("threshold", 5, lo=1),
                        reset_s=r.number("reset_s", 60.0))
    r.finish()
    return b


def limiter_from(r: ConfigReader, *, per_s: float, burst: int = 1) -> RateLimitSettings:
    """A ``rate_limit`` section (``per_s``, ``burst``)."""
    limit = RateLimitSettings(r.number("per_s", per_s, above=True),
                              burst=r.integer("burst", burst, lo=1))
    r.finish()
    return limit


def reconnect_from(r: ConfigReader) -> ReconnectPolicy:
    """The ``reconnect`` section of a streaming collector (backoff and breaker in one)."""
    s = r.section("reconnect", _RECONNECT_KEYS)
    d = ReconnectPolicy()
    return ReconnectPolicy(
        base_s=s.number("base_s", d.base_s, 0.001, 3600),
        cap_s=s.number("cap_s", d.cap_s, 0.001, 86_400),
        max_attempts=s.integer("max_attempts", d.max_attempts, 0, 1_000_000),
        breaker_threshold=s.integer("breaker_threshold", d.breaker_threshold, 1, 1_000_000),
        breaker_reset_s=s.number("breaker_reset_s", d.breaker_reset_s, 0.0, 86_400),
    )
