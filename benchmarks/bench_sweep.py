"""A 64-run sweep (8 init scales x 8 seeds, LSTM, T=200, hidden 64) in one compiled call
vs the 64 runs one by one with a fresh compile each. Prints the speed-up (target >= 10x).

    python benchmarks/bench_sweep.py [--cell rnn]
"""

from __future__ import annotations

import argparse
import time

import jax

from gradflow.engine import sweep


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--quick", action="store_true", help="2 x 2 runs, T=20")
    args = parser.parse_args()
    n, steps = (2, 20) if args.quick else (8, 200)
    scales = [0.5 + 0.25 * i for i in range(n)]
    options = [{"hidden_size": 64, "weight_scale": s} for s in scales for _ in range(n)]
    seeds = list(range(n)) * n
    inputs = sweep.Inputs(size=8, steps=steps, batch=16)

    sweep._compiled.cache_clear()
    jax.clear_caches()
    t0 = time.perf_counter()
    _res, n_compiles = sweep.measure_runs(args.cell, options, seeds, inputs)
    together = time.perf_counter() - t0

    t0 = time.perf_counter()
    for opts, seed in zip(options, seeds, strict=True):
        sweep._compiled.cache_clear()
        jax.clear_caches()
        sweep.measure_runs(args.cell, [opts], [seed], inputs)
    one_by_one = time.perf_counter() - t0
    print(
        f"{len(options)}-run sweep ({args.cell}, T={steps}, hidden 64): one compiled call "
        f"{together:.2f} s ({n_compiles} compile) vs one by one with fresh compiles {one_by_one:.2f} s: "
        f"speed-up {one_by_one / together:.1f}x (target >= 10x)"
    )


if __name__ == "__main__":
    main()
