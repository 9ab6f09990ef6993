"""Adapters: Flax linen / nnx cells and plain step functions as a gradflow ``Cell``.

The seam is ``step(params, carry, x) -> (carry, y)`` with ``x: [B, I]``; these
convert other conventions to it at the edge, so the core never sees Flax.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import flax
import jax
import jax.numpy as jnp
from flax import linen

from gradflow.cells._common import positive_int
from gradflow.seam import Cell, PyTree

if TYPE_CHECKING:
    from flax import nnx

_CARRY_KEY = 0  # carries come from the cells' carry_init (zeros by default); a fixed key keeps them pure


def _positive_or_none(name: str, value) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return value


def _check_signature(owner: str, name: str, fn, args: tuple[str, ...]) -> None:
    """Raise ``TypeError`` unless ``fn`` is callable with ``len(args)`` positional arguments."""
    wanted = f"{name}({', '.join(args)})"
    if not callable(fn):
        raise TypeError(f"{owner}: {name} must be a function {wanted}, got {type(fn).__name__}")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and some C callables have no signature: trust them
        return
    try:
        sig.bind(*args)
    except TypeError:
        raise TypeError(f"{owner}: {name} must take {wanted}, but its signature is {sig}") from None


def _first_leaf_dtype(tree, default=jnp.float32):
    leaves = jax.tree_util.tree_leaves(tree)
    return leaves[0].dtype if leaves else default


def from_linen(module: linen.Module, input_size: int | None = None) -> Cell:
    """Wrap a ``flax.linen`` recurrent cell (any ``RNNCellBase`` with ``initialize_carry``; an
    ``nn.RNN`` layer gives its cell).

    * ``init(key, I)`` returns the variables dict ``{'params': ...}`` of
      ``module.init(key, carry, x)`` with a dummy ``x: [1, I]``.
    * ``initial_carry(B)`` is ``module.initialize_carry(key(0), (B, input_size or 1))``
      (the cell's ``carry_init``, zeros by default; the key is fixed).
    * ``step(params, carry, x)`` is ``module.apply(params, carry, x)``, ``x: [B, I]``.

    Example::

        cell = from_linen(nn.LSTMCell(features=64))
        params = cell.init(jax.random.key(0), input_size=8)
        carry, ys = gradflow.unroll(cell, params, cell.initial_carry(4), xs)
    """
    if isinstance(module, type):
        raise TypeError(
            f"from_linen: got the class {module.__name__}; "
            f"pass an instance such as {module.__name__}(features=64)"
        )
    if isinstance(module, linen.RNN):  # the layer: its cell is what steps
        module = module.cell
    if not isinstance(module, linen.Module) or not callable(getattr(module, "initialize_carry", None)):
        raise TypeError(
            "from_linen: expected a flax.linen recurrent cell (an RNNCellBase with initialize_carry), "
            f"got {type(module).__name__}"
        )
    carry_input = _positive_or_none("from_linen: input_size", input_size) or 1

    def init(key, input_size):
        positive_int("from_linen: init input_size", input_size)
        carry = module.initialize_carry(jax.random.key(_CARRY_KEY), (1, input_size))
        x = jnp.zeros((1, input_size), _first_leaf_dtype(carry))
        return flax.core.unfreeze(module.init(key, carry, x))

    def initial_carry(batch_size):
        return module.initialize_carry(jax.random.key(_CARRY_KEY), (batch_size, carry_input))

    def step(params, carry, x):
        if not isinstance(params, Mapping) or "params" not in params:
            raise ValueError(
                "from_linen: params must be the variables dict {'params': ...} returned by init, "
                f"got a {type(params).__name__} without a 'params' entry"
            )
        return module.apply(params, carry, x)

    return Cell(init, initial_carry, step, bias_convention=f"as flax.linen {type(module).__name__}")


def _as_nnx_cell(owner: str, module) -> nnx.Module:
    from flax import nnx  # imported when used: it costs ~0.25 s

    if not isinstance(module, nnx.Module) or not callable(getattr(module, "initialize_carry", None)):
        raise TypeError(
            f"{owner}: expected a flax.nnx recurrent cell (an RNNCellBase with initialize_carry), "
            f"got {type(module).__name__}"
        )
    return module


def from_nnx(module_or_factory, input_size: int | None = None) -> Cell:
    """Wrap a ``flax.nnx`` recurrent cell, given built (an ``nnx.RNN`` gives its cell) or as
    ``factory(input_size, rngs)``.

    * A built module: ``init(key, I)`` *ignores the key* and returns the
      module's current ``nnx.Param`` state (``I`` must match its ``in_features``).
    * A factory: ``init(key, I)`` builds ``factory(I, nnx.Rngs(key))`` and
      returns its ``nnx.Param`` state (works under ``jax.vmap`` over keys).

    Params are a plain nested dict of arrays (``nnx.to_pure_dict`` of the Param
    state). ``step`` merges them with the graphdef and the non-Param state
    (held constant: updates to RNG or other variables are discarded) and calls
    the module, so it works inside ``lax.scan``, ``jit``, ``grad`` and ``vmap``
    over params. ``initial_carry(B)`` is ``module.initialize_carry((B, I),
    rngs=nnx.Rngs(0))`` with ``I`` = ``in_features``, else ``input_size``, else 1.

    Example::

        cell = from_nnx(lambda n, rngs: nnx.GRUCell(n, 64, rngs=rngs))
        params = cell.init(jax.random.key(0), input_size=8)
        carry, ys = gradflow.unroll(cell, params, cell.initial_carry(4), xs)
    """
    from flax import nnx  # imported when used: it costs ~0.25 s

    input_size = _positive_or_none("from_nnx: input_size", input_size)
    if isinstance(module_or_factory, type):
        name = module_or_factory.__name__
        raise TypeError(
            f"from_nnx: got the class {name}; pass an instance or a factory such as "
            f"lambda input_size, rngs: nnx.{name}(input_size, 64, rngs=rngs)"
        )
    if isinstance(module_or_factory, nnx.RNN):  # the layer: its cell is what steps
        module_or_factory = module_or_factory.cell
    if isinstance(module_or_factory, nnx.Module):
        return _from_nnx_module(_as_nnx_cell("from_nnx", module_or_factory), input_size)
    _check_signature("from_nnx", "factory", module_or_factory, ("input_size", "rngs"))
    return _from_nnx_factory(module_or_factory, input_size)


def _split(module):
    from flax import nnx  # imported when used: it costs ~0.25 s

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), rest


def _merge(graphdef, expected, params, rest):
    from flax import nnx  # imported when used: it costs ~0.25 s

    if jax.tree_util.tree_structure(params) != expected:
        raise ValueError(
            f"from_nnx: params have structure {jax.tree_util.tree_structure(params)}, "
            f"expected {expected} (the dict returned by init)"
        )
    return nnx.merge(graphdef, params, rest)


def _from_nnx_module(module, input_size):
    from flax import nnx  # imported when used: it costs ~0.25 s

    graphdef, params0, rest = _split(module)
    treedef = jax.tree_util.tree_structure(params0)
    in_features = getattr(module, "in_features", None)

    def init(key, input_size):
        del key  # a built module already holds its params
        if in_features is not None and input_size != in_features:
            raise ValueError(
                f"from_nnx: init input_size={input_size} but the module has in_features={in_features}; "
                "pass a factory (input_size, rngs) -> module to build one per input size"
            )
        return _split(module)[1]

    def initial_carry(batch_size):
        shape = (batch_size, in_features or input_size or 1)
        return module.initialize_carry(shape, rngs=nnx.Rngs(_CARRY_KEY))

    def step(params, carry, x):
        return _merge(graphdef, treedef, params, rest)(carry, x)

    return Cell(init, initial_carry, step, bias_convention=f"as flax.nnx {type(module).__name__}")


def _from_nnx_factory(factory, input_size):
    from flax import nnx  # imported when used: it costs ~0.25 s

    templates: dict[int, tuple] = {}

    def build(n, key):
        return _as_nnx_cell("from_nnx: factory(input_size, rngs) returned", factory(n, nnx.Rngs(key)))

    def template(n):
        """(abstract module, graphdef, params treedef, non-Param state) for input size ``n``."""
        if n not in templates:
            abstract = nnx.eval_shape(lambda: build(n, _CARRY_KEY))
            graphdef, params, rest = _split(abstract)
            if jax.tree_util.tree_leaves(rest):  # RNG or other state: needs concrete values
                with jax.ensure_compile_time_eval():
                    graphdef, _, rest = _split(build(n, _CARRY_KEY))
            templates[n] = (abstract, graphdef, jax.tree_util.tree_structure(params), rest)
        return templates[n]

    def init(key, input_size):
        positive_int("from_nnx: init input_size", input_size)
        return _split(build(input_size, key))[1]

    def initial_carry(batch_size):
        n = input_size or 1
        return template(n)[0].initialize_carry((batch_size, n), rngs=nnx.Rngs(_CARRY_KEY))

    def step(params, carry, x):
        _, graphdef, treedef, rest = template(x.shape[-1])
        return _merge(graphdef, treedef, params, rest)(carry, x)

    return Cell(init, initial_carry, step, bias_convention="as the flax.nnx cell")


def from_function(
    step: Callable[[PyTree, PyTree, jax.Array], tuple[PyTree, PyTree]],
    *,
    init: PyTree | Callable[[jax.Array, int], PyTree],
    initial_carry: PyTree | Callable[[int], PyTree],
) -> Cell:
    """Wrap a plain ``step(params, carry, x) -> (carry, y)`` as a ``Cell``.

    ``init`` is a function ``(key, input_size) -> params`` or a params pytree
    (returned as is by ``init``; a callable pytree of arrays, such as an Equinox
    module, is params). ``initial_carry`` is a function ``batch_size -> carry``
    (leaves ``[B, ...]``) or a carry pytree for *one* example (leaves ``[...]``), broadcast to ``[B, ...]``.

    Example::

        step = lambda p, h, x: (jnp.tanh(h @ p["w"] + x), jnp.tanh(h @ p["w"] + x))
        cell = from_function(step, init={"w": w}, initial_carry=jnp.zeros(8))
        carry, ys = gradflow.unroll(cell, cell.init(None, 8), cell.initial_carry(4), xs)
    """
    _check_signature("from_function", "step", step, ("params", "carry", "x"))

    if _is_function(init):
        _check_signature("from_function", "init", init, ("key", "input_size"))
        init_fn = init
    else:
        params = _check_pytree(
            "init", init, "a params pytree or a function (key, input_size) -> params", allow_empty=True
        )

        def init_fn(key, input_size):
            return params

    if _is_function(initial_carry):
        _check_signature("from_function", "initial_carry", initial_carry, ("batch_size",))
        carry_fn = initial_carry
    else:
        one = _check_pytree(
            "initial_carry", initial_carry, "a function batch_size -> carry or one example's carry pytree"
        )

        def carry_fn(batch_size):
            return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (batch_size, *a.shape)), one)

    return Cell(init_fn, carry_fn, step, bias_convention="as the step function")


def _is_function(value) -> bool:
    """Callable and not a pytree of arrays (an Equinox module is callable, but it is params)."""
    return callable(value) and not any(hasattr(a, "shape") for a in jax.tree_util.tree_leaves(value))


def _check_pytree(name: str, tree, expected: str, allow_empty: bool = False):
    """``tree`` with array leaves, or a one-line ``TypeError`` naming what was expected."""
    leaves = jax.tree_util.tree_leaves(tree)
    if tree is None or not (leaves or allow_empty):
        raise TypeError(f"from_function: {name} must be {expected}, got {tree!r}")
    bad = [type(a).__name__ for a in leaves if not hasattr(a, "shape") and not isinstance(a, int | float)]
    if bad:
        raise TypeError(f"from_function: {name} must be {expected}; it has non-array leaves of type {bad[0]}")
    return jax.tree_util.tree_map(jnp.asarray, tree)
