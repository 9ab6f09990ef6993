"""C11: deep (stacked) LSTMs; dropout only on non-recurrent edges (Zaremba et al. 2014).

A 2-layer LSTM stack (hidden 32) on the adding problem, trained with dropout rate ``p`` placed on
different edges, all variants and seeds in one compiled group (the placement and rate are traced
options of one cell, ``gradflow.learn.dropout_lstm_stack``):

* ``none``: no dropout;
* ``upward``: between layers and into the readout's layer input, the non-recurrent edges
  (``cells.stacked(..., dropout=p)``'s placement);
* ``recurrent h``: on ``h_{t-1}``, the recurrent edge, a fresh mask at every step;
* ``variational h``: on ``h_{t-1}`` with one mask per sequence (Gal & Ghahramani 2016), the later
  relaxation of the rule;
* ``recurrent c``: on the cell state ``c_{t-1}``, a fresh mask at every step.

Measured: held-out MSE / baseline (1/6) after training, solved runs, and the decay rate of
``||dL/dh_t||`` at init with dropout active. Evaluation always runs without dropout.
"""

from pathlib import Path

import numpy as np

from gradflow import Model, tasks, training
from gradflow.figures import variant_curves
from gradflow.learn import dropout_lstm_stack

CRITERIA = {"max_upward_ratio": 0.3, "min_memory_ratio": 0.5}
VARIANTS = {  # name: (upward, on h_{t-1}, on c_{t-1}, one mask per sequence) as multiples of the rate
    "none": (0.0, 0.0, 0.0, 0.0),
    "upward": (1.0, 0.0, 0.0, 0.0),
    "recurrent h": (0.0, 1.0, 0.0, 0.0),
    "variational h": (0.0, 1.0, 0.0, 1.0),
    "recurrent c": (0.0, 0.0, 1.0, 0.0),
}
OPTIONS = ("p_up", "p_h", "p_c", "variational")


def run(out: Path, quick: bool) -> dict:
    """Train every placement (one compiled group); writes ``c11.png`` and ``c11_results.npz``."""
    T, hidden, rate = (30, 16, 0.25) if quick else (50, 32, 0.25)
    steps, seeds = (600, [0]) if quick else (800, [0, 1])
    task = tasks.get("adding", steps=T)
    settings = training.Settings(steps=steps, batch=32, eval_every=100, eval_batch=512, optimizer="adam")

    def make_model(o):
        cell = dropout_lstm_stack(hidden, 2, o["p_up"], o["p_h"], o["p_c"], o["variational"])
        return Model(cell, 1, "last", dropout=True)

    runs, labels = [], []
    for name, where in VARIANTS.items():
        for seed in seeds:
            options = {k: w * rate if k != "variational" else w for k, w in zip(OPTIONS, where, strict=True)}
            runs.append({"seed": seed, "learning_rate": 1e-2, "clip": None, "options": options})
            labels.append(name)
    res = training.train_runs(make_model, task, settings, runs, option_names=OPTIONS)
    ratio = res.eval_loss / task.baseline
    rows = {}
    for name in VARIANTS:
        idx = [i for i, lab in enumerate(labels) if lab == name]
        rows[name] = {
            "final_ratio": [float(ratio[i, -1]) for i in idx],
            "median_final_ratio": float(np.median(ratio[idx, -1])),
            "solved": int(sum(res.solved_step[i] >= 0 for i in idx)),
            "seeds": len(idx),
            "rate_at_init": float(np.median(res.flow_rate[idx, 0])),
        }
    np.savez(out / "c11_results.npz", eval_step=res.eval_step, eval_ratio=ratio, labels=np.array(labels))
    title = f"2-layer LSTM, adding T={T}, dropout {rate} on which edge"
    ylabel = "held-out MSE / baseline (1/6)"
    variant_curves(
        out / "c11", res.eval_step, ratio, labels, title=title, ylabel=ylabel, legend_title="dropout on"
    )
    return {
        "T": T,
        "hidden": hidden,
        "layers": 2,
        "dropout": rate,
        "steps": steps,
        "variants": rows,
        "figure": str(out / "c11.png"),
        "runs": [str(out / "c11_results.npz")],
    }


def verdict(numbers: dict, criteria: dict):
    v = numbers["variants"]
    upward_ok = v["upward"]["median_final_ratio"] <= criteria["max_upward_ratio"]
    recurrent = {
        k: r["median_final_ratio"] for k, r in v.items() if k.startswith(("recurrent", "variational"))
    }
    broken = {k: ratio >= criteria["min_memory_ratio"] for k, ratio in recurrent.items()}
    measured = "; ".join(
        f"{k}: {r['median_final_ratio']:.3f} x baseline ({r['solved']}/{r['seeds']} solved, "
        f"rate at init {r['rate_at_init']:+.3f})"
        for k, r in v.items()
    )
    measured = f"2-layer LSTM, adding T={numbers['T']}, dropout {numbers['dropout']}: " + measured
    if upward_ok and all(broken.values()):
        return "reproduced", measured
    if upward_ok and any(broken.values()):
        harmful = ", ".join(k for k, b in broken.items() if b)
        harmless = ", ".join(k for k, b in broken.items() if not b)
        return (
            "reproduced under conditions",
            measured + f" (dropout on {harmful} breaks the memory; on {harmless} it does not)",
        )
    return "not reproduced", measured
