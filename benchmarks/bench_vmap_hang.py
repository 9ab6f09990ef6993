"""Reproducer of the XLA:CPU hang of the vmapped sweep call, and whether an XLA flag cures it.

Each try is a fresh process that runs the vmapped sweep (``batching("vmap")``) of the shipped
lstm_forget_bias config's measurement (its --quick sizes unless --full) and must finish within
``--timeout`` seconds; a try that does not is a hang (the process is killed). Tries alternate between
the default XLA flags and ``--xla_cpu_multi_thread_eigen=false``, and optionally run beside a busy
neighbour process (``--load``: the hang was seen under load). Prints hangs per setting and the median
time of the tries that finished, and the same for ``lax.map`` (the CPU default) for reference.

    python benchmarks/bench_vmap_hang.py --tries 20 [--load] [--full]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CODE = """
import time, jax
from gradflow.engine import sweep
opts = [{{"hidden_size": {h}, "forget_bias": b}} for b in (0.0, 1.0, 3.0, 5.0)] * {seeds}
seeds = list(range(len(opts)))
with sweep.batching("{mode}"):
    t0 = time.perf_counter()
    res, n = sweep.measure_runs("lstm", opts, seeds, sweep.Inputs(steps={t}, batch={b}))
    jax.block_until_ready(res.total_log10_norms)
print(time.perf_counter() - t0)
"""

BUSY = "import numpy as np\nx = np.random.rand(600, 600)\nwhile True:\n    x = np.tanh(x @ x.T / 600)\n"


def one_try(mode: str, flags: str, timeout: float, sizes: dict) -> float | None:
    env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "GRADFLOW_COMPILE_CACHE": "0"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", CODE.format(mode=mode, **sizes)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        raise SystemExit(f"a try failed: {proc.stderr.strip().splitlines()[-1]}")
    return float(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tries", type=int, default=20, help="tries per setting")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a try counts as hung")
    parser.add_argument("--load", action="store_true", help="run a busy neighbour process meanwhile")
    parser.add_argument(
        "--full", action="store_true", help="the config's full sizes (default: its --quick sizes)"
    )
    args = parser.parse_args()
    sizes = dict(h=128, seeds=3, t=200, b=32) if args.full else dict(h=32, seeds=2, t=50, b=8)
    settings = [
        ("vmap", ""),
        ("vmap", "--xla_cpu_multi_thread_eigen=false"),
        ("map", ""),
    ]
    busy = subprocess.Popen([sys.executable, "-c", BUSY]) if args.load else None
    results = {s: [] for s in settings}
    try:
        for _ in range(args.tries):
            for mode, flags in settings:
                results[(mode, flags)].append(one_try(mode, flags, args.timeout, sizes))
    finally:
        if busy is not None:
            busy.kill()
    print(
        f"lstm forget-bias sweep {sizes}, {args.tries} tries each, "
        f"timeout {args.timeout:.0f} s, load: {args.load}"
    )
    for (mode, flags), times in results.items():
        done = [t for t in times if t is not None]
        median = f"{statistics.median(done):.2f} s" if done else "-"
        print(
            f"  {mode:4s} {flags or '(default flags)':38s} "
            f"hangs {len(times) - len(done)}/{len(times)}, median {median}"
        )


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
