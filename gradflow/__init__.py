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

import importlib

__version__ = "0.1.0"

# Public names, imported when first used (PEP 562): ``import gradflow`` and ``gradflow --help`` stay
# cheap (no JAX, matplotlib, optax or yaml until something needs them).
# name -> (module, attribute), or (module, None) for a module itself.
_PUBLIC = {
    "cells": ("gradflow.cells", None),
    "learn": ("gradflow.learn", None),
    "theory": ("gradflow.theory", None),
    "compile_cache": ("gradflow.engine.compile_cache", None),
    "training": ("gradflow.engine.training", None),
    "Distributed": ("gradflow.engine.processes", "Distributed"),
    "ProcessError": ("gradflow.engine.processes", "ProcessError"),
    "batching": ("gradflow.engine.sweep", "batching"),
    "TrainResult": ("gradflow.engine.training", "TrainResult"),
    "train": ("gradflow.engine.training", "train"),
    "plots": ("gradflow.figures.plots", None),
    "tasks": ("gradflow.learn.tasks", None),
    "Model": ("gradflow.learn.models", "Model"),
    "Monitor": ("gradflow.learn.monitor", "Monitor"),
    "Detector": ("gradflow.learn.monitor", "Detector"),
    "Thresholds": ("gradflow.learn.monitor", "Thresholds"),
    "sinks": ("gradflow.runs.sinks", "sinks"),
    "DecayFit": ("gradflow.measure", "DecayFit"),
    "GradientFlow": ("gradflow.measure", "GradientFlow"),
    "RematWarning": ("gradflow.measure", "RematWarning"),
    "LocalJacobians": ("gradflow.measure", "LocalJacobians"),
    "LyapunovSpectrum": ("gradflow.measure", "LyapunovSpectrum"),
    "PathDecomposition": ("gradflow.measure", "PathDecomposition"),
    "ProductNorms": ("gradflow.measure", "ProductNorms"),
    "decay_fit": ("gradflow.measure", "decay_fit"),
    "finite_ends": ("gradflow.measure", "finite_ends"),
    "gradient_flow": ("gradflow.measure", "gradient_flow"),
    "local_jacobians": ("gradflow.measure", "local_jacobians"),
    "lyapunov_spectrum": ("gradflow.measure", "lyapunov_spectrum"),
    "model_flow": ("gradflow.measure", "model_flow"),
    "model_value_and_grad": ("gradflow.measure", "model_value_and_grad"),
    "pascanu_bound": ("gradflow.measure", "pascanu_bound"),
    "pascanu_bounds": ("gradflow.measure", "pascanu_bounds"),
    "path_decomposition": ("gradflow.measure", "path_decomposition"),
    "product_norms": ("gradflow.measure", "product_norms"),
    "experiment": ("gradflow.runs.experiment", None),
    "train_experiment": ("gradflow.runs.train_experiment", None),
    "load_config": ("gradflow.runs.experiment", "load_config"),
    "run_config": ("gradflow.runs.experiment", "run_config"),
    "load_trained": ("gradflow.runs.train_experiment", "load_trained"),
    "Cell": ("gradflow.seam", "Cell"),
    "ParamCount": ("gradflow.seam", "ParamCount"),
    "param_count": ("gradflow.seam", "param_count"),
    "unroll": ("gradflow.seam", "unroll"),
    "describe_rate": ("gradflow.words", "describe_rate"),
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'gradflow' has no attribute {name!r}")
    module, attribute = _PUBLIC[name]
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
