"""The stored tables: columns, natural keys, day partitions, and their DDL per server version.

Every table is a ``ReplacingMergeTree`` ordered by the record's natural key, so a batch
delivered twice (at-least-once) collapses to one row per key when parts merge; queries that
must be exact read with ``FINAL``. Each table also has a ``time DateTime('UTC')`` column
computed by the server from the record's own epoch column (a ``DEFAULT`` expression, so the
sink never sends it) and is partitioned by ``toYYYYMMDD(time)``: a key always lands in the
same day partition, which is what lets ``ReplacingMergeTree`` see its duplicates (it never
merges across partitions) and lets retention drop whole days.

The DDL is valid on ClickHouse 18.16 (Debian's server: no DateTime64, TTL or CODEC) and on
current ClickHouse (chdb). Where the server is new enough, :func:`create_table_sql` uses
``LowCardinality(String)`` for the few-valued string columns and ``CODEC(Delta, ZSTD)`` on
the epoch columns (smaller parts, faster scans; see docs/storage.md); the column names and
the values read back are the same either way.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The first server version with LowCardinality without an experimental flag, and CODEC.
MODERN = (19, 17)

ServerVersion = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    #: Type as written in the DDL; ``String`` columns named in ``Table.low_cardinality``
    #: become ``LowCardinality(String)`` on a modern server.
    type: str
    #: Epoch column (ms or us) that gets ``CODEC(Delta, ZSTD)`` on a modern server.
    epoch: bool = False
    #: A ``String`` holding raw bytes (not UTF-8 text), e.g. a reject's original value.
    binary: bool = False

    @property
    def nullable(self) -> bool:
        return self.type.startswith("Nullable(")

    @property
    def base_type(self) -> str:
        return self.type[len("Nullable("):-1] if self.nullable else self.type


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    topic: str  # the logical topic it stores
    record: str  # the Avro record on that topic (schemas/*.avsc)
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # natural key: ORDER BY, and what ReplacingMergeTree collapses on
    #: SQL (over the columns) giving epoch *seconds* of the record: the partition day.
    time_expr: str
    low_cardinality: frozenset[str] = frozenset()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _cols(spec: str) -> tuple[Column, ...]:
    """``"name Type, name2 Type2*"``: a trailing ``*`` marks an epoch column, ``^`` bytes."""
    out = []
    for item in spec.split(","):
        name, typ = item.split(None, 1)
        out.append(Column(name, typ.rstrip("*^").strip(), typ.endswith("*"), typ.endswith("^")))
    return tuple(out)


TICKS = Table(
    "ticks", "ticks.clean", "CleanTick",
    _cols("broker String, symbol String, time_msc Int64*, recv_time_us Int64*, bid Float64, "
          "ask Float64, mid Float64, spread Float64, best_bid Float64, best_ask Float64, "
          "best_bid_broker String, best_ask_broker String, fresh_brokers Int32, "
          "dispersion Float64, seq Nullable(Int64), processed_time_us Int64*"),
    key=("broker", "symbol", "time_msc", "bid", "ask"),
    time_expr="intDiv(time_msc, 1000)",
    low_cardinality=frozenset({"broker", "symbol", "best_bid_broker", "best_ask_broker"}),
)
BARS = Table(
    "bars_m1", "bars.m1", "Bar",
    _cols("symbol String, bar_time Int64*, open Float64, high Float64, low Float64, "
          "close Float64, bid_close Float64, ask_close Float64, tick_count Int32, "
          "mean_spread Float64, fresh_brokers Int32, dispersion Float64, "
          "trigger_recv_time_us Int64*"),
    key=("symbol", "bar_time"),
    time_expr="intDiv(bar_time, 1000)",
    low_cardinality=frozenset({"symbol"}),
)
FEATURES = Table(
    "features", "features", "FeatureVector",
    _cols("symbol String, bar_time Int64*, close Float64, sma_20 Nullable(Float64), "
          "ema_12 Nullable(Float64), ema_26 Nullable(Float64), rsi_14 Nullable(Float64), "
          "macd Nullable(Float64), macd_signal Nullable(Float64), macd_hist Nullable(Float64), "
          "bb_upper Nullable(Float64), bb_middle Nullable(Float64), bb_lower Nullable(Float64), "
          "atr_14 Nullable(Float64), volatility_20 Nullable(Float64), "
          "momentum_10 Nullable(Float64), spread Float64, tick_count Int32, dispersion Float64, "
          "fresh_brokers Int32, minutes_to_next_event Nullable(Float64), "
          "minutes_since_last_event Nullable(Float64), news_count_1h Int32, "
          "news_sentiment_1h Nullable(Float64), trigger_recv_time_us Int64*"),
    key=("symbol", "bar_time"),
    time_expr="intDiv(bar_time, 1000)",
    low_cardinality=frozenset({"symbol"}),
)
COMMANDS = Table(
    "commands", "trading.commands", "TradingCommand",
    _cols("command_id String, action String, symbol String, volume Float64, price Float64, "
          "stop_loss Nullable(Float64), take_profit Nullable(Float64), confidence Float64, "
          "model_version String, reason String, bar_time Int64*, trigger_recv_time_us Int64*, "
          "created_time_us Int64*"),
    key=("command_id",),
    # the day the risk manager decided it (its bar's, or its tick's for a stop): event
    # time, the same online and offline (an offline command's created_time_us is 0)
    time_expr="intDiv(bar_time, 1000)",
    low_cardinality=frozenset({"action", "symbol", "model_version"}),
)
REJECTS = Table(
    "rejects", "ticks.rejected", "RejectedRecord",
    _cols("source_topic String, source_partition Int32, source_offset Int64, reason String, "
          "detail String, stage String, original String^, key Nullable(String)^, time_us Int64*"),
    key=("source_topic", "source_partition", "source_offset"),
    time_expr="intDiv(time_us, 1000000)",
    low_cardinality=frozenset({"source_topic", "reason", "stage"}),
)

TABLES: tuple[Table, ...] = (TICKS, BARS, FEATURES, COMMANDS, REJECTS)
BY_NAME = {t.name: t for t in TABLES}
BY_TOPIC = {t.topic: t for t in TABLES}


def is_modern(version: ServerVersion) -> bool:
    return version[:2] >= MODERN


def column_sql(table: Table, column: Column, version: ServerVersion) -> str:
    typ = column.type
    codec = ""
    if is_modern(version):
        if column.name in table.low_cardinality and typ == "String":
            typ = "LowCardinality(String)"
        if column.epoch:
            codec = " CODEC(Delta, ZSTD)"
    return f"{column.name} {typ}{codec}"


def create_table_sql(table: Table, database: str, version: ServerVersion) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for ``table`` on a server of ``version``."""
    cols = [column_sql(table, c, version) for c in table.columns]
    cols.append(f"time DateTime('UTC') DEFAULT toDateTime({table.time_expr}, 'UTC')")
    body = ",\n    ".join(cols)
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.{table.name} (\n    {body}\n)\n"
        f"ENGINE = ReplacingMergeTree\n"
        f"PARTITION BY toYYYYMMDD(time)\n"
        f"ORDER BY ({', '.join(table.key)})"
    )
