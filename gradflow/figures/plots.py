"""Figures of gradient flow: decay through time, sweeps, LSTM paths, depth.

Every plot takes a matplotlib ``ax``, draws on it and returns it; inputs are
numpy arrays (or anything ``np.asarray`` accepts), never JAX calls. Gradient
norms arrive as ``log10 ||dL/dh_t||`` and are plotted *in log10 space* on a
linear axis whose ticks read ``10^k``, so values far below the float range
(log10 = -600) draw fine. ``-inf``, ``+inf`` and NaN entries are gaps.

Example::

    fig, ax = figure()
    decay_plot(ax, [{"label": "tanh RNN", "log10_norms": res.log10_norms[None], "rate": -0.1}])
    save_figure(fig, "results/decay")          # results/decay.png, results/decay.svg
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps, colors, patheffects, ticker, transforms
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.path import Path as MplPath

# Okabe & Ito (2008), colour-blind safe: blue, vermillion, bluish green, orange, reddish purple,
# sky blue, black, yellow (last: faint on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
# Data lines: solid, dash-dot, dotted, dash-dot-dot, ...; plain dashes are kept for theory lines.
LINESTYLES = ("-", "-.", ":", (0, (5, 1.2, 1.2, 1.2, 1.2, 1.2)), (0, (0.8, 1.2, 3, 1.2)), (0, (8, 1, 1, 1)))
THEORY_LINESTYLE = "--"
LABEL_SIZE = 10
TICK_SIZE = 9
LEGEND_SIZE = 9


def style(i: int) -> dict:
    """Colour and line style of the ``i``-th data line: ``{"color", "linestyle"}``."""
    return {"color": PALETTE[i % len(PALETTE)], "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def figure(nrows: int = 1, ncols: int = 1, *, size: tuple[float, float] = (6.4, 4.0)):
    """A paper-size ``Figure`` on the Agg canvas (no pyplot state) and its axes.

    Returns ``(fig, ax)``; ``ax`` is an array ``[nrows, ncols]`` unless both are 1.
    """
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=True)


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


def _pow10(y: float, _pos=None) -> str:
    """Tick label for a log10 value: ``10^k`` at integers, a plain number in between."""
    if abs(y - round(y)) < 1e-9:
        return f"$10^{{{round(y)}}}$"
    if abs(y) < 4:
        return f"{10.0**y:.2g}"
    return f"$10^{{{y:.1f}}}$"


def _log10_yaxis(ax) -> None:
    """Ticks of a y-axis holding log10 values read ``10^k``."""
    ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=7, integer=True, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(_pow10))
    ax.tick_params(labelsize=TICK_SIZE)
    ax.grid(True, which="major", color="0.88", linewidth=0.6)
    ax.set_axisbelow(True)


def _rate_text(rate, unit: str) -> str:
    """Legend suffix `` (rate -0.105/step)``; empty for ``None``."""
    if rate is None:
        return ""
    return f" (rate {float(rate):.3g}/{unit})" if np.isfinite(rate) else " (rate n/a)"


def _hits(xy: np.ndarray, box, filled: bool) -> bool:
    """Whether a polyline ``xy: [N, 2]`` (display units, NaN = break) touches ``box``."""
    ok = np.isfinite(xy).all(axis=1)
    runs = np.split(xy, np.flatnonzero(np.diff(ok.astype(int))) + 1)
    return any(
        box.contains(*run[0]) if len(run) == 1 else MplPath(run).intersects_bbox(box, filled=filled)
        for run in runs
        if np.isfinite(run).all()
    )


def _covers_data(ax, legend) -> bool:
    """Whether ``legend`` lies over any line or band of ``ax`` (False when it cannot tell)."""
    get_renderer = getattr(ax.figure.canvas, "get_renderer", None)
    if get_renderer is None:
        return False
    box = legend.get_window_extent(get_renderer())
    lines = (_hits(ln.get_transform().transform(ln.get_xydata()), box, False) for ln in ax.lines)
    paths = ((c.get_transform(), p) for c in ax.collections for p in c.get_paths())
    return any(lines) or any(_hits(tr.transform(p.vertices), box, True) for tr, p in paths)


def _legend_below(ax, kw) -> None:
    """Legend centred under the x-axis label, two columns when they fit."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    depth = ax.get_window_extent(renderer).y0 - ax.xaxis.get_tightbbox(renderer).y0  # pixels
    below = transforms.offset_copy(ax.transAxes, fig=fig, y=-(depth * 72 / fig.dpi + 4), units="points")
    for ncols in (2, 1):
        leg = ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below, ncols=ncols, **kw)
        if ncols == 1 or leg.get_window_extent(renderer).width <= ax.get_window_extent(renderer).width:
            return
        leg.remove()


def _legend(ax, title: str | None = None, loc: str = "auto") -> None:
    """Legend of ``ax``; none without labelled artists.

    ``loc``: ``"auto"`` inside where it covers no data (``"best"``), else below
    the axes; ``"below"``; ``"outside"`` (right of the axes); or any matplotlib ``loc``.
    """
    if not ax.get_legend_handles_labels()[0]:
        return
    kw = {"fontsize": LEGEND_SIZE, "title_fontsize": LEGEND_SIZE, "title": title, "framealpha": 0.9}
    if loc == "outside":
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kw)
    elif loc == "below" and hasattr(ax.figure.canvas, "get_renderer"):
        _legend_below(ax, kw)
    else:
        leg = ax.legend(loc="best" if loc in ("auto", "below") else loc, **kw)
        if loc == "auto" and _covers_data(ax, leg):
            leg.remove()
            _legend_below(ax, kw)


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


# ------------------------------------------------------------------ heatmap


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


# ------------------------------------------------------------------- saving


def save_figure(fig, path_without_suffix, formats: Sequence[str] = ("png", "svg"), *, dpi: int = 200):
    """Write ``fig`` as ``path.<fmt>`` for each format, atomically; returns the paths.

    Each file is written to a temporary file in the same directory and moved
    into place with ``os.replace``, so readers never see a half-written figure.
    The layout is made tight first unless the figure has a layout engine
    (e.g. ``figure()``'s constrained layout). PNG size = figsize * ``dpi`` pixels.

    Example::

        save_figure(fig, "results/decay")   # [Path("results/decay.png"), Path("results/decay.svg")]
    """
    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    if fig.get_layout_engine() is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "tight layout not applied": keep going
            fig.tight_layout()
    paths = []
    for fmt in formats:
        target = base.with_name(f"{base.name}.{fmt}")
        tmp = base.parent / f".{base.name}.{fmt}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "xb") as f:  # "x": never clobber; permissions follow the umask
                fig.savefig(f, format=fmt, dpi=dpi)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(target)
    return paths
