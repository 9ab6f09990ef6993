"""Figures of a training run directory (``summary.json`` kind ``train``), drawn from its files alone.

- ``learning``: held-out loss against training step (median and min-max band over seeds) with the
  "learned nothing" baseline and the solved threshold; training loss per step beside it (spikes above
  the baseline and divergences, marked x, show there; losses above 1e4 x baseline are drawn at that
  cap).
- ``flow_heatmap``: log10 ``||dL/dh_t||`` of the training loss, training step x time step, one panel
  per setting (its first seed).
- ``flow_rate``: the fitted decay rate (ln per step) and half-life against training step.
- ``gates``: gate means against training step (LSTM forget gate, GRU update gate, ...).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gradflow.figures import plots
from gradflow.rundir import setting_key

CAP = 1e4  # losses above CAP x baseline are drawn at the cap
GATE_ORDER = ("f", "z", "i", "o", "r")
GATE_NAMES = {
    "f": "forget gate f",
    "z": "update gate z",
    "i": "input gate i",
    "o": "output gate o",
    "r": "reset r",
}


def settings(run, prefix: str = "") -> list[dict]:
    """``[{label, rows, baseline, solved_fraction}]``: runs pooled by label and sweep point."""

    by: dict = {}
    for i, r in enumerate(run.runs):
        by.setdefault(prefix + setting_key(r), []).append(i)
    return [{"label": k, "rows": v, "baseline": float(run.arrays["baseline"][v[0]])} for k, v in by.items()]


def draw(run_list: list, out: Path, formats, names: list[str] | None = None) -> list[Path]:
    """Every training figure that applies: learning curves overlaid for several runs (labels
    prefixed with ``names``, default the runs' names); the flow heatmap, rate and gate figures for one."""
    names = [r.name for r in run_list] if names is None else names
    prefixes = [f"{n}: " if len(run_list) > 1 else "" for n in names]
    title = names[0] if len(run_list) == 1 else " vs ".join(names)
    found = [(run, s) for run, p in zip(run_list, prefixes, strict=True) for s in settings(run, p)]
    written = _learning(found, title, out / "learning", formats)
    if len(run_list) == 1:
        written += _heatmap(found, title, out / "flow_heatmap", formats)
        written += _rate(found, title, out / "flow_rate", formats)
        written += _gates(found, title, out / "gates", formats)
    return written


def _nan_stat(fn, values: np.ndarray) -> np.ndarray:
    """``fn(values, axis=0)`` over seeds; NaN (no warning) where every seed is NaN."""
    out = np.full(values.shape[1:], np.nan)
    ok = ~np.isnan(values).all(axis=0)
    if ok.any():
        out[ok] = fn(values[:, ok], axis=0)
    return out


def _band(ax, x, values, i, label, *, marker=None):
    values = np.asarray(values, np.float64)
    ok = np.isfinite(values).any(axis=0)
    if not ok.any():
        return
    x, values = np.asarray(x, np.float64)[ok], values[:, ok]
    st = plots.style(i)
    med, lo, hi = (_nan_stat(fn, values) for fn in (np.nanmedian, np.nanmin, np.nanmax))
    ax.plot(x, med, color=st["color"], linestyle=st["linestyle"], label=label, marker=marker, markersize=3)
    if values.shape[0] > 1:
        ax.fill_between(x, lo, hi, color=st["color"], alpha=0.15, linewidth=0)


def _learning(found, title, base, formats) -> list[Path]:
    fig, (ax_eval, ax_train) = plots.figure(1, 2, size=(12.0, 4.4))
    baselines = sorted({s["baseline"] for _, s in found})
    cap = CAP * max(baselines)  # exploded losses are drawn at the cap (the y axis ends there)
    clip = lambda v: np.where(np.isnan(v), np.nan, np.minimum(np.asarray(v, np.float64), cap))  # noqa: E731
    for i, (run, s) in enumerate(found):
        a, rows = run.arrays, s["rows"]
        x = a["eval_step"][rows[0]]
        _band(ax_eval, x, clip(a["eval_loss"][rows]), i, s["label"], marker="o")
        loss = clip(a["train_loss"][rows])
        steps = np.arange(loss.shape[1])
        window = max(1, loss.shape[1] // 100)
        med = _nan_stat(np.nanmedian, loss.astype(np.float64))
        smooth = np.convolve(np.nan_to_num(med, nan=0.0), np.ones(window) / window, mode="same")
        smooth[~np.isfinite(med)] = np.nan
        st = plots.style(i)
        ax_train.plot(steps, med, color=st["color"], alpha=0.25, linewidth=0.6)
        ax_train.plot(steps, smooth, color=st["color"], linestyle=st["linestyle"], label=s["label"])
        for r in rows:
            dstep = run.runs[r].get("diverged_step")
            if dstep is not None:
                last = loss[rows.index(r), : dstep + 1]
                y = last[np.isfinite(last)][-1] if np.isfinite(last).any() else s["baseline"]
                ax_train.plot([dstep], [max(y, s["baseline"])], "x", color=st["color"], markersize=9, mew=2)
    for ax in (ax_eval, ax_train):
        for j, b in enumerate(baselines):
            ax.axhline(
                b,
                color="black",
                linestyle="--",
                linewidth=1,
                label="baseline (learned nothing)" if not j else None,
            )
        ax.set_yscale("log")
        ax.set_ylim(top=cap * 1.5)
        ax.set_xlabel("training step", fontsize=plots.LABEL_SIZE)
        ax.grid(alpha=0.3)
    fraction = found[0][0].runs[0].get("solved_threshold")
    if fraction is not None:
        ax_eval.axhline(fraction, color="gray", linestyle=":", linewidth=1, label="solved below")
    ax_eval.set_ylabel("held-out loss", fontsize=plots.LABEL_SIZE)
    ax_eval.set_title("held-out loss (median, band: min-max over seeds)", fontsize=plots.LABEL_SIZE)
    ax_train.set_ylabel("training loss", fontsize=plots.LABEL_SIZE)
    ax_train.set_title("training loss per step (faint: raw; x: diverged)", fontsize=plots.LABEL_SIZE)
    ax_eval.legend(fontsize=plots.LEGEND_SIZE)
    ax_train.legend(fontsize=plots.LEGEND_SIZE)
    fig.suptitle(title, fontsize=plots.LABEL_SIZE + 2)
    return plots.save_figure(fig, base, formats)


def _heatmap(found, title, base, formats) -> list[Path]:
    panels = []
    for run, s in found:
        r = s["rows"][0]
        grid = run.arrays["flow_total_log10"][r]
        keep = np.isfinite(grid).any(axis=1)
        if keep.any():
            panels.append((s["label"], run.arrays["eval_step"][r][keep], grid[keep], run.runs[r]["seed"]))
    if not panels:
        return []
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plots.figure(nrows, ncols, size=(4.6 * ncols + 0.8, 3.6 * nrows))
    axes = np.atleast_1d(axes).ravel()
    finite = np.concatenate([g[np.isfinite(g)] for _, _, g, _ in panels])
    lo, hi = (np.percentile(finite, 1), np.percentile(finite, 99)) if finite.size else (0.0, 1.0)
    mesh = None
    for ax, (label, steps, grid, seed) in zip(axes, panels, strict=False):
        t = np.arange(grid.shape[1] + 1) - 0.5
        y = np.append(steps, steps[-1] + (steps[1] - steps[0] if len(steps) > 1 else 1))
        mesh = ax.pcolormesh(t, y, grid, cmap="viridis", vmin=lo, vmax=hi, shading="flat")
        ax.set_title(f"{label} (seed {seed})", fontsize=plots.LABEL_SIZE)
        ax.set_xlabel("time step t (loss at t = T)", fontsize=plots.LABEL_SIZE)
        ax.set_ylabel("training step", fontsize=plots.LABEL_SIZE)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.colorbar(mesh, ax=axes[: len(panels)].tolist(), label="log10 ||dL/dh_t||")
    fig.suptitle(f"{title}: gradient norm through time, over training", fontsize=plots.LABEL_SIZE + 2)
    return plots.save_figure(fig, base, formats)


def _rate(found, title, base, formats) -> list[Path]:
    fig, (ax_rate, ax_life) = plots.figure(1, 2, size=(12.0, 4.2))
    for i, (run, s) in enumerate(found):
        a, rows = run.arrays, s["rows"]
        x = a["eval_step"][rows[0]]
        _band(ax_rate, x, a["flow_rate"][rows], i, s["label"], marker="o")
        with np.errstate(all="ignore"):
            life = np.abs(np.log(2.0) / a["flow_rate"][rows])
        _band(ax_life, x, np.log10(life), i, s["label"], marker="o")
    ax_rate.axhline(0.0, color="black", linewidth=0.8)
    ax_rate.set_ylabel("decay rate of ||dL/dh_t|| (ln per step)", fontsize=plots.LABEL_SIZE)
    ax_life.set_ylabel("log10 half-life (steps to halve or double)", fontsize=plots.LABEL_SIZE)
    for ax in (ax_rate, ax_life):
        ax.set_xlabel("training step", fontsize=plots.LABEL_SIZE)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=plots.LEGEND_SIZE)
    fig.suptitle(f"{title}: gradient flow over training", fontsize=plots.LABEL_SIZE + 2)
    return plots.save_figure(fig, base, formats)


def _gates(found, title, base, formats) -> list[Path]:
    gates = [g for g in GATE_ORDER if any(f"gate_{g}_mean" in run.arrays for run, _ in found)]
    gates = gates[:2]
    if not gates:
        return []
    fig, axes = plots.figure(1, len(gates), size=(6.0 * len(gates), 4.0))
    axes = np.atleast_1d(axes)
    for ax, g in zip(axes, gates, strict=True):
        for i, (run, s) in enumerate(found):
            a, rows = run.arrays, s["rows"]
            key = f"gate_{g}_mean"
            if key in a and np.isfinite(a[key][rows]).any():
                _band(ax, a["eval_step"][rows[0]], a[key][rows], i, s["label"], marker="o")
        ax.set_ylim(0, 1)
        ax.set_xlabel("training step", fontsize=plots.LABEL_SIZE)
        ax.set_ylabel(f"mean {GATE_NAMES[g]} (held-out)", fontsize=plots.LABEL_SIZE)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=plots.LEGEND_SIZE)
    fig.suptitle(f"{title}: gates over training", fontsize=plots.LABEL_SIZE + 2)
    return plots.save_figure(fig, base, formats)
