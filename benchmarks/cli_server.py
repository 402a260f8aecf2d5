"""``l2v-search query`` through a running server, two checkouts side by side: the wall time of the
whole command in a fresh process, the checkouts called alternately.

Start a server on an index home first; the CLI finds it through its record there:

    git worktree add /tmp/before <commit>
    l2v-search serve --index-dir indexes &
    .venv/bin/python benchmarks/cli_server.py --before /tmp/before --after . --index-dir indexes --runs 9

The process runs from a temporary directory with ``PYTHONPATH`` set to each checkout, so each
imports its own package (the current directory would otherwise come first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="checkout timed first in each round")
    ap.add_argument("--after", type=Path, required=True)
    ap.add_argument("--index-dir", type=Path, required=True)
    ap.add_argument("--query", default="statins and breast cancer")
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    args = ["query", a.query, "--index-dir", str(a.index_dir.resolve()), "--json"]
    checkouts = {"before": a.before.resolve(), "after": a.after.resolve()}
    walls: dict[str, list[float]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(a.runs):
            for name, path in checkouts.items():
                t = time.perf_counter()
                p = subprocess.run([sys.executable, "-c", "from llm2vec_search.cli import main; main()", *args],
                                   env={**os.environ, "PYTHONPATH": str(path)}, capture_output=True, cwd=cwd)
                walls[name].append(time.perf_counter() - t)
                if p.returncode != 0:
                    sys.exit(f"{name}: {p.stderr.decode()[-500:]}")
    for name, ws in walls.items():
        print(f"{name:<7} {checkouts[name]}: median {statistics.median(ws):.3f} s "
              f"(runs {', '.join(f'{w:.2f}' for w in ws)})")
    print(f"after / before: {statistics.median(walls['after']) / statistics.median(walls['before']):.2f}")


if __name__ == "__main__":
    main()
