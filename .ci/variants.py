#!/usr/bin/env python
"""CI's second half: the same sources built the ways a user's machine or a memory checker
would run them, each tested in this checkout's test files.

Why a script that ``.ci/run`` calls and not a pytest that builds: each variant is a full
compile (about a minute on 2 cores) plus a test run of its own; inside the README's test
command that would triple the time a contributor waits for ``pytest``. CI pays it once.

Variants (each a wheel built by ``pip wheel`` with its own build directory, unpacked
into ``build/variants/NAME/site`` and put first on ``sys.path``):

* ``sanitize``: the release dispatch (target clones) under AddressSanitizer and
  UndefinedBehaviorSanitizer, with the test-only hooks. First a live check: a deliberate
  heap overflow and a deliberate signed overflow must each abort the interpreter with
  the sanitizer's report, or this run fails (a sanitizer that reports nothing proves
  nothing). Then the kernel, binding and layer tests and the binding fuzzer.
* ``x86-64``, ``x86-64-v3``, ``x86-64-v4``: the kernels pinned to one instruction set
  (``-DDEEPOPTIM_ISA=...``: the code each target clone gets), for each set this CPU can
  run. A machine only ever executes its best clone, so the others are tested only here.
  Each runs the bitwise kernel-vs-twin tests, and each must produce the same digest (a
  hash of the bits of every optimizer, reduction, norm and dropout result on fixed
  inputs) as the installed release build.

Usage: ``python .ci/variants.py [--only NAME ...] [--keep-going]``.
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
OUT = ROOT / "build" / "variants"

# The tests that exercise kernels and bindings directly; torch, docs, demo and packaging
# tests say nothing about code generation and would only cost time.
PARITY_TESTS = [
    "tests/test_optim_equivalence.py", "tests/test_reduce.py", "tests/test_norm.py",
    "tests/test_dropout.py", "tests/test_layers.py", "tests/test_optim_list_and_threads.py",
    "tests/test_lowp_optim.py", "tests/test_lowp_int8.py", "tests/test_optim_adafactor.py",
]
SANITIZE_TESTS = PARITY_TESTS + [
    "tests/test_optim_errors.py", "tests/test_optim_atomic.py", "tests/test_optim_api.py",
    "tests/test_clip_nn.py", "tests/test_concurrency.py", "tests/test_fork.py",
    "tests/test_fuzz_bindings.py", "tests/test_optim_muon.py",
]

# Removes the editable install's import hook (a developer's checkout) so that the variant
# on PYTHONPATH is what every process, test subprocesses included, imports.
SITECUSTOMIZE = """\
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__]
"""


def cpu_flags() -> set[str]:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def runnable_isas() -> list[str]:
    flags = cpu_flags()
    isas = ["x86-64"]
    v2 = {"sse4_2", "ssse3", "popcnt", "cx16"}
    v3 = v2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "xsave"}
    v4 = v3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    if v3 <= flags:
        isas.append("x86-64-v3")
    if v4 <= flags:
        isas.append("x86-64-v4")
    return isas


def sanitizer_preload() -> str:
    # libasan must come first in the process; libstdc++ with it, or the first C++
    # exception thrown across the preloaded runtime aborts.
    libs = []
    for name in ("libasan.so", "libstdc++.so"):
        path = subprocess.run(["g++", f"-print-file-name={name}"], capture_output=True, text=True,
                              check=True).stdout.strip()
        if not os.path.isabs(path):
            sys.exit(f"variants: g++ does not know where {name} is")
        libs.append(os.path.realpath(path))
    return " ".join(libs)


def build(name: str, defines: dict[str, str]) -> pathlib.Path:
    """Builds a wheel of this checkout with the given CMake cache entries and unpacks it;
    returns the folder to put on sys.path."""
    where = OUT / name
    wheels = where / "wheel"
    site = where / "site"
    shutil.rmtree(wheels, ignore_errors=True)
    shutil.rmtree(site, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels),
           f"-Cbuild-dir={where / 'cmake'}"]
    cmd += [f"-Ccmake.define.{k}={v}" for k, v in defines.items()]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    (wheel,) = wheels.glob("deepoptim-*.whl")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    boot = where / "boot"
    boot.mkdir(parents=True, exist_ok=True)
    (boot / "sitecustomize.py").write_text(SITECUSTOMIZE)
    print(f"variants: built {name} in {time.perf_counter() - t:.0f} s", flush=True)
    return site


def env_for(name: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    where = OUT / name
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(where / "boot"), str(where / "site")])
    env.update(extra or {})
    return env


def python(env: dict[str, str], code: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, text=True, capture_output=True,
                          timeout=1800, **kw)


def check_imported_from(name: str, env: dict[str, str], expect: dict[str, str]) -> None:
    code = ("import deepoptim, json; i = deepoptim.build_info(); "
            "print(json.dumps({'file': deepoptim._core.__file__, **{k: str(v) for k, v in i.items()}}))")
    r = python(env, code)
    if r.returncode != 0:
        sys.exit(f"variants: {name} does not import:\n{r.stdout}{r.stderr}")
    import json
    info = json.loads(r.stdout.strip().splitlines()[-1])
    if not info["file"].startswith(str(OUT / name)):
        sys.exit(f"variants: {name} imported deepoptim from {info['file']}, not from its build")
    for k, v in expect.items():
        if info[k] != v:
            sys.exit(f"variants: {name}: build_info()[{k!r}] is {info[k]!r}, expected {v!r}")
    print(f"variants: {name}: isa={info['isa']} dispatch={info['dispatch']!r} sanitize={info['sanitize']!r}",
          flush=True)


def live_check(env: dict[str, str]) -> None:
    """The sanitizer build must abort on a deliberate fault, with the sanitizer's report."""
    faults = {
        "heap_overflow(16)": "AddressSanitizer: heap-buffer-overflow",
        "signed_overflow(1)": "runtime error: signed integer overflow",
    }
    for call, report in faults.items():
        r = python(env, f"from deepoptim import _core; _core._testing.{call}; print('survived')")
        if r.returncode == 0 or report not in r.stderr:
            sys.exit(f"variants: the sanitizer is not live: _testing.{call} gave exit {r.returncode}, "
                     f"expected a report containing {report!r}:\n{r.stdout}{r.stderr[-3000:]}")
        print(f"variants: live check: _testing.{call} aborted with {report!r}", flush=True)


