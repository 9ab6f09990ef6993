"""Figures of gradient flow: decay through time, sweeps, LSTM paths, depth.

Every plot takes a matplotlib ``ax``, draws on it and returns it; inputs are
numpy arrays (or anything ``np.asarray`` accepts), never JAX calls. Gradient
norms arrive as ``log10 ||dL/dh_t||`` and are plotted *in log10 space* on a
linear axis whose ticks read ``10^k``, so values far below the float range
(log10 = -600) draw fine. ``-inf``, ``+inf`` and NaN entries are gaps.

The plots live in ``norm_curves`` (``decay_plot``, ``depth_plot``, ``paths_plot``), ``heatmaps``
(``heatmap``) and ``canvas`` (palette, sizes, ``style``, ``figure``, ``save_figure``); every public
name is re-exported here.

Example::

    fig, ax = figure()
    decay_plot(ax, [{"label": "tanh RNN", "log10_norms": res.log10_norms[None], "rate": -0.1}])
    save_figure(fig, "results/decay")          # results/decay.png, results/decay.svg
"""

from gradflow.figures.canvas import LABEL_SIZE as LABEL_SIZE
from gradflow.figures.canvas import LEGEND_SIZE as LEGEND_SIZE
from gradflow.figures.canvas import LINESTYLES as LINESTYLES
from gradflow.figures.canvas import PALETTE as PALETTE
from gradflow.figures.canvas import THEORY_LINESTYLE as THEORY_LINESTYLE
from gradflow.figures.canvas import TICK_SIZE as TICK_SIZE
from gradflow.figures.canvas import figure as figure
from gradflow.figures.canvas import save_figure as save_figure
from gradflow.figures.canvas import style as style
from gradflow.figures.heatmaps import heatmap as heatmap
from gradflow.figures.norm_curves import decay_plot as decay_plot
from gradflow.figures.norm_curves import depth_plot as depth_plot
from gradflow.figures.norm_curves import paths_plot as paths_plot
