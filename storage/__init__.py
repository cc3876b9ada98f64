"""Storage: the stream's topics kept in ClickHouse (a server, or the embedded chdb engine).

One small interface (:class:`storage.backend.Backend`) with two implementations —
:mod:`storage.server` (clickhouse-driver, native protocol) and :mod:`storage.embedded`
(chdb, in-process) — and the pieces on top of it that do not care which: the table
definitions and versioned migrations, records to columns, retention by tier, and the
analytics queries. Nothing here imports Faust or a Kafka client; the sink that feeds it
lives in ``agents/sink.py``. See ``docs/storage.md``.
"""
