"""The persistent compile cache on the README's main job: cold vs warm fresh processes.

Each repetition runs ``gradflow run compare_cells`` (full size unless --quick) twice in
fresh processes on one new, empty cache directory: cold (the cache is empty) and warm (the second
process finds what the first compiled). Prints medians of the wall time (interpreter start-up and
imports included), of the compile seconds and the cache hits from summary.json, and the warm/cold
ratio. Also times ``gradflow --help`` and ``python -c "import gradflow"`` and lists which heavy
modules ``import gradflow`` pulls in (measured only).

    python benchmarks/bench_compile_cache.py [--quick] [--repeat 3]
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
HEAVY = ("jax", "flax", "optax", "matplotlib", "yaml", "rich")


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def run_once(out: Path, cache: Path, quick: list[str]) -> dict:
    env = {**os.environ, "GRADFLOW_COMPILE_CACHE": "1", "GRADFLOW_COMPILE_CACHE_DIR": str(cache)}
    wall = timed([sys.executable, "-m", "gradflow.cli", "run", str(CONFIG), "-o", str(out), *quick], env)
    summary = json.loads((out / "summary.json").read_text())
    cache_info = summary["compile_cache"]
    return {
        "wall": wall,
        "compile": summary["compile_time_s"],
        "hits": cache_info["hits"],
        "requests": cache_info["requests"],
    }


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the config's quick sizes")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    quick = ["--quick"] if args.quick else []
    cold, warm, helps, imports = [], [], [], []
    env = {**os.environ, "GRADFLOW_COMPILE_CACHE": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            cache = Path(tmp) / f"cache{i}"
            cold.append(run_once(Path(tmp) / f"cold{i}", cache, quick))
            warm.append(run_once(Path(tmp) / f"warm{i}", cache, quick))
            helps.append(timed([sys.executable, "-m", "gradflow.cli", "--help"], env))
            imports.append(timed([sys.executable, "-c", "import gradflow"], env))
        size = sum(p.stat().st_size for p in (Path(tmp) / "cache0").iterdir())
    probe = f"import sys, gradflow; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    cmd = [sys.executable, "-c", probe]
    loaded = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)

    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    name = "compare_cells (quick)" if quick else "compare_cells"
    print(f"gradflow run compare_cells{' --quick' if quick else ''}: {name}, "
          f"median of {args.repeat} fresh-process pairs on an empty cache directory")  # fmt: skip
    for label, rows in (("cold (empty cache)", cold), ("warm (2nd process)", warm)):
        print(f"  {label}: wall {med(rows, 'wall'):6.2f} s, compiling {med(rows, 'compile'):6.2f} s, "
              f"cache hits {med(rows, 'hits'):.0f}/{med(rows, 'requests'):.0f}")  # fmt: skip
    ratios = [w["wall"] / c["wall"] for c, w in zip(cold, warm, strict=True)]
    compile_ratios = [w["compile"] / c["compile"] for c, w in zip(cold, warm, strict=True)]
    print(f"  warm/cold wall time:  {statistics.median(ratios):.2f} (target <= 0.25), "
          f"per pair {', '.join(f'{r:.2f}' for r in ratios)}")  # fmt: skip
    print(f"  warm/cold compiling:  {statistics.median(compile_ratios):.2f}")
    print(f"  cache size after one run: {size / 2**20:.1f} MiB")
    print(f"gradflow --help:          {statistics.median(helps):6.2f} s (median of {args.repeat})")
    print(f'python -c "import gradflow": {statistics.median(imports):6.2f} s (median of {args.repeat})')
    print(f"import gradflow loads: {loaded.stdout.strip() or '(none of ' + ', '.join(HEAVY) + ')'}")


if __name__ == "__main__":
    main()
