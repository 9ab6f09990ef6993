"""A run directory's figures, drawn from its files alone (``gradflow plot``); plot functions in ``plots``;
figures of depth stacks (residual vs plain, stacked LSTMs) in ``depth``; the slides' architectures
(claim C14) from their numbers in ``architectures``."""

from gradflow.figures.architectures import architectures_figure as architectures_figure
from gradflow.figures.depth import loss_ratio_curves as loss_ratio_curves
from gradflow.figures.depth import residual_vs_plain as residual_vs_plain
from gradflow.figures.depth import variant_curves as variant_curves
from gradflow.figures.measure import CRITICAL as CRITICAL
from gradflow.figures.measure import MAX_LINES as MAX_LINES
from gradflow.figures.measure import NAMES as NAMES
from gradflow.figures.measure import Run as Run
from gradflow.figures.measure import RunFilesError as RunFilesError
from gradflow.figures.measure import critical_line_theory as critical_line_theory
from gradflow.figures.measure import curves as curves
from gradflow.figures.measure import draw as draw
from gradflow.figures.measure import load as load
from gradflow.figures.measure import overlay_names as overlay_names
from gradflow.figures.measure import phase_theory as phase_theory
from gradflow.figures.measure import phase_values as phase_values
from gradflow.figures.measure import theory_lines as theory_lines
from gradflow.figures.measure import zero_crossing as zero_crossing
