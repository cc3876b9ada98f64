"""Secret values (passwords, API tokens) that never show themselves.

Wrapped in :class:`Secret`, a credential cannot leak through a log line, a ``repr`` of a
config object or a traceback that shows one. :func:`url_secrets` finds the credentials a
URL carries in its query, so a collector can redact them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

#: Query parameter names containing one of these carry a credential.
_SECRET_WORDS = ("key", "token", "secret", "pass", "auth", "sig")


class Secret:
    """A string that never shows itself in ``repr``, ``str`` or f-strings."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("Secret values are not picklable")


def url_secrets(url: str) -> list[str]:
    """Query values of ``url`` that look like credentials (for log redaction)."""
    return [
        v for k, v in parse_qsl(urlsplit(url).query)
        if v and any(w in k.lower() for w in _SECRET_WORDS)
    ]
