"""Faust agents: thin drivers of the plain stage classes.

Each module registers its agents on an app built by :func:`topology.app.create_app`.
Each agent's :class:`AgentSpec` (:func:`agent_specs`) describes what it reads, writes and
keeps, so ``tickstream describe`` shows the topology that is actually registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from topology.settings import Settings


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    sources: tuple[str, ...]
    stages: tuple[str, ...]
    outputs: tuple[str, ...]
    tables: tuple[str, ...] = ()  # tables the agent writes
    reads: tuple[str, ...] = ()  # tables it only reads (global tables kept by other agents)


def register_all(app: Any, settings: Settings, topics: dict[str, Any]) -> None:
    from agents import context, control, health, pipeline, watchdog
    from agents.worker_status import WorkerStatus

    status = WorkerStatus()
    app.tickstream_status = status
    shared = {
        "status": status,
        "context": context.register(app, settings, topics),
        "control": control.register(app, settings, topics),
    }
    pipeline.register(app, settings, topics, shared)
    health.register(app, settings, topics, shared)
    watchdog.register(app, settings, shared)


def _load_specs() -> tuple[AgentSpec, ...]:
    from agents import context, control, health, pipeline

    return (pipeline.SPEC, context.SPEC, control.SPEC, health.SPEC)


def agent_specs() -> tuple[AgentSpec, ...]:
    return _load_specs()
