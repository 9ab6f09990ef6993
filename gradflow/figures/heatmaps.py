"""A 2-D sweep as a heatmap on a diverging colour map (``heatmap``): e.g. ``sigma_w x sigma_b -> rate``."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps, colors, patheffects

from gradflow.figures.canvas import LABEL_SIZE, TICK_SIZE


def _edges(centers: np.ndarray) -> np.ndarray:
    """Cell edges ``[N+1]`` around monotonic centres ``[N]`` (midpoints, ends mirrored)."""
    if centers.size == 1:
        return np.array([centers[0] - 0.5, centers[0] + 0.5])
    mid = (centers[1:] + centers[:-1]) / 2
    return np.concatenate([[2 * centers[0] - mid[0]], mid, [2 * centers[-1] - mid[-1]]])


def _cell_text(v: float) -> str:
    """Short cell label: 2 significant digits, ``1e-05`` style exponents, ``n/a`` for NaN."""
    text = f"{v:.2g}" if np.isfinite(v) else "n/a"
    return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e") if "e" in text else text


def heatmap(ax, values, x_values, y_values, *, x_label, y_label, value_label, critical_line=None,
            center=0.0, cmap="RdBu_r", annotate=None, span=None):  # fmt: skip
    """A 2-D sweep, e.g. ``sigma_w x sigma_b -> rate``, on a diverging map centred at ``center``.

    Args:
      values: ``[len(y_values), len(x_values)]`` (row i at ``y_values[i]``);
        NaN and inf cells are grey.
      x_values, y_values: ``[Nx]``, ``[Ny]`` monotonic cell centres.
      x_label, y_label, value_label: axis and colorbar labels.
      critical_line: optional ``(x [M], y [M])`` drawn black on a white halo,
        e.g. the edge of chaos where the rate crosses 0.
      center: value at the neutral colour (rate 0 = edge of chaos); the colour
        range is symmetric about it.
      annotate: write values in the cells; default when the grid is <= 10 x 10.
      span: colour range ``center +- span`` (default: the largest deviation), e.g.
        to share one scale between a measured and a predicted panel.

    Returns:
      ``ax``; the colorbar is a new axes, ``ax.figure.axes[-1]``.

    Example::

        heatmap(ax, rates, sigma_w, sigma_b, x_label=r"$\\sigma_w$", y_label=r"$\\sigma_b$",
                value_label="rate (ln / step)")
    """
    v = np.asarray(values, dtype=np.float64)
    xv, yv = np.asarray(x_values, np.float64), np.asarray(y_values, np.float64)
    if v.shape != (yv.size, xv.size):
        raise ValueError(f"values must be [len(y_values), len(x_values)] = {(yv.size, xv.size)}: {v.shape}")
    masked = np.ma.masked_invalid(v)
    if span is None:
        span = float(np.max(np.abs(masked - center))) if masked.count() else 1.0
    span = span if span > 0 else 1.0
    norm = colors.Normalize(center - span, center + span)
    cm = colormaps[cmap].with_extremes(bad="0.7")
    mesh = ax.pcolormesh(_edges(xv), _edges(yv), masked, cmap=cm, norm=norm, shading="flat")
    cbar = ax.figure.colorbar(mesh, ax=ax)
    cbar.set_label(value_label, fontsize=LABEL_SIZE)
    cbar.ax.tick_params(labelsize=TICK_SIZE)
    small = v.shape[0] <= 10 and v.shape[1] <= 10
    if small if annotate is None else annotate:
        for (i, j), val in np.ndenumerate(v):
            rgba = cm(norm(val)) if np.isfinite(val) else (0.7, 0.7, 0.7, 1.0)
            dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
            halo = [patheffects.withStroke(linewidth=2.5, foreground=rgba)]  # hides lines under digits
            ax.text(xv[j], yv[i], _cell_text(val), ha="center", va="center", fontsize=TICK_SIZE,
                    color="white" if dark else "black", path_effects=halo, zorder=4)  # fmt: skip
    if small:
        ax.set_xticks(xv, [f"{t:.3g}" for t in xv])
        ax.set_yticks(yv, [f"{t:.3g}" for t in yv])
    if critical_line is not None:
        cx, cy = (np.asarray(c, np.float64) for c in critical_line)
        halo = [patheffects.withStroke(linewidth=4.5, foreground="white")]
        ax.plot(cx, cy, color="black", linewidth=2, path_effects=halo, label="critical line",
                scalex=False, scaley=False)  # fmt: skip
    ax.tick_params(labelsize=TICK_SIZE)
    ax.set_xlabel(x_label, fontsize=LABEL_SIZE)
    ax.set_ylabel(y_label, fontsize=LABEL_SIZE)
    return ax
