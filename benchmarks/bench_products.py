"""Cost of the Jacobian-product norms ||dh_T/dh_t|| for every t, relative to one backward pass.

    python benchmarks/bench_products.py            # hidden 128, T = 500 (~5 min on 2 CPU cores)
    python benchmarks/bench_products.py --no-eigh  # without the slow eigen-solve reference (~1 min)
    python benchmarks/bench_products.py --no-eigh --reps 5 --repeat 3  # the figures below (~2 min)
    python benchmarks/bench_products.py --quick    # tiny sizes, checks the script runs

Prints one line per batch size: median wall times (interleaved, after warm-up) of
  * jax.grad of a loss through the same lax.scan (tanh RNN, float32), w.r.t. the params;
  * product_norms(method='eigh') (before): D backward rows per step plus a [D, D] symmetric
    eigen-solve per step and example (spectral norm), all t in one reverse scan;
  * product_norms(method='exact') (after, the default): the same D rows, the spectral norm by
    power iteration warm-started from step t+1 (tol 1e-3, relative error of the norm);
  * product_norms(method='estimate', probes=16);
  * product_norms(method='lowrank'): the D rows near T, narrowed in tiers (64, 32, 16, 8, 4 rows)
    once the rows outside a smaller span carry <= tol^2 of the squared norm (a lower bound, see
    its docstring for the deficit bound);
and their ratios to the backward pass, the max |ln-norm difference| exact and lowrank vs eigh, the
rows lowrank carried (summed over t), and the power iteration's fallbacks to the eigen-solve. The
floor of 'exact' is the D-row update (a [D, D] x [D, D] matmul per step, ~D backward passes of
work), also timed ('rows only': tol = 0.99). --repeat N repeats the whole measurement and prints the
median and range of the ratios.

Measured (2-core shared CPU, jax 0.10.2; the backward pass is overhead-bound and its time swings with
the load from 2.1 to 10.8 ms at B = 1, so the ratios do too). Before: eigh ~1000-3900x (B = 1) and
1100-1800x (B = 4); exact 5.5-12.5x and 6.8-11.2x, of which rows only 4.1-10.8x and 6.0-9.9x;
max |ln-norm difference| exact - eigh 9e-5; no fallbacks. After (lowrank, 5920 rows of 64000 at
B = 1, 6080 at B = 4; --reps 5 --repeat 3, interleaved): lowrank median 4.5x (4.3-5.1x) at B = 1 and
3.4x (3.1-4.1x) at B = 4, exact 9.0x (9.0-9.4x) and 12.0x (11.2-12.0x) in the same runs; single
runs 3.6-4.1x and 3.1-3.5x. Once, under heavy load from another process (--repeat 4), lowrank took
132 ms: 52-63x (B = 1) and 18-37x (B = 4) while exact was 13-17x and 7-10x; the cause is not
identified (a suspect: the LAPACK QR at its ~125 rank checks, or the cold-start eigen-solve).
Accuracy (float64 and float32, tanh g = 0.5-2 and LSTM, D = 128, B = 2): lowrank <= 6e-4 below eigh
in ln ||.||_2, <= 1.1e-4 in ln ||.||_F; no fallbacks.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _timing import interleaved_medians

import gradflow
from gradflow import cells
from gradflow.measure.products import product_norms


def bench(T, B, H, I, reps, probes, eigh):
    cell = cells.get("rnn", hidden_size=H, activation="tanh")
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float32)
    carry0 = cell.initial_carry(B)

    def loss(p):
        carry, _ = gradflow.unroll(cell, p, carry0, xs)
        return jnp.mean(carry**2)

    def norms(**kwargs):
        return jax.jit(lambda p: product_norms(cell, p, carry0, xs, **kwargs))

    key = jax.random.key(2)
    grad = jax.jit(jax.grad(loss))
    fns = {"grad": grad, "exact": norms(), "rows only": norms(tol=0.99), "lowrank": norms(method="lowrank")}
    fns["estimate"] = norms(method="estimate", probes=probes, key=key)
    if eigh:
        fns["eigh"] = norms(method="eigh")
    t = interleaved_medians({name: (lambda fn=fn: fn(params)) for name, fn in fns.items()}, reps)
    res, low = fns["exact"](params), fns["lowrank"](params)
    line = f"tanh rnn H={H} T={T} B={B}: backward {t['grad'] * 1e3:.1f} ms"
    for name in fns:
        if name != "grad":
            line += f"; {name} {t[name] * 1e3:.1f} ms ({t[name] / t['grad']:.1f}x)"
    if eigh:
        ref = fns["eigh"](params)
        for name, r in (("exact", res), ("lowrank", low)):
            diff = np.max(np.abs(np.asarray(r.log_spectral - ref.log_spectral)))
            line += f"; max |ln ||.||_2 {name} - eigh| {diff:.1e}"
        diff = np.max(np.abs(np.asarray(low.log_frobenius - ref.log_frobenius)))
        line += f"; max |ln ||.||_F lowrank - eigh| {diff:.1e}"
    line += f"; lowrank rows {int(np.sum(np.asarray(low.rows[:-1])))} of {H * T}"
    line += f"; fallbacks {int(res.fallbacks)}, lowrank {int(low.fallbacks)}"
    print(f"{line}; ln ||dh_T/dh_0||_2 = {float(res.log_spectral[0, 0]):.1f}", flush=True)
    return t["exact"] / t["grad"], t["lowrank"] / t["grad"]


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the script runs")
    parser.add_argument("--reps", type=int, default=3, help="interleaved calls per median")
    parser.add_argument("--repeat", type=int, default=1, help="medians per batch size (summarized)")
    parser.add_argument("--probes", type=int, default=16)
    parser.add_argument("--no-eigh", action="store_true", help="skip the eigen-solve reference (slow)")
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()})")
    q = args.quick
    T, H, I = (50, 16, 8) if q else (500, 128, 32)
    ratios = {1: [], 4: []}
    for _ in range(args.repeat):
        for B in (1, 4):
            ratios[B].append(bench(T, B, H, I, 3 if q else args.reps, args.probes, not args.no_eigh))
    for B, rs in ratios.items():
        for i, name in enumerate(("exact", "lowrank")):
            r = [x[i] for x in rs]
            print(
                f"B={B} {name}: median {np.median(r):.1f}x a backward pass, range {min(r):.1f}-{max(r):.1f}x"
            )


if __name__ == "__main__":
    main()
