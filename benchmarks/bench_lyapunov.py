"""Cost of lyapunov_spectrum relative to a plain forward scan, measured side by side in one process.

    python benchmarks/bench_lyapunov.py            # full sizes (~1 min on 2 CPU cores)
    python benchmarks/bench_lyapunov.py --quick    # tiny sizes, checks the script runs

Tanh RNN at init (hidden 64, batch 1, float32), T = 10,000: the full spectrum
(k = 64) by the QR method against ``gradflow.unroll`` of the same cell and
inputs (compile excluded, median of interleaved timings). Expected: the tangent
push is k forward matvecs (one [k, D] x [D, D] matmul) and Householder QR is
O(D k^2) per step, so roughly k times the forward scan's O(D^2) work, less
where the forward scan is overhead-bound. Also printed: ``reortho_every`` = 4
and 16 (QR every m steps: cheaper, but in float32 the lowest exponents are
lost once (lambda_1 - lambda_k) m nears -ln(eps) ~ 16; the max deviation from
m = 1 is printed) and k = 8.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _timing import interleaved_medians

import gradflow
from gradflow.measure.lyapunov import lyapunov_spectrum


def bench(T, H, I, k, reps):
    cell = gradflow.cells.get("rnn", hidden_size=H)
    params = cell.init(jax.random.key(0), I)
    carry0 = cell.initial_carry(1)
    xs = jax.random.normal(jax.random.key(1), (T, 1, I), jnp.float32)

    forward = jax.jit(lambda p: gradflow.unroll(cell, p, carry0, xs)[0])

    def spectrum(k, m):
        return jax.jit(lambda p: lyapunov_spectrum(cell, p, carry0, xs, k=k, reortho_every=m).exponents)

    variants = {"forward": forward, f"k={k}": spectrum(k, 1)}
    variants.update({f"k={k} m=4": spectrum(k, 4), f"k={k} m=16": spectrum(k, 16), "k=8": spectrum(8, 1)})
    fns = {name: (lambda fn=fn: fn(params)) for name, fn in variants.items()}
    t = interleaved_medians(fns, reps)
    exps = {name: np.asarray(fns[name]()) for name in fns if name != "forward"}
    full = exps[f"k={k}"]
    print(f"tanh RNN H={H} B=1 T={T} float32; forward scan {t['forward'] * 1e3:.1f} ms")
    for name in fns:
        if name == "forward":
            continue
        print(
            f"  lyapunov_spectrum {name:<10} {t[name] * 1e3:8.1f} ms  ratio {t[name] / t['forward']:7.1f}x  "
            f"({t[name] / T * 1e6:.1f} us/step; exponents {exps[name][0]:+.4f} .. {exps[name][-1]:+.4f}, "
            f"max |diff| vs m=1: all {np.max(np.abs(exps[name] - full[: exps[name].size])):.1e}, "
            f"top 8 {np.max(np.abs(exps[name][:8] - full[:8])):.1e})"
        )
    return t[f"k={k}"] / t["forward"]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the script runs")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()})")
    if args.quick:
        bench(T=200, H=16, I=4, k=16, reps=3)
    else:
        bench(T=10_000, H=64, I=8, k=64, reps=args.reps)


if __name__ == "__main__":
    main()
