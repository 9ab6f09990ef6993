"""C8: gates regulate the flow: LSTM without its forget, input or output gate, on the gradient flow
at init (decay rate of ||dL/dh_t||, forget bias 1) and on the adding problem (configs/lstm_variants)."""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
from gradflow.experiments.shared import config_run, settings

from gradflow import cells, gradient_flow

CRITERIA = {"min_rate_change": 0.05, "min_steps_ratio": 2.0}
ABLATIONS = {
    "vanilla": {},
    "NFG": {"forget_gate": False},
    "NIG": {"input_gate": False},
    "NOG": {"output_gate": False},
}


def _rate(T, options):
    cell = cells.get("lstm", hidden_size=64, **options)
    params = cell.init(jax.random.key(0), 4)
    xs = jax.random.normal(jax.random.key(1), (T, 32, 4), jnp.float32)
    res = gradient_flow(cell, params, cell.initial_carry(32), xs, lambda ys, carry: jnp.sum(ys[-1]) / 32)
    return float(res.total_fit.rate)


def run(out: Path, quick: bool) -> dict:
    T = 50 if quick else 200
    at_init = {name: _rate(T, options) for name, options in ABLATIONS.items()}
    run_dir, summary = config_run("lstm_variants", out, quick)
    shutil.copy(run_dir / "learning.png", out / "c08.png")
    task = {label: row for label, row in settings(summary).items() if label in ABLATIONS}
    return {"rate_at_init": at_init, "adding": task, "figure": str(out / "c08.png"), "runs": [str(run_dir)]}


def _steps_ratio(a, b) -> float:
    """Ratio (>= 1) of two settings' median solve steps (0 when either never solved)."""
    x, y = a["median_solved_step"], b["median_solved_step"]
    if x is None or y is None or x != x or y != y:  # None or NaN
        return 0.0
    return max(x, y) / min(x, y)


def verdict(numbers: dict, criteria: dict):
    rates, task = numbers["rate_at_init"], numbers["adding"]
    base = rates["vanilla"]
    changed = {}
    for name in ("NFG", "NIG", "NOG"):
        flow = abs(rates[name] - base) >= criteria["min_rate_change"]
        t, v = task.get(name), task.get("vanilla")
        result = (
            t is not None
            and v is not None
            and (t["solved"] != v["solved"] or _steps_ratio(t, v) >= criteria["min_steps_ratio"])
        )
        changed[name] = flow or result
    measured = (
        "rate at init (ln/step): "
        + ", ".join(f"{k} {v:+.3f}" for k, v in rates.items())
        + "; adding: "
        + ", ".join(f"{k} solved {v['solved']}/{v['seeds']}" for k, v in task.items())
    )
    if all(changed.values()):
        return "reproduced", measured
    if any(changed.values()):
        return (
            "reproduced under conditions",
            measured + f" (no effect measured: {[k for k, c in changed.items() if not c]})",
        )
    return "not reproduced", measured
