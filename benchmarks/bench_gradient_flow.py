"""Speed of gradient_flow, as ratios measured side by side in one process.

    python benchmarks/bench_gradient_flow.py            # full sizes (~5 min on 2 CPU cores)
    python benchmarks/bench_gradient_flow.py --quick    # tiny sizes, checks the script runs

Prints one line per target with the median times and their ratio:
  1. gradient_flow (norms + log10 norms + param grads + per-step shares) vs jax.grad of the
     same loss w.r.t. params, for the lstm, gru and rnn cells at T=1000, H=128 and T=200,
     H=64 (B=32, float32; target <= 1.05), also without shares and, with --before REV,
     the gradient_flow of an earlier commit (default: before issue 17's cheaper taps);
  2. one backward pass per t vs gradient_flow at T=200 (target >= 10x);
  3. compile time at T=10,000 vs T=10 (target <= 1.5);
  4. gradflow LSTM fwd+bwd vs flax.linen.RNN(OptimizedLSTMCell) (target <= 1.1);
  5. remat: peak memory at T=100,000 (H=128, B=8; target < 2 GB) and time overhead.

[1] measured on the 2-core CPU of stop 23, quiet (medians of 21 interleaved calls), flow/grad with
shares, without shares, and before (33a483d~1, the earlier taps):
    lstm T=1000 H=128  0.986  1.062  0.987  |  lstm T=200 H=64  1.001  0.960  1.054
    gru  T=1000 H=128  1.013  1.031  1.050  |  gru  T=200 H=64  1.004  0.963  1.057
    rnn  T=1000 H=128  1.010  0.998  1.051  |  rnn  T=200 H=64  0.997  1.025  1.193
Every ratio within 1.05 with the per-step shares (their parameter-gradient norm sums every leaf's
squares in one buffer since 6ec8357: rnn T=200 H=64 was 1.107-1.18 with one reduction per leaf).
Under load from other processes single ratios move by +-5% and outliers occur (once lstm T=1000
3.5x in one run with 2 other jobs on the 2 cores, 1.07-1.11 when rerun in the same conditions).

On a second CPU (AMD EPYC with AVX-512, the machine of stops 24-25), quiet, medians of 21-31,
six runs over two sessions: lstm T=1000 0.956-1.033, gru T=1000 0.958-1.054, rnn T=1000
1.011-1.058; lstm T=200 H=64 1.016-1.097, gru T=200 H=64 0.993-1.069, rnn T=200 H=64 1.052-1.149.
There a forward and backward step at H=64 takes 25-33 us and the flow's fixed per-step additions
are 5-10% of it: the parameter-gradient norm of the shares about 1 us (bench_step_norm.py), the
carry norm 0.3-0.45 us, the finite flags and the scalar bookkeeping the rest; at H=128 the same
additions are within noise.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from functools import partial

import _before
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from _timing import interleaved_medians

import gradflow
from gradflow import cells


def setup(T, B, H, I, seed=0, name="lstm"):
    cell = cells.get(name, hidden_size=H)
    params = cell.init(jax.random.key(seed), I)
    xs = jax.random.normal(jax.random.key(seed + 1), (T, B, I), jnp.float32)
    return cell, params, cell.initial_carry(B), xs


def loss_fn(ys, carry):
    h = carry[1] if isinstance(carry, tuple) else carry  # LSTM (c, h); GRU, RNN h
    return jnp.mean(h**2)


def bench_vs_grad(sizes, B, I, reps, before):
    """[1] for each cell and (T, H): gradient_flow's default outputs (norms, log10 norms, param
    grads, per-step shares) and without shares vs jax.grad; the earlier taps (``before``) alike."""
    print(f"[1] gradient_flow vs jax.grad, float32, B={B}, I={I} (target <= 1.05; before: {_before.BEFORE})")
    ratios = {}
    for name in ("lstm", "gru", "rnn"):
        for T, H in sizes:
            cell, params, carry0, xs = setup(T, B, H, I, name=name)

            def plain(p, cell=cell, carry0=carry0, xs=xs):
                carry, ys = gradflow.unroll(cell, p, carry0, xs)
                return loss_fn(ys, carry)

            def flow(p, shares=True, fn=gradflow.gradient_flow, cell=cell, carry0=carry0, xs=xs):
                return fn(cell, p, carry0, xs, loss_fn, step_shares=shares)

            jitted = {"grad": jax.jit(jax.grad(plain)), "flow": jax.jit(flow)}
            jitted["no shares"] = jax.jit(partial(flow, shares=False))
            if before is not None:
                jitted["before"] = jax.jit(partial(flow, fn=before.gradient_flow))
            res = jitted["flow"](params)
            t = interleaved_medians({k: partial(f, params) for k, f in jitted.items()}, reps)
            ratios[name, T, H] = t["flow"] / t["grad"]
            was = f", before {t['before'] / t['grad']:.3f}" if before is not None else ""
            print(
                f"    {name:4s} T={T:5d} H={H:3d}: grad {t['grad'] * 1e3:7.1f} ms  flow "
                f"{t['flow'] * 1e3:7.1f} ms  ratio {ratios[name, T, H]:.3f} (no shares "
                f"{t['no shares'] / t['grad']:.3f}{was})  min log10 norm "
                f"{float(jnp.min(res.total_log10_norms)):.1f}"
            )
    return ratios


def bench_vs_per_t(T, B, H, I, reps):
    cell, params, carry0, xs = setup(T, B, H, I)

    def loss_with_eps(eps, t):
        def body(carry, inp):
            s, x = inp
            c, h = carry
            return cell.step(params, (c + (s == t) * eps[0], h + (s == t) * eps[1]), x)

        carry, ys = jax.lax.scan(body, carry0, (jnp.arange(T), xs))
        return loss_fn(ys, carry)

    grad_t = jax.jit(jax.grad(loss_with_eps))
    zeros = jax.tree_util.tree_map(jnp.zeros_like, carry0)

    def per_t():
        return [jnp.linalg.norm(grad_t(zeros, t)[1]) for t in range(T + 1)]

    flow = jax.jit(lambda p: gradflow.gradient_flow(cell, p, carry0, xs, loss_fn))
    t = interleaved_medians({"per_t": per_t, "flow": lambda: flow(params)}, max(3, reps // 3))
    ratio = t["per_t"] / t["flow"]
    print(
        f"[2] one backward pass per t vs gradient_flow, T={T}: "
        f"{t['per_t']:.2f} s vs {t['flow'] * 1e3:.1f} ms  speed-up {ratio:.1f}x  (target >= 10x)"
    )
    return ratio


def compile_seconds(T, B, H, I):
    cell, params, carry0, xs = setup(T, B, H, I)
    fn = jax.jit(lambda p, xs: gradflow.gradient_flow(cell, p, carry0, xs, loss_fn))
    t0 = time.perf_counter()
    fn.lower(params, xs).compile()
    return time.perf_counter() - t0


def bench_compile(B, H, I, long_T, reps):
    short, long = [], []
    for _ in range(reps):
        short.append(compile_seconds(10, B, H, I))
        long.append(compile_seconds(long_T, B, H, I))
    ratio = float(np.median(long) / np.median(short))
    print(
        f"[3] compile time T={long_T} vs T=10: {np.median(long):.2f} s vs {np.median(short):.2f} s  "
        f"ratio {ratio:.2f}  (target <= 1.5)"
    )
    return ratio


def bench_vs_flax(T, B, H, I, reps):
    cell, params, carry0, xs = setup(T, B, H, I)
    xs_bt = jnp.swapaxes(xs, 0, 1)  # flax RNN is batch-major
    rnn = nn.RNN(nn.OptimizedLSTMCell(H))
    variables = rnn.init(jax.random.key(2), xs_bt)

    def flax_loss(v):
        return jnp.mean(rnn.apply(v, xs_bt)[:, -1] ** 2)

    def ours(p):
        _, ys = gradflow.unroll(cell, p, carry0, xs)
        return jnp.mean(ys[-1] ** 2)

    g_flax = jax.jit(jax.grad(flax_loss))
    g_ours = jax.jit(jax.grad(ours))
    t = interleaved_medians({"flax": lambda: g_flax(variables), "ours": lambda: g_ours(params)}, reps)
    ratio = t["ours"] / t["flax"]
    print(
        f"[4] gradflow lstm vs flax.linen.RNN(OptimizedLSTMCell) fwd+bwd T={T} B={B} H={H}: "
        f"{t['ours'] * 1e3:.1f} ms vs {t['flax'] * 1e3:.1f} ms  ratio {ratio:.3f}  (target <= 1.1)"
    )
    return ratio


def _remat_child(T, B, H, I, remat):
    """Run in a fresh process: one gradient_flow call; print wall time and peak RSS."""
    cell, params, carry0, xs = setup(T, B, H, I)
    fn = jax.jit(lambda p: gradflow.gradient_flow(cell, p, carry0, xs, loss_fn, remat=remat))
    jax.block_until_ready(fn(params))
    t0 = time.perf_counter()
    res = jax.block_until_ready(fn(params))
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ok = bool(np.all(np.isfinite(np.asarray(res.total_log10_norms))))
    print(json.dumps({"wall": wall, "peak_mb": peak_mb, "finite": ok}))


def _child(T, B, H, I, remat):
    cmd = [sys.executable, __file__, "--child", json.dumps([T, B, H, I, remat])]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def bench_remat(long_T, mid_T, B, H, I):
    big = _child(long_T, B, H, I, True)
    with_remat = _child(mid_T, B, H, I, True)
    without = _child(mid_T, B, H, I, False)
    overhead = with_remat["wall"] / without["wall"]
    print(
        f"[5] remat T={long_T} H={H} B={B}: peak RSS {big['peak_mb']:.0f} MB (target < 2048), "
        f"{big['wall']:.1f} s, log10 norms finite: {big['finite']}; at T={mid_T}: remat "
        f"{with_remat['wall']:.2f} s / {with_remat['peak_mb']:.0f} MB vs none {without['wall']:.2f} s / "
        f"{without['peak_mb']:.0f} MB, time overhead {overhead:.2f}x"
    )
    return big["peak_mb"], overhead


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the script runs")
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--only", default="12345", help="which benchmarks, e.g. --only 14")
    parser.add_argument("--before", default=_before.BEFORE, help="git revision to compare with ('' : none)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _remat_child(*json.loads(args.child))
        return
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()})")
    q = args.quick
    B, H, I = (4, 16, 8) if q else (32, 128, 32)
    reps = 3 if q else args.reps
    if "1" in args.only:
        before = _before.load(args.before) if args.before else None
        sizes = [(50, 16), (20, 8)] if q else [(1000, 128), (200, 64)]
        bench_vs_grad(sizes, 4 if q else 32, I, reps, before)
    if "2" in args.only:
        bench_vs_per_t(20 if q else 200, B, H, I, reps)
    if "3" in args.only:
        bench_compile(B, H, I, 1000 if q else 10_000, 1 if q else 3)
    if "4" in args.only:
        bench_vs_flax(50 if q else 1000, B, H, I, reps)
    if "5" in args.only:
        bench_remat(2000 if q else 100_000, 500 if q else 10_000, 8, 16 if q else 128, I)


if __name__ == "__main__":
    main()
