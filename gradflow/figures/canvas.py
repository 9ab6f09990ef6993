"""The look of gradflow's figures: palette, line styles, font sizes, a figure, log10 axes, legends, saving.

``figure()`` makes a paper-size figure on the Agg canvas (no pyplot state); ``style(i)`` is the
colour and line style of the ``i``-th data line; ``save_figure`` writes PNG/SVG atomically. The
private helpers (``_log10_yaxis``, ``_legend``) are shared by the plot modules of this package.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import ticker, transforms
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
    paths, engine = [], fig.get_layout_engine()
    for i, fmt in enumerate(formats):
        if i == 1 and engine is not None:
            fig.set_layout_engine("none")  # the first save placed everything: keep it (one layout pass)
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
    if engine is not None:
        fig.set_layout_engine(engine)
    return paths
