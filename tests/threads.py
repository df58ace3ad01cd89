"""Runs a script in a fresh interpreter with OMP_NUM_THREADS set (OpenMP reads it once,
at start-up, so thread counts can only be compared across processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_json(script: str, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    res = subprocess.run(
        [sys.executable, "-c", script, os.path.dirname(os.path.abspath(__file__))],
        env=env, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])
