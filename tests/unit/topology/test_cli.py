from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT

from topology.describe import describe_mermaid, describe_text
from topology.settings import Settings
from topology.tables import ALL_TABLES
from topology.topics import ALL_TOPICS


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "topology.cli", *args], capture_output=True, text=True, env=env
    )


def test_help_lists_every_command() -> None:
    out = run("--help")
    assert out.returncode == 0
    for cmd in ("broker", "topics", "worker", "describe", "smoke", "collect"):
        assert cmd in out.stdout


def test_the_command_line_loads_no_model_library_until_it_needs_one() -> None:
    # xgboost pulls in scikit-learn, scipy and pandas (about a second); TA-Lib pulls in
    # pandas. Building the parser (every command, --help included) must import none of them.
    code = (
        "import sys; from topology.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('xgboost', 'sklearn', 'talib', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_bad_setting_is_a_clean_error() -> None:
    import os

    out = run("describe", env={**os.environ, "TICKSTREAM_PARTITIONS": "lots"})
    assert out.returncode == 2
    assert "TICKSTREAM_PARTITIONS" in out.stderr
    assert "Traceback" not in out.stderr


def test_describe_shows_every_topic_table_and_partitions() -> None:
    s = Settings.from_env({"TICKSTREAM_PARTITIONS": "7"}, env_file=None)
    text = describe_text(s)
    for t in ALL_TOPICS:
        assert t.name in text
    for tb in ALL_TABLES:
        assert tb.changelog(s) in text
    assert "ticks.raw" in text and "partitions=7" in text and "partitions=1" in text
    mermaid = describe_mermaid(s)
    assert mermaid.startswith("flowchart LR")
    assert '[("ticks.raw")]' in mermaid


def test_docs_embed_the_current_diagram() -> None:

    doc = (REPO_ROOT / "docs" / "topology.md").read_text()
    s = Settings.from_env({}, env_file=None)
    assert describe_mermaid(s) in doc, "docs/topology.md is stale: run make docs"
