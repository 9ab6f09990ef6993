"""C6: residual shortcuts keep the gradient through depth, and 100+ residual layers train.

Slide A8: "Can preserve gradient flow throughout the entire depth of the network"; "Possible to
train more than 100 layers by simply stacking residual blocks".

Gradient per layer, at init. Tanh stacks of width D from ``gradflow.cells``: ``residual``
(pre-activation block ``x' = x + alpha (tanh(N(x)) W + b)``, depth-scaled ``alpha = 1/sqrt(L)``)
and ``plain`` (``x' = tanh(N(x)) W + b``), ``W ~ N(0, sigma_w^2 / D)``, ``b = 0``. Loss
``<x_L, r>`` with a fixed random ``r``; measured: ``log10 ||dL/dx_0|| - log10 ||dL/dx_L||`` (input
gradient relative to the output gradient, median over seeds) for L in {10, 50, 100, 200}, from
``gradflow.gradient_flow`` (log space throughout, so 1e-30 does not underflow). Variants:

- residual, and residual + batch norm;
- plain at the same init ``sigma_w = 1``; with ``sigma_b = 0`` this is the *critical* tanh init
  (mean field ``chi_1 = sigma_w^2 = 1``), so its gradient decays only polynomially;
- plain at ``sigma_w^2 = 0.5`` (ordered phase: exponential vanishing, the textbook failure);
- plain + batch norm: He et al. 2016's plain nets had BN and, they say, healthy gradients;
- plain + layer norm: a per-example normalization, to show that what BN does to a plain tanh
  stack (gradient *explosion*, ``chi > 1`` once every pre-activation is renormalized to unit
  variance) is not an artefact of coupling examples through batch statistics.

Training: the shipped config ``configs/residual_training.yaml`` (``gradflow.train`` of
``gradflow.Model`` around the residual, plain and plain + BN stacks of 128 layers: a fixed random
projection of 8 inputs into width D, the stack, a learned linear readout) regresses
``tasks.get("teacher")`` (a random one-hidden-layer tanh teacher, targets standardized) with
full-batch Adam. Score: final training MSE / var(y) (1 = predicting the mean; linear least squares
is reported for scale). "Trains" = below ``CRITERIA["train_ratio"]``. Mean field:
``gradflow.theory.stack_log10_ratio``.

Verdict: reproduced if every residual variant keeps ``|log10 ratio| <= keep_decades`` at
L = 200 and trains, while no plain variant (same init, ordered init, BN, LN) keeps the gradient or
trains; "reproduced under conditions" when the residual does both and some plain variant also
does one (named in the measured text); otherwise not reproduced.

Compile budget (2 CPU cores): one ``gradient_flow`` per (stack kind, norm), over L_max = 200
layers, vmapped over (sigma_w, L, seed). The loss reads the layer-L output ``ys[L-1] = x_L``, so
layers above L get no gradient and entries 0..L are those of the depth-L network; the residual
branch scale ``alpha = 1/sqrt(L)`` is folded into the weights (an ``alpha = 1`` cell with
``W * alpha``: with ``b = 0`` at init the same function as ``cells.get("residual", depth=L)``;
``tests/test_claim_c06.py`` checks it against ``jax.jacrev`` of the genuine depth-L stack).
Random draws use JAX's ``rbg`` PRNG (threefry's compile costs ~1 s per shape on this CPU).
"""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from gradflow.experiments.shared import config_run

from gradflow import cells, gradient_flow, load_config, plots, tasks, theory

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


def _key(seed: int):
    """A PRNG key of the ``rbg`` implementation (fast to compile on CPU)."""
    return jax.random.key(seed, impl="rbg")


def padded_cell(kind: str, width: int, depth: int, norm: str | None):
    """The stack used for the gradient measurement: ``depth`` layers, residual with ``alpha = 1``
    (the branch scale goes into the weights, see ``padded_params``)."""
    if kind == "residual":
        return cells.get("residual", width=width, depth=depth, norm=norm, alpha=1.0)
    return cells.get("plain", width=width, depth=depth, norm=norm)


def base_params(width: int, depth: int, key):
    """One draw of the stack weights, shared by every variant (common random numbers: the residual
    and plain stacks differ by their architecture, not by the draw): ``cells.get("plain")`` init at
    ``weight_scale = 1``, i.e. ``w ~ N(0, 1/D)``, ``b = 0``."""
    return cells.get("plain", width=width, depth=depth).init(key, width)


def padded_params(cell, kind: str, sigma_w, depth, base: dict):
    """``cell``'s params on the shared draw ``base``: ``w * sigma_w`` (residual:
    ``w * sigma_w / sqrt(depth)``, the depth-scaled branch of a depth-``depth`` stack), ``b`` from
    ``base``, norm scale/shift from ``cell.init`` (ones/zeros)."""
    params = dict(cell.init(_key(0), base["w"].shape[-1]))
    scale = sigma_w / jnp.sqrt(depth) if kind == "residual" else sigma_w
    return {**params, "w": base["w"] * scale, "b": base["b"]}


