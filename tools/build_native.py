"""``make native``: compile the per-tick stage modules with mypyc, in place.

Each module in :data:`stages.native.COMPILED` becomes an extension module (``separate``
groups, so every file lives under ``stages/``; the import shims under ``stages/_compiled/``,
where only :func:`stages.native.install` loads them), and
``stages/.native.json`` records the SHA-256 of each source that was compiled: a module
whose source changes afterwards runs from source until the next build (``stages/native.py``).
The build takes about 15 s on two cores and needs a C compiler and the Python headers.

Without them (the compiler the build would use, ``CC`` or Python's own, cannot build a
trivial extension module) it removes any earlier build, prints one warning line and exits
0 without writing the build record: the stages then run from source, ``stages/native.py``
finds no compiled module, and ``make`` tries again next time. Any other build failure
(mypyc, a type error) still fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = "#include <Python.h>\nint tickstream_probe(void) { return Py_IsInitialized(); }\n"


def compiler_problem() -> str | None:
    """Why the C compiler that ``build_ext`` would use cannot build an extension module
    (compile a file including ``Python.h``, link it as a shared object), or None when it
    can. The commands are the build's own (``CC``, ``CFLAGS``, ``LDSHARED``... applied by
    distutils), run here so that their output can be reduced to one line."""
    # setuptools' distutils: the one build_ext runs on
    from setuptools._distutils.ccompiler import new_compiler
    from setuptools._distutils.sysconfig import customize_compiler

    compiler = new_compiler()
    customize_compiler(compiler)
    compile_cmd = getattr(compiler, "compiler_so", None)
    link_cmd = getattr(compiler, "linker_so", None)
    if not compile_cmd or not link_cmd:
        return None  # not a Unix-style compiler: let the build itself find out
    include = sysconfig.get_paths()["include"]
    with tempfile.TemporaryDirectory(prefix="tickstream-cc-") as tmp:
        source, obj, lib = (Path(tmp, f"probe{ext}") for ext in (".c", ".o", ".so"))
        source.write_text(PROBE)
        for step, argv in (
                ("compile", [*compile_cmd, f"-I{include}", "-c", str(source), "-o", str(obj)]),
                ("link", [*link_cmd, str(obj), "-o", str(lib)])):
            try:
                done = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                                      stdin=subprocess.DEVNULL)
            except (OSError, subprocess.SubprocessError) as exc:
                return f"cannot run {argv[0]!r}: {getattr(exc, 'strerror', None) or exc}"
            if done.returncode != 0:
                lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines()
                         if ln.strip() and not ln.startswith("collect2:")]
                detail = next((ln for ln in lines if "error" in ln.lower()),
                              lines[0] if lines else f"exit status {done.returncode}")
                return f"{argv[0]!r} cannot {step} a test file: {detail}"
    return None


def remove_build(stages: Path, names: tuple[str, ...], manifest: str, shims: str) -> None:
    """Delete the build record and every compiled module of ``names`` (new files are
    written afterwards, never rewritten ones: a running worker maps them)."""
    (stages / manifest).unlink(missing_ok=True)
    for name in names:
        for pattern in (f"{name}.*.so", f"{name}__mypyc.*.so"):
            for built in (*stages.glob(pattern), *(stages / shims).glob(pattern)):
                built.unlink()


def main() -> int:
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    os.environ["TICKSTREAM_STAGES_SOURCE"] = "1"  # never let a stale build load here
    from stages import native

    remove_build(ROOT / "stages", native.COMPILED, native.MANIFEST, native.SHIMS)
    problem = compiler_problem()
    if problem is not None:
        print(f"build_native: WARNING: no usable C compiler ({problem}), so the stages run "
              "from source (same results, slower); install gcc and the Python headers "
              "(python3-dev) or set CC, then run `make native`", file=sys.stderr)
        return 0
    from mypyc.build import mypycify
    from setuptools import Distribution  # type: ignore[import-untyped, attr-defined, unused-ignore]

    sources = [f"stages/{name}.py" for name in native.COMPILED]
    digests = {name: native.source_digest(ROOT / f"stages/{name}.py") for name in native.COMPILED}
    shims = ROOT / "stages" / native.SHIMS
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
