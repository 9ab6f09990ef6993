"""Configs checked against gradflow's own registries (``gradflow.config`` itself imports none)."""

from __future__ import annotations

import os

import jax

from gradflow import cells
from gradflow import config as cfgmod
from gradflow.learn import optim, tasks


def _check_cell(name: str, options: dict) -> bool:
    """Build the cell (float64 ones need x64 while they are checked); True for a depth stack."""
    with jax.enable_x64(True):
        return bool(cells.get(name, **options).params_per_step)


def _check_task(name: str, options: dict) -> int:
    with jax.enable_x64(True):
        return tasks.get(name, **options).steps


REGISTRIES = cfgmod.Registries(
    cells.names,
    cells.options,
    _check_cell,
    tasks.names,
    tasks.options,
    _check_task,
    optim.OPTIMIZERS,
    tuple(optim.SCHEDULES),
    optim.check_optimizer,
    optim.check_schedule,
)


def load_config(path: str | os.PathLike, overrides=(), *, quick: bool = False) -> cfgmod.Config:
    """``gradflow.config.load_config`` checked against gradflow's cells, tasks and optimizers.

    Example::

        cfg = load_config("compare_cells", ["inputs.steps=50"], quick=True)
    """
    return cfgmod.load_config(path, overrides, quick, registries=REGISTRIES)


def build_cell(spec: cfgmod.CellSpec):
    """The ``Cell`` of a config's cell entry: ``cells.get(spec.cell, **spec.options)``."""
    return cells.get(spec.cell, **spec.options)
