"""Very long sequences (issue 16, item 5): gradient_flow with remat over T = 1,000,000 steps.

    python benchmarks/bench_long_sequence.py            # T = 10,000 and 1,000,000 (~10 min on 2 CPU cores)
    python benchmarks/bench_long_sequence.py --quick    # T = 1,000 and 20,000: checks the script runs

gradflow's lstm cell, hidden 128, batch 8, inputs 8, float32, loss on the final h, the default outputs
(log-space norms, param grads, per-step shares). Each case runs in a fresh subprocess, which prints
the compiled program's memory analysis (arguments, outputs, temporaries) and its own peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), then the time per step (median of ``--reps`` calls
at the short T, ``--long-reps`` at the long one; compile time excluded). Targets: peak memory
under 4 GB at T = 1e6, time per step within 1.5x of T = 1e4's (with the same remat; the plain
scan at T = 1e4 is shown for reference).

Measured on the shared 2-core CPU (jax 0.10.2; load from other jobs varies, so the ratios move by
~10-20%): T=1e4 no remat 141.7 us/step, peak RSS 985 MB (temp 502 MB); T=1e4 sqrt remat 135.0
us/step, 504 MB (temp 6 MB); T=1e6 sqrt remat 155.3 us/step, peak RSS 1.28 GB (temp 55 MB, the
inputs 244 MB), log10 norms finite down to -80469: 1.15x T=1e4's with remat, 1.10x without.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from _timing import fresh_process

import gradflow
from gradflow import cells

B, H, I = 8, 128, 8


def loss_fn(ys, carry):
    return jnp.mean(carry[1] ** 2)


def child(T: int, remat, reps: int):
    """One case in this (fresh) process: print one JSON line."""
    cell = cells.get("lstm", hidden_size=H)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float32)
    carry0 = cell.initial_carry(B)
    fn = jax.jit(lambda p, xs: gradflow.gradient_flow(cell, p, carry0, xs, loss_fn, remat=remat))
    t0 = time.perf_counter()
    compiled = fn.lower(params, xs).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        res = jax.block_until_ready(compiled(params, xs))
        times.append(time.perf_counter() - t0)
    log10 = np.asarray(res.total_log10_norms)
    out = {
        "T": T,
        "remat": remat,
        "compile_s": compile_s,
        "step_us": float(np.median(times)) / T * 1e6,
        "times": times,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "args_mb": mem.argument_size_in_bytes / 2**20,
        "out_mb": mem.output_size_in_bytes / 2**20,
        "temp_mb": mem.temp_size_in_bytes / 2**20,
        "finite": bool(np.all(np.isfinite(log10))),
        "log10_first_last": [float(log10[0]), float(log10[-1])],
    }
    print(json.dumps(out))


def run_child(T: int, remat, reps: int) -> dict:
    return fresh_process(__file__, [T, remat, reps])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small T: check that the script runs")
    parser.add_argument("--reps", type=int, default=5, help="calls timed at the short T")
    parser.add_argument("--long-reps", type=int, default=1, help="calls timed at the long T")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*json.loads(args.child))
        return
    short, long = (1_000, 20_000) if args.quick else (10_000, 1_000_000)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; lstm H={H} B={B} I={I}, float32")
    rows = [
        run_child(short, False, args.reps),
        run_child(short, "sqrt", args.reps),
        run_child(long, "sqrt", args.long_reps),
    ]
    print(
        f"{'T':>9} {'remat':>6} {'us/step':>8} {'peak RSS MB':>12} {'temp MB':>8} {'args MB':>8} "
        f"{'out MB':>7} {'compile s':>9}  log10 norm first/last"
    )
    for r in rows:
        print(
            f"{r['T']:>9} {r['remat']!s:>6} {r['step_us']:>8.1f} {r['peak_rss_mb']:>12.0f} "
            f"{r['temp_mb']:>8.1f} {r['args_mb']:>8.1f} {r['out_mb']:>7.1f} {r['compile_s']:>9.1f}  "
            f"{r['log10_first_last'][0]:.1f} / {r['log10_first_last'][1]:.1f} (finite: {r['finite']})"
        )
    big = rows[2]
    print(
        f"T={long} with remat: peak RSS {big['peak_rss_mb'] / 1024:.2f} GB (target < 4), time per step "
        f"{big['step_us'] / rows[1]['step_us']:.2f}x T={short}'s with remat (target <= 1.5), "
        f"{big['step_us'] / rows[0]['step_us']:.2f}x T={short}'s without"
    )


if __name__ == "__main__":
    main()
