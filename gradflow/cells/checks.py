"""Checks of option values shared by cells, tasks and measures: one-line errors that name the option.

Public so that other layers (tasks, measures) validate their options the same way as the cells.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def choose(kind: str, value, allowed):
    """Return ``value`` if it is in ``allowed``, else raise a one-line error."""
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; choose from {sorted(allowed, key=str)}")
    return value


def dtype_of(dtype):
    """Accept 'float32'/'float64' or a numpy/jax dtype."""
    name = dtype if isinstance(dtype, str) else getattr(jnp.dtype(dtype), "name", str(dtype))
    dtype = DTYPES[choose("dtype", name, DTYPES)]
    if jnp.dtype(dtype).itemsize == 8 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"dtype {jnp.dtype(dtype).name} needs 64-bit JAX: call "
            "jax.config.update('jax_enable_x64', True) first"
        )
    return jnp.dtype(dtype)


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def defaults(factory) -> dict[str, object]:
    """``{argument: default}`` of a registry factory, ``None`` for required arguments (``options()``)."""
    import inspect

    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(factory).parameters.values()
    }


def _is_number(value) -> bool:
    """A real number: a Python/numpy scalar or a numeric array or tracer (a sweep traces options)."""
    import numbers

    if value is None or isinstance(value, bool | str | bytes):
        return False
    if isinstance(value, numbers.Real):
        return True
    dtype = getattr(value, "dtype", None)
    return dtype is not None and jnp.issubdtype(dtype, jnp.number) and not jnp.issubdtype(dtype, jnp.bool_)


def check_options(cell: str, factory, opts: dict) -> None:
    """Raise a one-line ``TypeError`` for an option whose value has the wrong type for its default.

    float default: a number; bool default: true or false. Sizes and counts are checked where they
    are used (``positive_int``), string options by name (``choose``), ``None`` defaults by their
    cell. Example: ``lstm option forget_bias: expected a number, got 'abc'``.
    """
    known = defaults(factory)
    for key, value in opts.items():
        default = known.get(key)
        if isinstance(default, bool):
            ok, expected = isinstance(value, bool), "true or false"
        elif isinstance(default, float):
            ok, expected = _is_number(value), "a number"
        else:
            continue
        if not ok:
            raise TypeError(f"{cell} option {key}: expected {expected}, got {value!r}")


def lookup(kind: str, registry: dict, name: str):
    """``registry[name]``, else a one-line ``ValueError`` listing the names (``unknown task 'adds'; ...``)."""
    return registry[choose(kind, name, registry)]


def reject_unknown(kind: str, name: str, opts, known) -> None:
    """A one-line ``ValueError`` for the first option of ``opts`` not in ``known``."""
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r} for {kind} {name!r}; options: {sorted(known)}")
