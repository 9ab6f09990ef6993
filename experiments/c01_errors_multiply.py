"""C1: errors multiply per step: exponential decay below 1, growth above 1.

Linear RNN ``h' = W h`` with ``W = rho Q`` (Q orthogonal): ``||dL/dh_t|| = rho^(T-t) ||dL/dh_T||``
exactly, so the fitted rate must be ``ln rho``. tanh RNN with ``N(0, sigma_w^2/N)`` weights: the
mean-field rate ``0.5 ln chi_1`` (below 0 for sigma_w < 1, above 0 in the chaotic phase).
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gradflow import cells, gradient_flow, plots, theory

CRITERIA = {"linear_tol": 1e-3, "tanh_tol": 0.05, "min_r2": 0.95}


def _rate(name, T, **options):
    cell = cells.get(name, hidden_size=64, **options)
    params = cell.init(jax.random.key(0), 4)
    xs = (0.0 if options.get("activation") == "linear" else 1.0) * jax.random.normal(
        jax.random.key(1), (T, 16, 4), jnp.float32
    )
    res = gradient_flow(cell, params, cell.initial_carry(16), xs, lambda ys, h: jnp.sum(h) / 16)
    return float(res.total_fit.rate), float(res.total_fit.r2), np.asarray(res.total_log10_norms)


def run(out: Path, quick: bool) -> dict:
    T = 60 if quick else 200
    linear, tanh = [], []
    for rho in (0.8, 0.95, 1.05, 1.2):
        rate, r2, log10 = _rate("rnn", T, activation="linear", recurrent_init="orthogonal", weight_scale=rho)
        linear.append({"rho": rho, "rate": rate, "theory": theory.linear_rate(rho), "r2": r2, "log10": log10})
    for sw in (0.5, 1.0, 3.0, 4.0):
        options = {"hidden_size": 64, "recurrent_init": "normal", "weight_scale": sw}
        rate, r2, log10 = _rate("rnn", T, **{k: v for k, v in options.items() if k != "hidden_size"})
        predicted = theory.predicted_rate(
            "rnn", {**cells.options("rnn"), **options}
        )  # mean field at the input-driven fixed point
        tanh.append({"sigma_w": sw, "rate": rate, "theory": predicted, "r2": r2, "log10": log10})
    fig, (a, b) = plots.figure(1, 2, size=(11, 4))
    for i, row in enumerate(linear):
        a.plot(row["log10"], label=f"linear rho={row['rho']}", **plots.style(i))
    for i, row in enumerate(tanh):
        b.plot(row["log10"], label=f"tanh sigma_w={row['sigma_w']}", **plots.style(i))
    for ax in (a, b):
        ax.set_xlabel("t (loss at t = T)")
        ax.set_ylabel("log10 ||dL/dh_t||")
        ax.legend(fontsize=8)
    plots.save_figure(fig, out / "c01", ("png",))
    return {
        "linear": [{k: v for k, v in r.items() if k != "log10"} for r in linear],
        "tanh": [{k: v for k, v in r.items() if k != "log10"} for r in tanh],
        "figure": str(out / "c01.png"),
    }


def verdict(numbers: dict, criteria: dict):
    lin_err = max(abs(r["rate"] - r["theory"]) for r in numbers["linear"])
    tanh_err = max(abs(r["rate"] - r["theory"]) for r in numbers["tanh"])
    signs = all(np.sign(r["rate"]) == np.sign(r["theory"]) for r in numbers["linear"] + numbers["tanh"])
    r2 = min(r["r2"] for r in numbers["linear"] + numbers["tanh"])
    measured = (
        f"linear RNN: max |rate - ln rho| = {lin_err:.1e}; "
        f"tanh RNN: max |rate - mean field| = {tanh_err:.3f}; "
        f"decay below 1 and growth above 1 on every run: {'yes' if signs else 'no'}; min R^2 {r2:.3f}"
    )
    ok = lin_err <= criteria["linear_tol"] and tanh_err <= criteria["tanh_tol"] and signs
    ok = ok and r2 >= criteria["min_r2"]
    return ("reproduced" if ok else "not reproduced"), measured
