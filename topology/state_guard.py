"""The worker against a broker that is not the one its state came from.

Two situations, both seen on the local broker (Tansu keeps everything in memory, so a
restarted broker has no topics, no committed offsets and no changelogs):

* **At start-up**, the worker's local table state (Faust's RocksDB store under
  ``TICKSTREAM_DATA_DIR``) remembers, per table partition, the offset of the last
  changelog record it applied (``__faust\\0offset__`` in each ``{table}-{partition}.db``,
  ``faust/stores/rocksdb.py``). Against a broker whose changelog ends before that offset,
  Faust's recovery raises ``ConsistencyError`` (``faust/tables/recovery.py``) and the worker
  dies with a traceback, every time. :func:`guard_local_state` makes the same comparison
  before Faust does, and when any partition is ahead it discards the local state (one
  WARNING line) so Faust rebuilds every table from the changelogs: the changelogs are the
  source of truth and the local store is only a cache of them. It compares with the end
  offsets that the worker's recovery uses: ListOffsets raised to a Fetch response's high
  watermark (Tansu's ListOffsets reports the first offset of the last batch + 1,
  ``docs/platform-notes.md``; ``engine/high_watermarks.py``).

* **While running**, :class:`BrokerWatch` asks the broker every couple of seconds for the
  worker's topics and their end offsets. While the broker does not answer, ``/health/`` is
  not-ok (``broker_unreachable``). When it answers without our topics, with other partition
  counts, or with end offsets lower than before, it has lost what the worker was built on:
  the worker's tables, consumer positions and producer state belong to a log that no
  longer exists. Faust would rejoin, report "Worker ready" and process nothing; the watch
  instead reports ``broker_lost_topics``, logs one line and exits with
  :data:`EXIT_BROKER_LOST`. Restarted (by its supervisor), the worker recreates the topics
  (``ensure_topics`` at start-up) and the start-up guard discards state that the new
  changelogs do not back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.worker_status import WorkerStatus
from topology.admin import PlannedTopic, ensure_topics, planned_topics
from topology.settings import Settings
from topology.tables import ALL_TABLES

log = logging.getLogger(__name__)

#: Exit status of a worker whose broker lost its topics (EX_UNAVAILABLE; the supervisor
#: restarts it). 3 is the pipeline's fatal exit (agents/pipeline.py), 75 the stall watchdog's.
EXIT_BROKER_LOST = 69
OFFSET_KEY = b"__faust\0offset__"
LOCAL_STATE_PROBLEM = "local_state_discarded"
UNREACHABLE_PROBLEM = "broker_unreachable"
LOST_PROBLEM = "broker_lost_topics"


@dataclass(frozen=True, slots=True)
class StalePartition:
    """A local table partition whose state is ahead of its changelog on this broker."""

    table: str
    partition: int
    local_offset: int
    changelog_end: int

    def __str__(self) -> str:
        return (f"{self.table}-{self.partition} at offset {self.local_offset}, "
                f"changelog ends at {self.changelog_end}")


def local_offsets(tabledir: Path) -> dict[tuple[str, int], int]:
    """The persisted changelog offset of every RocksDB table partition under ``tabledir``
    (partitions that never stored one are left out)."""
    out: dict[tuple[str, int], int] = {}
    if not tabledir.is_dir():
        return out
    import rocksdict

    for path in sorted(tabledir.glob("*.db")):
        table, _, part = path.name[: -len(".db")].rpartition("-")
        if not table or not part.isdigit() or not path.is_dir():
            continue
        db = rocksdict.Rdict(
            str(path), options=rocksdict.Options(raw_mode=True),
            access_type=rocksdict.AccessType.read_only(),
        )
        try:
            raw = db.get(OFFSET_KEY)
        finally:
            db.close()
        if raw is not None:
            out[(table, int(part))] = int(raw)
    return out


def changelog_ends(
    settings: Settings, tps: list[tuple[str, int]], timeout_s: float = 10.0
) -> dict[tuple[str, int], int]:
    """End offset of each ``(topic, partition)`` as the worker's recovery sees it: the
    ListOffsets end raised to the high watermark of a Fetch response where that is larger
    (Tansu's ListOffsets reports the start of the last batch + 1; the worker's recovery
    corrects it the same way, ``engine/high_watermarks.py``). A partition the broker does
    not have ends at 0."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({**settings.confluent_config(), "group.id": "tickstream-state-guard",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "fetch.wait.max.ms": 100})
    try:
        out = {}
        for topic, partition in tps:
            try:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout_s, cached=False)
            except KafkaException as exc:
                if exc.args[0].name() not in ("UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_PARTITION"):
                    raise
                high = 0
            out[(topic, partition)] = int(high)
        fetch = [TopicPartition(t, p, out[(t, p)] - 1) for t, p in tps if out[(t, p)] > 0]
        if fetch:
            consumer.assign(fetch)
            pending = {(tp.topic, tp.partition) for tp in fetch}
            deadline = time.monotonic() + timeout_s
            while pending and time.monotonic() < deadline:
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                key = (msg.topic(), msg.partition())
                if key not in pending:
                    continue
                _low, hw = consumer.get_watermark_offsets(
                    TopicPartition(key[0], key[1]), cached=True)
                if hw is not None and hw >= 0:
                    out[key] = max(out[key], int(hw))
                    pending.discard(key)
        return out
    finally:
        consumer.close()


