"""Cost of the Jacobian-product norms ||dh_T/dh_t|| for every t, relative to one backward pass.

    python benchmarks/bench_products.py            # hidden 128, T = 500 (~1 min on 2 CPU cores)
    python benchmarks/bench_products.py --quick    # tiny sizes, checks the script runs

Prints one line per batch size: median wall times (interleaved, after warm-up) of
  * jax.grad of a loss through the same lax.scan (tanh RNN, float32), w.r.t. the params;
  * gradflow.measure.jacobians.product_norms(method='exact'): D backward rows per step plus a
    [D, D] symmetric eigenproblem per step (spectral norm), all t in one reverse scan;
  * product_norms(method='estimate', probes=16);
and their ratios to the backward pass. The exact cost is expected near D = 128 backward passes
(each row is a backward pass) plus the eigenproblems.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from _timing import interleaved_medians

import gradflow
from gradflow import cells
from gradflow.measure.jacobians import product_norms


def bench(T, B, H, I, reps, probes):
    cell = cells.get("rnn", hidden_size=H, activation="tanh")
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float32)
    carry0 = cell.initial_carry(B)

    def loss(p):
        carry, _ = gradflow.unroll(cell, p, carry0, xs)
        return jnp.mean(carry**2)

    grad = jax.jit(jax.grad(loss))
    exact = jax.jit(lambda p: product_norms(cell, p, carry0, xs))
    key = jax.random.key(2)
    estimate = jax.jit(
        lambda p: product_norms(cell, p, carry0, xs, method="estimate", probes=probes, key=key)
    )
    t = interleaved_medians(
        {"grad": lambda: grad(params), "exact": lambda: exact(params), "estimate": lambda: estimate(params)},
        reps,
    )
    res = exact(params)
    print(
        f"tanh rnn H={H} T={T} B={B}: backward {t['grad'] * 1e3:.1f} ms, exact product norms "
        f"{t['exact'] * 1e3:.1f} ms (ratio {t['exact'] / t['grad']:.1f}), estimate k={probes} "
        f"{t['estimate'] * 1e3:.1f} ms (ratio {t['estimate'] / t['grad']:.1f}); "
        f"ln ||dh_T/dh_0||_2 = {float(res.log_spectral[0, 0]):.1f}"
    )
    return t["exact"] / t["grad"]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the script runs")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--probes", type=int, default=16)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()})")
    q = args.quick
    T, H, I = (50, 16, 8) if q else (500, 128, 32)
    for B in (1, 4):
        bench(T, B, H, I, 3 if q else args.reps, args.probes)


if __name__ == "__main__":
    main()
