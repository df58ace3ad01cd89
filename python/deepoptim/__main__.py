"""The ``deepoptim`` command: ``deepoptim bench ...``, ``deepoptim demo ...``,
``deepoptim --version`` (and the same with ``python -m deepoptim``)."""

from __future__ import annotations

import sys
from typing import List, Optional

USAGE = """usage: deepoptim <command> [options]
       deepoptim --version

commands:
  bench   benchmark the kernels against NumPy, torch and a bandwidth probe
  demo    run classic optimization experiments and write plots and a report

'deepoptim <command> --help' for the options of a command."""


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from deepoptim import __version__

        print(f"deepoptim {__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "bench":
        from deepoptim.bench import main as bench_main

        return bench_main(rest)
    if cmd == "demo":
        from deepoptim.demo import main as demo_main

        return demo_main(rest)
    print(f"deepoptim: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
