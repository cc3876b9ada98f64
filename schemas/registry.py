"""Minimal Confluent Schema Registry client (stdlib ``urllib`` only).

Only what the codec needs: register a schema under a subject and fetch a schema by id. Keeping
it this small avoids pulling ``confluent_kafka.schema_registry`` (and its httpx/attrs/cachetools
dependencies) into every worker.

Credentials may be embedded in the URL (``https://user:pass@host:8081``). They are stripped from
the URL used for requests and sent as HTTP basic auth; the password never appears in ``repr()``,
in exception messages or in logs produced by this module.

Calls are blocking. The codec caches ids and schemas, so in steady state there is one call per
(subject, schema) at start-up and one per unseen schema id.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["CONTENT_TYPE", "SchemaRegistryClient", "SchemaRegistryError"]

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

#: Confluent error codes worth naming.
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
INVALID_SCHEMA = 42201


class SchemaRegistryError(Exception):
    """An error answer from the registry, or no answer at all.

    ``error_code`` is the registry's ``error_code`` (e.g. 40403 schema not found), or the HTTP
    status when the body carried none, or ``None`` when the registry could not be reached
    (``status`` is then ``None`` too) - callers use that to tell "retry later" from "bad id".
    """

    def __init__(self, message: str, error_code: int | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.error_code = error_code
        self.status = status

    @property
    def not_found(self) -> bool:
        """True when the registry answered that the schema/subject/version does not exist."""
        return self.error_code in (SUBJECT_NOT_FOUND, VERSION_NOT_FOUND, SCHEMA_NOT_FOUND)


def _split_credentials(url: str) -> tuple[str, str | None]:
    """Return (url without userinfo, ``Authorization`` header value or None).

    The userinfo is cut at the *last* ``@`` before parsing, so passwords pasted without
    percent-encoding (containing ``@``, ``/``, ``?`` or ``#``) still end up in the header and
    never in the host or path - where they would leak into every error message.
    """
    scheme, sep, rest = url.strip().partition("://")
    auth: str | None = None
    if sep and "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, _, password = userinfo.partition(":")
        credentials = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
        auth = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    try:
        parts = urllib.parse.urlsplit(f"{scheme}://{rest}")
        port = parts.port
    except ValueError:
        parts, port = None, None
    if parts is None or scheme.lower() not in ("http", "https") or not parts.hostname:
        # do not echo the URL: it may contain credentials
        raise ValueError("schema registry URL must be http(s)://[user:password@]host[:port]")
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    base = urllib.parse.urlunsplit((scheme.lower(), netloc, parts.path.rstrip("/"), "", ""))
    return base, auth


class SchemaRegistryClient:
    """Blocking client for the two Schema Registry calls the codec needs."""

    __slots__ = ("_auth", "_base", "_timeout")

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self._base, self._auth = _split_credentials(url)
        self._timeout = timeout

    @property
    def url(self) -> str:
        """Base URL without credentials (safe to log)."""
        return self._base

    def __repr__(self) -> str:
        auth = ", auth=basic" if self._auth else ""
        return f"SchemaRegistryClient({self._base!r}{auth})"

    def register(self, subject: str, schema_str: str) -> int:
        """Register ``schema_str`` (Avro JSON) under ``subject``; return its global id.

        Registering an already registered schema is idempotent and returns the same id.
        """
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        answer = self._request("POST", path, {"schema": schema_str})
        schema_id = answer.get("id")
        if not isinstance(schema_id, int) or isinstance(schema_id, bool):
            raise SchemaRegistryError(f"POST {path}: answer has no integer 'id'")
        return schema_id

    def get_schema(self, schema_id: int) -> str:
        """The schema string registered with ``schema_id``.

        Raises :class:`SchemaRegistryError` with ``error_code`` 40403 if the id is unknown.
        """
        path = f"/schemas/ids/{int(schema_id)}"
        answer = self._request("GET", path)
        schema_str = answer.get("schema")
        if not isinstance(schema_str, str):
            raise SchemaRegistryError(f"GET {path}: answer has no 'schema' string")
        return schema_str

    def subjects(self) -> list[str]:
        """All registered subjects."""
        answer = self._request("GET", "/subjects")
        if not isinstance(answer, list) or not all(isinstance(s, str) for s in answer):
            raise SchemaRegistryError("GET /subjects: answer is not a list of strings")
        return list(answer)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": CONTENT_TYPE}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = CONTENT_TYPE
        if self._auth is not None:
            headers["Authorization"] = self._auth
        request = urllib.request.Request(
            self._base + path, data=data, headers=headers, method=method
        )
        where = f"{method} {self._base}{path}"
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            try:
                raw_error = exc.read()
            except OSError:
                raw_error = b""
            finally:
                exc.close()
            code, message = _parse_error(raw_error, exc.code)
            raise SchemaRegistryError(
                f"{where}: HTTP {exc.code}, error_code {code}: {message}", code, exc.code
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise SchemaRegistryError(f"{where}: unreachable: {reason}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise SchemaRegistryError(f"{where}: answer is not JSON") from None


def _parse_error(raw: bytes, status: int) -> tuple[int, str]:
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        code = payload.get("error_code")
        message = payload.get("message")
        return (
            code if isinstance(code, int) else status,
            message if isinstance(message, str) else "",
        )
    return status, raw[:200].decode("utf-8", "replace")
