"""C5: non-saturating activations (ReLU) help, and where they do not (IRNN's dead units).

At init: the decay rate of ||dL/dh_t|| for a tanh RNN, a ReLU RNN with orthogonal recurrence and an
IRNN (ReLU, identity recurrence), and the fraction of dead hidden units (zero for every example at
every step: relu' = 0, so no gradient passes through them). On the task: the adding results of the
tanh RNN and the IRNN (configs/adding.yaml), and the IRNN's dead units on held-out sequences before
and after that training (params restored from the run directory).
"""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from gradflow.experiments.shared import config_run, initial_params, median, settings

from gradflow import cells, gradient_flow, load_trained, unroll
from gradflow.engine.training import EVAL_KEY

CRITERIA = {"min_rate_gain": 0.1, "solved_fraction": 1.0}


def _init_numbers(T, options):
    cell = cells.get("rnn", hidden_size=64, **options)
    params = cell.init(jax.random.key(0), 4)
    xs = jax.random.normal(jax.random.key(1), (T, 32, 4), jnp.float32)
    res = gradient_flow(cell, params, cell.initial_carry(32), xs, lambda ys, h: jnp.sum(h) / 32)
    dead = dead_fraction(cell, params, xs) if options.get("activation") == "relu" else 0.0
    return {"rate": float(res.total_fit.rate), "dead_units": dead}


def dead_fraction(cell, params, xs) -> float:
    """Fraction of hidden units that are 0 at every step for every example of ``xs [T, B, I]``."""
    _, hs = unroll(cell, params, cell.initial_carry(xs.shape[1]), xs)
    return float(np.mean(np.all(np.asarray(hs) == 0.0, axis=(0, 1))))


def _dead_after_training(run_dir) -> dict:
    """``{label: {"before": [...], "after": [...]}}``: dead-unit fractions of the trained ReLU runs."""
    rows = {}
    for t in load_trained(run_dir):
        if t.run["options"].get("activation") != "relu":
            continue
        xs = t.task.sample(jax.random.key(EVAL_KEY), 256).xs
        row = rows.setdefault(t.run["label"], {"before": [], "after": []})
        row["before"].append(dead_fraction(t.model.cell, initial_params(t)["cell"], xs))
        row["after"].append(dead_fraction(t.model.cell, t.params["cell"], xs))
    return rows


def run(out: Path, quick: bool) -> dict:
    T = 50 if quick else 200
    at_init = {
        "tanh RNN": _init_numbers(T, {}),
        "ReLU RNN (orthogonal)": _init_numbers(T, {"activation": "relu"}),
        "IRNN": _init_numbers(T, {"activation": "relu", "recurrent_init": "identity"}),
    }
    run_dir, summary = config_run("adding", out, quick)
    shutil.copy(run_dir / "learning.png", out / "c05.png")
    task = {label: row for label, row in settings(summary).items() if label.startswith(("tanh RNN", "IRNN"))}
    return {
        "at_init": at_init,
        "adding": task,
        "dead_units": _dead_after_training(run_dir),
        "figure": str(out / "c05.png"),
        "runs": [str(run_dir)],
    }


def verdict(numbers: dict, criteria: dict):
    init = numbers["at_init"]
    gain = init["IRNN"]["rate"] - init["tanh RNN"]["rate"]
    irnn = [v for k, v in numbers["adding"].items() if k.startswith("IRNN")]
    solves = all(v["solved"] >= criteria["solved_fraction"] * v["seeds"] for v in irnn)
    measured = (
        "rate at init (ln/step): "
        + ", ".join(
            f"{k} {v['rate']:+.3f} (dead units {100 * v['dead_units']:.0f}%)" for k, v in init.items()
        )
        + "; adding: "
        + ", ".join(
            f"{k} {v['median_final_ratio']:.3f} x baseline ({v['solved']}/{v['seeds']})"
            for k, v in numbers["adding"].items()
        )
        + "; IRNN dead units before -> after training: "
        + ", ".join(
            f"{k} {100 * median(v['before']):.0f}% -> {100 * median(v['after']):.0f}%"
            for k, v in numbers["dead_units"].items()
        )
    )
    if gain >= criteria["min_rate_gain"] and solves:
        return "reproduced", measured
    if gain >= criteria["min_rate_gain"]:
        return (
            "reproduced under conditions",
            measured + " (ReLU keeps the gradient at init; it does not solve the task here)",
        )
    return "not reproduced", measured
