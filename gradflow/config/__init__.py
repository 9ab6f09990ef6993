"""Experiment configs: YAML read with ``yaml.safe_load`` into frozen dataclasses.

All keys but ``name`` and ``cells`` have defaults; dotted overrides
(``--set inputs.steps=50``) apply before validation; every problem raises a
``ConfigError`` whose one-line message names the file (or the ``--set`` text),
the key path, the value and what was expected. A cell ``label`` may hold
``{option}`` placeholders, filled from that cell's options as resolved after
``--quick`` and ``--set`` (defaults included), so a label never states a size
the run did not use. Example config::

    # command: gradflow run compare_cells  (~10 s on a laptop CPU;
    # the figure shows log10 ||dL/dh_t|| against t, one line per cell)
    name: compare_cells
    cells:
      - {label: tanh RNN, cell: rnn, options: {hidden_size: 64}}
      - {label: "LSTM x{hidden_size}", cell: lstm, options: {hidden_size: 64, forget_bias: 1.0}}
    inputs: {steps: 200, batch: 16}
    sweep: {grid: {cells.0.options.weight_scale: [0.5, 1.0, 2.0]}, seeds: [0, 1]}
    quick: {inputs.steps: 20, sweep.grid.cells.0.options.weight_scale: [1.0]}
"""

from gradflow.config.load import dump_config as dump_config
from gradflow.config.load import load_config as load_config
from gradflow.config.load import sweep_points as sweep_points
from gradflow.config.schema import DISTRIBUTIONS as DISTRIBUTIONS
from gradflow.config.schema import FORMATS as FORMATS
from gradflow.config.schema import LOSSES as LOSSES
from gradflow.config.schema import MEASURES as MEASURES
from gradflow.config.schema import READOUTS as READOUTS
from gradflow.config.schema import CellSpec as CellSpec
from gradflow.config.schema import Config as Config
from gradflow.config.schema import ConfigError as ConfigError
from gradflow.config.schema import Fit as Fit
from gradflow.config.schema import Inputs as Inputs
from gradflow.config.schema import Output as Output
from gradflow.config.schema import Registries as Registries
from gradflow.config.schema import Sweep as Sweep
from gradflow.config.schema import TaskSpec as TaskSpec
from gradflow.config.schema import Train as Train
from gradflow.config.schema import config_to_dict as config_to_dict
from gradflow.config.shipped import resolve_config as resolve_config
from gradflow.config.shipped import shipped_configs as shipped_configs
from gradflow.config.shipped import shipped_dir as shipped_dir
