"""Measures of gradient flow: pure functions of a cell, its params and inputs, returning data.

``gradient_flow`` (per-step gradient norms in one backward pass), ``model_flow`` (the same for every
recurrent layer of an unmodified Flax model), ``decay_fit``, local Jacobians and
their products, the Lyapunov spectrum, the path decomposition of residual stacks, the gradient per
layer of depth stacks at init (``stack_gradients``).
"""

from gradflow.measure.depth import input_output_log10_ratios as input_output_log10_ratios
from gradflow.measure.depth import layer_log10_norms as layer_log10_norms
from gradflow.measure.depth import stack_gradients as stack_gradients
from gradflow.measure.fit import DecayFit as DecayFit
from gradflow.measure.fit import decay_fit as decay_fit
from gradflow.measure.fit import finite_ends as finite_ends
from gradflow.measure.flow import GradientFlow as GradientFlow
from gradflow.measure.flow import RematWarning as RematWarning
from gradflow.measure.flow import gradient_flow as gradient_flow
from gradflow.measure.jacobians import LocalJacobians as LocalJacobians
from gradflow.measure.jacobians import ProductNorms as ProductNorms
from gradflow.measure.jacobians import local_jacobians as local_jacobians
from gradflow.measure.jacobians import pascanu_bound as pascanu_bound
from gradflow.measure.jacobians import pascanu_bounds as pascanu_bounds
from gradflow.measure.jacobians import product_norms as product_norms
from gradflow.measure.lyapunov import LyapunovSpectrum as LyapunovSpectrum
from gradflow.measure.lyapunov import lyapunov_spectrum as lyapunov_spectrum
from gradflow.measure.paths import PathDecomposition as PathDecomposition
from gradflow.measure.paths import path_decomposition as path_decomposition

_LAZY = {"model_flow", "model_value_and_grad"}  # gradflow.measure.model imports flax.nnx (~0.25 s)


def __getattr__(name):
    if name in _LAZY:
        from gradflow.measure import model

        return getattr(model, name)
    raise AttributeError(f"module 'gradflow.measure' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
