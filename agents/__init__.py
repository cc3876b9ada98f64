"""Faust agents: thin drivers of the plain stage classes.

Each module registers its agents on an app built by :func:`topology.app.create_app`.
Each agent's :class:`AgentSpec` (:func:`agent_specs`) describes what it reads, writes and
keeps, so ``tickstream describe`` shows the topology that is actually registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.wiring import Wiring



@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    sources: tuple[str, ...]
    stages: tuple[str, ...]
    outputs: tuple[str, ...]
    tables: tuple[str, ...] = ()  # tables the agent writes
    reads: tuple[str, ...] = ()  # tables it only reads (global tables kept by other agents)


def register_all(w: Wiring) -> None:
    """Register every agent on ``w.app`` (the context and control views feed the others)."""
    from prometheus_client import CollectorRegistry

    from agents import context, control, health, health_view, metrics, pipeline, watchdog

    registry = CollectorRegistry(auto_describe=True)
    batch = metrics.BatchMetrics(registry)
    context_sync = context.register(w)
    control_view = control.register(w)
    live = health_view.LiveView(None, w.config.symbols)
    stages = pipeline.register(w, context_sync, control_view, batch, live.restored)
    live.attach(stages)
    collectors = health.register(w, control_view, live)
    watchdog.register(w)
    metrics.register(w, control_view, collectors, stages, registry, batch, live)


def _load_specs() -> tuple[AgentSpec, ...]:
    from agents import context, control, health, pipeline

    return (pipeline.SPEC, context.SPEC, control.SPEC, health.SPEC)


def agent_specs() -> tuple[AgentSpec, ...]:
    return _load_specs()
