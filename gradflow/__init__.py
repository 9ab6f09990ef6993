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
from gradflow import compile_cache as compile_cache
from gradflow import tasks as tasks
from gradflow import theory as theory
from gradflow import training as training
from gradflow._cell import Cell as Cell
from gradflow._cell import ParamCount as ParamCount
from gradflow._cell import param_count as param_count
from gradflow._cell import unroll as unroll
from gradflow._fit import DecayFit as DecayFit
from gradflow._fit import decay_fit as decay_fit
from gradflow._flow import GradientFlow as GradientFlow
from gradflow._flow import gradient_flow as gradient_flow
from gradflow.experiment import run_config as run_config
from gradflow.jacobians import LocalJacobians as LocalJacobians
from gradflow.jacobians import ProductNorms as ProductNorms
from gradflow.jacobians import local_jacobians as local_jacobians
from gradflow.jacobians import pascanu_bound as pascanu_bound
from gradflow.jacobians import pascanu_bounds as pascanu_bounds
from gradflow.jacobians import product_norms as product_norms
from gradflow.lyapunov import LyapunovSpectrum as LyapunovSpectrum
from gradflow.lyapunov import lyapunov_spectrum as lyapunov_spectrum
from gradflow.paths import PathDecomposition as PathDecomposition
from gradflow.paths import path_decomposition as path_decomposition
from gradflow.training import Model as Model
from gradflow.training import TrainResult as TrainResult
from gradflow.training import train as train

__version__ = "0.1.0"
