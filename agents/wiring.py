"""What the composition root (``topology``) hands the agents: the only way in.

The agents import nothing from ``topology``: the app factory builds the topics, the tables,
the codec and this slice of the settings, and passes them as one :class:`Wiring`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.worker_status import WorkerStatus
from stages.config import SymbolSpec
from stages.pipeline import PipelineConfig


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """The settings the agents read, resolved by ``topology.settings``."""

    symbols: Mapping[str, SymbolSpec]
    pipeline: PipelineConfig
    partitions: int
    model_dir: Path
    checkpoint_interval_ms: int = 1_000
    bar_idle_flush_ms: int = 5_000
    stall_warn_s: int = 30
    stall_exit_s: int = 120


@dataclass(frozen=True, slots=True)
class Wiring:
    """Everything an agent module's ``register`` needs."""

    app: Any  # the faust.App the agents register on
    config: AgentConfig
    topics: Mapping[str, Any]  # logical topic name -> Faust topic
    physical: Mapping[str, str]  # logical topic name -> physical topic name
    tables: Mapping[str, Any]  # table name -> Faust table
    codec: Any  # schemas.codec.Codec
    status: WorkerStatus

    def topic(self, name: str) -> str:
        """The physical name of the logical topic ``name``."""
        return self.physical[name]