def pytest(name: str, env: dict[str, str], files: list[str]) -> None:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *files],
                       env=env, cwd=ROOT, timeout=3600)
    if r.returncode != 0:
        sys.exit(f"variants: {name}: tests failed (exit {r.returncode})")
    print(f"variants: {name}: tests passed in {time.perf_counter() - t:.0f} s", flush=True)


DIGEST = r"""
import hashlib, json, numpy as np, deepoptim
from deepoptim import functional as F, optim
parts = {}
def eat(key, *arrays):
    h = hashlib.sha256(parts.get(key, "").encode())
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.dtype).encode()); h.update(a.tobytes())
    parts[key] = h.hexdigest()
def walk(key, x):
    if isinstance(x, np.ndarray): eat(key, x)
    elif isinstance(x, dict): [walk(key, x[k]) for k in sorted(x, key=str)]
    elif isinstance(x, (list, tuple)): [walk(key, v) for v in x]
    elif isinstance(x, (int, float)): eat(key, np.array(x))
for dtype in (np.float32, np.float64):
    d = np.dtype(dtype).name
    for name, cls in sorted(optim.REGISTRY.items()):
        rng = np.random.default_rng(7)
        params = [rng.standard_normal(n).astype(dtype) for n in (1, 33, 4097, 10007)]
        opt = cls(params, **cls.example)
        for _ in range(5):
            opt.step([rng.standard_normal(p.shape).astype(dtype) for p in params])
        eat(f"{name}/{d}", *params)
        walk(f"{name}/{d}", opt.state_dict())
    rng = np.random.default_rng(17)  # Adafactor: row, column and blocked sums, matrices and vectors
    params = [rng.standard_normal(s).astype(dtype) for s in ((7,), (33, 5), (3, 40, 70), (300, 350), (70001,))]
    opt = optim.Adafactor(params, weight_decay=0.1)
    for _ in range(3):
        opt.step([rng.standard_normal(p.shape).astype(dtype) for p in params])
    eat(f"Adafactor/{d}", *params)
    walk(f"Adafactor/{d}", opt.state_dict())
    rng = np.random.default_rng(11)
    g = [rng.standard_normal(n).astype(dtype) for n in (5, 4097, 70001)]
    eat(f"norms/{d}", np.array([F.norms(g, t) for t in (1.0, 2.0, float("inf"))]))
    eat(f"dots/{d}", F.dots(g, [a[::-1].copy() for a in g]))
    F.clip_grad_norm(g, 0.5); eat(f"clip_grad_norm/{d}", *g)
    x = rng.standard_normal((16, 8, 9, 7)).astype(dtype)
    rm, rv = np.zeros(8, dtype), np.ones(8, dtype)
    y, cache = F.batch_norm(x, rm, rv, np.ones(8, dtype), np.zeros(8, dtype))
    eat(f"batch_norm/{d}", y, rm, rv, *[a for a in F.batch_norm_backward(np.ones_like(y), cache) if a is not None])
    y, mask = F.dropout(rng.standard_normal(100003).astype(dtype), 0.3, seed=5, offset=2**33)
    eat(f"dropout/{d}", y, mask)
# Low-precision storage: bfloat16/float16 parameters, bfloat16 and 8-bit state, master
# weights, stochastic rounding (the one-loop bfloat16 Adam, the chunked path, and the
# 8-bit quantizer's AVX-512 and portable loops all land here).
import ml_dtypes
from deepoptim.reference.optim import LOWP_KERNELS
modes = {"bf16": (ml_dtypes.bfloat16, {}), "bf16-state": (ml_dtypes.bfloat16, {"state_dtype": "bfloat16"}),
         "f16": (np.float16, {}), "f32-int8": (np.float32, {"state_dtype": "int8", "int8_min_size": 0}),
         "bf16-master": (ml_dtypes.bfloat16, {"master_weights": True}),
         "bf16-sr": (ml_dtypes.bfloat16, {"stochastic_rounding": True, "seed": 3})}
for name, cls in sorted(optim.REGISTRY.items()):
    if cls.kernel not in LOWP_KERNELS:
        continue
    for mode, (dtype, kw) in modes.items():
        rng = np.random.default_rng(13)
        params = [rng.standard_normal(n).astype(np.float32).astype(dtype) for n in (1, 33, 4097, 10007)]
        opt = cls(params, **cls.example, **kw)
        for _ in range(5):
            opt.step([rng.standard_normal(p.shape).astype(np.float32).astype(dtype) for p in params])
        if hasattr(opt, "eval"):  # Schedule-Free's switch to x
            opt.eval()
        eat(f"{name}/{mode}", *[p.view(np.uint16) for p in params])
        walk(f"{name}/{mode}", {k: [a.view(np.uint16) if a.dtype.itemsize == 2 else a for a in v]
                                if isinstance(v, list) and v and isinstance(v[0], np.ndarray) else v
                                for k, v in opt.state_dict()["state"][0].items()})
print(json.dumps(parts))
"""


