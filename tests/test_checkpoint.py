"""deepoptim.save / deepoptim.load: exact round trips, bit-identical resume, a writer
killed midway, and every flipped byte and every truncation refused."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import deepoptim
from deepoptim import checkpoint, layers, nn
from deepoptim.optim import LAMB, SGD, Adam, AdamW


def assert_identical(a, b, where="state"):
    """Same structure, same types, same bits (arrays: dtype, shape, order, bytes)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        assert a.flags.f_contiguous == b.flags.f_contiguous or a.ndim < 2, f"{where}: memory order differs"
        assert a.tobytes() == b.tobytes(), f"{where}: array bits differ"
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"{where}: {a!r} != {b!r}"
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a.hex() == b.hex() or (a != a and b != b), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


EVERYTHING = {
    "none": None,
    "bools": [True, False, np.bool_(True)],
    "ints": (0, -1, 2**62, 2**63 - 1, -(2**63), 2**100, np.int64(-7), np.uint64(2**64 - 1), np.int8(-3)),
    "floats": [0.1, -0.0, float("inf"), float("-inf"), float("nan"), 5e-324, 1.0, np.float64(1 / 3),
               np.float32(0.1), np.float16(2.5)],
    "int_vs_float": [1, 1.0],
    "strings": ["", "lr", "日本語 ✓", "null", '{"t": "none"}'],
    "arrays": {
        "f32": np.arange(12, dtype=np.float32).reshape(3, 4),
        "f64_0d": np.array(3.25),
        "i64_0d": np.array(2**62),
        "empty": np.zeros((0, 5), np.float32),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "bool": np.array([True, False]),
        "u8": np.arange(256, dtype=np.uint8),
        "f16": np.array([1.5, -0.0, np.inf], np.float16),
        "c64": np.array([1 + 2j], np.complex64),
        "strided_view": np.arange(10.0)[::3],
    },
    "nested": {"tuple_in_list": [(1, 2.0), (None, "x")], "empty": {}, "empty_list": [], "empty_tuple": ()},
    "betas": (0.9, 0.999),
    "lr": None,
}


def test_exact_round_trip_of_every_supported_type(tmp_path):
    path = tmp_path / "all.ckpt"
    deepoptim.save(path, EVERYTHING)
    loaded = deepoptim.load(path)
    expected = dict(EVERYTHING)
    expected["arrays"] = dict(EVERYTHING["arrays"], strided_view=np.ascontiguousarray(EVERYTHING["arrays"]["strided_view"]))
    assert_identical(expected, loaded)
    assert type(loaded["ints"][2]) is int and loaded["ints"][2] == 2**62
    assert loaded["arrays"]["f64_0d"].shape == () and loaded["arrays"]["f64_0d"].dtype == np.float64


def test_the_file_is_an_npz_that_loads_without_pickle(tmp_path):
    path = tmp_path / "a.ckpt"
    deepoptim.save(path, {"w": np.ones(3, np.float32)})
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {"__meta__", "a0"}
        assert npz["a0"].tolist() == [1.0, 1.0, 1.0]
        assert b'"format":"deepoptim.checkpoint"' in npz["__meta__"].tobytes()


def test_save_and_load_are_exported():
    assert deepoptim.save is checkpoint.save and deepoptim.load is checkpoint.load
    assert {"save", "load"} <= set(deepoptim.__all__)


# ---- objects with state_dict ----------------------------------------------------------

def _params(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((7, 5)).astype(dtype), "b": rng.standard_normal(5).astype(dtype)}


def _grads(params, step):
    return {k: (np.sin(v * (step + 1)) + 0.1 * step).astype(v.dtype) for k, v in params.items()}


