"""Experiment configs: loading, defaults, overrides, sweeps, and one-line errors."""

import dataclasses
import pickle
import textwrap

import pytest

from gradflow import cells
from gradflow.config import (
    CellSpec,
    Config,
    ConfigError,
    Fit,
    Inputs,
    Output,
    Sweep,
    config_to_dict,
    dump_config,
    sweep_points,
)
from gradflow.runs.configs import REGISTRIES, build_cell, load_config
from gradflow.seam import Cell

MINIMAL = """\
name: compare
cells:
  - label: tanh RNN
    cell: rnn
    options: {hidden_size: 16, weight_scale: 1}
  - {label: LSTM, cell: lstm, options: {hidden_size: 16}}
"""

FULL = """\
# command: gradflow run full.yaml   (a few seconds; log10 ||dL/dh_t|| per cell)
name: full
cells:
  - {label: tanh RNN, cell: rnn, options: {hidden_size: 16, activation: tanh}}
  - {cell: residual, options: {width: 8, depth: 20, alpha: 0.5}}
  - {label: deep, cell: stacked, options: {hidden_size: 8, cell: gru, cell_options: {update_bias: 1}}}
inputs: {size: 4, steps: 50, batch: 2, distribution: uniform, scale: 2}
loss: every_step
measures: [gradient_norms]
fit: {window: [1, 3]}  # k_max <= T at every point, --quick too
sweep:
  grid: {cells.0.options.weight_scale: [0.5, 1, 2], inputs.steps: [10, 20]}
  seeds: [0, 3]
output: {dir: out/full, formats: [pdf]}
quick: {inputs.steps: 5, cells.0.options.hidden_size: 4, sweep.grid.inputs.steps: [3]}
"""


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_minimal_config_gets_typed_defaults(tmp_path):
    cfg = load_config(write(tmp_path, MINIMAL))
    assert isinstance(cfg, Config)
    assert cfg.name == "compare"
    assert cfg.cells == (
        CellSpec("tanh RNN", "rnn", {"hidden_size": 16, "weight_scale": 1.0}),
        CellSpec("LSTM", "lstm", {"hidden_size": 16}),
    )
    assert type(cfg.cells[0].options["weight_scale"]) is float  # YAML 1 -> 1.0, as the option's default
    assert cfg.inputs == Inputs(size=8, steps=200, batch=16, distribution="normal", scale=1.0)
    assert (cfg.loss, cfg.measures, cfg.fit) == ("final", ("gradient_norms",), Fit(None))
    assert cfg.sweep == Sweep(grid={}, seeds=(0,))
    assert cfg.output == Output(dir="runs/compare", formats=("png", "svg"))
    assert cfg.quick == {}
    assert isinstance(build_cell(cfg.cells[1]), Cell)


def test_full_config_types(tmp_path):
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.cells[1].label == "residual"  # the label defaults to the cell name
    assert cfg.cells[1].options == {"width": 8, "depth": 20, "alpha": 0.5}
    assert cfg.cells[2].options["cell_options"] == {"update_bias": 1}
    assert cfg.inputs == Inputs(size=4, steps=50, batch=2, distribution="uniform", scale=2.0)
    assert type(cfg.inputs.scale) is float
    assert (cfg.loss, cfg.fit.window) == ("every_step", (1, 3))
    assert cfg.sweep.grid == {"cells.0.options.weight_scale": (0.5, 1.0, 2.0), "inputs.steps": (10, 20)}
    assert all(type(v) is float for v in cfg.sweep.grid["cells.0.options.weight_scale"])
    assert cfg.sweep.seeds == (0, 3)
    assert cfg.output == Output(dir="out/full", formats=("pdf",))
    assert cfg.quick["sweep.grid.inputs.steps"] == (3,)
    for spec in cfg.cells:
        assert isinstance(build_cell(spec), Cell)


