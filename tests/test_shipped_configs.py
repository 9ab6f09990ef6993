"""Every config in configs/ runs through the CLI at --quick size, and its numbers make sense."""

import pathlib
import subprocess

import numpy as np
import pytest
from conftest import load_run, runs_by_label

from gradflow import experiment, theory
from gradflow.cli.listing import _header

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
REQUIRED = {
    "compare_cells",
    "rnn_init_sweep",
    "phase_diagram",
    "lstm_forget_bias",
    "depth_residual_vs_plain",
    "adding",
    "clipping",
    "copy",
    "bidirectional",
    "lstm_variants",
    "residual_training",
}


def _run(name, config_run):
    """``gradflow run configs/<name>.yaml --quick``, run once per session (conftest.config_run)."""
    out = config_run(name)
    return out, *load_run(out)


def _rate(summary, **point):
    """Median total rate of the runs at a sweep point given by the last key component."""
    rates = [
        r["fit"]["total"]["rate"]
        for r in summary["runs"]
        if all(r["point"][next(k for k in r["point"] if k.endswith(key))] == v for key, v in point.items())
    ]
    assert rates, point
    return float(np.median(rates))


def test_the_required_configs_are_shipped_with_a_header():
    assert {p.stem for p in CONFIGS} >= REQUIRED
    for path in CONFIGS:
        info = _header(path)
        assert info.get("command") == f"gradflow run {path.stem}", path.name
        assert "s on a 2-core laptop CPU" in info.get("runtime", ""), path.name
        assert len(info.get("figure", "")) > 40, path.name
        cfg = experiment.load_config(path)
        assert cfg.name == path.stem and cfg.quick, path.name  # every config has a quick switch


def test_rnn_init_sweep(config_run):
    _out, summary, arrays = _run("rnn_init_sweep", config_run)
    assert summary["compiles"] == 1 and len(summary["runs"]) == 8 * 2  # 8 scales x 2 seeds, one shape
    assert set(summary["figures"]) == {"decay.png", "decay.svg"}
    log10 = arrays["total_log10_norms"]
    for i, run in enumerate(summary["runs"]):
        T = run["steps"]
        ratio = log10[i, 0] - log10[i, T]  # log10 ||dL/dh_0|| / ||dL/dh_T||
        assert run["fit"]["log10_first_last_ratio"] == pytest.approx(ratio, abs=1e-5)
        if run["point"]["cells.0.options.weight_scale"] == 0.5:
            # vanishing: the fitted rate is the per-step norm ratio
            assert run["fit"]["total"]["rate"] < -0.3
            assert run["fit"]["total"]["rate"] == pytest.approx(np.log(10) * ratio / T, rel=0.1)
    rates = [_rate(summary, weight_scale=s) for s in (0.5, 1.0, 2.0, 3.0)]
    assert rates == sorted(rates)  # larger sigma_w keeps more gradient
    for setting in summary["settings"]:  # mean field with the input term, recomputed here
        sigma_w = float(setting["label"].split("weight_scale=")[1].rstrip(")"))
        expected = theory.mean_field("tanh", sigma_w, 0.0, 1.0).rate
        assert setting["theory_rate"] == pytest.approx(expected, rel=1e-9)


def test_lstm_forget_bias(config_run):
    _out, summary, arrays = _run("lstm_forget_bias", config_run)
    assert summary["compiles"] == 1 and len(summary["runs"]) == 4
    assert {"decay.png", "paths.png"} <= set(summary["figures"])
    rates = [_rate(summary, forget_bias=b) for b in (0.0, 1.0, 3.0)]
    assert rates == sorted(rates) and rates[0] < -0.2  # the forget bias keeps the carry
    c, h = arrays["log10_norms_c"], arrays["log10_norms_h"]
    assert np.all(np.isfinite(c)) and np.all(np.isfinite(h))
    # the total norm combines the carry parts: ||(dc, dh)||^2 = ||dc||^2 + ||dh||^2
    np.testing.assert_allclose(
        arrays["total_log10_norms"], 0.5 * np.log10(10 ** (2.0 * c) + 10 ** (2.0 * h)), atol=1e-4
    )


def test_depth_residual_vs_plain(config_run):
    _out, summary, arrays = _run("depth_residual_vs_plain", config_run)
    assert all(r["steps"] == 10 and r["axis"] == "depth" for r in summary["runs"])  # quick: depth 10
    assert arrays["total_log10_norms"].shape == (5 * 3, 11)
    rates = {s["label"]: s["median_rate"] for s in summary["settings"]}
    # sigma_w^2 = 0.5, sigma_b = 0: mean field chi_1 = sigma_w^2, rate 0.5 ln 0.5 = -0.35 per layer
    assert rates["plain sigma_w^2=0.5"] == pytest.approx(0.5 * np.log(0.5), abs=0.12)
    assert rates["residual"] > rates["plain sigma_w^2=0.5"]
    predicted = {s["label"]: s["theory_rate"] for s in summary["settings"]}
    assert predicted["plain sigma_w^2=0.5"] == pytest.approx(np.log(0.7071), rel=1e-9)  # chi_1 = sigma_w^2
    assert predicted["residual"] is None and predicted["plain + batch norm"] is None  # no closed form
    assert abs(rates["residual"]) < 0.05  # alpha = 1/sqrt(L): close to flat


