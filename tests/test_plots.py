"""Plots: numbers drawn equal the numbers given, far-below-float values and gaps, atomic saves."""

import os
import xml.etree.ElementTree as ET

import matplotlib.image
import numpy as np
import pytest

from gradflow import plots

T = 60
RNG = np.random.default_rng(0)


def _seeds(rate_log10, s, noise=0.3):
    """``[s, T+1]`` log10 norms falling ``rate_log10`` decades per step back from the loss."""
    k = np.arange(T, -1, -1.0)
    return -rate_log10 * k + noise * RNG.standard_normal((s, T + 1))


def _with_gaps():
    """``[T+1]``: one seed, reaching log10 = -600, with a -inf (zero gradient) and a NaN."""
    a = -10.0 * np.arange(T, -1, -1.0)
    a[5], a[20] = -np.inf, np.nan
    return a


def _fig():
    fig, ax = plots.figure()
    return fig, ax


def _legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_decay_plot_draws_the_median_band_and_rates():
    five, one = _seeds(0.05, 5), _with_gaps()
    _, ax = _fig()
    curves = [
        {"label": "tanh RNN", "log10_norms": five, "rate": -0.105},
        {"label": "linear", "log10_norms": one, "rate": None},
    ]
    theory = [{"label": "mean field", "rate": -0.1, "color": 2}]
    assert plots.decay_plot(ax, curves, theory=theory, title="decay") is ax
    assert ax.get_xlabel() == "steps back from the loss"
    assert "dL/dh_t" in ax.get_ylabel() and "dL/dh_T" in ax.get_ylabel()
    assert ax.get_title() == "decay"
    assert len(ax.lines) == 3
    assert _legend_texts(ax) == ["tanh RNN (rate -0.105/step)", "linear", "mean field (rate -0.1/step)"]
    assert "5 seeds" in ax.get_legend().get_title().get_text()
    # x = steps back, in entry order; y = median over seeds of log10, normalized at t = T
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(T, -1, -1))
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.median(five - five[:, -1:], axis=0), rtol=1e-12)
    # one seed: its own values, -600 kept, -inf and NaN as gaps
    y1 = np.asarray(ax.lines[1].get_ydata())
    assert y1[0] == -600.0 and np.isnan(y1[5]) and np.isnan(y1[20])
    np.testing.assert_array_equal(np.delete(y1, [5, 20]), np.delete(one, [5, 20]))
    assert len(ax.collections) == 1  # a band for the 5 seeds only
    assert ax.lines[2].get_linestyle() == "--"  # theory dashed, data not
    assert (ax.lines[0].get_linestyle(), ax.lines[1].get_linestyle()) == ("-", "-.")
    assert ax.lines[0].get_color() != ax.lines[1].get_color()
    assert ax.get_ylim()[0] <= -600.0


def test_decay_plot_y_axis_reads_powers_of_ten_and_fonts_are_readable():
    fig, ax = _fig()
    plots.decay_plot(ax, [{"label": "a", "log10_norms": _with_gaps(), "rate": -23.0}])
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all(lab.startswith("$10^{") for lab in labels)
    assert "$10^{-600}$" in labels or "$10^{-500}$" in labels
    sizes = [t.get_fontsize() for t in ax.get_yticklabels() + ax.get_xticklabels()]
    sizes += [ax.xaxis.label.get_fontsize(), ax.yaxis.label.get_fontsize()]
    sizes += [t.get_fontsize() for t in ax.get_legend().get_texts()]
    assert min(sizes) >= 9


def test_decay_plot_unnormalized_median_counts_zero_gradients_and_skips_nans():
    a = _seeds(0.02, 5)
    a[0, 3] = -np.inf  # one zero gradient among five: the median is still finite
    a[1, 3] = np.nan  # missing: median over the other four
    a[:, 7] = -np.inf  # all zero: a gap
    _, ax = _fig()
    plots.decay_plot(ax, [{"label": "x", "log10_norms": a, "rate": float("nan")}], normalize=False)
    y = np.asarray(ax.lines[0].get_ydata())
    assert ax.get_ylabel() == r"$\|dL/dh_t\|$"
    assert y[3] == np.median(np.delete(a[:, 3], 1)) and np.isnan(y[7])
    keep = np.setdiff1d(np.arange(T + 1), [3, 7])
    np.testing.assert_array_equal(y[keep], np.median(a[:, keep], axis=0))
    assert _legend_texts(ax) == ["x (rate n/a)"]


