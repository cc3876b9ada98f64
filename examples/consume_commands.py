#!/usr/bin/env python3
"""Print the trading commands a tickstream worker publishes on ``trading.commands``.

A standalone consumer for another team to copy: it needs confluent-kafka and fastavro and
nothing from tickstream except the schema file(s). Each record value is Avro in one of the
two framings tickstream writes:

* **single-object encoding** (the default, no registry): ``C3 01``, then the 8-byte
  little-endian CRC-64-AVRO fingerprint of the writer schema, then the body. The writer
  schema is found by fingerprint among the ``.avsc`` files given with ``--schema``
  (default: ``schemas/TradingCommand.avsc`` and ``schemas/history/TradingCommand.v*.avsc``
  of the repository this file sits in; copy them along with this file);
* **Confluent wire format** (a worker run with ``TICKSTREAM_SCHEMA_REGISTRY_URL``): ``00``,
  then the 4-byte big-endian schema id, then the body. The writer schema is fetched once
  per id from ``--schema-registry``.

Bodies are read into the current schema (Avro schema resolution), so a command written by
an older worker prints the same way (a field it lacks gets its default).

    python examples/consume_commands.py --bootstrap localhost:9092 \\
        [--topic trading.commands] [--group commands-example] [--from-beginning] \\
        [--json] [--schema-registry URL] [-X security.protocol=SSL ...] [--max N]

One line per command on stdout::

    2026-12-02T19:05:00.000Z BUY   EURUSD vol=0.1 price=1.08512 sl=1.08312 tp=1.08912 \\
        conf=0.712 model=v1 id=5f0c... reason=p_up 0.71 >= 0.55

(``sl``/``tp`` are ``-`` when the command has none; the time is the bar's), or with
``--json`` one JSON object per line with every field of the record. A record that does not
decode is one line on stderr (partition, offset, why) and is skipped. Ctrl-C or SIGTERM
stops it: the consumer commits its offsets and leaves the group, exit status 0. Commands
carry a deterministic ``command_id``: after a worker restart a command can arrive twice,
so an executor de-duplicates on it.
"""

from __future__ import annotations

import argparse
import io
import json
import signal
import struct
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException

SINGLE_OBJECT = b"\xc3\x01"
CONFLUENT = 0
HERE = Path(__file__).resolve().parent
DEFAULT_SCHEMAS = [HERE.parent / "schemas" / "TradingCommand.avsc",
                   *sorted((HERE.parent / "schemas" / "history").glob("TradingCommand.v*.avsc"))]


class Undecodable(Exception):
    """The record is not a TradingCommand in either framing."""


class Decoder:
    """Avro bodies in either framing, read into the reader (current) schema."""

    def __init__(self, schema_files: list[Path], registry_url: str | None) -> None:
        if not schema_files:
            raise SystemExit("no schema file: pass --schema PATH/TradingCommand.avsc")
        parsed = [fastavro.parse_schema(json.loads(p.read_text())) for p in schema_files]
        self.reader = parsed[0]
        self.by_fingerprint = {
            bytes.fromhex(fastavro.schema.fingerprint(
                fastavro.schema.to_parsing_canonical_form(s), "CRC-64-AVRO")): s
            for s in parsed
        }
        self.registry_url = registry_url.rstrip("/") if registry_url else None
        self.by_id: dict[int, Any] = {}

    def decode(self, value: bytes | None) -> dict[str, Any]:
        if not value:
            raise Undecodable("empty value")
        if value[:2] == SINGLE_OBJECT:
            writer = self.by_fingerprint.get(value[2:10])
            if writer is None:
                raise Undecodable(f"unknown writer schema fingerprint {value[2:10].hex()} "
                                  "(pass its .avsc with --schema)")
            body = value[10:]
        elif value[0] == CONFLUENT and len(value) >= 5:
            (schema_id,) = struct.unpack(">I", value[1:5])
            writer = self._registry_schema(schema_id)
            body = value[5:]
        else:
            raise Undecodable(f"unknown framing {value[:2].hex()}")
        try:
            record = fastavro.schemaless_reader(io.BytesIO(body), writer, self.reader)
        except Exception as exc:  # truncated or not this schema's bytes
            raise Undecodable(f"bad Avro body: {type(exc).__name__}: {exc}") from None
        if not isinstance(record, dict):
            raise Undecodable("not an Avro record")
        return record

    def _registry_schema(self, schema_id: int) -> Any:
        if schema_id not in self.by_id:
            if self.registry_url is None:
                raise Undecodable(f"Confluent framing (schema id {schema_id}): pass "
                                  "--schema-registry URL")
            url = f"{self.registry_url}/schemas/ids/{schema_id}"
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    text = json.loads(resp.read())["schema"]
            except Exception as exc:
                raise Undecodable(f"schema id {schema_id} from {url}: {exc}") from None
            self.by_id[schema_id] = fastavro.parse_schema(json.loads(text))
        return self.by_id[schema_id]