def _pick_loss(ys, final_carry, lp):
    """``<x_L, r>``: ``ys[l - 1] = x_l``, ``lp["pick"]`` is one-hot on layer L."""
    del final_carry
    return jnp.sum(jnp.tensordot(lp["pick"], ys, axes=1) * lp["r"])


def layer_log10(cell, params, x0, r, depth):
    """``log10 ||dL/dx_l||``, l = 0..L_max, for the loss ``<x_depth, r>`` on a stack of L_max >= depth
    layers (``depth`` may be traced). Entry ``depth`` is ``log10 ||r||`` (``dL/dx_L = r``); entries
    above it (layers the loss does not read) are NaN."""
    lmax = jax.tree_util.tree_leaves(params)[0].shape[0]
    pick = (jnp.arange(lmax) == depth - 1).astype(x0.dtype)
    res = gradient_flow(
        cell, params, x0, None, _pick_loss, step_shares=False, loss_params={"pick": pick, "r": r}
    )
    layer = jnp.arange(lmax + 1)
    log10 = jnp.where(layer == depth, 0.5 * jnp.log10(jnp.sum(r * r)), res.total_log10_norms)
    return jnp.where(layer > depth, jnp.nan, log10)


def gradient_layers(width: int, batch: int, seeds: int, depths=DEPTHS, variants=VARIANTS, seed: int = 0):
    """Per-layer ``log10 ||dL/dx_l||`` at init: ``{label: [len(depths), seeds, max(depths) + 1]}``
    (NaN above each L), one compiled program for all variants, depths and seeds."""
    lmax = max(depths)
    rng = np.random.default_rng(seed)
    x0 = rng.standard_normal((batch, width)).astype(np.float32)
    r = rng.standard_normal((batch, width)).astype(np.float32)
    groups: dict = {}
    for label, (kind, norm, _) in variants.items():
        groups.setdefault((kind, norm), []).append(label)
    n_d = len(depths)

    @jax.jit
    def run_all(keys, x0, r):
        base = jax.vmap(lambda k: base_params(width, lmax, k))(keys)
        out = {}
        for (kind, norm), labels in groups.items():
            cell = padded_cell(kind, width, lmax, norm)
            n = len(labels) * n_d * seeds  # flat grid (variant, depth, seed)
            sw = jnp.repeat(jnp.array([variants[lb][2] for lb in labels], jnp.float32), n_d * seeds)
            dep = jnp.tile(jnp.repeat(jnp.array(depths, jnp.int32), seeds), len(labels))
            seed_of = jnp.asarray(np.arange(n) % seeds)

            def one(sigma_w, depth, s, cell=cell, kind=kind):
                base_s = jax.tree_util.tree_map(lambda a: a[s], base)
                params = padded_params(cell, kind, sigma_w, depth, base_s)
                return layer_log10(cell, params, x0, r, depth)

            res = jax.vmap(one)(sw, dep, seed_of).reshape(len(labels), n_d, seeds, lmax + 1)
            out.update({lb: res[i] for i, lb in enumerate(labels)})
        return out

    out = run_all(jax.random.split(_key(seed), seeds), x0, r)
    return {label: np.asarray(out[label], np.float64) for label in variants}


def training_run(out: Path, quick: bool):
    """The shipped ``residual_training`` run: ``({label: MSE / var(y) [seeds, steps + 1]}`` (entry
    ``steps``: the final full-set loss), the linear least squares ratio, the run's sizes)."""
    run_dir, _ = config_run("residual_training", out, quick)
    cfg = load_config(run_dir / "config.yaml")
    res = np.load(run_dir / "results.npz")
    curves = np.concatenate([res["train_loss"], res["eval_loss"][:, -1:]], axis=1) / res["baseline"][:, None]
    curves = {str(lb): curves[res["label"] == lb].astype(np.float64) for lb in dict.fromkeys(res["label"])}
    examples = cfg.task.options["examples"]
    task = tasks.get(cfg.task.name, **cfg.task.options)
    batch = task.sample(jax.random.key(0), examples)  # the whole training set
    x1, y = np.c_[np.asarray(batch.xs[0], np.float64), np.ones(examples)], np.asarray(batch.ys[0, :, 0])
    linear = float(np.mean((x1 @ np.linalg.lstsq(x1, y, rcond=None)[0] - y) ** 2) / np.var(y))
    sizes = {"train_width": cfg.cells[0].options["width"], "examples": examples, "steps": cfg.train.steps,
             "train_seeds": len(cfg.sweep.seeds), "train_depth": cfg.cells[0].options["depth"],
             "learning_rate": cfg.train.learning_rate, "run": str(run_dir)}  # fmt: skip
    return curves, linear, sizes