OPTIMIZERS = {
    "adam_amsgrad": lambda p: Adam(p, lr=1e-2, amsgrad=True, weight_decay=1e-3),
    "sgd_momentum": lambda p: SGD(p, lr=1e-2, momentum=0.9, nesterov=True),
    "lamb": lambda p: LAMB(p, lr=1e-2, weight_decay=1e-2),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_round_trip_and_bit_identical_resume(tmp_path, name):
    make = OPTIMIZERS[name]
    params = _params()
    opt = make(params)
    for step in range(3):
        opt.step(_grads(params, step))
    path = tmp_path / f"{name}.ckpt"
    deepoptim.save(path, opt)
    assert_identical(opt.state_dict(), deepoptim.load(path))
    deepoptim.save(tmp_path / "params.ckpt", params)

    # Resume: a fresh optimizer over copies of the saved parameters.
    params2 = deepoptim.load(tmp_path / "params.ckpt")
    opt2 = make(params2)
    assert deepoptim.load(path, into=opt2) is opt2
    assert_identical(opt.state_dict(), opt2.state_dict())
    for step in range(3, 10):
        opt.step(_grads(params, step))
        opt2.step(_grads(params2, step))
    assert_identical(params, params2)
    assert_identical(opt.state_dict(), opt2.state_dict())


def test_batchnorm_round_trip(tmp_path):
    bn = layers.BatchNorm(4, momentum=None)
    rng = np.random.default_rng(1)
    for _ in range(3):
        bn.forward(rng.standard_normal((8, 4, 3)).astype(np.float32))
    deepoptim.save(tmp_path / "bn.ckpt", bn)
    state = deepoptim.load(tmp_path / "bn.ckpt")
    assert_identical(bn.state_dict(), state)
    assert state["num_batches_tracked"].shape == () and state["num_batches_tracked"].dtype == np.int64
    bn2 = deepoptim.load(tmp_path / "bn.ckpt", into=layers.BatchNorm(4, momentum=None))
    assert_identical(bn.state_dict(), bn2.state_dict())


def _model(seed):
    return nn.Sequential(nn.Linear(6, 16, seed=seed), nn.BatchNorm(16), nn.ReLU(), nn.Dropout(0.2, seed=seed + 1),
                         nn.Linear(16, 3, seed=seed + 2))


def _train(model, opt, X, y, steps, first):
    for step in range(first, first + steps):
        xb, yb = X[step % 4::4], y[step % 4::4]
        _, dlogits = nn.softmax_cross_entropy(model(xb), yb)
        model.backward(dlogits)
        opt.step(model.gradients())


def test_training_run_resumes_bit_identically_from_one_file(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 6)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = _model(seed=10)
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=1e-2, amsgrad=True)
    _train(model, opt, X, y, steps=5, first=0)
    path = tmp_path / "run.ckpt"
    deepoptim.save(path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 5})
    assert_identical(model.state_dict(), deepoptim.load(path)["model"])

    other = _model(seed=99)  # different initial weights, overwritten by the checkpoint
    other_opt = AdamW(other.parameters(), lr=1e-2, weight_decay=1e-2, amsgrad=True)
    state = deepoptim.load(path)
    other.load_state_dict(state["model"])
    other_opt.load_state_dict(state["optimizer"])
    assert state["epoch"] == 5
    _train(model, opt, X, y, steps=7, first=5)
    _train(other, other_opt, X, y, steps=7, first=5)
    assert_identical(model.state_dict(), other.state_dict())
    assert_identical(opt.state_dict(), other_opt.state_dict())


def test_sequential_round_trip_into(tmp_path):
    model = _model(seed=3)
    model(np.ones((4, 6), np.float32))  # moves BatchNorm's statistics and Dropout's offset
    deepoptim.save(tmp_path / "m.ckpt", model)
    fresh = _model(seed=50)
    assert deepoptim.load(tmp_path / "m.ckpt", into=fresh) is fresh
    assert_identical(model.state_dict(), fresh.state_dict())


# ---- refusals -------------------------------------------------------------------------

def _small_checkpoint(tmp_path):
    params = _params(dtype=np.float64)
    opt = Adam(params, lr=1e-2, amsgrad=True)
    opt.step(_grads(params, 0))
    path = tmp_path / "small.ckpt"
    deepoptim.save(path, opt)
    return path, opt, params


def test_every_flipped_byte_is_refused(tmp_path):
    path, _, _ = _small_checkpoint(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "flipped.ckpt"
    for i in range(len(data)):
        bad.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:])
        with pytest.raises(ValueError, match=f"^{bad}: "):
            deepoptim.load(bad)
    bad.write_bytes(data)
    deepoptim.load(bad)  # the unflipped copy loads


