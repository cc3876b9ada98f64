"""Which stage modules run compiled (mypyc) and which from their source.

``make native`` (``tools/build_native.py``) compiles the per-tick stages listed in
:data:`COMPILED` with mypyc and records each source's SHA-256 in ``stages/.native.json``.
Each module's import shim goes to ``stages/_compiled/`` (its code, ``NAME__mypyc``, stays
next to the sources), where a plain import never finds it: **by default every stage module
is imported from its ``.py`` file**, so importing ``stages`` does nothing but import it and
a stale build can never run old logic.

Entry points that want the speed call :func:`install` before any stage module is imported
(``topology.cli.main``, ``topology.app.create_app``, ``python -m bench``, the tests): it
checks each build against its source and, when every module is fresh, adds an import
finder that loads the compiled ones. A module whose source changed since its build (or
that has no record) makes all of them run from source, with a warning;
``TICKSTREAM_STAGES_SOURCE=1`` forces source (the tests compare the two).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

#: The modules ``make native`` compiles (the per-tick path of the stage chain).
COMPILED: tuple[str, ...] = ("validate", "consolidate", "bars", "pipeline")
MANIFEST = ".native.json"
SOURCE_ENV = "TICKSTREAM_STAGES_SOURCE"
HERE = Path(__file__).resolve().parent


def source_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: Where ``make native`` puts each compiled module's import shim (see the module docstring).
SHIMS = "_compiled"


def compiled_file(directory: Path, name: str) -> Path | None:
    """The extension module built for ``name`` in ``directory``, if there is one."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = directory / SHIMS / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    return None


def plan(directory: Path, names: Sequence[str], force_source: bool) -> dict[str, str]:
    """For each module: ``compiled``, or why it is imported from source (``not built``,
    ``forced``, ``no build record``, ``source changed since the build``)."""
    try:
        record: Mapping[str, str] = json.loads((directory / MANIFEST).read_text())["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        record = {}
    out = {}
    for name in names:
        if compiled_file(directory, name) is None:
            out[name] = "not built"
        elif force_source:
            out[name] = "forced"
        elif name not in record:
            out[name] = "no build record"
        elif record[name] != source_digest(directory / f"{name}.py"):
            out[name] = "source changed since the build"
        else:
            out[name] = "compiled"
    return out


class _Compiled(importlib.abc.MetaPathFinder):
    """Import the named ``stages`` modules from their compiled shims in ``_compiled/``."""

    def __init__(self, files: Mapping[str, Path]) -> None:
        self.files = dict(files)

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        file = self.files.get(name) if package == __package__ else None
        if file is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


STATUS: dict[str, str] = {}


def install() -> None:
    """Decide, once per process, where each compiled stage module is imported from.

    Call it before any stage module is imported; one imported earlier stays as imported
    (from source) and is reported so.
    """
    if STATUS:
        return
    STATUS.update(plan(HERE, COMPILED, os.environ.get(SOURCE_ENV) == "1"))
    stale = sorted(n for n, s in STATUS.items() if s not in ("compiled", "not built", "forced"))
    if stale:
        log.warning("stages %s: compiled build is out of date, running the source instead "
                    "(run `make native`)", ", ".join(stale))
    fresh = [n for n, s in STATUS.items() if s == "compiled"]
    if len(fresh) < len(COMPILED):
        # mixed: a compiled module would bind the others' compiled classes; run all as source
        for n in fresh:
            STATUS[n] = "source (another module's build is out of date)"
        return
    early = [n for n in COMPILED if f"{__package__}.{n}" in sys.modules]
    if early:
        for n in COMPILED:
            STATUS[n] = "source (imported before stages.native.install)"
        return
    files = {n: compiled_file(HERE, n) for n in COMPILED}
    sys.meta_path.insert(0, _Compiled({n: f for n, f in files.items() if f is not None}))


def compiled() -> bool:
    """Whether every module in :data:`COMPILED` runs compiled in this process."""
    install()
    return all(s == "compiled" for s in STATUS.values())