@dataclass(frozen=True, slots=True)
class StateCheck:
    """What :func:`check_local_state` found."""

    #: Partitions whose persisted offset is past the changelog's end: the state must go.
    stale: list[StalePartition]


def check_local_state(settings: Settings, tabledir: Path) -> StateCheck:
    """Compare the persisted offset of each local table partition with its changelog."""
    changelogs = {t.name: t.changelog(settings) for t in ALL_TABLES}
    offsets = {k: v for k, v in local_offsets(tabledir).items() if k[0] in changelogs}
    if not offsets:
        return StateCheck([])
    ends = changelog_ends(settings, [(changelogs[t], p) for t, p in offsets])
    return StateCheck([
        StalePartition(t, p, off, ends[(changelogs[t], p)])
        for (t, p), off in sorted(offsets.items())
        if off >= ends[(changelogs[t], p)]
    ])


def stale_partitions(settings: Settings, tabledir: Path) -> list[StalePartition]:
    """Local table partitions whose persisted offset is past their changelog's end."""
    return check_local_state(settings, tabledir).stale


def guard_local_state(
    settings: Settings, tabledir: Path, status: WorkerStatus | None = None
) -> StateCheck:
    """Discard the local table state under ``tabledir`` when any partition of it is ahead
    of its changelog (see the module docstring). Returns what the check found."""
    check = check_local_state(settings, tabledir)
    stale = check.stale
    if not stale:
        return check
    more = f"; and {len(stale) - 1} more" if len(stale) > 1 else ""
    detail = (
        f"local table state in {tabledir} is ahead of the changelogs on "
        f"{','.join(settings.kafka_bootstrap_servers)} ({stale[0]}{more}): it was built "
        f"against another broker or one that lost its data; discarding it and rebuilding "
        f"the tables from the changelogs"
    )
    log.warning("%s", detail)
    shutil.rmtree(tabledir)
    if status is not None:
        status.report(LOCAL_STATE_PROBLEM, detail, partitions=[str(s) for s in stale])
    return check


class BrokerWatch:
    """Watches the broker for being unreachable or having lost the worker's topics."""

    def __init__(
        self,
        settings: Settings,
        status: WorkerStatus,
        *,
        interval_s: float = 2.0,
        timeout_s: float = 5.0,
        exit: Callable[[int], Any] = os._exit,
        plan: list[PlannedTopic] | None = None,
    ) -> None:
        self.settings = settings
        self.status = status
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._exit = exit
        self.plan = plan if plan is not None else planned_topics(settings)
        self.bootstrap = ",".join(settings.kafka_bootstrap_servers)
        self._consumer: Any = None
        self._ends: dict[tuple[str, int], int] = {}
        self._down_since: float | None = None

    async def run(self) -> None:
        try:
            while True:
                if await self.check() == "lost":
                    return
                await asyncio.sleep(self.interval_s)
        finally:
            await self.close()

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _client(self) -> Any:
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer
            from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

            from topology.app import faust_credentials

            consumer = AIOKafkaConsumer(
                bootstrap_servers=list(self.settings.kafka_bootstrap_servers),
                group_id=None, enable_auto_commit=False,
                request_timeout_ms=int(self.timeout_s * 1000),
                **credentials_to_aiokafka_auth(faust_credentials(self.settings)),
            )
            try:
                await consumer.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                raise
            self._consumer = consumer
        return self._consumer

    async def check(self) -> str:
        """One look at the broker: ``"ok"``, ``"unreachable"`` or ``"lost"``."""
        from aiokafka import TopicPartition

        try:
            consumer = await asyncio.wait_for(self._client(), self.timeout_s)
            names = await asyncio.wait_for(consumer.topics(), self.timeout_s)
            missing = [p.name for p in self.plan if p.name not in names]
            resized = [
                p.name for p in self.plan if p.name in names
                and len(consumer.partitions_for_topic(p.name) or ()) != p.partitions
            ]
            tps = [TopicPartition(p.name, i) for p in self.plan
                   if p.name in names and p.name not in resized for i in range(p.partitions)]
            ends = await asyncio.wait_for(consumer.end_offsets(tps), self.timeout_s)
        except Exception as exc:  # unreachable, timed out, refused: all the same here
            self._unreachable(exc)
            return "unreachable"
        if self._down_since is not None:
            log.info("broker %s answers again after %.1f s", self.bootstrap,
                     time.monotonic() - self._down_since)
            self._down_since = None
            self.status.clear(UNREACHABLE_PROBLEM)
        now = {(tp.topic, tp.partition): int(v) for tp, v in ends.items()}
        went_back = sorted({t for (t, p), v in now.items() if v < self._ends.get((t, p), 0)})
        if missing or resized or went_back:
            self._lost(missing, resized, went_back)
            return "lost"
        self._ends.update(now)
        return "ok"

    def _unreachable(self, exc: BaseException) -> None:
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        reason = str(exc) or type(exc).__name__
        detail = f"broker {self.bootstrap} does not answer ({reason})"
        log.warning("%s; the worker is not processing (health not ok) until it does", detail)
        self.status.report(UNREACHABLE_PROBLEM, detail)

    def _lost(self, missing: list[str], resized: list[str], went_back: list[str]) -> None:
        parts = []
        for what, names in (("missing", missing), ("other partition counts", resized),
                            ("offsets went back", went_back)):
            if names:
                shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more"
                                                if len(names) > 3 else "")
                parts.append(f"{what}: {shown}")
        detail = (
            f"broker {self.bootstrap} lost this worker's topics ({'; '.join(parts)}): it was "
            f"restarted with empty storage or replaced; exiting with status "
            f"{EXIT_BROKER_LOST} so the worker restarts and recreates them (if it then "
            f"still fails, run 'tickstream reset')"
        )
        self.status.report(LOST_PROBLEM, detail)
        log.error("%s", detail)
        if missing and not resized:
            # Recreate them now, before producers that auto-create topics (with the broker's
            # default partition count) get there first; the restart would then refuse them.
            with contextlib.suppress(Exception):
                ensure_topics(self.settings, timeout_s=self.timeout_s)
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        self._exit(EXIT_BROKER_LOST)


