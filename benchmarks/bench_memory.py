"""Peak memory of gradient_flow with and without remat, per T (issue 17, item 5).

    python benchmarks/bench_memory.py            # T = 1e3 .. 1e5, lstm H=128 B=8 (~3 min on 2 CPU cores)
    python benchmarks/bench_memory.py --quick    # small T: checks the script runs
    python benchmarks/bench_memory.py --no-rss   # compiled memory analysis only (nothing runs)

One row per (T, remat): gradflow's residual estimate (what ``remat=None`` compares with
``REMAT_MEMORY_FRACTION`` of the device's memory), the compiled program's temporaries
(``compiled.memory_analysis().temp_size_in_bytes``) and the peak RSS of a fresh subprocess that
compiles and runs the call once (``resource.getrusage(RUSAGE_SELF).ru_maxrss``; it includes about
0.4-0.5 GB of the Python/JAX process itself). The last column says what ``remat=None`` picks here.

Measured (2-core CPU, 23.5 GiB; MB = 2**20 bytes):

       T  remat  estimate MB   temp MB  peak RSS MB
    1000  False         47.1      47.2          499
    1000   sqrt            -       2.6          530
   10000  False        471.2     501.6          978
   10000   sqrt            -       6.0          460
  100000  False       4711.9    4805.8         5352
  100000   sqrt            -      17.4          557
"""

from __future__ import annotations

import argparse
import json
import resource

import jax
import jax.numpy as jnp
from _timing import fresh_process

import gradflow
from gradflow import cells
from gradflow.measure import remat as remat_mod

B, H, I = 8, 128, 8


def loss_fn(ys, carry):
    return jnp.mean(carry[1] ** 2)


def case(T: int, remat, run: bool) -> dict:
    cell = cells.get("lstm", hidden_size=H)
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float32)
    carry0 = cell.initial_carry(B)
    fn = jax.jit(lambda p, xs: gradflow.gradient_flow(cell, p, carry0, xs, loss_fn, remat=remat))
    compiled = fn.lower(params, xs).compile()
    out = {"temp_mb": compiled.memory_analysis().temp_size_in_bytes / 2**20}
    if run:
        jax.block_until_ready(compiled(params, xs))
        out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def fresh(T: int, remat, run: bool) -> dict:
    return fresh_process(__file__, [T, remat, run])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small T: check that the script runs")
    parser.add_argument("--no-rss", action="store_true", help="memory analysis only: run nothing")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(case(*json.loads(args.child))))
        return
    lengths = (100, 1_000) if args.quick else (1_000, 10_000, 100_000)
    device = remat_mod.device_memory_bytes()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; lstm H={H} B={B} I={I} float32; "
        f"device memory {device / 2**30:.1f} GiB, auto remat above "
        f"{remat_mod.REMAT_MEMORY_FRACTION:.0%} of it"
    )
    print(f"{'T':>8} {'remat':>6} {'estimate MB':>12} {'temp MB':>9} {'peak RSS MB':>12}  remat=None here")
    cell = cells.get("lstm", hidden_size=H)
    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), I))
    for T in lengths:
        xs = jax.ShapeDtypeStruct((T, B, I), jnp.float32)
        need = remat_mod.residual_bytes(cell.step, params, cell.initial_carry(B), xs, False, T)
        auto = "on" if need > remat_mod.REMAT_MEMORY_FRACTION * device else "off"
        for mode in (False, "sqrt"):
            r = fresh(T, mode, not args.no_rss)
            rss = f"{r['rss_mb']:>12.0f}" if "rss_mb" in r else f"{'-':>12}"
            est = f"{need / 2**20:>12.1f}" if mode is False else f"{'-':>12}"
            print(f"{T:>8} {mode!s:>6} {est} {r['temp_mb']:>9.1f} {rss}  {auto}")


if __name__ == "__main__":
    main()
