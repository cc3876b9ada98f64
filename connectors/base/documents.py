"""What a polled document parser returns when it cannot read something, shared by the
calendar and news parsers. Pure (no I/O).

A document that cannot be read at all raises :class:`DocumentError` (a reason code and a
detail); one entry that cannot be read is kept as an :class:`ItemError` with its own bytes,
so the collector can dead-letter exactly what it received.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DocumentError", "ItemError"]


class DocumentError(ValueError):
    """The whole document is unreadable (not XML/JSON, or not a calendar or a feed)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ItemError:
    """One entry that could not be read: its own bytes, a reason code and a message."""

    raw: bytes
    reason: str
    detail: str
