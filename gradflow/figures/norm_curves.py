"""Gradient-norm curves: decay through time (``decay_plot``), through depth (``depth_plot``), and the
LSTM's cell-state vs hidden path (``paths_plot``); median over seeds with a shaded band.

Norms arrive as ``log10 ||dL/dh_t||`` and are drawn in log10 space (see ``gradflow.figures.plots``).
"""

from __future__ import annotations

import warnings

import numpy as np
from matplotlib import ticker

from gradflow.figures.canvas import (
    LABEL_SIZE,
    PALETTE,
    THEORY_LINESTYLE,
    TICK_SIZE,
    _legend,
    _log10_yaxis,
    style,
)

# ---------------------------------------------------------------- log10 data


def _as_seeds(log10_norms) -> np.ndarray:
    """``[S, N]`` float64 copy of ``[N]`` or ``[S, N]``, non-finite entries -> NaN, except -inf."""
    a = np.array(log10_norms, dtype=np.float64, ndmin=2)
    if a.ndim != 2:
        raise ValueError(f"expected log10 norms of shape [N] or [S, N], got {np.shape(log10_norms)}")
    a[np.isnan(a) | (a == np.inf)] = np.nan
    return a


def _normalize(a: np.ndarray) -> np.ndarray:
    """Subtract each seed's value at the loss end (the last finite entry nearest it)."""
    finite = np.isfinite(a)
    last = a.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)  # index of the last finite entry
    ref = np.where(finite.any(axis=1), a[np.arange(a.shape[0]), last], np.nan)
    return a - ref[:, None]


