"""`gradflow run compare_cells`: wall time, and how much of it is XLA compilation.

Prints, medians over --repeat fresh processes: the end-to-end wall time of the
CLI (interpreter start-up and imports included), the in-process run time, the
time jax spent tracing/lowering/compiling (jax.monitoring compile events), and
the compute left over when the same config runs again in the same process
(every shape already compiled). The persistent compile cache is off here
(GRADFLOW_COMPILE_CACHE=0) so every process compiles; bench_compile_cache.py
measures the cache.

    python benchmarks/bench_compare_cells.py [--quick] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "compare_cells.yaml"

IN_PROCESS = """
import json, sys, time
from gradflow import run_config
t0 = time.perf_counter()
first = run_config(sys.argv[1], sys.argv[2], quick=sys.argv[4] == "1")
t1 = time.perf_counter()
again = run_config(sys.argv[1], sys.argv[3], quick=sys.argv[4] == "1")
t2 = time.perf_counter()
print(json.dumps({"first": t1 - t0, "compile": first["compile_time_s"], "compiles": first["compiles"],
                  "again": t2 - t1, "again_compile": again["compile_time_s"]}))
"""


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the config's quick sizes")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    quick = ["--quick"] if args.quick else []
    cli, rows = [], []
    env = {**os.environ, "GRADFLOW_COMPILE_CACHE": "0"}  # every process compiles afresh
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "gradflow.cli", "run", str(CONFIG), "-o", f"{tmp}/cli{i}", *quick],
                check=True,
                capture_output=True,
                env=env,
            )
            cli.append(time.perf_counter() - t0)
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    IN_PROCESS,
                    str(CONFIG),
                    f"{tmp}/a{i}",
                    f"{tmp}/b{i}",
                    "1" if quick else "0",
                ],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = lambda key: statistics.median(r[key] for r in rows)  # noqa: E731
    name = "compare_cells (quick)" if quick else "compare_cells"
    print(f"{name}, {rows[0]['compiles']} compiles, median of {args.repeat}:")
    print(f"  CLI end to end (start-up + imports + run + figures): {statistics.median(cli):6.2f} s")
    print(f"  run_config in process:                               {med('first'):6.2f} s")
    print(f"  of which tracing + lowering + XLA compile:           {med('compile'):6.2f} s "
          f"({med('compile') / med('first'):.0%})")  # fmt: skip
    print(f"  the same config again, every shape compiled:         {med('again'):6.2f} s "
          f"(compile {med('again_compile'):.2f} s)")  # fmt: skip
    print(f"  ratio first run / warm run: {med('first') / med('again'):.1f}x")


if __name__ == "__main__":
    main()
