"""Faust agents: thin drivers of the plain stage classes.

Each module registers its agents on an app built by :func:`topology.app.create_app`.
:data:`AGENTS` describes what every agent reads, writes and keeps, so ``tickstream
describe`` shows the topology that is actually registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from topology.settings import Settings


@dataclass(frozen=True, slots=True)
class AgentSpec:
    name: str
    source: str
    stages: tuple[str, ...]
    outputs: tuple[str, ...]
    tables: tuple[str, ...] = ()


def register_all(app: Any, settings: Settings, topics: dict[str, Any]) -> None:
    from agents import pipeline

    pipeline.register(app, settings, topics)


AGENTS: tuple[AgentSpec, ...] = ()


def _load_specs() -> tuple[AgentSpec, ...]:
    from agents import pipeline

    return (pipeline.SPEC, pipeline.CONTROL_SPEC)


def agent_specs() -> tuple[AgentSpec, ...]:
    return _load_specs()
