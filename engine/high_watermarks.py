"""Exact end offsets for table recovery, read from Fetch responses.

Faust's recovery reads each changelog partition up to the end offset its consumer reports
(``Consumer.highwaters`` → aiokafka ``end_offsets`` → ListOffsets). The local broker
(Tansu 0.6) answers ListOffsets(latest) with the first offset of the partition's *last
record batch* + 1, not with its end, so a table whose changelog ends in a batch of several
records came back short after a restart: the records after the first of that batch were
never replayed (``docs/platform-notes.md``). Its Fetch responses carry the right high
watermark. :func:`exact_end_offsets` fetches once from each partition that has records and
takes the larger of the two figures; on Apache Kafka both agree and this costs one Fetch per
changelog partition at recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

log = logging.getLogger(__name__)

TP = TypeVar("TP")

#: How long a recovery waits for the Fetch responses before it keeps the reported ends.
PROBE_TIMEOUT_S = 10.0


def corrected(
    reported: Mapping[TP, int | None], fetched: Mapping[TP, int | None],
) -> dict[TP, int | None]:
    """The reported end of each partition, raised to the Fetch high watermark where larger."""
    out: dict[TP, int | None] = {}
    for tp, end in reported.items():
        hw = fetched.get(tp)
        if end is None or hw is None:
            out[tp] = end if hw is None else hw
        else:
            out[tp] = max(end, hw)
    return out


async def fetch_high_watermarks(
    consumer: Any, reported: Mapping[Any, int | None], timeout_s: float = PROBE_TIMEOUT_S,
) -> dict[Any, int | None]:
    """High watermarks from Fetch responses of a started, group-less aiokafka ``consumer``.

    Fetches from one before each reported end (the start of the last batch there), so the
    response is small; a partition whose reported end is 0 or unknown is not fetched.
    """
    wanted = [tp for tp, end in reported.items() if end]
    if not wanted:
        return {}
    consumer.assign(wanted)
    for tp in wanted:
        consumer.seek(tp, max(0, int(reported[tp] or 0) - 1))
    deadline = time.monotonic() + timeout_s
    found: dict[Any, int | None] = {}
    while time.monotonic() < deadline:
        await consumer.getmany(*wanted, timeout_ms=100, max_records=1)
        for tp in wanted:
            hw = consumer.highwater(tp)
            if hw is not None:
                found[tp] = int(hw)
        if len(found) == len(wanted):
            break
    missing = [tp for tp in wanted if tp not in found]
    if missing:
        log.warning("no Fetch response for %d of %d changelog partitions in %.0f s; recovery "
                    "keeps the broker's reported end for them", len(missing), len(wanted),
                    timeout_s)
    return found


async def exact_end_offsets(
    make_consumer: Callable[[], Any], reported: Mapping[TP, int | None],
    timeout_s: float = PROBE_TIMEOUT_S,
) -> dict[TP, int | None]:
    """``reported`` corrected by a Fetch from a fresh consumer that ``make_consumer`` builds.

    Any failure of the probe keeps the reported ends (what Faust alone would use), with a
    WARNING: a recovery must not fail because the correction could not be made.
    """
    if not any(reported.values()):
        return dict(reported)
    consumer = make_consumer()
    try:
        await asyncio.wait_for(consumer.start(), timeout_s)
        fetched = await fetch_high_watermarks(consumer, reported, timeout_s)
    except Exception as exc:  # the probe is a correction; Faust's own figures remain
        log.warning("could not read changelog high watermarks (%s); recovery keeps the "
                    "broker's reported ends", exc or type(exc).__name__)
        return dict(reported)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    out = corrected(reported, fetched)
    raised = sum(1 for tp in reported if out[tp] != reported[tp])
    if raised:
        log.info("changelog ends raised to the Fetch high watermark on %d of %d partitions "
                 "(the broker's ListOffsets reported less)", raised, len(reported))
    return out
