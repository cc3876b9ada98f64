"""The control agent: kill switch and model announcements, kept in a global table.

``control`` has one partition, so one worker consumes it; it writes the resulting state to
the ``control_state`` global table, which every worker replicates from its changelog and
rebuilds at start-up. So the kill switch reaches every worker, and a restarted worker comes
back with the switch as it was left — never silently re-armed.

Table values (JSON): ``kill_switch`` → ``{"on": bool, "reason", "issued_by", "time_ms",
"offset"}``; ``model`` → ``{"version", "path", "time_ms", "offset"}``. ``offset`` is the
control message's offset in the one-partition ``control`` topic: it orders the values. The
worker that writes the table also reads its own writes back from the changelog a little
later (every changelog partition is a standby of a global table), so for a moment the table
can hold an older value than the one just written — a lifted switch could read as on again,
or, worse, a switch just set could read as lifted. :class:`ControlView` therefore never
goes back to a value with a lower offset than one it has seen.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from agents import AgentSpec
from agents.rejects import DeadLetters
from agents.wiring import Wiring
from schemas.codec import MalformedRecord
from schemas.records import ControlMessage

log = logging.getLogger(__name__)

TABLE = "control_state"
SPEC = AgentSpec(
    name="control", sources=("control",), stages=("kill switch", "model announcements"),
    outputs=(), tables=(TABLE,),
)

KILL_SWITCH_KEY = b"kill_switch"
MODEL_KEY = b"model"
COMMANDS = ("kill_switch_on", "kill_switch_off", "model_announce")


def apply(msg: ControlMessage, offset: int) -> tuple[bytes, dict[str, Any]] | None:
    """The table entry a control message (at ``offset`` in ``control``) sets, or None for
    one that changes nothing."""
    if msg.command in ("kill_switch_on", "kill_switch_off"):
        return KILL_SWITCH_KEY, {
            "on": msg.command == "kill_switch_on", "reason": msg.reason,
            "issued_by": msg.issued_by, "time_ms": msg.time_ms, "offset": offset,
        }
    if msg.command == "model_announce" and msg.model_version:
        return MODEL_KEY, {
            "version": msg.model_version, "path": msg.model_path, "time_ms": msg.time_ms,
            "offset": offset,
        }
    return None


class ControlView:
    """Read side of ``control_state`` for other agents.

    Decodes only when a value changes, and never moves back to a value with a lower
    ``offset`` than the newest it has seen (see the module docstring). On the worker that
    writes the table that is not enough: if the table went from the newest write to an
    older echo before this view looked, the view would never have seen the newest. So the
    control agent also keeps its own writes in ``written``, and the view takes, per key,
    the value with the highest offset of the two.
    """

    def __init__(self, table: Mapping[bytes, bytes],
                 written: Mapping[bytes, bytes] | None = None) -> None:
        self.table = table
        self.written: Mapping[bytes, bytes] = written if written is not None else {}
        self._raw: dict[tuple[int, bytes], bytes | None] = {}
        self._val: dict[bytes, dict[str, Any] | None] = {}

    def get(self, key: bytes) -> dict[str, Any] | None:
        for source, values in enumerate((self.table, self.written)):
            raw = values.get(key)
            if raw is None or raw is self._raw.get((source, key)):
                continue
            self._raw[(source, key)] = raw
            val = orjson.loads(raw)
            held = self._val.get(key)
            if held is None or _offset(val) >= _offset(held):
                self._val[key] = val
        return self._val.get(key)

    @property
    def kill_switch(self) -> bool:
        ks = self.get(KILL_SWITCH_KEY)
        return bool(ks and ks.get("on"))


def _offset(value: dict[str, Any]) -> int:
    return int(value.get("offset", -1))


def register(w: Wiring) -> ControlView:
    app, codec = w.app, w.codec
    table = w.tables[TABLE]
    physical = w.topic("control")
    dead_letters = w.topics["ticks.rejected"]
    dl_physical = w.topic("ticks.rejected")

    dead_letter = DeadLetters(dead_letters, dl_physical, codec, "control").send
    # This worker's own newest writes: a view never falls back to an echo it saw first.
    written: dict[bytes, bytes] = {}

    @app.agent(w.topics["control"], name="control")  # type: ignore[untyped-decorator]
    async def control(stream: Any) -> None:
        async for event in stream.events():
            try:
                msg = codec.decode(event.value, ControlMessage, physical)
            except MalformedRecord as exc:
                log.error("undecodable control message dead-lettered: %s", exc.detail)
                await dead_letter(event, exc.reason, exc.detail)
                continue
            entry = apply(msg, event.message.offset)
            if entry is None:
                log.error("control message %r dead-lettered: unknown command", msg.command)
                await dead_letter(event, "unknown_command", f"command {msg.command!r}")
                continue
            key, data = entry
            raw = orjson.dumps(data)
            written[key] = raw
            table[key] = raw
            if key == KILL_SWITCH_KEY:
                log.warning(
                    "KILL SWITCH %s by %s: %s", "ON" if data["on"] else "lifted",
                    msg.issued_by, msg.reason,
                )
            else:
                log.info("model %s announced by %s", msg.model_version, msg.issued_by)

    return ControlView(table, written)
