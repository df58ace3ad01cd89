"""The reference run: the full suite, with the table, JSON and chart written to
bench/results/ (committed, and quoted in the README as ratios).

    python bench/run.py [--threads 2] [--repeats 11] [--filter REGEX]

It is `deepoptim bench` (deepoptim.bench.main) with the output paths filled in; the
engine and the suite live in the package so that the installed command runs the same
code.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

from deepoptim.bench import main

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results")

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    args = sys.argv[1:] + ["--json", os.path.join(OUT, "results.json"), "--plot", os.path.join(OUT, "results.png")]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = main(args)
    text = buf.getvalue()
    print(text)
    with open(os.path.join(OUT, "results.txt"), "w") as f:
        f.write(f"$ python bench/run.py {' '.join(sys.argv[1:])}\n{text}")
    sys.exit(code)