def _median_band(a: np.ndarray, band: str):
    """Median over seeds (``-inf`` counts as zero gradient, NaN as missing) and the band.

    ``a: [S, N]`` -> ``(median [N], low [N], high [N])``; low/high are over the
    finite seeds only (min-max or 10-90 percentiles); every non-finite result is NaN.
    """
    fin = np.where(np.isfinite(a), a, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns -> NaN, as wanted
        med = np.nanmedian(a, axis=0)
        if band == "minmax":
            low, high = np.nanmin(fin, axis=0), np.nanmax(fin, axis=0)
        elif band == "p10-p90":
            low, high = np.nanpercentile(fin, [10.0, 90.0], axis=0)
        else:
            raise ValueError(f"unknown band {band!r}; choose from ['minmax', 'p10-p90']")
    med = np.where(np.isfinite(med), med, np.nan)
    return med, low, high


def _rate_text(rate, unit: str) -> str:
    """Legend suffix `` (rate -0.105/step)``; empty for ``None``."""
    if rate is None:
        return ""
    return f" (rate {float(rate):.3g}/{unit})" if np.isfinite(rate) else " (rate n/a)"


def _seed_lines(ax, x, a, *, label, i, band):
    """Median line of ``a: [S, N]`` at ``x: [N]``, shaded band when ``S > 1``.

    Returns ``(median [N], (lowest, highest) finite y drawn)``.
    """
    med, low, high = _median_band(a, band)
    st = style(i)
    ax.plot(x, med, label=label, linewidth=1.8, **st)
    drawn = [med]
    if a.shape[0] > 1:
        ax.fill_between(x, low, high, color=st["color"], alpha=0.2, linewidth=0)
        drawn += [low, high]
    drawn = np.concatenate(drawn)
    drawn = drawn[np.isfinite(drawn)]
    return med, (drawn.min(), drawn.max()) if drawn.size else (np.inf, -np.inf)


def _set_ylim(ax, lo: float, hi: float) -> None:
    """y-range of the data with 5% margins (lines like theory may run beyond it)."""
    if lo > hi:
        return
    pad = 0.05 * (hi - lo) if hi > lo else 0.5
    ax.set_ylim(lo - pad, hi + pad)


def _band_title(sizes: list[int], band: str) -> str | None:
    many = {s for s in sizes if s > 1}
    if not many:
        return None
    seeds = f"{many.pop()} seeds" if len(many) == 1 else "seeds"
    shade = "min-max" if band == "minmax" else "10-90%"
    return f"median, shaded {shade} over {seeds}"


def _curves_plot(ax, curves, *, normalize, band, unit, legend, labels, title, theory=None):
    """Shared body of `decay_plot` and `depth_plot`: x = steps back / layer index."""
    sizes, starts, max_x, lo, hi = [], [], 0, np.inf, -np.inf
    for i, curve in enumerate(curves):
        a = _as_seeds(curve["log10_norms"])
        if normalize:
            a = _normalize(a)
        n = a.shape[1] - 1
        x = np.arange(n, -1, -1) if unit == "step" else np.arange(n + 1)
        label = str(curve.get("label", "")) + _rate_text(curve.get("rate"), unit)
        med, (y0, y1) = _seed_lines(ax, x, a, label=label, i=i, band=band)
        lo, hi = min(lo, y0), max(hi, y1)
        sizes.append(a.shape[0])
        starts.append(med[-1])
        max_x = max(max_x, n)
    for j, th in enumerate(theory or ()):
        color = th.get("color", th.get("index", j))
        color = PALETTE[color % len(PALETTE)] if isinstance(color, int) else color
        if not th.get("draw", True):  # a legend entry only (e.g. a predicted rate of exactly 0)
            ax.plot([], [], color=color, linestyle="none", marker="_", label=str(th.get("label", "theory")))
            continue
        start = th.get("log10_start", 0.0 if normalize or not starts else starts[0])
        start = start if np.isfinite(start) else 0.0
        k = np.linspace(0.0, max_x or 100, 200)  # steps (layers) back from the loss end
        rate_text = _rate_text(th["rate"], unit) if th.get("show_rate", True) else ""
        label = str(th.get("label", "theory")) + rate_text
        y = start + float(th["rate"]) * k / np.log(10.0)
        x = k if unit == "step" else max_x - k  # depth plots put the output layer at the right
        ax.plot(x, y, color=color, linestyle=THEORY_LINESTYLE, linewidth=1.3, label=label)
    _set_ylim(ax, lo, hi)  # theory lines do not stretch the y-range of the data
    _log10_yaxis(ax)
    ax.tick_params(axis="x", labelsize=TICK_SIZE)
    ax.set_xlim(0, max_x or None)
    if unit == "layer":
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.set_xlabel(labels[0], fontsize=LABEL_SIZE)
    ax.set_ylabel(labels[1] if normalize else labels[2], fontsize=LABEL_SIZE)
    if title:
        ax.set_title(title, fontsize=LABEL_SIZE + 1)
    _legend(ax, _band_title(sizes, band), legend)
    return ax


def decay_plot(ax, curves, *, normalize=True, theory=None, title=None, band="minmax", legend="auto"):
    """Gradient norm against steps back from the loss, one line per curve.

    Args:
      ax: matplotlib axes.
      curves: list of ``{"label": str, "log10_norms": [S, T+1] or [T+1],
        "rate": float | None}``; entry t is ``log10 ||dL/dh_t||`` (the loss at
        t = T), S seeds. The line is the median over seeds, drawn at x = T - t
        in entry order (``ax.lines[i].get_ydata()`` is that median over t); a
        band (``band="minmax"`` or ``"p10-p90"``) shades the seeds when S > 1.
        ``rate`` (ln per step, e.g. ``res.fit.rate``) goes into the legend.
      normalize: subtract each seed's log10 at t = T (or the finite entry
        nearest it), i.e. plot ``||dL/dh_t|| / ||dL/dh_T||``.
      theory: list of ``{"label", "rate" (ln per step), "color": str or palette
        index, "log10_start" (optional), "show_rate" (default True: the rate
        goes into the legend), "draw" (default True; False: a legend entry
        only, no line)}`` drawn dashed as ``exp(rate * k)``.
      title: axes title.
      legend: ``"auto"`` (inside where it covers no data, else below the axes),
        ``"below"``, ``"outside"`` (right of the axes) or a matplotlib ``loc``.

    Returns:
      ``ax``.

    Example::

        fig, ax = figure()
        decay_plot(ax, [{"label": "tanh RNN", "log10_norms": logs, "rate": -0.105}])
    """
    labels = ("steps back from the loss", r"$\|dL/dh_t\| \,/\, \|dL/dh_T\|$", r"$\|dL/dh_t\|$")
    kw = {"normalize": normalize, "band": band, "legend": legend, "labels": labels, "title": title}
    return _curves_plot(ax, curves, unit="step", theory=theory, **kw)


def depth_plot(ax, curves, *, normalize=True, theory=None, title=None, band="minmax", legend="auto"):
    """Gradient norm against layer index (0 = input) for residual vs plain stacks.

    Args:
      curves: list of ``{"label", "log10_norms": [S, L+1] or [L+1], "rate"}``;
        entry l is ``log10 ||dL/dx_l||``, x_L the top layer, S seeds; median
        over seeds drawn at x = l, band when S > 1; ``rate`` is ln per layer.
      normalize: plot ``||dL/dx_l|| / ||dL/dx_L||``.
      theory: as in ``decay_plot`` (``rate`` ln per layer), drawn dashed from the output layer down.

    Returns:
      ``ax``.

    Example::

        depth_plot(ax, [{"label": "residual", "log10_norms": res_logs, "rate": None}])
    """
    labels = ("layer $l$ (0 = input)", r"$\|dL/dx_l\| \,/\, \|dL/dx_L\|$", r"$\|dL/dx_l\|$")
    kw = {"normalize": normalize, "band": band, "legend": legend, "labels": labels, "title": title}
    return _curves_plot(ax, curves, unit="layer", theory=theory, **kw)


def paths_plot(ax, steps_back, c_log10, h_log10, *, label="", band="minmax", legend="auto"):
    """LSTM cell-state path ``||dL/dc_t||`` against hidden path ``||dL/dh_t||``.

    Args:
      steps_back: ``[T+1]`` x of each entry, e.g. ``np.arange(T, -1, -1)`` for
        ``gradient_flow``'s entry order (t = 0..T).
      c_log10, h_log10: ``[S, T+1]`` or ``[T+1]`` log10 norms, not normalized
        (``dL/dc_T`` is often exactly 0, i.e. -inf); median over seeds, band when S > 1.
      label: prefix of both legend entries, e.g. ``"forget bias 3"``.

    Returns:
      ``ax`` (two lines: c-path first, then h-path).

    Example::

        c, h = res.log10_norms
        paths_plot(ax, np.arange(len(c) - 1, -1, -1), c, h, label="LSTM")
    """
    x = np.asarray(steps_back, dtype=np.float64)
    prefix = f"{label} " if label else ""
    sizes = []
    for i, (values, name) in enumerate([(c_log10, "c-path (cell state)"), (h_log10, "h-path (hidden)")]):
        a = _as_seeds(values)
        if a.shape[1] != x.shape[0]:
            raise ValueError(f"steps_back has {x.shape[0]} entries but {name} has {a.shape[1]}")
        _seed_lines(ax, x, a, label=prefix + name, i=i, band=band)
        sizes.append(a.shape[0])
    _log10_yaxis(ax)
    ax.tick_params(axis="x", labelsize=TICK_SIZE)
    ax.set_xlim(np.nanmin(x), np.nanmax(x))
    ax.set_xlabel("steps back from the loss", fontsize=LABEL_SIZE)
    ax.set_ylabel(r"$\|dL/dc_t\|$,  $\|dL/dh_t\|$", fontsize=LABEL_SIZE)
    _legend(ax, _band_title(sizes, band), legend)
    return ax