def test_every_truncation_is_refused(tmp_path):
    path, _, _ = _small_checkpoint(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "truncated.ckpt"
    for n in range(len(data)):
        bad.write_bytes(data[:n])
        with pytest.raises(ValueError, match=f"^{bad}: "):
            deepoptim.load(bad)
    bad.write_bytes(data + b"\0")  # a byte appended is refused too
    with pytest.raises(ValueError, match="not a deepoptim checkpoint"):
        deepoptim.load(bad)


def test_refusal_leaves_the_optimizer_unchanged(tmp_path):
    path, opt, params = _small_checkpoint(tmp_path)
    opt.step(_grads(params, 1))  # now differs from the file
    before = opt.state_dict()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        deepoptim.load(path, into=opt)
    assert_identical(before, opt.state_dict())
    # A valid checkpoint for other shapes: load_state_dict refuses, nothing changes.
    other = tmp_path / "other.ckpt"
    deepoptim.save(other, Adam({"w": np.zeros((2, 2)), "b": np.zeros(5)}, lr=1e-2, amsgrad=True))
    with pytest.raises(ValueError):
        deepoptim.load(other, into=opt)
    assert_identical(before, opt.state_dict())


@pytest.mark.parametrize("kind", ["npz", "pickle", "text", "empty", "zip_without_checksum"])
def test_other_formats_are_refused_with_the_path(tmp_path, kind):
    path = tmp_path / f"file.{kind}"
    if kind == "npz":
        with open(path, "wb") as f:
            np.savez(f, a=np.ones(3))
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"a": 1}))
    elif kind == "text":
        path.write_text("hello\n" * 100)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        import zipfile

        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("__meta__.npy", b"x")
            zf.comment = b"deepoptim-sha256:" + b"0" * 64
    with pytest.raises(ValueError, match=f"^{path}: "):
        deepoptim.load(path)


def test_missing_file_and_bad_into():
    with pytest.raises(FileNotFoundError):
        deepoptim.load("/nonexistent/dir/x.ckpt")
    with pytest.raises(TypeError, match="into"):
        deepoptim.load("/nonexistent/dir/x.ckpt", into=object())


@pytest.mark.parametrize("value,where", [
    ({1: np.ones(2)}, "state"),
    ({"a": [{"b": {1, 2}}]}, r"state\['a'\]\[0\]\['b'\]"),
    ({"a": np.array([object()], dtype=object)}, r"state\['a'\]"),
    ({"a": b"bytes"}, r"state\['a'\]"),
    ({"a": np.ma.masked_array([1.0])}, r"state\['a'\]"),
])
def test_unsupported_values_are_refused_before_writing(tmp_path, value, where):
    path = tmp_path / "keep.ckpt"
    deepoptim.save(path, {"good": 1})
    with pytest.raises(TypeError, match=where):
        deepoptim.save(path, value)
    assert deepoptim.load(path) == {"good": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.ckpt"]  # no temporary file left


def test_save_leaves_no_temporary_file_and_replaces_atomically(tmp_path):
    path = tmp_path / "x.ckpt"
    deepoptim.save(path, {"v": 1})
    inode = path.stat().st_ino
    deepoptim.save(str(path), {"v": 2})
    assert deepoptim.load(path) == {"v": 2}
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert [p.name for p in tmp_path.iterdir()] == ["x.ckpt"]


# ---- a writer killed midway ------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    import deepoptim

    path, n = sys.argv[1], int(sys.argv[2])
    i = 0
    while True:
        print(f"start {i}", flush=True)
        deepoptim.save(path, {"i": i, "big": np.full(n, i, np.float32), "tail": np.arange(1000) + i})
        print(f"done {i}", flush=True)
        i += 1
""")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_writer_killed_midway_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "run.ckpt"
    n = 8_000_000  # 32 MB per checkpoint
    deepoptim.save(path, {"i": -1, "big": np.full(n, -1, np.float32), "tail": np.arange(1000) - 1})
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = dict(os.environ, SKBUILD_EDITABLE_VERBOSE="0")
    killed_mid_write = 0
    for trial, delay in enumerate([0.0, 0.01, 0.03, 0.06]):
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(n)], stdout=subprocess.PIPE, text=True,
                                env=env)
        try:
            # Let it complete one checkpoint, then kill it at some point in the next.
            assert proc.stdout.readline().startswith("start 0")
            assert proc.stdout.readline().startswith("done 0")
            assert proc.stdout.readline().startswith("start 1")
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        temporaries = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        killed_mid_write += bool(temporaries)
        state = deepoptim.load(path)  # whatever is on disk is a complete checkpoint
        i = state["i"]
        assert i in (0, 1)
        assert state["big"].shape == (n,) and bool(np.all(state["big"] == i))
        assert np.array_equal(state["tail"], np.arange(1000) + i)
        for p in temporaries:
            p.unlink()
    assert killed_mid_write >= 1, "no kill landed while a checkpoint was being written"


def test_the_module_docstring_example_runs():
    import doctest

    result = doctest.testmod(checkpoint)
    assert result.attempted > 0 and result.failed == 0
