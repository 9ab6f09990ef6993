"""Figures of the slides' architectures, drawn from the numbers ``engine.architectures`` returns.

Every plot takes a matplotlib ``ax``, draws on it and returns it; inputs are the plain dicts of
``seq2seq_reversal`` (one source length) and ``cnn_lstm_gradients``, never JAX calls.

Example::

    architectures_figure(seq, cnn, "out/c14")   # out/c14.png: the three panels below
"""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import MaxNLocator

from gradflow.figures import plots

ORDERS = ("normal", "reversed")


def needed_token_plot(ax, seq: dict):
    """Median ``log10 ||dL_j / dx_src(j)||`` per target position ``j``, both orders, at init and
    trained; ``seq``: one ``seq2seq_reversal`` result."""
    j = np.arange(seq["length"])
    for i, name in enumerate(ORDERS):
        st = plots.style(i)
        for when, ls, mark in (("init", st["linestyle"], "o"), ("trained", "--", "s")):
            ax.plot(
                j,
                seq[when][name]["gradient"]["median"],
                color=st["color"],
                linestyle=ls,
                marker=mark,
                markersize=3,
                label=f"{name} source, {when}",
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"target position j (S={seq['length']})")
    ax.set_ylabel("log10 ||dL_j / dx_src(j)||")
    ax.set_title("seq2seq: gradient to the needed source token", fontsize=plots.LABEL_SIZE)
    ax.legend(fontsize=plots.LEGEND_SIZE)
    return ax


def encoder_flow_plot(ax, seq: dict):
    """Median ``log10 ||dL/dcarry_t||`` per encoder step ``t = 0..S`` (S: the "deep vector"), both
    orders, at init and trained; ``seq``: one ``seq2seq_reversal`` result."""
    length = seq["length"]
    t = np.arange(length + 1)
    for i, name in enumerate(ORDERS):
        st = plots.style(i)
        for when, ls in (("init", st["linestyle"]), ("trained", "--")):
            ax.plot(
                t,
                seq[when]["encoder_flow"][name]["log10"],
                color=st["color"],
                linestyle=ls,
                label=f"{name} source, {when}",
            )
    ax.axvline(length, color="grey", linewidth=0.8)
    ax.annotate(
        '"deep vector"', (length, ax.get_ylim()[0]), fontsize=plots.TICK_SIZE, ha="right", va="bottom"
    )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("encoder step t (carry after t source tokens)")
    ax.set_ylabel("log10 ||dL/dcarry_t||, total decoder loss")
    ax.set_title("seq2seq: gradient reaching each encoder step", fontsize=plots.LABEL_SIZE)
    ax.legend(fontsize=plots.LEGEND_SIZE)
    return ax


def frame_gradient_plot(ax, cnn: dict):
    """Per frame ``t``: the CNN-LSTM's (``cnn["cnn_lstm"]``) ``log10 ||dL/dframe_t||`` and
    ``||dL/dcarry_t||`` (t = -1: before frame 0), and the LSTM on pixels' (``cnn["lstm_pixels"]``)
    frame gradient; ``cnn``: a ``cnn_lstm_gradients`` result with those two models."""
    T = cnn["frames"]
    c, px = cnn["cnn_lstm"], cnn["lstm_pixels"]
    st = [plots.style(i) for i in range(3)]
    lines = (
        (np.arange(T), c["frame_log10"], f"CNN-LSTM: dL/dframe_t (rate {c['frame_rate']:+.3f}/step)"),
        (
            np.arange(-1, T),
            c["carry_log10"],
            f"CNN-LSTM: dL/dcarry after frame t (rate {c['carry_rate']:+.3f}/step)",
        ),
        (
            np.arange(T),
            px["frame_log10"],
            f"LSTM on pixels, no CNN: dL/dframe_t (rate {px['frame_rate']:+.3f}/step)",
        ),
    )
    for s, (x, y, label) in zip(st, lines, strict=True):
        ax.plot(x, y, color=s["color"], linestyle=s["linestyle"], label=label)
    ax.set_xlabel(f"frame t (loss after frame {T - 1})")
    ax.set_ylabel("log10 gradient norm")
    ax.set_title("CNN-LSTM at init: gradient per frame", fontsize=plots.LABEL_SIZE)
    ax.legend(fontsize=plots.LEGEND_SIZE - 1)
    return ax


def architectures_figure(seq: dict, cnn: dict, path_without_suffix) -> None:
    """Three panels, saved as ``path_without_suffix.png``: ``needed_token_plot`` and
    ``encoder_flow_plot`` of ``seq`` (one source length), ``frame_gradient_plot`` of ``cnn``."""
    fig, axes = plots.figure(1, 3, size=(15.0, 4.4))
    needed_token_plot(axes[0], seq)
    encoder_flow_plot(axes[1], seq)
    frame_gradient_plot(axes[2], cnn)
    plots.save_figure(fig, path_without_suffix, ("png",), dpi=110)


__all__ = ["architectures_figure", "encoder_flow_plot", "frame_gradient_plot", "needed_token_plot"]
