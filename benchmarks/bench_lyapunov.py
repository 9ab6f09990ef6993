"""lyapunov_spectrum against the peer lyapax (0.3.0), measured side by side in one process, float64.

    pip install -r benchmarks/requirements.txt     # lyapax, for this script only
    python benchmarks/bench_lyapunov.py            # full sizes (~1-2 min on 2 CPU cores)
    python benchmarks/bench_lyapunov.py --quick    # tiny sizes, checks the script runs

The full spectrum of ``h' = tanh(g W h)`` (N = k = 64, T = 10,000, g = 2, W_ij ~ N(0, 1/N),
batch 1, float64, frame = identity for every method, compile excluded, median of interleaved
timings): gradflow's default (``reortho_every='auto'``), gradflow with QR at every step
(``reortho_every=1``, the previous default) and ``lyapax.lyapunov_spectrum`` (its default
``renorm_every=1``; started from the identity frame through its ``resume`` checkpoint), plus
lyapax with a hand-picked ``renorm_every=4`` for reference. Accuracy: the max |exponent
difference| against an independent reference, a scan over the explicit Jacobians
``diag(1 - h'^2) g W`` with QR at every step. The map is chaotic, so the reference must see the
same trajectory bit for bit: every method computes ``W @ h`` the same way (a different
summation order moves the T = 10,000 estimates by ~0.015; that line is printed too).

Measured (2-core shared CPU, jax 0.10.2, medians of 5-9; the load moves the ratios by ~10%): lyapax
98-188 ms per 1000 steps; gradflow 'auto' (m = 3, 3355 QRs) 2.0-2.3x faster than lyapax, max |diff|
5e-9; gradflow m = 1 0.9-1.04x, 7e-14; lyapax renorm_every=4 2.8x, 9e-7.
"""

from __future__ import annotations

import argparse

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _timing import interleaved_medians  # noqa: E402

from gradflow.measure.lyapunov import lyapunov_spectrum  # noqa: E402


def reference(w, h0, g, steps, rows=False):
    """Exponents by QR at every step over explicit Jacobians, QR order (identity frame); ``rows``:
    the trajectory computed as ``h @ W^T`` (another summation order)."""

    def body(state, _):
        h, q = state
        h = jnp.tanh(g * (h @ w.T if rows else w @ h))
        q, r = jnp.linalg.qr(((1 - h**2) * g)[:, None] * w @ q)
        return (h, q), jnp.log(jnp.abs(jnp.diagonal(r)))

    return jax.lax.scan(body, (h0, jnp.eye(w.shape[0], dtype=w.dtype)), None, length=steps)[1].mean(0)


def bench(n, steps, g, reps):
    import lyapax  # benchmarks/requirements.txt

    w = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)) / np.sqrt(n))
    h0 = jnp.asarray(np.random.default_rng(1).normal(size=(n,)))

    def step(w, h, x):  # [1, N] carry, the same ``W @ h`` as the others
        h = jnp.tanh(g * (w @ h[0]))[None]
        return h, h

    def fmap(h):
        return jnp.tanh(g * (w @ h))

    def gradflow_fn(m):
        return jax.jit(
            lambda w: lyapunov_spectrum(
                step, w, h0[None], None, length=steps, reortho_every=m, init="identity"
            )
        )

    def lyapax_fn(m):
        start = lyapax.core.LyapunovCheckpoint(
            state=h0, Y=jnp.eye(n), cum_log_growth=jnp.zeros(n), elapsed_time=jnp.zeros(()), dt=1.0
        )
        return jax.jit(lambda: lyapax.lyapunov_spectrum(fmap, h0, 1.0, steps, renorm_every=m, resume=start))

    auto, every, peer = gradflow_fn("auto"), gradflow_fn(1), lyapax_fn(1)
    fns = {"gradflow auto": lambda: auto(w), "gradflow m=1": lambda: every(w), "lyapax": peer}
    if steps % 4 == 0:
        fns["lyapax m=4"] = lyapax_fn(4)
    t = interleaved_medians({name: (lambda fn=fn: _exponents(fn())) for name, fn in fns.items()}, reps)
    ref = np.sort(np.asarray(jax.jit(reference, static_argnums=(2, 3, 4))(w, h0, g, steps)))[::-1]
    other = np.asarray(jax.jit(reference, static_argnums=(2, 3, 4))(w, h0, g, steps, True))

    print(f"tanh(g W h) N = k = {n} T = {steps} g = {g} float64, batch 1; times median of {reps}")
    for name, fn in fns.items():
        res = fn()
        diff = np.max(np.abs(np.sort(np.asarray(_exponents(res)))[::-1] - ref))
        extra = (
            f"  QRs {int(res.reorthos)} (mean m {steps / int(res.reorthos):.2f})"
            if name.startswith("g")
            else ""
        )
        print(
            f"  {name:<14} {t[name] * 1e3:8.1f} ms  ({t[name] / steps * 1e6:5.1f} us/step)  "
            f"lyapax / this {t['lyapax'] / t[name]:5.2f}x  max |diff| vs reference {diff:.1e}{extra}"
        )
    print(
        f"  exponents {ref[0]:+.4f} .. {ref[-1]:+.4f}; the reference on a trajectory with another summation "
        f"order differs by {np.max(np.abs(np.sort(other)[::-1] - ref)):.1e} (the statistical error of T)"
    )
    return t["lyapax"] / t["gradflow auto"]


def _exponents(res):
    return res.exponents


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the script runs")
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()})")
    if args.quick:
        bench(n=16, steps=400, g=2.0, reps=3)
    else:
        bench(n=64, steps=10_000, g=2.0, reps=args.reps)


if __name__ == "__main__":
    main()
