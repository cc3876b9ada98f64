"""The two ways storage fails: a mistake (bad URL, bad SQL) and a store that is not there."""

from __future__ import annotations


class StorageError(RuntimeError):
    """Something about the store is wrong; the message is one line, fit for a CLI."""

    def __init__(self, message: str) -> None:
        # Server exceptions carry a multi-line stack trace: keep the first line only.
        first = message.strip().splitlines()[0] if message.strip() else "storage error"
        super().__init__(first)


class StoreUnavailable(StorageError):
    """The store did not answer (server down, refused, timed out, or a chdb path locked by
    another process). Worth retrying; the sink backs off and pauses consumption."""
