"""C5: non-saturating activations (ReLU) help, and where they do not (IRNN's dead units).

At init: the decay rate of ||dL/dh_t|| for a tanh RNN, a ReLU RNN with orthogonal recurrence and an
IRNN (ReLU, identity recurrence), and the fraction of dead hidden units (zero for every example at
every step: relu' = 0, so no gradient passes through them). On the task: the adding results of the
tanh RNN and the IRNN (configs/adding.yaml).
"""

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _runs import by_label, config_run, median

from gradflow import cells, gradient_flow, unroll

CRITERIA = {"min_rate_gain": 0.1, "solved_fraction": 1.0}


def _init_numbers(T, options):
    cell = cells.get("rnn", hidden_size=64, **options)
    params = cell.init(jax.random.key(0), 4)
    xs = jax.random.normal(jax.random.key(1), (T, 32, 4), jnp.float32)
    res = gradient_flow(cell, params, cell.initial_carry(32), xs, lambda ys, h: jnp.sum(h) / 32)
    _, hs = unroll(cell, params, cell.initial_carry(32), xs)
    dead = (
        float(np.mean(np.all(np.asarray(hs) == 0.0, axis=(0, 1))))
        if options.get("activation") == "relu"
        else 0.0
    )
    return {"rate": float(res.total_fit.rate), "dead_units": dead}


def run(out: Path, quick: bool) -> dict:
    T = 50 if quick else 200
    at_init = {
        "tanh RNN": _init_numbers(T, {}),
        "ReLU RNN (orthogonal)": _init_numbers(T, {"activation": "relu"}),
        "IRNN": _init_numbers(T, {"activation": "relu", "recurrent_init": "identity"}),
    }
    run_dir, summary = config_run("adding", out, quick)
    shutil.copy(run_dir / "learning.png", out / "c05.png")
    task = {
        label: {
            "median_final_ratio": median(r["final_ratio"] for r in runs),
            "solved": sum(r["solved"] for r in runs),
            "seeds": len(runs),
        }
        for label, runs in by_label(summary).items()
        if label.startswith(("tanh RNN", "IRNN"))
    }
    return {"at_init": at_init, "adding": task, "figure": str(out / "c05.png"), "runs": [str(run_dir)]}


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
    )
    if gain >= criteria["min_rate_gain"] and solves:
        return "reproduced", measured
    if gain >= criteria["min_rate_gain"]:
        return (
            "reproduced under conditions",
            measured + " (ReLU keeps the gradient at init; it does not solve the task here)",
        )
    return "not reproduced", measured
