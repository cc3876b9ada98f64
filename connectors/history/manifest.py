"""What history has been loaded where: the compacted ``history.manifest`` topic.

One record per loaded path and target topic: key ``{topic}/{fingerprint}`` (the SHA-256 of
the path's bytes, ``offline/load.py``), value a JSON object — the format, the path as given,
the broker/symbol streams with counts and time ranges, the bad lines, the partitions and
offsets its records went to, and when it was loaded. ``tickstream load`` reads the whole
topic back before it loads anything (to its end by the Fetch high watermark, like the
collector positions: ``connectors.compacted``) and skips a path already recorded for the
same topic. JSON, not Avro: only the loader reads it, and it carries its own version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from connectors.compacted import read_compacted

if TYPE_CHECKING:
    from connectors.kafka_client import KafkaClientSettings as Settings
    from connectors.producer import RecordProducer

MANIFEST_TOPIC = "history.manifest"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    topic: str
    fingerprint: str
    path: str
    format: str
    ticks: int
    bad_lines: int
    streams: list[dict[str, Any]]
    offsets: dict[str, list[int]]
    loaded_at: str

    @property
    def key(self) -> str:
        return f"{self.topic}/{self.fingerprint}"

    @classmethod
    def of(cls, topic: str, fmt: str, result: Any) -> ManifestEntry:
        d = result.to_dict()
        return cls(topic=topic, fingerprint=d["fingerprint"], path=d["path"], format=fmt,
                   ticks=d["ticks"], bad_lines=d["bad_lines"], streams=d["streams"],
                   offsets=d["offsets"],
                   loaded_at=datetime.now(UTC).isoformat(timespec="seconds"))

    def encode(self) -> bytes:
        return orjson.dumps({"v": FORMAT_VERSION, **{f: getattr(self, f)
                                                     for f in self.__slots__}})

    @classmethod
    def decode(cls, value: bytes) -> ManifestEntry | None:
        """An entry; None for a value this code does not know (another version, damage)."""
        try:
            doc = orjson.loads(value)
            if not isinstance(doc, dict) or doc.pop("v", None) != FORMAT_VERSION:
                return None
            return cls(**doc)
        except (orjson.JSONDecodeError, TypeError):
            return None


class HistoryManifest:
    """The manifest topic, read once (lazily) and appended to through a producer."""

    def __init__(self, settings: Settings, producer: RecordProducer,
                 timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.producer = producer
        self.topic = settings.topic(MANIFEST_TOPIC)
        self.timeout_s = timeout_s
        self._entries: dict[str, ManifestEntry] | None = None

    def entries(self) -> dict[str, ManifestEntry]:
        if self._entries is None:
            raw = read_compacted(self.settings, self.topic, self.timeout_s)
            self._entries = {k: e for k, v in raw.items()
                             if (e := ManifestEntry.decode(v)) is not None}
        return self._entries

    def get(self, topic: str, fingerprint: str) -> ManifestEntry | None:
        return self.entries().get(f"{topic}/{fingerprint}")

    def record(self, entry: ManifestEntry) -> None:
        """Append ``entry`` (the caller has seen every record of the path acknowledged)."""
        self.producer.send_raw(self.topic, entry.key, entry.encode())
        if self._entries is not None:
            self._entries[entry.key] = entry

    def flush(self, timeout_s: float = 30.0) -> None:
        if self.producer.flush(timeout_s):
            raise RuntimeError(f"the manifest record was not acknowledged in {timeout_s:.0f} s")
