"""``make native``: compile the per-tick stage modules with mypyc, in place.

Each module in :data:`stages.native.COMPILED` becomes an extension module (``separate``
groups, so every file lives under ``stages/``; the import shims under ``stages/_compiled/``,
where only :func:`stages.native.install` loads them), and
``stages/.native.json`` records the SHA-256 of each source that was compiled: a module
whose source changes afterwards runs from source until the next build (``stages/native.py``).
The build takes about 15 s on two cores and needs a C compiler and the Python headers.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    os.environ["TICKSTREAM_STAGES_SOURCE"] = "1"  # never let a stale build load here
    from mypyc.build import mypycify
    from setuptools import Distribution  # type: ignore[import-untyped]

    from stages import native

    sources = [f"stages/{name}.py" for name in native.COMPILED]
    digests = {name: native.source_digest(ROOT / f"stages/{name}.py") for name in native.COMPILED}
    (ROOT / "stages" / native.MANIFEST).unlink(missing_ok=True)
    shims = ROOT / "stages" / native.SHIMS
    for name in native.COMPILED:  # new files, not rewritten ones: a running worker maps them
        for pattern in (f"{name}.*.so", f"{name}__mypyc.*.so"):
            for built in (*(ROOT / "stages").glob(pattern), *shims.glob(pattern)):
                built.unlink()
    with tempfile.TemporaryDirectory(prefix="tickstream-native-") as tmp:
        # A bare Distribution: setup() would also read the project's pyproject.toml.
        dist = Distribution({"name": "tickstream-native", "ext_modules": mypycify(
            sources, separate=True, opt_level="3", target_dir=tmp)})
        dist.verbose = False
        build = dist.get_command_obj("build_ext")
        build.inplace, build.build_temp, build.build_lib = True, tmp, tmp  # type: ignore[attr-defined]
        dist.run_command("build_ext")
    # The shims out of the package's own directory: a plain import finds the sources
    # (stages/native.py); NAME__mypyc, the code the shims load, stays next to them.
    shims.mkdir(exist_ok=True)
    for name in native.COMPILED:
        for shim in (ROOT / "stages").glob(f"{name}.*.so"):
            shim.rename(shims / shim.name)
    status = native.plan(ROOT / "stages", native.COMPILED, force_source=False)
    missing = [n for n, s in status.items() if s == "not built"]
    if missing:
        print(f"build_native: no extension module for {', '.join(missing)}", file=sys.stderr)
        return 1
    (ROOT / "stages" / native.MANIFEST).write_text(
        json.dumps({"sources": digests, "python": sys.version.split()[0]}, indent=1) + "\n")
    print(f"build_native: compiled {', '.join(sources)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