def line(cmd: dict[str, Any]) -> str:
    """One command as a line of text (the format in the module docstring)."""
    when = datetime.fromtimestamp(cmd["bar_time"] / 1000, UTC)
    stamp = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def price(x: float | None) -> str:
        return "-" if x is None else repr(x)

    return (f"{stamp} {cmd['action']:<5} {cmd['symbol']} vol={cmd['volume']!r} "
            f"price={cmd['price']!r} sl={price(cmd['stop_loss'])} "
            f"tp={price(cmd['take_profit'])} conf={cmd['confidence']:.3f} "
            f"model={cmd['model_version']} id={cmd['command_id']} reason={cmd['reason']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Print tickstream trading commands.")
    p.add_argument("--bootstrap", default="localhost:9092", help="Kafka bootstrap servers")
    p.add_argument("--topic", default="trading.commands",
                   help="topic (with the deployment's prefix, if it has one)")
    p.add_argument("--group", default="commands-example", help="consumer group id")
    p.add_argument("--from-beginning", action="store_true",
                   help="a group without committed offsets starts at the oldest command "
                        "(default: only new ones)")
    p.add_argument("--json", action="store_true", help="one JSON object per command")
    p.add_argument("--schema", type=Path, action="append", default=None,
                   help="TradingCommand .avsc file; repeat for older versions, current first")
    p.add_argument("--schema-registry", default=None,
                   help="Schema Registry URL, for records in the Confluent wire format")
    p.add_argument("-X", dest="config", action="append", default=[], metavar="KEY=VALUE",
                   help="extra librdkafka setting (security.protocol, sasl.*, ssl.*, ...)")
    p.add_argument("--max", type=int, default=0, help="stop after N commands (0: never)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    decoder = Decoder(args.schema or DEFAULT_SCHEMAS, args.schema_registry)
    conf: dict[str, Any] = {
        "bootstrap.servers": args.bootstrap, "group.id": args.group,
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
        "enable.auto.commit": True,
    }
    for item in args.config:
        key, sep, val = item.partition("=")
        if not sep:
            raise SystemExit(f"-X {item}: expected KEY=VALUE")
        conf[key] = val
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    consumer = Consumer(conf)
    consumer.subscribe([args.topic])
    seen = 0
    try:
        while not stop and not (args.max and seen >= args.max):
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                print(f"consume_commands: {err}", file=sys.stderr, flush=True)
                continue
            try:
                cmd = decoder.decode(msg.value())
            except Undecodable as exc:
                print(f"consume_commands: skipped {msg.topic()}[{msg.partition()}] offset "
                      f"{msg.offset()}: {exc}", file=sys.stderr, flush=True)
                continue
            print(json.dumps(cmd, sort_keys=True) if args.json else line(cmd), flush=True)
            seen += 1
    finally:
        consumer.close()  # commits the offsets of what was printed and leaves the group
    print(f"consume_commands: {seen} command(s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
