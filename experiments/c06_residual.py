"""C6: residual shortcuts keep the gradient through depth, and 100+ residual layers train.

Slide A8: "Can preserve gradient flow throughout the entire depth of the network"; "Possible to
train more than 100 layers by simply stacking residual blocks".

Gradient per layer, at init. Tanh stacks of width D from ``gradflow.cells``: ``residual``
(pre-activation block ``x' = x + alpha (tanh(N(x)) W + b)``, depth-scaled ``alpha = 1/sqrt(L)``)
and ``plain`` (``x' = tanh(N(x)) W + b``), ``W ~ N(0, sigma_w^2 / D)``, ``b = 0``. Loss
``<x_L, r>`` with a fixed random ``r``; measured: ``log10 ||dL/dx_0|| - log10 ||dL/dx_L||`` (input
gradient relative to the output gradient, median over seeds) for L in {10, 50, 100, 200}, from
``gradflow.measure.stack_gradients`` (``gradient_flow`` in log space, so 1e-30 does not underflow;
one compiled program per (stack kind, norm), vmapped over (sigma_w, L, seed)). Variants:

- residual, and residual + batch norm;
- plain at the same init ``sigma_w = 1``: with ``sigma_b = 0`` the *critical* tanh init (mean field
  ``chi_1 = sigma_w^2 = 1``), so its gradient decays only polynomially;
- plain at ``sigma_w^2 = 0.5`` (ordered phase: exponential vanishing, the textbook failure);
- plain + batch norm (He et al. 2016's plain nets had BN and, they say, healthy gradients), and
  plain + layer norm, per example: what BN does to a plain tanh stack (gradient *explosion*,
  ``chi > 1`` once pre-activations are renormalized) is no artefact of batch statistics.

Training: the shipped config ``configs/residual_training.yaml`` (``gradflow.train`` of 128-layer
residual, plain and plain + BN stacks between a fixed input projection and a learned readout)
regresses ``tasks.get("teacher")`` with full-batch Adam. Score: final training MSE / var(y) (1 =
the mean; ``gradflow.learn.least_squares_ratio`` for scale). "Trains" = below
``CRITERIA["train_ratio"]``. Mean field: ``gradflow.theory.stack_log10_ratio``.

Verdict: reproduced if every residual variant keeps ``|log10 ratio| <= keep_decades`` at
L = 200 and trains, while no plain variant (same init, ordered init, BN, LN) keeps the gradient or
trains; "reproduced under conditions" when the residual does both and some plain variant also
does one (named in the measured text); otherwise not reproduced.
"""

import json
from pathlib import Path

import jax
import numpy as np
from gradflow.experiments.shared import config_run

from gradflow import load_config, tasks, theory
from gradflow.figures import loss_ratio_curves, residual_vs_plain
from gradflow.learn import least_squares_ratio
from gradflow.measure import input_output_log10_ratios, stack_gradients

CRITERIA = {"keep_decades": 1.0, "train_ratio": 0.1}
DEPTHS = (10, 50, 100, 200)
VARIANTS = {  # label: (stack, norm, sigma_w)
    "residual": ("residual", None, 1.0),
    "residual + BN": ("residual", "batch", 1.0),
    "plain": ("plain", None, 1.0),
    "plain, sigma_w^2 = 0.5": ("plain", None, 0.5**0.5),
    "plain + BN": ("plain", "batch", 1.0),
    "plain + LN": ("plain", "layer", 1.0),
}
SIZES = {True: {"width": 32, "batch": 32, "seeds": 3}, False: {"width": 128, "batch": 64, "seeds": 4}}


def training_run(out: Path, quick: bool):
    """The shipped ``residual_training`` run: ``({label: MSE / var(y) [seeds, steps + 1]}`` (entry
    ``steps``: the final full-set loss), the linear least squares ratio, the run's sizes)."""
    run_dir, _ = config_run("residual_training", out, quick)
    cfg = load_config(run_dir / "config.yaml")
    examples, stack = cfg.task.options["examples"], cfg.cells[0].options
    linear = least_squares_ratio(tasks.get(cfg.task.name, **cfg.task.options), examples)
    sizes = {"train_width": stack["width"], "examples": examples, "steps": cfg.train.steps,
             "train_seeds": len(cfg.sweep.seeds), "train_depth": stack["depth"],
             "learning_rate": cfg.train.learning_rate, "run": str(run_dir)}  # fmt: skip
    return loss_ratio_curves(run_dir), linear, sizes


