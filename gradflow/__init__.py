"""gradflow: measure how gradients vanish or explode through time and depth.

Example::

    import jax, jax.numpy as jnp, gradflow
    cell = gradflow.cells.get("lstm", hidden_size=64)
    params = cell.init(jax.random.key(0), input_size=8)
    xs = jax.random.normal(jax.random.key(1), (100, 16, 8))      # [T, B, I]
    res = gradflow.gradient_flow(cell, params, cell.initial_carry(16), xs,
                                 lambda ys, carry: jnp.mean(ys[-1] ** 2))
    res.log10_norms   # (c: [101], h: [101]): log10 ||dL/dh_t||, t = 0..T
"""

from gradflow import cells as cells
from gradflow import learn as learn
from gradflow import theory as theory
from gradflow.engine import compile_cache as compile_cache
from gradflow.engine import training as training
from gradflow.engine.training import TrainResult as TrainResult
from gradflow.engine.training import train as train
from gradflow.figures import plots as plots
from gradflow.learn import tasks as tasks
from gradflow.learn.models import Model as Model
from gradflow.measure import DecayFit as DecayFit
from gradflow.measure import GradientFlow as GradientFlow
from gradflow.measure import LocalJacobians as LocalJacobians
from gradflow.measure import LyapunovSpectrum as LyapunovSpectrum
from gradflow.measure import PathDecomposition as PathDecomposition
from gradflow.measure import ProductNorms as ProductNorms
from gradflow.measure import decay_fit as decay_fit
from gradflow.measure import finite_ends as finite_ends
from gradflow.measure import gradient_flow as gradient_flow
from gradflow.measure import local_jacobians as local_jacobians
from gradflow.measure import lyapunov_spectrum as lyapunov_spectrum
from gradflow.measure import pascanu_bound as pascanu_bound
from gradflow.measure import pascanu_bounds as pascanu_bounds
from gradflow.measure import path_decomposition as path_decomposition
from gradflow.measure import product_norms as product_norms
from gradflow.runs import experiment as experiment
from gradflow.runs import train_experiment as train_experiment
from gradflow.runs.experiment import load_config as load_config
from gradflow.runs.experiment import run_config as run_config
from gradflow.runs.train_experiment import load_trained as load_trained
from gradflow.seam import Cell as Cell
from gradflow.seam import ParamCount as ParamCount
from gradflow.seam import param_count as param_count
from gradflow.seam import unroll as unroll
from gradflow.words import describe_rate as describe_rate

__version__ = "0.1.0"
