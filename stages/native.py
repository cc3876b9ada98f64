"""Which stage modules run compiled (mypyc) and which from their source.

``make native`` (``tools/build_native.py``) compiles the per-tick stages listed in
:data:`COMPILED` with mypyc into extension modules next to their ``.py`` files, and records
each source's SHA-256 in ``stages/.native.json``. The ``.py`` files stay the source of
truth: a compiled module is used only while its source is byte-identical to what was
compiled. A module whose source changed since (or that has no record) is imported from its
``.py`` file instead, with a warning, so a stale build can never run old logic;
``TICKSTREAM_STAGES_SOURCE=1`` imports every one of them from source (the tests compare
the two).

This module is imported by ``stages/__init__.py`` before any stage module, and must stay
importable without them.
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


def compiled_file(directory: Path, name: str) -> Path | None:
    """The extension module built for ``name`` in ``directory``, if there is one."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = directory / f"{name}{suffix}"
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


class _FromSource(importlib.abc.MetaPathFinder):
    """Import the named ``stages`` modules from their ``.py`` files, ahead of any
    extension module with the same name."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __package__ or name not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, HERE / f"{name}.py")


STATUS: dict[str, str] = {}


def install() -> None:
    """Decide, once per process, where each compiled stage module is imported from."""
    if STATUS:
        return
    STATUS.update(plan(HERE, COMPILED, os.environ.get(SOURCE_ENV) == "1"))
    from_source = {n for n, s in STATUS.items() if s != "compiled"}
    stale = sorted(n for n, s in STATUS.items() if s not in ("compiled", "not built", "forced"))
    if stale:
        log.warning("stages %s: compiled build is out of date, running the source instead "
                    "(run `make native`)", ", ".join(stale))
    if from_source and len(from_source) < len(COMPILED):
        # mixed: a compiled module would bind the others' compiled classes; run all as source
        from_source = set(COMPILED)
        for n in COMPILED:
            if STATUS[n] == "compiled":
                STATUS[n] = "source (another module's build is out of date)"
    if any(s != "not built" for s in STATUS.values()) and from_source:
        sys.meta_path.insert(0, _FromSource(from_source))


def compiled() -> bool:
    """Whether every module in :data:`COMPILED` runs compiled in this process."""
    install()
    return all(s == "compiled" for s in STATUS.values())