def _mean_field(label: str, depths=DEPTHS):
    """Mean-field ratios per L of a variant without norm (None with a norm)."""
    kind, norm, sigma_w = VARIANTS[label]
    return None if norm else [theory.stack_log10_ratio(kind, int(d), sigma_w) for d in depths]


def run(out: Path, quick: bool) -> dict:
    """Gradient per layer and training; writes ``c06.png`` and ``c06_data/``."""
    out = Path(out)
    with jax.enable_x64(False):  # float32 throughout, also where tests turn x64 on globally
        size = SIZES[bool(quick)]
        layers = stack_gradients(size["width"], size["batch"], size["seeds"], DEPTHS, VARIANTS)
        curves, linear, train_sizes = training_run(out, quick)
        ratios = input_output_log10_ratios(layers, DEPTHS)
        numbers = {
            "settings": {**size, **train_sizes, "depths": list(DEPTHS)},
            "gradient": {
                label: {
                    "L": list(DEPTHS),
                    "log10_ratio": [float(v) for v in np.median(r, axis=1)],
                    "log10_ratio_seeds": r.tolist(),
                    "mean_field": _mean_field(label),
                }
                for label, r in ratios.items()
            },
            "training": {"models": {}, "linear_least_squares_ratio": linear},
        }
        for label, c in curves.items():
            numbers["training"]["models"][label] = {
                "initial_ratio_median": float(np.median(c[:, 0])),
                "final_ratio_seeds": c[:, -1].tolist(),
                "median_final_ratio": float(np.median(c[:, -1])),
            }
        data = out / "c06_data"
        data.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(data / "layers.npz", **{k.replace(" ", "_"): v for k, v in layers.items()})
        np.savez_compressed(data / "training.npz", **{k.replace(" ", "_"): v for k, v in curves.items()})
        (data / "numbers.json").write_text(json.dumps(numbers, indent=1))
        figure = dict(mean_field=_mean_field, sizes=numbers["settings"], **CRITERIA)
        residual_vs_plain(out / "c06", layers, ratios, DEPTHS, curves, linear, **figure)
        return {**numbers, "figure": str(out / "c06.png"), "runs": [str(data), train_sizes["run"]]}


def verdict(numbers: dict, criteria: dict):
    """Residual keeps and trains, plain does neither: reproduced; some plain does too: under conditions."""
    grad = numbers["gradient"]
    models = numbers["training"]["models"]
    keeps = {label: abs(g["log10_ratio"][-1]) <= criteria["keep_decades"] for label, g in grad.items()}
    trains = {label: m["median_final_ratio"] <= criteria["train_ratio"] for label, m in models.items()}
    residual = [lb for lb in grad if lb.startswith("residual")]
    plain = [lb for lb in grad if lb.startswith("plain")]
    residual_ok = all(keeps[lb] for lb in residual) and all(trains[lb] for lb in models if lb in residual)
    plain_keeps = [lb for lb in plain if keeps[lb]]
    plain_trains = [lb for lb in plain if trains.get(lb, False)]
    depths = "/".join(str(d) for d in grad[residual[0]]["L"])
    size = numbers["settings"]
    measured = (
        f"log10(||dL/dx_0|| / ||dL/dx_L||) at L = {depths} (width {size['width']}, median of "
        f"{size['seeds']} seeds): "
        + "; ".join(f"{lb} " + "/".join(f"{v:+.2f}" for v in g["log10_ratio"]) for lb, g in grad.items())
        + f". {size['train_depth']} layers, width {size['train_width']}, MSE/var(y) after "
        f"{size['steps']} Adam steps (median of {size['train_seeds']} seeds): "
        + ", ".join(f"{lb} {m['median_final_ratio']:.3g}" for lb, m in models.items())
        + f" (linear least squares {numbers['training']['linear_least_squares_ratio']:.2f})"
    )
    if residual_ok and not plain_keeps and not plain_trains:
        return "reproduced", measured
    if residual_ok:
        also = [f"{lb} keeps the gradient within {10 ** criteria['keep_decades']:.3g}x" for lb in plain_keeps]
        also += [f"{lb} trains" for lb in plain_trains]
        return "reproduced under conditions", measured + " (but " + "; ".join(also) + ")"
    return "not reproduced", measured