class ResetError(RuntimeError):
    """``tickstream reset`` cannot do what was asked (the message says why and what to do)."""


def _tree_size(path: Path) -> tuple[int, int]:
    files = size = 0
    for p in path.rglob("*"):
        if p.is_file():
            files += 1
            size += p.stat().st_size
    return files, size


def _locked_by_other_process(lock: Path) -> bool:
    """RocksDB holds a POSIX write lock on ``LOCK`` while a database is open."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def reset_local_state(settings: Settings) -> list[dict[str, Any]]:
    """Delete the worker's local table state: Faust's ``v<N>`` directories under
    ``TICKSTREAM_DATA_DIR`` (nothing else there is touched). Returns what was removed."""
    data_dir = settings.data_dir
    if not data_dir.exists():
        return []
    if not data_dir.is_dir():
        raise ResetError(f"TICKSTREAM_DATA_DIR {data_dir} is not a directory: point it at "
                         f"the worker's data directory")
    appdirs = sorted(p for p in data_dir.iterdir()
                     if p.is_dir() and p.name[:1] == "v" and p.name[1:].isdigit())
    busy = [lock.parent.name for d in appdirs for lock in d.glob("tables/*.db/LOCK")
            if _locked_by_other_process(lock)]
    if busy:
        raise ResetError(f"a running worker holds the table state in {data_dir} "
                         f"({', '.join(busy[:3])}): stop it, then run 'tickstream reset' again")
    removed = []
    for d in appdirs:
        files, size = _tree_size(d)
        shutil.rmtree(d)
        removed.append({"path": str(d), "files": files, "bytes": size})
    with contextlib.suppress(OSError):
        data_dir.rmdir()  # only when nothing else is left in it
    return removed


def internal_topics(settings: Settings) -> list[str]:
    """The app's own topics on the broker: table changelogs and Faust's assignor topic."""
    return [t.changelog(settings) for t in ALL_TABLES] + [
        f"{settings.app_id}-__assignor-__leader"
    ]


def _accepts_connections(host_port: str, timeout_s: float = 3.0) -> bool:
    import socket

    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def reset_kafka_state(settings: Settings, timeout_s: float = 15.0) -> dict[str, Any]:
    """Delete the app's consumer group (its committed offsets) and internal topics."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    bootstrap = ",".join(settings.kafka_bootstrap_servers)
    if not any(_accepts_connections(hp) for hp in settings.kafka_bootstrap_servers):
        raise ResetError(f"broker {bootstrap} does not answer (no connection): start it "
                         f"or set TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS")
    admin = AdminClient({**settings.confluent_config(), "log_level": 0})
    try:
        existing = admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise ResetError(f"broker {bootstrap} does not answer ({exc.args[0].str()}): start it "
                         f"or set TICKSTREAM_KAFKA_BOOTSTRAP_SERVERS") from None
    wanted = internal_topics(settings)
    present = [t for t in wanted if t in existing]
    deleted, failed = [], {}
    if present:
        for name, fut in admin.delete_topics(present, request_timeout=timeout_s).items():
            try:
                fut.result(timeout=timeout_s)
                deleted.append(name)
            except KafkaException as exc:
                failed[name] = exc.args[0].str()
    group = settings.app_id
    try:
        admin.delete_consumer_groups([group], request_timeout=timeout_s)[group].result(
            timeout=timeout_s)
        group_result = "deleted"
    except KafkaException as exc:
        err = exc.args[0]
        group_result = "absent" if err.name() == "GROUP_ID_NOT_FOUND" else f"failed: {err.str()}"
    return {
        "broker": bootstrap,
        "consumer_group": {"name": group, "result": group_result},
        "topics_deleted": sorted(deleted),
        "topics_absent": sorted(set(wanted) - set(present)),
        "topics_failed": failed,
    }
