"""``make native`` without a usable C compiler: one warning line, exit 0, stages from source.

The build runs in a copy of ``tools/`` and ``stages/`` (with an earlier build planted in
it), so the work tree's own compiled modules are never touched.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, need

from stages import native

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _copy_tree(root: Path) -> Path:
    (root / "tools").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "tools" / "build_native.py", root / "tools")
    stages = root / "stages"
    stages.mkdir()
    for f in (REPO_ROOT / "stages").glob("*.py"):
        shutil.copy2(f, stages)
    # An earlier build, fresh by its record: the fallback must not leave it to be loaded.
    (stages / native.SHIMS).mkdir()
    for name in native.COMPILED:
        (stages / native.SHIMS / f"{name}{SUFFIX}").write_bytes(b"not an ELF file")
        (stages / f"{name}__mypyc{SUFFIX}").write_bytes(b"not an ELF file")
    (stages / native.MANIFEST).write_text(json.dumps({"sources": {
        n: native.source_digest(stages / f"{n}.py") for n in native.COMPILED}}))
    return root


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != native.SOURCE_ENV}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", **extra}


@pytest.fixture
def broken_cc(tmp_path: Path) -> str:
    cc = tmp_path / "broken-cc"
    cc.write_text("#!/bin/sh\necho 'broken-cc: internal error: no code generator' >&2\nexit 1\n")
    cc.chmod(0o755)
    return str(cc)


@pytest.mark.parametrize("kind", ["missing", "failing"])
def test_no_compiler_falls_back_to_source(tmp_path: Path, broken_cc: str, kind: str) -> None:
    root = _copy_tree(tmp_path / "tree")
    cc = str(tmp_path / "no-such-cc") if kind == "missing" else broken_cc
    build = subprocess.run([sys.executable, str(root / "tools" / "build_native.py")],
                           capture_output=True, text=True, env=_env(CC=cc), timeout=120)
    assert build.returncode == 0, build.stderr
    lines = build.stderr.splitlines()
    assert len(lines) == 1, build.stderr
    assert lines[0].startswith("build_native: WARNING: no usable C compiler (")
    assert repr(cc) in lines[0] and "run from source" in lines[0]
    if kind == "failing":
        assert "broken-cc: internal error: no code generator" in lines[0]
    assert build.stdout == ""
    stages = root / "stages"
    # No build record (nothing pretends to be compiled; make retries next time) and no
    # module left from the earlier build.
    assert not (stages / native.MANIFEST).exists()
    assert sorted(p.name for p in stages.rglob("*.so")) == []

    probe = ("import json, sys; from stages import native; native.install();"
             "import stages.pipeline, stages.validate;"
             "print(json.dumps({'status': native.STATUS, 'compiled': native.compiled(),"
             "'files': [stages.pipeline.__file__, stages.validate.__file__]}))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         cwd=root, timeout=120,
                         env=_env(PYTHONPATH=os.pathsep.join([str(root), str(REPO_ROOT)])))
    assert run.returncode == 0, run.stderr
    assert "out of date" not in run.stderr, run.stderr
    got = json.loads(run.stdout)
    assert got["status"] == dict.fromkeys(native.COMPILED, "not built")
    assert got["compiled"] is False
    assert got["files"] == [str(stages / "pipeline.py"), str(stages / "validate.py")]


def _build_native_module() -> object:
    spec = importlib.util.spec_from_file_location(
        "build_native_under_test", REPO_ROOT / "tools" / "build_native.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_probe_passes_with_a_working_compiler(monkeypatch: pytest.MonkeyPatch) -> None:
    """The up-front check is not what stops a machine that can build from building."""
    need(shutil.which("cc") is not None or shutil.which("gcc") is not None,
         "no C compiler on PATH (make native needs one)")
    monkeypatch.delenv("CC", raising=False)
    assert _build_native_module().compiler_problem() is None  # type: ignore[attr-defined]


def test_the_probe_names_a_compiler_that_cannot_link(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    need(shutil.which("gcc") is not None, "gcc not on PATH (make native needs a C compiler)")
    monkeypatch.setenv("CC", "gcc -Wl,--no-such-linker-option")
    problem = _build_native_module().compiler_problem()  # type: ignore[attr-defined]
    assert problem is not None and "cannot link" in problem and "'gcc'" in problem, problem