def test_phase_diagram(config_run):
    out, summary, _arrays = _run("phase_diagram", config_run)
    assert summary["compiles"] == 1 and len(summary["runs"]) == 9 * 6  # a 9 x 6 grid, one seed, one shape
    assert {"decay.png", "phase.png", "phase.svg"} <= set(summary["figures"])
    # sigma_b = 0 and sigma_w < 1: q* = 0 and chi_1 = sigma_w^2, rate = ln sigma_w per layer
    assert _rate(summary, weight_scale=0.5, bias_scale=0.0) == pytest.approx(np.log(0.5), abs=0.15)
    assert _rate(summary, weight_scale=3.0, bias_scale=0.0) > 0.1  # chaotic
    from gradflow import figures

    run = figures.load(out)
    values, xs, ys = figures.phase_values(run, "plain tanh stack")
    assert values.shape == (6, 9) and np.all(np.isfinite(values))
    cx, rows = figures.zero_crossing(values, xs)
    assert 0 in rows and 0.75 < cx[list(rows).index(0)] < 1.75  # the edge near sigma_w = 1 at sigma_b = 0
    predicted = figures.phase_theory(run, "plain tanh stack")
    for (i, j), value in np.ndenumerate(predicted):
        assert value == pytest.approx(theory.mean_field("tanh", xs[j], ys[i]).rate, rel=1e-9)
    sigma_w, sigma_b = figures.critical_line_theory(run, "plain tanh stack")
    assert sigma_b[0] == 0.0 and sigma_w[0] == pytest.approx(1.0, abs=1e-6)  # sigma_b = 0: sigma_w* = 1
    assert np.all(np.diff(sigma_w) > 0)


def test_phase_diagram_large(config_run):
    """The 64 x 64 showcase at --quick size: one compiled group of 4,096 runs; the edge of chaos where
    mean field puts it at sigma_b = 0."""
    out, summary, _arrays = _run("phase_diagram_large", config_run)
    assert summary["compiles"] == 1 and len(summary["runs"]) == 64 * 64
    from gradflow import figures

    run = figures.load(out)
    values, xs, _ys = figures.phase_values(run, "plain tanh stack")
    assert values.shape == (64, 64) and np.all(np.isfinite(values))
    cx, rows = figures.zero_crossing(values, xs)
    assert 0 in rows and 0.75 < cx[list(rows).index(0)] < 1.75  # the edge near sigma_w = 1 at sigma_b = 0
    sigma_w, _sigma_b = figures.critical_line_theory(run, "plain tanh stack")
    assert sigma_w[0] == pytest.approx(1.0, abs=1e-6)


def test_compare_cells(config_run):
    out, summary, arrays = _run("compare_cells", config_run)
    for name in ("config.yaml", "results.npz", "results.csv", "summary.json", "decay.png", "decay.svg"):
        assert (out / name).is_file(), name
    assert (out / "decay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["compiles"] == 6 and len(summary["runs"]) == 18  # 6 cells x 3 seeds, one compile per cell
    assert arrays["total_log10_norms"].shape == (18, 21)
    assert np.all(np.isfinite(arrays["total_log10_norms"][arrays["label"] == "tanh RNN"]))
    rates = {s["label"]: s["median_rate"] for s in summary["settings"]}
    assert rates["tanh RNN"] < rates["LSTM"] < 0  # the carry keeps more
    assert rates["plain x20"] < rates["residual x20"]  # labels from the resolved --quick depth
    assert not (out / ".parts").exists()
    assert 0 < summary["compile_time_s"] <= summary["wall_time_s"]
    assert {r["axis"] for r in summary["runs"] if r["cell"] in ("residual", "plain")} == {"depth"}
    assert {"decay.png", "decay.svg", "paths.png"} <= set(summary["figures"])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert summary["git_commit"] == head.stdout.strip() and len(summary["git_commit"]) == 40  # the checkout's


# ------------------------------------------------------------------------------ training configs
@pytest.mark.slow
def test_copy_gated_cells_beat_the_memoryless_baseline(config_run):
    _out, summary, _arrays = _run("copy", config_run)
    runs = runs_by_label(summary)
    assert runs["GRU"][0]["final_ratio"] < 0.3 and runs["LSTM"][0]["final_ratio"] < 0.6
    assert runs["tanh RNN"][0]["final_ratio"] > 0.8 and not runs["tanh RNN"][0]["solved"]
    # 5 symbols of 8 recalled over T = lag + 2 x length = 20 steps
    assert summary["runs"][0]["baseline"] == pytest.approx(5 * np.log(8) / 20)


# adding, clipping, bidirectional and lstm_variants run (at --quick) inside the claims report;
# tests/test_claims.py checks their numbers there instead of training them twice.
