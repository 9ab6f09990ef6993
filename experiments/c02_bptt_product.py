"""C2: the BPTT gradient is a product of local Jacobians with tanh' in (0, 1].

tanh RNN (float64): the explicit product ``J_{T-1} ... J_0`` of the local Jacobians
(``gradflow.local_jacobians``) against autodiff (``jax.jacrev`` of ``h_T`` w.r.t. ``h_0``), per
example; every ``||J_t||_2`` against the Pascanu et al. bound ``||W||_2 * gamma`` (gamma = 1 for
tanh), and the diagonal factor tanh' in (0, 1].
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gradflow import cells, local_jacobians, pascanu_bounds, plots

CRITERIA = {"product_rtol": 1e-8, "bound_slack": 1e-9}


def run(out: Path, quick: bool) -> dict:
    with jax.enable_x64(True):  # float64 here only: x64 on changes float32 training results elsewhere
        return _run(out, quick)


def _run(out: Path, quick: bool) -> dict:
    T, N, B = (20, 16, 4) if quick else (60, 32, 8)
    rows = []
    series = {}
    for sw in (0.8, 1.5, 3.0):
        cell = cells.get("rnn", hidden_size=N, recurrent_init="normal", weight_scale=sw, dtype="float64")
        params = cell.init(jax.random.key(0), 3)
        xs = jax.random.normal(jax.random.key(1), (T, B, 3), jnp.float64)
        h0 = 0.1 * jax.random.normal(jax.random.key(2), (B, N), jnp.float64)
        loc = local_jacobians(cell, params, h0, xs)
        prod = loc.jacobians[0]
        for t in range(1, T):
            prod = jnp.einsum("bij,bjk->bik", loc.jacobians[t], prod)

        def h_T(h, x_seq, params=params, cell=cell):
            h, _ = jax.lax.scan(lambda c, x: cell.step(params, c, x), h, x_seq)
            return h

        one = jax.jacrev(lambda h, x_seq: h_T(h[None], x_seq[:, None])[0])
        auto = jax.vmap(one, in_axes=(0, 1))(h0, xs)  # per example: d h_T / d h_0
        # loc.jacobians[t] maps h_t to h_{t+1} as d h_{t+1} / d h_t (rows: outputs)
        rel = float(jnp.max(jnp.abs(prod - auto)) / jnp.max(jnp.abs(auto)))
        bound = float(pascanu_bounds("rnn", params, activation="tanh"))
        norms = np.asarray(loc.spectral_norms)
        # tanh' = 1 - h^2 at every step and unit
        _, hs = jax.lax.scan(lambda c, x, p=params, f=cell.step: (f(p, c, x)[0],) * 2, h0, xs)
        deriv = 1.0 - np.asarray(hs) ** 2
        rows.append(
            {
                "sigma_w": sw,
                "product_vs_autodiff": rel,
                "max_local_norm": float(norms.max()),
                "bound": bound,
                "tanh_prime_min": float(deriv.min()),
                "tanh_prime_max": float(deriv.max()),
            }
        )
        series[sw] = (norms, bound)
    fig, ax = plots.figure(1, 1, size=(6.4, 4.0))
    for i, (sw, (norms, bound)) in enumerate(series.items()):
        st = plots.style(i)
        ax.plot(
            np.median(norms, axis=1),
            color=st["color"],
            linestyle=st["linestyle"],
            label=f"sigma_w={sw}: median ||J_t||",
        )
        ax.axhline(
            bound, color=st["color"], linestyle="--", linewidth=1, label=f"bound ||W|| gamma = {bound:.2f}"
        )
    ax.set_xlabel("t")
    ax.set_ylabel("||J_t||_2")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    plots.save_figure(fig, out / "c02", ("png",))
    return {"runs_by_sigma_w": rows, "figure": str(out / "c02.png")}


def verdict(numbers: dict, criteria: dict):
    rows = numbers["runs_by_sigma_w"]
    worst = max(r["product_vs_autodiff"] for r in rows)
    over = max(r["max_local_norm"] - r["bound"] for r in rows)
    lo, hi = min(r["tanh_prime_min"] for r in rows), max(r["tanh_prime_max"] for r in rows)
    measured = (
        f"explicit product vs autodiff: max relative difference {worst:.1e}; "
        f"max ||J_t|| - bound {over:+.3g}; "
        f"tanh' in [{lo:.3g}, {hi:.3g}]"
    )
    ok = worst <= criteria["product_rtol"] and over <= criteria["bound_slack"] and lo > 0 and hi <= 1
    return ("reproduced" if ok else "not reproduced"), measured