def test_configs_are_immutable_hashable_and_picklable(tmp_path):
    cfg = load_config(write(tmp_path, FULL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "other"
    with pytest.raises(TypeError, match="read-only"):
        cfg.cells[0].options["hidden_size"] = 3
    with pytest.raises(TypeError, match="read-only"):
        cfg.sweep.grid.update({})
    assert hash(cfg) == hash(load_config(write(tmp_path, FULL, "again.yaml")))
    assert pickle.loads(pickle.dumps(cfg)) == cfg


@pytest.mark.parametrize("text", [MINIMAL, FULL])
def test_dump_and_load_round_trip(tmp_path, text):
    cfg = load_config(write(tmp_path, text), ["inputs.scale=1e-3"])
    dumped = dump_config(cfg)
    assert dumped.startswith("name: ")
    assert load_config(write(tmp_path, dumped, "dumped.yaml")) == cfg
    assert list(config_to_dict(cfg)) == [
        "name", "cells", "inputs", "loss", "measures", "fit", "sweep", "output", "quick"
    ]  # fmt: skip
    assert config_to_dict(cfg)["inputs"]["scale"] == 1e-3


def test_overrides(tmp_path):
    path = write(tmp_path, MINIMAL)
    cfg = load_config(
        path,
        [
            "inputs.steps=50",
            "inputs.scale=0.5",
            "loss=readout",
            "sweep.seeds=[0,1,2]",
            "cells.0.options.hidden_size=8",
            "cells.1.label=big LSTM",
            "cells.1.options.forget_bias=3",  # a new option of that cell
            "fit.window=[2, 30]",
            "output.formats=[svg, pdf]",
            "sweep.grid.inputs.batch=[1, 2]",
            "inputs.steps=60",  # the later one wins
        ],
    )
    assert (cfg.inputs.steps, cfg.inputs.scale, cfg.loss) == (60, 0.5, "readout")
    assert cfg.sweep.seeds == (0, 1, 2)
    assert cfg.cells[0].options == {"hidden_size": 8, "weight_scale": 1.0}
    assert cfg.cells[1] == CellSpec("big LSTM", "lstm", {"hidden_size": 16, "forget_bias": 3.0})
    assert cfg.fit.window == (2, 30) and cfg.output.formats == ("svg", "pdf")
    assert cfg.sweep.grid == {"inputs.batch": (1, 2)}
    # a whole section or list replaced; an override may fix the file
    cfg = load_config(path, ["inputs={steps: 7}", "cells=[{cell: gru, options: {hidden_size: 3}}]"])
    assert cfg.inputs == Inputs(steps=7) and cfg.cells == (CellSpec("gru", "gru", {"hidden_size": 3}),)
    bad = write(tmp_path, MINIMAL + "inputs: {steps: 0}\n", "bad.yaml")
    assert load_config(bad, ["inputs.steps=3"]).inputs.steps == 3


def test_quick_overrides(tmp_path):
    path = write(tmp_path, FULL)
    assert load_config(path).inputs.steps == 50
    quick = load_config(path, quick=True)
    assert quick.inputs.steps == 5 and quick.cells[0].options["hidden_size"] == 4
    assert quick.sweep.grid["inputs.steps"] == (3,)
    assert quick.quick == load_config(path).quick  # kept, so the saved config says what --quick does
    assert load_config(path, ["inputs.steps=9"], quick=True).inputs.steps == 9  # --set beats --quick


def test_sweep_points_expand_the_grid_in_order(tmp_path):
    path = write(tmp_path, FULL)
    cfg = load_config(path)
    points = sweep_points(cfg, registries=REGISTRIES)
    assert len(points) == 6
    assert [p for p, _ in points] == [
        {"cells.0.options.weight_scale": w, "inputs.steps": t} for w in (0.5, 1.0, 2.0) for t in (10, 20)
    ]
    for point, point_cfg in points:
        assert point_cfg.cells[0].options["weight_scale"] == point["cells.0.options.weight_scale"]
        assert point_cfg.inputs.steps == point["inputs.steps"]
        assert point_cfg.sweep == Sweep(grid={}, seeds=(0, 3))  # one run per seed; seeds not expanded
        sets = [f"{k}={v}" for k, v in point.items()] + ["sweep.grid={}"]
        assert point_cfg == load_config(path, sets)
    assert sweep_points(load_config(write(tmp_path, MINIMAL)), registries=REGISTRIES) == [
        ({}, load_config(tmp_path / "exp.yaml"))
    ]


def test_sweep_points_reject_a_bad_combination(tmp_path):
    text = MINIMAL + "sweep: {grid: {cells.1.cell: [lstm, gru], cells.1.options.forget_bias: [2]}}\n"
    cfg = load_config(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"sweep point .*forget_bias"):
        sweep_points(cfg, registries=REGISTRIES)  # each value is valid alone; gru has no forget_bias


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read the config") as info:
        load_config(tmp_path / "missing.yaml")
    assert "\n" not in str(info.value) and isinstance(info.value, ValueError)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def replace_cells(options_0):
    return MINIMAL.replace("{hidden_size: 16, weight_scale: 1}", options_0)


# (id, file text, fragments the one-line message must contain besides the file name)
BAD_FILES = [
    ("yaml-syntax", MINIMAL + "inputs:\n  size: 8\n   steps: 3\n", ["line 9", "invalid YAML"]),
    ("yaml-duplicate-key", MINIMAL + "loss: final\nloss: readout\n", ["line 8", "duplicate key 'loss'"]),
    ("yaml-python-tag", MINIMAL + "loss: !!python/object/apply:os.system [ls]\n", ["line 7", "invalid YAML"]),
    ("top-level-list", "- name: x\n", ["top level is a list", "expected a mapping"]),
    ("empty", "# nothing\n", ["top level is empty", "expected a mapping"]),
    ("unknown-top-key", MINIMAL + "inptus: {size: 3}\n", ["'inptus' at top level", "expected one of ["]),
    ("unknown-inputs-key", MINIMAL + "inputs: {stpes: 3}\n", ["'stpes' in inputs", "'steps'"]),
    ("unknown-cell-key", MINIMAL.replace("label: tanh", "lable: tanh"), ["'lable' in cells.0", "'label'"]),
    ("no-name", MINIMAL.replace("name: compare\n", ""), ["name is missing", "expected a non-empty string"]),
    ("no-cells", "name: x\n", ["cells is missing", "expected a non-empty list"]),
    ("empty-cells", "name: x\ncells: []\n", ["cells = []", "expected a non-empty list"]),
    ("steps-zero", MINIMAL + "inputs: {steps: 0}\n", ["inputs.steps = 0", "expected an integer >= 1"]),
    ("batch-bool", MINIMAL + "inputs: {batch: true}\n", ["inputs.batch = true", "an integer >= 1"]),
    ("size-float", MINIMAL + "inputs: {size: 2.5}\n", ["inputs.size = 2.5", "an integer >= 1"]),
    ("distribution", MINIMAL + "inputs: {distribution: gauss}\n", ["inputs.distribution", "'uniform'"]),
    ("scale-negative", MINIMAL + "inputs: {scale: -1}\n", ["inputs.scale = -1", "a number >= 0"]),
    ("scale-inf", MINIMAL + "inputs: {scale: .inf}\n", ["inputs.scale = inf", "a number >= 0"]),
    ("loss", MINIMAL + "loss: mse\n", ["loss = 'mse'", "one of ['final', 'every_step', 'readout']"]),
    ("measure", MINIMAL + "measures: [gradient_norm]\n", ["measures.0", "one of ['gradient_norms']"]),
    ("measures-empty", MINIMAL + "measures: []\n", ["measures = []", "a non-empty list"]),
    ("window-order", MINIMAL + "fit: {window: [5, 5]}\n", ["fit.window = [5, 5]", "k_min < k_max"]),
    ("window-shape", MINIMAL + "fit: {window: [3]}\n", ["fit.window = [3]", "null or [k_min, k_max]"]),
    (
        "window-beyond-steps",
        MINIMAL + "inputs: {steps: 20}\nfit: {window: [0, 50]}\n",
        ["fit.window = [0, 50]: k_max 50 is beyond T = 20 (inputs.steps); expected k_max <= T"],
    ),
    (
        "window-beyond-a-grid-point",
        MINIMAL + "inputs: {steps: 100}\nfit: {window: [0, 50]}\nsweep: {grid: {inputs.steps: [100, 30]}}\n",
        ["sweep.grid['inputs.steps'][1]: fit.window = [0, 50]: k_max 50 is beyond T = 30 (inputs.steps)"],
    ),
    (
        "window-beyond-depth",
        "name: d\ncells: [{label: res, cell: residual, options: {width: 4, depth: 8}}]\n"
        "fit: {window: [1, 9]}\n",
        ["k_max 9 is beyond T = 8 (cells.0.options.depth)"],
    ),
    ("window-negative", MINIMAL + "fit: {window: [-1, 3]}\n", ["fit.window.0 = -1", "integer >= 0"]),
    ("seeds-duplicate", MINIMAL + "sweep: {seeds: [0, 0]}\n", ["sweep.seeds.1 = 0", "no duplicates"]),
    ("seeds-negative", MINIMAL + "sweep: {seeds: [-1]}\n", ["sweep.seeds.0 = -1", "integer >= 0"]),
    ("seeds-empty", MINIMAL + "sweep: {seeds: []}\n", ["sweep.seeds = []", "a non-empty list"]),
    ("grid-empty", MINIMAL + "sweep: {grid: {inputs.steps: []}}\n", ["sweep.grid.inputs.steps", "non-empty"]),
    (
        "grid-unknown-path",
        MINIMAL + "sweep: {grid: {inputs.stpes: [1]}}\n",
        ["sweep.grid['inputs.stpes'][0]", "unknown key 'stpes' in inputs"],
    ),
    (
        "grid-bad-value",
        MINIMAL + "sweep: {grid: {cells.0.options.weight_scale: [1, abc]}}\n",
        ["sweep.grid['cells.0.options.weight_scale'][1]", "expected a number, got 'abc'"],
    ),
    ("format", MINIMAL + "output: {formats: [png, jpg]}\n", ["output.formats.1 = 'jpg'", "'pdf'"]),
    ("duplicate-label", MINIMAL.replace("label: LSTM", "label: tanh RNN"), ["cells.1.label", "unique label"]),
    ("unknown-cell", MINIMAL.replace("cell: rnn", "cell: lsmt"), ["cells.0.cell = 'lsmt'", "'lstm', 'mgu'"]),
    (
        "unknown-option",
        replace_cells("{hidden_sise: 16}"),
        ["unknown option 'hidden_sise' of cell 'rnn' at cells.0.options.hidden_sise", "expected one of"],
    ),
    ("size-missing", replace_cells("{weight_scale: 1}"), ["cells.0.options.hidden_size is missing", ">= 1"]),
    ("size-bool", replace_cells("{hidden_size: true}"), ["cells.0.options.hidden_size = true", ">= 1"]),
    ("flag-type", MINIMAL.replace("16}}", "16, peephole: 'yes'}}"), ["options.peephole", "true or false"]),
    ("float-option", replace_cells("{hidden_size: 4, bias_scale: [1]}"), ["options.bias_scale", "a number"]),
    (
        "inner-option-type",
        MINIMAL.replace(
            "cell: lstm, options: {hidden_size: 16}",
            "cell: stacked, options: {hidden_size: 4, cell_options: {forget_bias: abc}}",
        ),
        ["cells.1.options = ", "lstm option forget_bias: expected a number, got 'abc'"],
    ),
    (
        "cell-rejects",
        replace_cells("{hidden_size: 4, activation: swish}"),
        ["cells.0.options = ", "unknown activation 'swish'; choose from"],
    ),
    ("quick-value", MINIMAL + "quick: {inputs.steps: 0}\n", ["quick['inputs.steps']", "integer >= 1, got 0"]),
    ("quick-path", MINIMAL + "quick: {inputs.stpes: 3}\n", ["quick['inputs.stpes']", "unknown key 'stpes'"]),
]


@pytest.mark.parametrize(("text", "fragments"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_malformed_configs_give_one_line_errors(tmp_path, text, fragments):
    path = write(tmp_path, text, "bad_config.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, message


# (override, fragments the one-line message must contain besides "--set <override>")
BAD_OVERRIDES = [
    ("cells.0.options.hidden_size=abc", ["expected an integer >= 1, got 'abc'"]),
    ("inputs.steps=0", ["expected an integer >= 1, got 0"]),
    ("inputs.steps=true", ["expected an integer >= 1, got true"]),
    ("inputs.stpes=3", ["unknown key 'stpes' in inputs", "'steps'"]),
    ("inptus.steps=3", ["unknown key 'inptus' at top level", "'inputs'"]),
    ("cells.0.options.foo=1", ["unknown option 'foo' of cell 'rnn' at cells.0.options.foo"]),
    ("cells.2.label=x", ["no index '2' in cells (a list of 2)"]),
    ("cells.x.label=x", ["no index 'x' in cells"]),
    ("fit.window.0=3", ["fit.window is null, not a mapping or a list"]),
    ("sweep.seeds=[]", ["expected a non-empty list, got []"]),
    ("sweep.seeds=[0, 0]", ["sweep.seeds.1 = 0", "no duplicates"]),
    ("sweep.grid.inputs.steps=[0]", ["sweep.grid['inputs.steps'][0]", "integer >= 1, got 0"]),
    ("sweep.grid.sweep.seeds=[[1]]", ["sweep.grid key 'sweep.seeds'", "a path outside sweep and quick"]),
    ("quick.inputs.steps=1", ["quick overrides can only be changed in the config file"]),
    ("loss=mse", ["expected one of ['final', 'every_step', 'readout'], got 'mse'"]),
    ("measures=[loss]", ["measures.0 = 'loss'", "one of ['gradient_norms']"]),
    ("cells.0.cell=lsmt", ["expected a cell name, one of [", "got 'lsmt'"]),
    ("cells.1.cell=residual", ["unknown option 'hidden_size' of cell 'residual'", "'width'"]),
    ("cells.1.options.dtype=float16", ["cells.1.options = ", "unknown dtype 'float16'"]),
    ("inputs={stpes: 1}", ["unknown key 'stpes' in inputs"]),
    ("name=", ["expected a non-empty string, got null"]),
    ("steps", ["expected KEY=VALUE"]),
    ("=3", ["expected KEY=VALUE"]),
    ("inputs.steps=[1", ["cannot read the value '[1' as YAML"]),
]


@pytest.mark.parametrize(("override", "fragments"), BAD_OVERRIDES, ids=[c[0] for c in BAD_OVERRIDES])
def test_bad_overrides_give_one_line_errors(tmp_path, override, fragments):
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as info:
        load_config(path, ["inputs.batch=4", override])
    message = str(info.value)
    assert "\n" not in message
    assert f"--set {override}" in message or str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_the_documented_messages(tmp_path):
    path = write(tmp_path, MINIMAL + "inputs: {steps: 0}\n", "x.yaml")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: inputs.steps = 0: expected an integer >= 1"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL), ["cells.0.options.hidden_size=abc"])
    assert str(info.value) == "--set cells.0.options.hidden_size=abc: expected an integer >= 1, got 'abc'"


def test_every_registered_cell_loads_with_its_defaults(tmp_path):
    entries = []
    for name in cells.names():
        size = next(iter(cells.options(name)))
        entries.append(f"  - {{cell: {name}, options: {{{size}: 4}}}}")
    cfg = load_config(write(tmp_path, "name: all\ncells:\n" + "\n".join(entries) + "\n"))
    assert [spec.label for spec in cfg.cells] == cells.names()
