"""Faust's *current event*: which partition a table write goes to."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def as_current_event(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event, so a table write lands on its partition.

    Faust's table stores and changelog writes take the partition from the *current event*
    (``faust.streams._current_event``, a context variable); in a batch that spans
    partitions that would be the last event's partition. The pipeline writes each symbol's
    state with that symbol's own last event as the current event.
    """
    from faust.streams import _current_event

    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class _MessageEvent:
    """What Faust's table writes read of the current event: its ``message``."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, message: Any) -> None:
        self.message = message


@contextlib.contextmanager
def as_current_message(message: Any) -> Iterator[None]:
    """:func:`as_current_event` for a consumer message taken without an ``Event`` (see
    :mod:`engine.lane`): table writes take its topic and partition."""
    holder = _MessageEvent(message)
    with as_current_event(holder):
        yield