def _ratios(layers: dict) -> dict:
    """``{label: [len(DEPTHS), seeds]}`` of ``log10 ||dL/dx_0|| - log10 ||dL/dx_L||``."""
    return {
        label: np.stack([a[i, :, 0] - a[i, :, depth] for i, depth in enumerate(DEPTHS)])
        for label, a in layers.items()
    }


def _mean_field(label: str, depths=DEPTHS):
    """Mean-field ratios per L of a variant without norm (None with a norm)."""
    kind, norm, sigma_w = VARIANTS[label]
    return None if norm else [theory.stack_log10_ratio(kind, int(d), sigma_w) for d in depths]


def run(out: Path, quick: bool) -> dict:
    """Gradient per layer and training; writes ``c06.png`` and ``c06_data/``."""
    with jax.enable_x64(False):  # float32 throughout, also where tests turn x64 on globally
        return _run(Path(out), quick)


def _run(out: Path, quick: bool) -> dict:
    size = SIZES[bool(quick)]
    layers = gradient_layers(size["width"], size["batch"], size["seeds"])
    curves, linear, train_sizes = training_run(out, quick)
    ratios = _ratios(layers)
    gradient = {
        label: {
            "L": list(DEPTHS),
            "log10_ratio": [float(v) for v in np.median(r, axis=1)],
            "log10_ratio_seeds": r.tolist(),
            "mean_field": _mean_field(label),
        }
        for label, r in ratios.items()
    }
    training = {
        label: {
            "initial_ratio_median": float(np.median(c[:, 0])),
            "final_ratio_seeds": c[:, -1].tolist(),
            "median_final_ratio": float(np.median(c[:, -1])),
        }
        for label, c in curves.items()
    }
    numbers = {
        "settings": {**size, **train_sizes, "depths": list(DEPTHS)},
        "gradient": gradient,
        "training": {"models": training, "linear_least_squares_ratio": linear},
    }
    data = out / "c06_data"
    data.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(data / "layers.npz", **{k.replace(" ", "_"): v for k, v in layers.items()})
    np.savez_compressed(data / "training.npz", **{k.replace(" ", "_"): v for k, v in curves.items()})
    (data / "numbers.json").write_text(json.dumps(numbers, indent=1))
    _figure(out / "c06", layers, ratios, curves, linear, numbers["settings"])
    return {**numbers, "figure": str(out / "c06.png"), "runs": [str(data), train_sizes["run"]]}


def _figure(path, layers, ratios, curves, linear, size):
    """Three panels: per layer at L = 200, input/output ratio against L, training curves."""
    fig, (a, b, c) = plots.figure(1, 3, size=(16, 4.6))
    colour = {label: i for i, label in enumerate(VARIANTS)}
    plots.depth_plot(
        a,
        [{"label": label, "log10_norms": arr[-1]} for label, arr in layers.items()],
        title=f"per layer at init, L = {DEPTHS[-1]}, width {size['width']}",
        legend="below",
    )
    for label, r in ratios.items():
        b.plot(DEPTHS, 10.0 ** np.median(r, axis=1), marker="o", label=label, **plots.style(colour[label]))
    depths = np.arange(DEPTHS[0], DEPTHS[-1] + 1, 10)
    for label, (_, norm, _) in VARIANTS.items():
        if norm is None:
            st = {"color": plots.style(colour[label])["color"], "linestyle": "--", "linewidth": 1}
            b.plot(depths, 10.0 ** np.array(_mean_field(label, depths)), **st)
    b.plot([], [], color="0.3", linestyle="--", linewidth=1, label="mean field (infinite width)")
    b.axhspan(10.0 ** -CRITERIA["keep_decades"], 10.0 ** CRITERIA["keep_decades"], color="0.9", zorder=0)
    b.set_yscale("log")
    b.set_xlabel("depth L")
    b.set_ylabel(r"$\|dL/dx_0\| \,/\, \|dL/dx_L\|$ (median)")
    b.set_title(f"input vs output gradient (shaded: within {10 ** CRITERIA['keep_decades']:.0f}x)")
    below = {"fontsize": 8, "loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "ncols": 2}
    b.legend(**below)
    steps = np.arange(next(iter(curves.values())).shape[1])
    for label, curve in curves.items():
        c.plot(steps, np.median(curve, axis=0), label=label, **plots.style(colour[label]))
    c.axhline(linear, color="0.4", linestyle="--", linewidth=1, label="linear least squares")
    c.axhline(CRITERIA["train_ratio"], color="0.6", linestyle=":", linewidth=1, label="'trains' threshold")
    c.set_yscale("log")
    c.set_xlabel("Adam step")
    c.set_ylabel("training MSE / var(y) (median over seeds)")
    c.set_title(f"{size['train_depth']} layers, width {size['train_width']}, teacher regression")
    c.legend(**below)
    plots.save_figure(fig, path, ("png",))


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
