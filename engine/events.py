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
