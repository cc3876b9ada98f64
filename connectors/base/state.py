"""What a polling collector keeps between restarts, and the clock it is kept in.

:class:`StateFile` is a small JSON document written atomically (absent or unreadable reads
as empty); :class:`RejectMemo` remembers the payloads already dead-lettered, so a poll that
sees the same bad entry again sends no second dead letter; :func:`reject_payload` bounds a
dead letter's size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
#: Largest payload kept in a dead letter (the broker's default message limit is 1 MB).
MAX_REJECT_BYTES = 512 * 1024


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class StateFile:
    """A small JSON document written atomically; absent or unreadable reads as empty."""

    def __init__(self, path: str | Path | None, kind: str, version: int = 1) -> None:
        self.path = None if path is None else Path(path)
        self.kind = kind
        self.version = version

    def load(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("state file %s unreadable (%s): starting from nothing", self.path, exc)
            return {}
        if (
            not isinstance(data, dict)
            or data.get("kind") != self.kind
            or data.get("version") != self.version
        ):
            log.warning("state file %s is not a %s state v%d: starting from nothing",
                        self.path, self.kind, self.version)
            return {}
        return data

    def save(self, data: Mapping[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps(
            {"kind": self.kind, "version": self.version, **data}, separators=(",", ":"),
            sort_keys=True,
        ).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class RejectMemo:
    """Digests of payloads already dead-lettered, so a poll repeats no dead letter."""

    def __init__(self, entries: Mapping[str, int] | None = None) -> None:
        self.seen: dict[str, int] = dict(entries or {})

    @staticmethod
    def digest(reason: str, raw: bytes) -> str:
        return hashlib.sha1(reason.encode() + b"\0" + raw).hexdigest()

    def first_time(self, reason: str, raw: bytes, now: int) -> bool:
        """True (and remembered) if this payload was not dead-lettered before."""
        key = self.digest(reason, raw)
        first = key not in self.seen
        self.seen[key] = now
        return first

    def prune(self, before_ms: int) -> int:
        old = [k for k, t in self.seen.items() if t < before_ms]
        for k in old:
            del self.seen[k]
        return len(old)


def reject_payload(raw: bytes) -> tuple[bytes, str]:
    """``raw`` cut to :data:`MAX_REJECT_BYTES`, and a note for the detail when it was cut."""
    if len(raw) <= MAX_REJECT_BYTES:
        return raw, ""
    return raw[:MAX_REJECT_BYTES], f" (payload truncated from {len(raw)} bytes)"