def test_decay_plot_theory_does_not_stretch_the_data_range():
    _, ax = _fig()
    theory = [{"label": "steep", "rate": -50.0, "color": "k"}]
    plots.decay_plot(ax, [{"label": "a", "log10_norms": _seeds(0.01, 3), "rate": None}], theory=theory)
    assert ax.get_ylim()[0] > -5
    assert ax.lines[1].get_ydata()[0] == 0.0 and ax.lines[1].get_color() == "k"


def test_depth_plot_residual_vs_plain():
    layers = 12
    residual = -0.01 * np.arange(layers, -1, -1.0) + 0.1 * RNG.standard_normal((5, layers + 1))
    plain = -3.0 * np.arange(layers, -1, -1.0)
    _, ax = _fig()
    curves = [
        {"label": "residual", "log10_norms": residual, "rate": -0.02},
        {"label": "plain", "log10_norms": plain, "rate": -6.9},
    ]
    assert plots.depth_plot(ax, curves) is ax
    assert ax.get_xlabel() == "layer $l$ (0 = input)" and "dL/dx_l" in ax.get_ylabel()
    assert _legend_texts(ax) == ["residual (rate -0.02/layer)", "plain (rate -6.9/layer)"]
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), np.arange(layers + 1))
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.median(residual - residual[:, -1:], axis=0))
    np.testing.assert_array_equal(ax.lines[1].get_ydata(), plain)
    assert len(ax.collections) == 1


def test_paths_plot_c_and_h():
    c = _seeds(0.001, 5)
    c[:, -1] = -np.inf  # dL/dc_T = 0 when the loss reads only h_T
    h = _with_gaps()
    steps_back = np.arange(T, -1, -1)
    _, ax = _fig()
    assert plots.paths_plot(ax, steps_back, c, h, label="LSTM") is ax
    assert ax.get_xlabel() == "steps back from the loss" and "dL/dc_t" in ax.get_ylabel()
    assert _legend_texts(ax) == ["LSTM c-path (cell state)", "LSTM h-path (hidden)"]
    yc = np.asarray(ax.lines[0].get_ydata())
    np.testing.assert_array_equal(yc[:-1], np.median(c[:, :-1], axis=0))
    assert np.isnan(yc[-1])
    assert np.asarray(ax.lines[1].get_ydata())[0] == -600.0
    assert len(ax.lines) == 2 and len(ax.collections) == 1
    with pytest.raises(ValueError, match="steps_back has 61 entries but h-path"):
        plots.paths_plot(ax, steps_back, c, h[:-1])


def test_heatmap_small_grid_annotated_centred_with_grey_nans():
    sw, sb = np.linspace(0.5, 2.5, 5), np.array([0.0, 0.1, 0.3, 0.5])
    rates = np.log(sw)[None, :] - sb[:, None]
    rates[2, 3] = np.nan
    fig, ax = _fig()
    crit = (np.exp(sb), sb)
    out = plots.heatmap(
        ax,
        rates,
        sw,
        sb,
        x_label="sigma_w",
        y_label="sigma_b",
        value_label="rate",
        critical_line=crit,
        center=0.0,
    )
    assert out is ax
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("sigma_w", "sigma_b")
    (mesh,) = ax.collections
    assert mesh.norm.vmin == -mesh.norm.vmax and mesh.get_cmap()._rgba_bad[:3] == (0.7, 0.7, 0.7)
    assert np.ma.getmaskarray(mesh.get_array()).reshape(4, 5)[2, 3]
    assert fig.axes[-1].get_ylabel() == "rate"  # the colorbar
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 20 and texts[2 * 5 + 3] == "n/a" and texts[0] == f"{rates[0, 0]:.2g}"
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), crit[0])
    np.testing.assert_allclose(ax.get_xticks(), sw)


