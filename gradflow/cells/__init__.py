"""The cell library: built-in cells by name, combinators and adapters.

Example::

    cell = gradflow.cells.get("lstm", hidden_size=64, forget_bias=1.0)
    params = cell.init(jax.random.key(0), input_size=8)
"""

from __future__ import annotations

from gradflow.cells import checks
from gradflow.cells._adapters import from_function as from_function
from gradflow.cells._adapters import from_linen as from_linen
from gradflow.cells._adapters import from_nnx as from_nnx
from gradflow.cells._combinators import bidirectional as bidirectional
from gradflow.cells._combinators import bidirectional_xs as bidirectional_xs
from gradflow.cells._combinators import bidirectional_ys as bidirectional_ys
from gradflow.cells._combinators import dropout_inputs as dropout_inputs
from gradflow.cells._combinators import stacked as stacked
from gradflow.cells._depth import plain as plain
from gradflow.cells._depth import residual as residual
from gradflow.cells._equinox import from_equinox as from_equinox
from gradflow.cells._gru import gru as gru
from gradflow.cells._gru import mgu as mgu
from gradflow.cells._layouts import from_linen_params as from_linen_params
from gradflow.cells._layouts import from_torch as from_torch
from gradflow.cells._layouts import to_linen_params as to_linen_params
from gradflow.cells._layouts import to_torch as to_torch
from gradflow.cells._lstm import lstm as lstm
from gradflow.cells._rnn import rnn as rnn
from gradflow.seam import Cell


def _stacked_by_name(
    hidden_size: int, *, cell: str = "lstm", num_layers: int = 2, dropout: float = 0.0, cell_options=None
) -> Cell:
    """``num_layers`` cells named ``cell`` (same ``cell_options``) stacked; see ``stacked``."""
    from gradflow.cells.checks import positive_int

    layer = get(cell, hidden_size=hidden_size, **(cell_options or {}))
    return stacked([layer] * positive_int("num_layers", num_layers), dropout=dropout)


def _bidirectional_by_name(hidden_size: int, *, cell: str = "lstm", cell_options=None) -> Cell:
    """A forward and a backward cell named ``cell``; see ``bidirectional``."""
    return bidirectional(get(cell, hidden_size=hidden_size, **(cell_options or {})))


_REGISTRY = {
    "rnn": rnn,
    "lstm": lstm,
    "gru": gru,
    "mgu": mgu,
    "residual": residual,
    "plain": plain,
    "stacked": _stacked_by_name,
    "bidirectional": _bidirectional_by_name,
}


def names() -> list[str]:
    """Names accepted by ``get``, sorted."""
    return sorted(_REGISTRY)


def options(name: str) -> dict[str, object]:
    """``{option: default}`` of cell ``name`` (the size argument first, default ``None``)."""
    return checks.defaults(_lookup(name))


def get(name: str, **opts) -> Cell:
    """Build the cell ``name`` with ``opts`` (its size and options).

    Raises ``ValueError`` naming the unknown cell or option and the choices, ``TypeError`` naming an
    option of the wrong type (``lstm option forget_bias: expected a number, got 'abc'``).
    """
    factory = _lookup(name)
    known = options(name)
    checks.reject_unknown("cell", name, opts, known)
    size = next(iter(known))
    if size not in opts:
        raise ValueError(f"cell {name!r} needs {size}=<int>")
    checks.check_options(name, factory, opts)
    return factory(**opts)


def _lookup(name: str):
    return checks.lookup("cell", _REGISTRY, name)
