"""The Quix Streams peer (``../shared/peer``) on the bench's own input, in the same run.

``run_peer_bench.sh CSV N`` builds its own virtualenv and a fresh broker, runs a Quix
Streams passthrough and the same stages (dedupe → validate → consolidate → 1-minute bars →
TA-Lib features; no model, risk or context) and prints one JSON line. The bench reports its
``ticks_per_s`` and ``passthrough_msgs_per_s`` beside the topology's, and the ratio; when the
peer cannot be set up (no script, no network for its packages, a failed count check) the
bench says why on stderr and goes on without those keys.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve().parents[2] / "shared" / "peer" / "run_peer_bench.sh"


def measure(csv: Path, n: int, script: Path = SCRIPT, timeout_s: float = 1800) -> dict[str, Any]:
    """The peer's JSON on the first ``n`` ticks of ``csv``; raises PeerUnavailable."""
    if not script.is_file():
        raise PeerUnavailable(f"no peer script at {script}")
    try:
        proc = subprocess.run(["bash", str(script), str(csv), str(n)], capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"{script.name} did not finish in {timeout_s:.0f} s") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise PeerUnavailable(f"{script.name} exited {proc.returncode}: {tail[:300]}")
    result: dict[str, Any] = json.loads(lines[-1])
    if result.get("ticks") != n:
        raise PeerUnavailable(f"the peer processed {result.get('ticks')} ticks, not {n}")
    return result


class PeerUnavailable(Exception):
    """The peer could not be run; the message says why."""
