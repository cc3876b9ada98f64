"""MetaTrader 5 source: one :class:`Mt5Collector` per broker terminal.

Operator notes: ``docs/collectors-mt5.md``.

``build(config, sink)`` is what ``tickstream collect mt5 --config FILE`` calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from connectors.base.collector import RecordSink
from connectors.mt5.api import Mt5Api
from connectors.mt5.collector import Mt5Collector
from connectors.mt5.config import Mt5Config, load_config, parse_bridge, parse_config

__all__ = ["Mt5Collector", "Mt5Config", "build", "load_config", "parse_config"]


def build(
    config: Mapping[str, Any],
    sink: RecordSink,
    *,
    config_path: str | None = None,
    bridge: str | None = None,
    env: Mapping[str, str] | None = None,
    api: Callable[[], Mt5Api] | None = None,
) -> Mt5Collector:
    """A collector from a parsed YAML mapping.

    ``config_path`` names the file in error messages; ``bridge`` (``host:port``, the CLI's
    ``--bridge``) overrides the file's ``bridge``; ``env`` (default ``os.environ``) is where
    ``password_env`` is looked up; ``api`` replaces how a session obtains the terminal API
    (tests pass a stand-in). Raises :class:`~connectors.base.collector.CollectorConfigError`.
    """
    cfg = parse_config(config, source=config_path, env=env)
    if bridge:
        from dataclasses import replace

        cfg = replace(cfg, bridge=parse_bridge(bridge, "--bridge"))
    return Mt5Collector(cfg, sink, api=api)
