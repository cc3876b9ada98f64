"""``tickstream tail TOPIC``: print a topic's records as they arrive, decoded.

Registered by :func:`topology.cli.build_parser` through :func:`add_parser`. The consumer
joins no group and commits nothing (it is a look, not a reader the pipeline counts on): it
is assigned every partition at the end (or with ``--from-beginning`` at the start) and runs
until Ctrl-C, or with ``--until-end`` stops once it has read every partition to its end.

Any of our records decodes, in either framing (:mod:`schemas.codec`): the header names the
writer schema (a single-object fingerprint, or a Confluent schema id looked up in
``TICKSTREAM_SCHEMA_REGISTRY_URL``), so one topic may even hold several record types. The
JSON topics (``collectors.positions``, ``history.manifest``) print as JSON; a record that is
neither prints as ``undecodable`` with why and its first bytes, and the tail goes on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from topology.settings import Settings


class RecordDecoder:
    """bytes of any of our records (either framing) → (type name, value as a dict)."""

    def __init__(self, registry_url: str | None = None) -> None:
        from schemas.codec import Codec, ConfluentFraming, SingleObjectFraming
        from schemas.registry import SchemaRegistryClient

        self.single = Codec(SingleObjectFraming())
        self.confluent = (Codec(ConfluentFraming(SchemaRegistryClient(registry_url)))
                          if registry_url else None)

    def decode(self, data: bytes, topic: str = "") -> tuple[str, Any]:
        from schemas import avro
        from schemas.codec import CONFLUENT_MAGIC, SINGLE_OBJECT_MARKER, MalformedRecord
        from schemas.records import record_type

        if data[:2] == SINGLE_OBJECT_MARKER:
            codec = self.single
        elif data[:1] == CONFLUENT_MAGIC and len(data) >= 5:
            if self.confluent is None:
                schema_id = int.from_bytes(data[1:5], "big")
                return "undecodable", {
                    "detail": f"Confluent-framed (schema id {schema_id}): set "
                              "TICKSTREAM_SCHEMA_REGISTRY_URL to decode it",
                    "bytes": data[:32].hex()}
            codec = self.confluent
        else:
            return _json_or_raw(data)
        try:
            writer, _ = codec.framing.writer(data, topic)
            name = avro.full_name(writer)
            cls = record_type(name)
            record = codec.decode(data, cls, topic)
        except (MalformedRecord, KeyError) as exc:
            return "undecodable", {"detail": str(exc).strip("'\""), "bytes": data[:32].hex()}
        return cls.__name__, record.to_dict()


def _json_or_raw(data: bytes) -> tuple[str, Any]:
    try:
        return "json", json.loads(data)
    except ValueError:
        return "undecodable", {"detail": "neither one of our Avro framings nor JSON",
                               "bytes": data[:32].hex()}


def physical_topic(settings: Settings, name: str) -> str:
    """A logical topic (``ticks.clean``) gets the prefix; a name already prefixed is kept."""
    from topology.topics import BY_NAME

    return settings.topic(name) if name in BY_NAME else name


def format_line(topic: str, partition: int, offset: int, ts_ms: int, key: bytes | None,
                kind: str, value: Any, as_json: bool) -> str:
    key_text = None if key is None else key.decode("utf-8", "replace")
    if as_json:
        return json.dumps({"topic": topic, "partition": partition, "offset": offset,
                           "timestamp_ms": ts_ms, "key": key_text, "type": kind,
                           "value": value}, sort_keys=True, default=str)
    when = datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")
    body = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return f"{partition}:{offset} {when[:-6]}Z {key_text} {kind} {body}"


def tail(settings: Settings, topic: str, *, from_beginning: bool = False,
         until_end: bool = False, max_records: int | None = None, as_json: bool = False,
         out: IO[str] | None = None, stop: Callable[[], bool] = lambda: False) -> int:
    """Print the records of ``topic``; returns how many were printed."""
    from confluent_kafka import (
        OFFSET_BEGINNING,
        OFFSET_END,
        Consumer,
        KafkaError,
        TopicPartition,
    )

    from connectors.kafka_client import consumer_config
    from topology.preflight import PreflightError, require_broker

    require_broker(settings)
    out = out or sys.stdout
    registry = settings.schema_registry_url.get() if settings.schema_registry_url else None
    decoder = RecordDecoder(registry)
    consumer = Consumer({**consumer_config(settings), "enable.partition.eof": True})
    printed = 0
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            from topology.topics import BY_NAME

            known = ", ".join(sorted(BY_NAME))
            raise PreflightError(f"no topic {topic} on {settings.bootstrap} (ours: {known}; "
                                 "TICKSTREAM_TOPIC_PREFIX is applied to these names)")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        parts = sorted(meta.partitions)
        consumer.assign([TopicPartition(topic, p, start) for p in parts])
        at_end: set[int] = set()
        while not stop():
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:  # this partition is read
                    at_end.add(msg.partition() or 0)
                    if until_end and at_end >= set(parts):
                        break
                continue
            at_end.discard(msg.partition() or 0)
            kind, value = decoder.decode(msg.value() or b"", topic)
            print(format_line(topic, msg.partition() or 0, msg.offset() or 0,
                              msg.timestamp()[1], msg.key(), kind, value, as_json),
                  file=out, flush=True)
            printed += 1
            if max_records is not None and printed >= max_records:
                break
    finally:
        consumer.close()
    return printed


def cmd_tail(args: argparse.Namespace) -> int:
    from topology.cli import _settings

    settings = _settings()
    topic = physical_topic(settings, args.topic)
    started = time.monotonic()
    n = tail(settings, topic, from_beginning=args.from_beginning, until_end=args.until_end,
             max_records=args.max, as_json=args.json)
    if not args.json:
        print(f"tickstream tail: {n:,} records from {topic} in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    """Register ``tail`` on the ``tickstream`` subcommands."""
    p = sub.add_parser(
        "tail", help="print a topic's records as they arrive, decoded",
        description="Print the records of one topic, decoded whatever their type and framing "
        "(single-object Avro, or Confluent with TICKSTREAM_SCHEMA_REGISTRY_URL; the JSON "
        "topics as JSON), one line each: partition:offset, record time (UTC), key, type and "
        "value. Joins no consumer group and commits nothing. Runs until Ctrl-C unless "
        "--until-end or --max stops it. Exit codes: 0 done, 1 no broker or no such topic, "
        "130 interrupted.")
    p.add_argument("topic", metavar="TOPIC",
                   help="logical topic (ticks.raw, ticks.clean, bars.m1, features, "
                   "trading.commands, control, collectors.health, ...; the prefix is added) "
                   "or a physical topic name")
    p.add_argument("--from-beginning", action="store_true",
                   help="start at the oldest record kept (default: only new records)")
    p.add_argument("--until-end", action="store_true",
                   help="stop once every partition is read to its end (like cat, not tail -f)")
    p.add_argument("--max", type=int, metavar="N", help="stop after N records")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per record: topic, partition, offset, timestamp_ms, "
                   "key, type, value")
    p.set_defaults(func=cmd_tail)
