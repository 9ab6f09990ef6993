"""Words from numbers: the rate phrase, measured sentences, header rewriting, run names in overlays,
a theory rate of 0 in legends, and cell labels filled from the resolved config."""

import math
import pathlib

import numpy as np
import pytest
from conftest import write_config

from gradflow import config as cfgmod
from gradflow import experiment, figures, plots, words
from gradflow.cli.measure import _half_life

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------- describe_rate
@pytest.mark.parametrize(
    ("rate", "half_life", "unit", "expected"),
    [
        (-0.4652, None, "step", "vanishes, halves every 1.49 steps"),
        (0.0328, None, "step", "grows, doubles every 21.1 steps"),
        (0.0328, 21.2, "step", "grows, doubles every 21.2 steps"),
        (-math.log(2.0), None, "step", "vanishes, halves every 1 step"),
        (-0.35, None, "layer", "vanishes, halves every 1.98 layers"),
        (0.0, math.inf, "step", "flat"),
        (float("nan"), float("nan"), "step", "no fit"),
        (None, None, "step", "no fit"),
        (math.inf, 0.0, "step", "no fit"),
        (0.5, math.inf, "step", "grows"),  # a half-life that is not finite is never printed
    ],
)
def test_describe_rate(rate, half_life, unit, expected):
    assert words.describe_rate(rate, half_life, unit) == expected


def test_describe_rate_half_life_is_ln2_over_rate():
    for rate in (-2.0, -0.01, 0.003, 1.7):
        text = words.describe_rate(rate)
        assert float(text.split("every ")[1].split()[0]) == pytest.approx(math.log(2) / abs(rate), rel=5e-3)
        assert text.startswith("vanishes, halves" if rate < 0 else "grows, doubles")


def test_cli_tables_word_rates_with_describe_rate():
    assert _half_life(0.0328, 21.2) == "grows, doubles every 21.2 steps"
    assert _half_life(-0.35, 1.98, "layer") == "vanishes, halves every 1.98 layers"
    assert _half_life(float("nan"), float("nan")) == "no fit"


# ------------------------------------------------------------------------------- sentences
def _measure_summary():
    runs = [
        {"label": "tanh RNN", "point": {}, "axis": "time", "fit": {"total": {"rate": -0.47}}},
        {"label": "residual x20", "point": {}, "axis": "depth", "fit": {"total": {"rate": -0.002}}},
    ]
    settings = [
        {"label": "tanh RNN", "median_rate": -0.4652, "median_half_life": 1.49, "seeds": 3},
        {"label": "residual x20", "median_rate": 0.0328, "median_half_life": 21.2, "seeds": 3},
    ]
    return {"name": "x", "runs": runs, "settings": settings}


def test_measured_sentence_of_a_measurement_run():
    assert words.measured_sentence(_measure_summary()) == (
        "tanh RNN vanishes, halves every 1.49 steps; residual x20 grows, doubles every 21.2 layers"
    )
    assert words.measured_head("full", _measure_summary()).startswith("measured (full, median over 3 seeds;")


def test_measured_sentence_of_a_training_run():
    base = {"seeds": [0, 1, 2], "diverged": 0, "median_final_ratio": 0.0471}
    summary = {
        "kind": "train",
        "settings": [
            {**base, "label": "LSTM (steps=50)", "solved": 3, "median_solved_step": 300.0},
            {**base, "label": "tanh RNN (steps=50)", "solved": 0, "median_solved_step": None}
            | {"median_final_ratio": 1.0213, "diverged": 1},
        ],
    }
    assert words.measured_sentence(summary) == (
        "LSTM (steps=50): solved 3/3 (median step 300), final loss 0.0471 x baseline; "
        "tanh RNN (steps=50): not solved (0/3), diverged 1/3, final loss 1.02 x baseline"
    )


