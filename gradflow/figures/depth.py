"""Figures of depth: residual vs plain stacks (gradient per layer and training), stacked LSTMs.

Drawn from numpy arrays (a claim's saved numbers) or a training run directory's files; no JAX.

- ``residual_vs_plain``: three panels: ``log10 ||dL/dx_l||`` per layer at the largest depth,
  ``||dL/dx_0|| / ||dL/dx_L||`` against depth L (with mean-field lines and the "kept" band), and
  training curves (MSE / var(y)) of deep stacks against a linear fit and the "trains" threshold.
- ``variant_curves``: a loss ratio against training step, median line and min-max band per variant.

Example::

    curves = loss_ratio_curves("runs/residual_training")      # {label: [seeds, steps + 1]}
    residual_vs_plain("out/c06", layers, ratios, (10, 50), curves, 0.11, keep_decades=1.0,
                      train_ratio=0.1, sizes={"width": 32, "train_depth": 128, "train_width": 32})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from gradflow.figures import plots

BELOW = {"fontsize": 8, "loc": "upper center", "bbox_to_anchor": (0.5, -0.16), "ncols": 2}
VARIANT_COLOURS = ("#000000", "#0072B2", "#E69F00", "#009E73", "#D55E00")
VARIANT_STYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1)))


def loss_ratio_curves(run_dir: str | Path) -> dict[str, np.ndarray]:
    """A training run directory's ``{label: [seeds, steps + 1]}`` float64: training loss / baseline
    per step, the last column the final held-out loss / baseline; labels in the order of the runs."""
    with np.load(Path(run_dir) / "results.npz") as res:
        curves = np.concatenate([res["train_loss"], res["eval_loss"][:, -1:]], axis=1)
        curves = curves / res["baseline"][:, None]
        labels = res["label"]
    return {str(lb): curves[labels == lb].astype(np.float64) for lb in dict.fromkeys(labels)}


def ratio_vs_depth(
    ax, ratios: Mapping, depths: Sequence[int], *, mean_field=None, keep_decades=None, colour=None
):
    """``||dL/dx_0|| / ||dL/dx_L||`` (median over seeds) against depth L; returns ``ax``.

    ``ratios: {label: [len(depths), seeds]}`` in log10; ``mean_field: {label: (L [n], log10 [n])}``
    drawn dashed; ``keep_decades``: the band ``10^-k .. 10^k`` shaded; ``colour: {label: index}``
    into ``plots.style`` (default: order of ``ratios``)."""
    colour = colour or {label: i for i, label in enumerate(ratios)}
    for label, r in ratios.items():
        ax.plot(depths, 10.0 ** np.median(r, axis=1), marker="o", label=label, **plots.style(colour[label]))
    for label, (d, log10) in (mean_field or {}).items():
        st = {"color": plots.style(colour[label])["color"], "linestyle": "--", "linewidth": 1}
        ax.plot(d, 10.0 ** np.asarray(log10), **st)
    if mean_field:
        ax.plot([], [], color="0.3", linestyle="--", linewidth=1, label="mean field (infinite width)")
    title = "input vs output gradient"
    if keep_decades is not None:
        ax.axhspan(10.0**-keep_decades, 10.0**keep_decades, color="0.9", zorder=0)
        title += f" (shaded: within {10**keep_decades:.0f}x)"
    ax.set_yscale("log")
    ax.set_xlabel("depth L")
    ax.set_ylabel(r"$\|dL/dx_0\| \,/\, \|dL/dx_L\|$ (median)")
    ax.set_title(title)
    ax.legend(**BELOW)
    return ax


def training_ratio_plot(ax, curves: Mapping, *, linear=None, threshold=None, title=None, colour=None):
    """Median over seeds of ``curves: {label: [seeds, steps + 1]}`` (MSE / var(y)) against Adam step,
    with the linear least squares ratio ``linear`` and the "trains" ``threshold``; returns ``ax``."""
    colour = colour or {label: i for i, label in enumerate(curves)}
    steps = np.arange(next(iter(curves.values())).shape[1])
    for label, curve in curves.items():
        ax.plot(steps, np.median(curve, axis=0), label=label, **plots.style(colour[label]))
    if linear is not None:
        ax.axhline(linear, color="0.4", linestyle="--", linewidth=1, label="linear least squares")
    if threshold is not None:
        ax.axhline(threshold, color="0.6", linestyle=":", linewidth=1, label="'trains' threshold")
    ax.set_yscale("log")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("training MSE / var(y) (median over seeds)")
    ax.set_title(title)
    ax.legend(**BELOW)
    return ax


def residual_vs_plain(
    path,
    layers: Mapping,
    ratios: Mapping,
    depths: Sequence[int],
    curves: Mapping,
    linear: float,
    *,
    mean_field: Callable[[str, np.ndarray], Sequence[float] | None] | None = None,
    keep_decades: float,
    train_ratio: float,
    sizes: Mapping,
) -> list[Path]:
    """Three panels into ``path.png``: ``layers: {label: [len(depths), seeds, L_max + 1]}`` (log10
    ``||dL/dx_l||``) at the largest depth, ``ratio_vs_depth`` and ``training_ratio_plot``.

    ``mean_field(label, L [n]) -> log10 ratios [n]`` (None: no line for that label) is drawn every 10
    layers from ``depths[0]`` to ``depths[-1]``. ``sizes``: ``width``, ``train_depth``,
    ``train_width``. Colours follow the order of ``layers``."""
    fig, (a, b, c) = plots.figure(1, 3, size=(16, 4.6))
    colour = {label: i for i, label in enumerate(layers)}
    plots.depth_plot(
        a,
        [{"label": label, "log10_norms": arr[-1]} for label, arr in layers.items()],
        title=f"per layer at init, L = {depths[-1]}, width {sizes['width']}",
        legend="below",
    )
    d = np.arange(depths[0], depths[-1] + 1, 10)
    lines = {label: (d, mean_field(label, d)) for label in layers} if mean_field else {}
    lines = {label: line for label, line in lines.items() if line[1] is not None}
    ratio_vs_depth(b, ratios, depths, mean_field=lines, keep_decades=keep_decades, colour=colour)
    title = f"{sizes['train_depth']} layers, width {sizes['train_width']}, teacher regression"
    training_ratio_plot(c, curves, linear=linear, threshold=train_ratio, title=title, colour=colour)
    return plots.save_figure(fig, path, ("png",))


def variant_curves(
    path,
    steps,
    values,
    labels: Sequence[str],
    *,
    title: str,
    ylabel: str,
    legend_title: str | None = None,
    dpi: int = 110,
) -> list[Path]:
    """``path.png``: ``values: [R, E]`` against ``steps: [E]``, the median and min-max band over the
    runs of each label (``labels: [R]``, in order of first appearance), log y, the ratio 1 dashed."""
    values, labels = np.asarray(values), list(labels)
    fig, ax = plots.figure(size=(6.4, 4.0))
    for i, name in enumerate(dict.fromkeys(labels)):
        idx = [j for j, lab in enumerate(labels) if lab == name]
        colour, style = VARIANT_COLOURS[i % len(VARIANT_COLOURS)], VARIANT_STYLES[i % len(VARIANT_STYLES)]
        ax.plot(steps, np.median(values[idx], axis=0), ls=style, color=colour, label=name)
        ax.fill_between(steps, values[idx].min(0), values[idx].max(0), color=colour, alpha=0.15)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(title=legend_title, fontsize=8)
    return plots.save_figure(fig, path, ("png",), dpi=dpi)