def test_heatmap_large_grid_not_annotated_and_shape_checked():
    _, ax = _fig()
    plots.heatmap(
        ax, np.ones((12, 11)), np.arange(11), np.arange(12), x_label="x", y_label="y", value_label="v"
    )
    assert not ax.texts
    with pytest.raises(ValueError, match="values must be"):
        plots.heatmap(
            ax, np.ones((11, 12)), np.arange(11), np.arange(12), x_label="", y_label="", value_label=""
        )


def test_save_figure_writes_png_and_svg_atomically(tmp_path):
    fig, ax = _fig()
    plots.decay_plot(ax, [{"label": "a", "log10_norms": _seeds(0.05, 5), "rate": -0.1}])
    paths = plots.save_figure(fig, tmp_path / "sub" / "decay", dpi=100)
    assert paths == [tmp_path / "sub" / "decay.png", tmp_path / "sub" / "decay.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(paths[0]).shape[:2] == (400, 640)
    assert ET.parse(paths[1]).getroot().tag.endswith("svg")
    assert sorted(os.listdir(tmp_path / "sub")) == ["decay.png", "decay.svg"]
    with pytest.raises(ValueError, match="not supported"):
        plots.save_figure(fig, tmp_path / "sub" / "decay", formats=("nosuchformat",))
    assert sorted(os.listdir(tmp_path / "sub")) == ["decay.png", "decay.svg"]


def test_save_figure_tightens_a_figure_without_layout(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    plots.paths_plot(fig.add_subplot(), np.arange(4), np.zeros(4), np.ones(4))
    (path,) = plots.save_figure(fig, tmp_path / "p", formats=("png",), dpi=50)
    assert matplotlib.image.imread(path).shape[:2] == (100, 150)


def test_legend_inside_when_room_below_the_axes_when_data_everywhere():
    fig, ax = _fig()
    plots.depth_plot(ax, [{"label": "residual", "log10_norms": np.zeros((3, 9)), "rate": 0.0}])
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    leg, box = ax.get_legend().get_window_extent(r), ax.get_window_extent(r)
    assert box.x0 <= leg.x0 and leg.x1 <= box.x1 and box.y0 <= leg.y0 and leg.y1 <= box.y1

    fig, ax = _fig()
    k = np.arange(T, -1, -1.0)
    busy = [{"label": f"rate {r_}", "log10_norms": _seeds(r_, 5), "rate": r_} for r_ in (-0.1, 0.1)]
    busy += [{"label": "wiggle", "log10_norms": 6 * np.sin(k / 3), "rate": None}]
    plots.decay_plot(ax, busy)
    fig.canvas.draw()
    leg, box = ax.get_legend().get_window_extent(r), ax.get_window_extent(r)
    assert leg.y1 < ax.xaxis.label.get_window_extent(r).y0 < box.y0  # under the x label, inside the figure
    assert leg.y0 >= 0 and leg.x0 >= 0 and leg.x1 <= fig.bbox.width


def test_legend_outside_right():
    fig, ax = _fig()
    plots.paths_plot(ax, np.arange(4), np.zeros(4), np.ones(4), legend="outside")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    assert ax.get_legend().get_window_extent(r).x0 > ax.get_window_extent(r).x1


def test_depth_plot_theory_line_starts_at_the_output_layer():
    _fig, ax = plots.figure()
    logs = np.linspace(-2.0, 0.0, 21)  # 20 layers, normalized at the top
    theory = [{"label": "dashed", "rate": -0.2, "color": 0, "show_rate": False}]
    plots.depth_plot(ax, [{"label": "plain", "log10_norms": logs, "rate": -0.23}], theory=theory)
    line = next(ln for ln in ax.lines if ln.get_linestyle() == "--")
    x, y = line.get_xdata(), line.get_ydata()
    np.testing.assert_allclose(y[x == 20.0], 0.0, atol=1e-12)  # x = L: the loss end
    np.testing.assert_allclose(y[x == 0.0], -0.2 * 20 / np.log(10), rtol=1e-12)  # 20 layers back
    assert line.get_label() == "dashed"  # show_rate=False: no rate appended