def test_a_2d_grid_is_worded_by_spans_per_row():
    rates = {
        (0.5, 0.0): -0.7,
        (1.0, 0.0): -0.01,
        (1.5, 0.0): 0.2,
        (0.5, 0.1): -0.6,
        (1.0, 0.1): -0.1,
        (1.5, 0.1): -0.02,
    }
    runs = [
        {"label": "plain", "point": {"w": w, "b": b}, "fit": {"total": {"rate": r}}}
        for (w, b), r in rates.items()
    ]
    assert words.measured_sentence({"runs": runs, "settings": []}) == (
        "plain at b=0.0: vanishes at w 0.5-1.0, grows at w 1.5; plain at b=0.1: vanishes at w 0.5-1.5"
    )


def test_compare_words_exactly_numbers_within_rtol():
    a = "tanh RNN vanishes, halves every 1.49 steps; LSTM grows, doubles every 21.2 steps"
    assert words.compare(a, a, 0.02) == []
    assert words.compare(a, a.replace("1.49", "1.5"), 0.02) == []  # within 2 %
    assert "1.6 vs 1.49" in words.compare(a, a.replace("1.49", "1.6"), 0.02)[0]
    assert words.compare(a, a.replace("LSTM grows, doubles", "LSTM vanishes, halves"), 0.02)
    assert words.compare(a, a.split("; ")[0], 0.02) == ["1 settings stated, 2 measured: " + repr(a)]
    loss = (
        "LSTM: not solved (0/1), final loss 0.247 x baseline; "
        "GRU: solved 1/1 (median step 500), final loss 0.0433 x baseline"
    )
    other_cpu = loss.replace("0.247", "0.322").replace("0.0433", "0.0451")
    assert "0.322 vs 0.247, rtol 0.02" in words.compare(loss, other_cpu, 0.02)[0]
    assert words.compare(loss, other_cpu, 0.02, loss_factor=1.5) == []
    far = words.compare(loss, loss.replace("0.247", "0.5"), 0.02, loss_factor=1.5)
    assert "0.5 vs 0.247, factor 1.5" in far[0]
    assert words.compare(loss, loss.replace("step 500", "step 600"), 0.02, loss_factor=1.5)  # steps: rtol
    assert words.compare(loss, loss.replace("1/1", "0/1"), 0.02, loss_factor=1.5)


def test_header_lines_round_trip_through_a_config(tmp_path):
    summary = _measure_summary()
    lines = words.header_lines(summary, summary, width=60)
    assert all(len(line) <= 60 and line.startswith("# ") for line in lines) and len(lines) > 2
    text = (ROOT / "configs" / "compare_cells.yaml").read_text()
    once = words.write_header(text, lines)
    assert words.write_header(once, lines) == once  # rewriting replaces, never duplicates
    stated = words.read_header(once)
    assert stated["full"] == stated["--quick"] == words.measured_sentence(summary)
    assert stated["figure"] == words.read_header(text)["figure"]  # the prose is kept as it was
    assert experiment.load_config(write_config(tmp_path, once)).name == "compare_cells"  # still a config


# ------------------------------------------------------------------------------- overlays
def _run(path, name="compare_cells"):
    return figures.Run(name, [], {}, {}, path=None if path is None else pathlib.Path(path))


def test_overlay_names_come_from_the_run_directories():
    assert figures.overlay_names([_run("/r/a"), _run("/r/b")]) == ["a", "b"]
    assert figures.overlay_names([_run("/x/run"), _run("/y/run"), _run("/y/other")]) == [
        "x/run",
        "y/run",
        "other",
    ]
    assert figures.overlay_names([_run("/p/q/run"), _run("/s/q/run")]) == ["p/q/run", "s/q/run"]
    assert figures.overlay_names([_run("/r/a")]) == ["compare_cells"]  # one run: its own name
    assert figures.overlay_names([_run(None, "m"), _run(None, "n")]) == ["m", "n"]  # built in memory
    assert figures.overlay_names([_run("/r/a"), _run("/r/a")]) == ["a (0)", "a (1)"]  # the same twice


