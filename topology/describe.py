"""``tickstream describe``: the registered topology as text and as a Mermaid diagram."""

from __future__ import annotations

import re

from agents import agent_specs
from topology.settings import Settings
from topology.tables import ALL_TABLES
from topology.topics import ALL_TOPICS

SOURCES = {
    "collectors (MT5, OANDA, WebSocket, simulator)": "ticks.raw",
    "history loaders": "ticks.history",
    "calendar collector": "events.calendar",
    "news collector": "events.news",
    "operators": "control",
    "collectors (health reports)": "collectors.health",
}


def _id(name: str) -> str:
    return re.sub(r"\W+", "_", name).strip("_")


def describe_text(settings: Settings) -> str:
    lines = ["Topics:"]
    for t in ALL_TOPICS:
        keep = "compacted" if t.cleanup == "compact" else (
            "forever" if t.retention_ms < 0 else f"{t.retention_ms // 86_400_000}d"
        )
        lines.append(
            f"  {settings.topic(t.name):<22} key={t.key:<9} value={t.value:<15} "
            f"partitions={t.partitions(settings):<3} retention={keep}  # {t.doc}"
        )
    lines.append("Tables (changelog topic):")
    for tb in ALL_TABLES:
        scope = "global" if tb.global_ else "partitioned"
        lines.append(
            f"  {tb.name:<16} key={tb.key:<9} {scope:<11} -> {tb.changelog(settings)}"
        )
    lines.append("Sources:")
    for src, topic in SOURCES.items():
        lines.append(f"  {src} -> {topic}")
    lines.append("Agents:")
    for a in agent_specs():
        lines.append(
            f"  {a.name}: {' + '.join(a.sources)} -> [{' -> '.join(a.stages)}] -> "
            f"{', '.join(a.outputs) or '(tables only)'}"
            + (f"  tables: {', '.join(a.tables)}" if a.tables else "")
            + (f"  reads: {', '.join(a.reads)}" if a.reads else "")
        )
    return "\n".join(lines)


def describe_mermaid(settings: Settings) -> str:
    out = ["flowchart LR"]
    for src, topic in SOURCES.items():
        out.append(f'  {_id("src " + src)}["{src}"] --> {_id(topic)}[("{topic}")]')
    for a in agent_specs():
        stages = "<br/>".join(a.stages)
        for src in a.sources:
            out.append(
                f'  {_id(src)} --> {_id("agent " + a.name)}[["{a.name}<br/>{stages}"]]'
            )
        for o in a.outputs:
            out.append(f'  {_id("agent " + a.name)} --> {_id(o)}[("{o}")]')
        for tb in a.tables:
            out.append(f'  {_id("agent " + a.name)} -.- {_id("table " + tb)}[/"{tb}"/]')
        for tb in a.reads:
            out.append(f'  {_id("table " + tb)}[/"{tb}"/] -.-> {_id("agent " + a.name)}')
    return "\n".join(out)