def digest(env: dict[str, str] | None) -> dict[str, str]:
    """A hash of the result bits per kernel and dtype, on fixed inputs."""
    import json

    r = python(env if env is not None else dict(os.environ), DIGEST)
    if r.returncode != 0:
        sys.exit(f"variants: the digest failed:\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="variant names to run (default: all this CPU can run)")
    args = ap.parse_args()
    isas = runnable_isas()
    names = ["sanitize", *isas]
    if args.only:
        unknown = set(args.only) - set(names)
        if unknown:
            sys.exit(f"variants: --only: {sorted(unknown)} not among {names}")
        names = [n for n in names if n in args.only]
    release = digest(None)
    print(f"variants: release build digest of {len(release)} results (this CPU can run {', '.join(isas)})",
          flush=True)
    for name in names:
        if name == "sanitize":
            build(name, {"DEEPOPTIM_SANITIZE": "ON", "DEEPOPTIM_TEST_HOOKS": "ON",
                         "CMAKE_BUILD_TYPE": "RelWithDebInfo"})
            env = env_for(name, {
                "LD_PRELOAD": sanitizer_preload(),
                # CPython's allocations are never all freed at exit: leaks say nothing here.
                "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1:symbolize=1",
                "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
                "DEEPOPTIM_FUZZ_EXAMPLES": os.environ.get("DEEPOPTIM_FUZZ_EXAMPLES", "300"),
            })
            check_imported_from(name, env, {"sanitize": "address,undefined"})
            live_check(env)
            files = SANITIZE_TESTS
        else:
            build(name, {"DEEPOPTIM_ISA": name})
            env = env_for(name)
            check_imported_from(name, env, {"isa": name})
            files = PARITY_TESTS
        got = digest(env)
        differ = sorted(k for k in release.keys() | got.keys() if release.get(k) != got.get(k))
        if differ:
            sys.exit(f"variants: {name} gives other bits than the release build for {', '.join(differ)}")
        print(f"variants: {name}: digest equals the release build's", flush=True)
        pytest(name, env, [f for f in files if (ROOT / f).exists()])
    print(f"variants: all green: {', '.join(names)}")


if __name__ == "__main__":
    main()