# ------------------------------------------------------------------------------- theory rate 0
def test_a_theory_rate_of_zero_gets_a_legend_entry_and_no_line(config_run):
    """depth_residual_vs_plain: the plain stack at sigma_w = 1, sigma_b = 0 is critical (theory rate 0)."""
    run = figures.load(config_run("depth_residual_vs_plain"))
    panel = figures.curves(run.runs, run.arrays)
    theory = {c["label"]: c["theory_rate"] for c in panel}
    assert theory["plain"] == 0.0 and theory["plain sigma_w^2=0.5"] == pytest.approx(np.log(0.7071))
    assert np.isnan(theory["residual"])  # no closed form: no theory entry at all
    lines = figures.theory_lines(panel)
    critical = [t for t in lines if t.get("draw", True) is False]
    assert [t["label"] for t in critical] == [f"plain: {figures.CRITICAL}"]
    drawn = [t for t in lines if t.get("draw", True)]
    assert [t["rate"] for t in drawn] == [theory["plain sigma_w^2=0.5"]]
    assert drawn[0]["label"] == "dashed: theory, same colour"
    _fig, ax = plots.figure()
    plots.depth_plot(ax, panel, theory=lines)
    dashed = [ln for ln in ax.lines if ln.get_label() == "dashed: theory, same colour"]
    assert len(dashed) == 1 and np.all(np.diff(dashed[0].get_ydata()) < 0)  # sloped, not flat
    critical = [ln for ln in ax.lines if figures.CRITICAL in ln.get_label()]
    assert len(critical) == 1 and len(critical[0].get_xdata()) == 0  # a legend entry, nothing drawn
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"plain: {figures.CRITICAL}" in legend


# ------------------------------------------------------------------------------- labels
def test_labels_are_filled_from_the_resolved_config():
    path = ROOT / "configs" / "compare_cells.yaml"
    full = [c.label for c in experiment.load_config(path).cells]
    quick = [c.label for c in experiment.load_config(path, quick=True).cells]
    assert full[-2:] == ["residual x100", "plain x100"] and quick[-2:] == ["residual x20", "plain x20"]
    assert [c.label for c in experiment.load_config(path, ["cells.5.options.depth=7"]).cells][
        -1
    ] == "plain x7"


def test_quick_compare_cells_run_labels_say_x20(config_run):
    import json

    summary = json.loads((config_run("compare_cells") / "summary.json").read_text())
    labels = {s["label"] for s in summary["settings"]}
    assert {"residual x20", "plain x20"} <= labels and not any("x100" in x for x in labels)
    assert {r["steps"] for r in summary["runs"] if r["label"] == "plain x20"} == {20}


CELL = """name: t
cells:
  - {label: "LABEL", cell: rnn, options: {hidden_size: 4}}
inputs: {steps: 3}
"""


def test_label_placeholders_use_defaults_and_reject_unknown_names(tmp_path):
    ok = write_config(tmp_path, CELL.replace("LABEL", "rnn {activation} h{hidden_size}"))
    assert experiment.load_config(ok).cells[0].label == "rnn tanh h4"
    bad = write_config(tmp_path, CELL.replace("LABEL", "rnn x{depth}"), "bad.yaml")
    with pytest.raises(cfgmod.ConfigError) as err:
        experiment.load_config(bad)
    text = str(err.value)
    assert text.startswith(f"{bad}: cells.0.label 'rnn x{{depth}}': unknown placeholder {{depth}}")
    assert "'hidden_size'" in text and "'weight_scale'" in text and "\n" not in text
    broken = write_config(tmp_path, CELL.replace("LABEL", "rnn {hidden_size"), "broken.yaml")
    with pytest.raises(cfgmod.ConfigError, match=r"broken.yaml: cells.0.label .*write \{option\}"):
        experiment.load_config(broken)
    swept = (
        CELL.replace("LABEL", "rnn h{hidden_size}") + "sweep: {grid: {cells.0.options.hidden_size: [4, 8]}}\n"
    )
    with pytest.raises(cfgmod.ConfigError, match=r"placeholder \{hidden_size\} names a swept option"):
        experiment.load_config(write_config(tmp_path, swept, "swept.yaml"))
