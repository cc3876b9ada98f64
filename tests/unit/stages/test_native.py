"""The compiled stage modules (``make native``): used only while fresh, and equal to source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, need

from connectors.files import write_canonical
from connectors.history.parse import read_history
from stages import native
from stages.types import Tick

ROOT = REPO_ROOT
SUFFIX = native.importlib.machinery.EXTENSION_SUFFIXES[0]


def test_the_stages_run_compiled_after_make_native() -> None:
    need(all(native.compiled_file(native.HERE, n) for n in native.COMPILED),
         "stage modules not compiled: run `make native`")
    assert native.compiled(), native.STATUS
    import stages.pipeline

    assert stages.pipeline.__file__.endswith(SUFFIX)


def _module_files(code: str) -> list[str]:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT, env={**os.environ, native.SOURCE_ENV: "0"})
    return res.stdout.split()


def test_importing_the_stages_does_no_work_and_runs_the_source() -> None:
    """No import-time work: a plain import loads every stage module from its ``.py`` file
    (a stale build can never run); only an explicit install() makes them compiled."""
    need(all(native.compiled_file(native.HERE, n) for n in native.COMPILED),
         "stage modules not compiled: run `make native`")
    plain = _module_files("import stages.pipeline as p, stages.native as n, sys;"
                          "print(p.__file__, len(n.STATUS), "
                          "sum(type(f).__name__ == '_Compiled' for f in sys.meta_path))")
    assert plain[0].endswith("pipeline.py") and plain[1:] == ["0", "0"]
    installed = _module_files("import stages.native as n; n.install();"
                              "import stages.pipeline as p, stages.validate as v;"
                              "print(p.__file__, v.__file__)")
    assert all(f.endswith(SUFFIX) for f in installed), installed


def _fake_build(tmp_path: Path, names: tuple[str, ...]) -> None:
    (tmp_path / native.SHIMS).mkdir(exist_ok=True)
    for n in names:
        (tmp_path / f"{n}.py").write_text(f"X = {n!r}\n")
        (tmp_path / native.SHIMS / f"{n}{SUFFIX}").write_bytes(b"")
    (tmp_path / native.MANIFEST).write_text(json.dumps({"sources": {
        n: native.source_digest(tmp_path / f"{n}.py") for n in names}}))


def test_a_module_runs_from_source_unless_its_build_is_current(tmp_path: Path) -> None:
    names = ("a", "b", "c", "d")
    _fake_build(tmp_path, names[:3])
    (tmp_path / "b.py").write_text("X = 'edited after the build'\n")
    (tmp_path / "c.py").write_text((tmp_path / "c.py").read_text())  # touched, same bytes
    (tmp_path / "d.py").write_text("X = 1\n")
    assert native.plan(tmp_path, names, force_source=False) == {
        "a": "compiled", "b": "source changed since the build", "c": "compiled",
        "d": "not built"}
    assert set(native.plan(tmp_path, names[:3], force_source=True).values()) == {"forced"}
    (tmp_path / native.MANIFEST).unlink()
    assert native.plan(tmp_path, ("a",), force_source=False) == {"a": "no build record"}


@pytest.mark.data
def test_compiled_and_source_stages_give_the_same_bytes(shared_data: Path,
                                                       tmp_path: Path) -> None:
    """The same real ticks through the compiled stages and through their source: the same
    counts and byte-identical clean ticks, rejects, bars and features."""
    need(native.compiled(), "stage modules not compiled: run `make native`")
    src = tmp_path / "ticks.csv"
    path = shared_data / "multi/EURUSD_20120104_NY17-24h.csv.gz"
    ticks = [t for t in read_history("truefx", path, broker="HD", tz="America/New_York")
             if isinstance(t, Tick)]
    ticks[5000:5000] = ticks[4900:4950]  # redelivered
    ticks.insert(7000, Tick("HD", "EURUSD", ticks[6999].time_msc, 1.3, 1.29))  # crossed
    ticks.insert(9000, Tick("HD", "EURUSD", ticks[8999].time_msc + 1, 1.5, 1.5001))  # spike
    with src.open("w", newline="") as fh:
        write_canonical(ticks, fh)
        fh.write("HD,EURUSD,notatime,1.1,1.2,,\n")
    runs = {}
    for mode in ("compiled", "source"):
        env = {**os.environ, native.SOURCE_ENV: "1" if mode == "source" else "0"}
        out = tmp_path / mode
        res = subprocess.run(
            [sys.executable, "-m", "topology.cli", "process", str(src), "--json", "--jobs", "1",
             "--out", str(out)], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        assert r.pop("stages_compiled") is (mode == "compiled")
        del r["seconds"], r["ticks_per_s"]
        runs[mode] = (r, {p.name: p.read_bytes() for p in sorted(out.iterdir())})
    assert runs["compiled"][0] == runs["source"][0]
    assert runs["compiled"][0]["bars"] > 300 and runs["compiled"][0]["duplicates"] == 50
    assert set(runs["compiled"][0]["rejected"]) == {"crossed_quote", "price_jump", "malformed"}
    assert set(runs["compiled"][1]) == {"clean.csv", "rejected.csv", "bars.csv", "features.csv",
                                        "commands.csv"}
    for name, data in runs["compiled"][1].items():
        assert data == runs["source"][1][name], name
