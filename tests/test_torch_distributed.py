"""deepoptim.torch under the engines users already run: DDP, ZeroRedundancyOptimizer (also
with parameters_as_bucket_view) and FSDP2 fully_shard (also with CPUOffloadPolicy). Two
processes, gloo on 127.0.0.1, spawn start method, a free port per test, bounded by a
timeout. Marked ``distributed`` (``-m distributed`` runs only these; CI runs them all)."""

from __future__ import annotations

import json
import socket
import time

import pytest

torch = pytest.importorskip("torch")
import torch.multiprocessing as tmp  # noqa: E402

import _dist_workers  # noqa: E402

pytestmark = pytest.mark.distributed
TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(fn_name: str, tmp_path) -> dict:
    out = tmp_path / f"{fn_name}.json"
    ctx = tmp.start_processes(_dist_workers.entry, args=(fn_name, 2, _free_port(), str(out)), nprocs=2,
                              join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail(f"{fn_name}: the 2-process run did not finish in {TIMEOUT_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    for rank in range(2):  # each rank got through its teardown (tests/_dist_workers.py: _leave)
        assert (tmp_path / f"{fn_name}.json.rank{rank}.done").exists(), f"{fn_name}: rank {rank} did not finish"
    return json.loads(out.read_text())


def test_ddp_ranks_agree_and_equal_one_process_on_the_full_batch(tmp_path):
    r = _run("ddp", tmp_path)
    assert r["ranks_differ"] == 0.0
    assert r["vs_single"] < 1e-5  # float32; gradient averaging rounds differently from one big batch


def test_zero_redundancy_optimizer_follows_the_plain_trajectory(tmp_path):
    r = _run("zero", tmp_path)
    for bucket in (False, True):
        assert r[f"bucket={bucket}"] < 1e-6, r
        nstate, steps, names = r[f"state bucket={bucket}"]
        assert nstate == 4 and steps == [8] and names == ["exp_avg", "exp_avg_sq", "step"]


def test_fsdp2_local_shards_step_like_torch(tmp_path):
    r = _run("fsdp2", tmp_path)
    for offload in (False, True):
        assert r[f"dtensor offload={offload}"] is True
        assert r[f"offload={offload}"] < 1e-6, r


def test_fsdp2_whole_tensor_optimizers_refuse_and_the_guard_sees_every_shard(tmp_path):
    r = _run("fsdp2_whole", tmp_path)
    for name, msg in r["refusals"].items():
        assert msg is not None, f"{name} took sharded parameters"
        assert "sharded across ranks" in msg and name in msg and "needs it whole" in msg, msg
    (moved0, skipped0, moved1, skipped1), other = r["skip"]
    assert other == [moved0, skipped0, moved1, skipped1]  # both ranks saw the same
    assert moved0 == 0.0 and skipped0 == 1.0  # the NaN on rank 1 made rank 0 skip too
    assert moved1 > 0.0 and skipped1 == 1.0
    assert r["ratio_moved"] > 1e-2
    assert r["ratio_vs_single"] < 1e-5, r  # float32; shards sum in another order


def test_zero_guard_decides_alike_on_every_rank_after_reduce_guard_over(tmp_path):
    r = _run("zero_guard", tmp_path)
    # [moved, skipped_steps] per rank. Alone, each rank decides on its own part: rank 1
    # skips, rank 0 steps its part (so the model moves on both).
    (moved0, skipped0), (moved1, skipped1) = r["alone"]
    assert (skipped0, skipped1) == (0.0, 1.0) and moved0 > 0.0 and moved1 > 0.0
    assert r["reduced"] == [[0.0, 1.0], [0.0, 1.0]]


def test_example_trains_under_torchrun():
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           f"--master-port={_free_port()}", str(root / "examples" / "ddp_train.py")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("world size 2")]
    assert line, out.stdout
    assert float(line[0].rsplit("accuracy", 1)[1]) > 0.85
