"""Activations and Gaussian expectations for the theory (numpy, float64).

``ACTIVATIONS`` maps a name to ``(phi, phi')``; ``gaussian_mean`` is ``E_z[fn(sqrt(q) z)]``,
``z ~ N(0, 1)``, by quadrature. The argument checks here are shared by the theory's modules.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np


def _sigmoid(x):
    e = np.exp(-np.abs(x))  # no overflow, full relative precision in both tails
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


def _dtanh(x):
    e = np.exp(-2.0 * np.abs(x))  # 1 - tanh^2 without cancellation or overflow
    return 4.0 * e / (1.0 + e) ** 2


def _dsigmoid(x):
    e = np.exp(-np.abs(x))
    return e / (1.0 + e) ** 2


# name -> (phi, phi'), numpy versions of gradflow.cells' activations (relu'(0) = 0, as jax).
ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "linear": (lambda x: x, np.ones_like),
    "relu": (lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(float)),
    "sigmoid": (_sigmoid, _dsigmoid),
    "tanh": (np.tanh, _dtanh),
}
_MAX_Q = 1e8  # gaussian_mean's trapezoid step stops shrinking here (1e6 points)


def _check_activation(activation) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    return activation


def _check_scale(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_nodes(nodes) -> int:
    if isinstance(nodes, bool) or not isinstance(nodes, int | np.integer) or not 2 <= nodes <= 360:
        raise ValueError(
            f"nodes must be an integer in [2, 360] (numpy's hermegauss overflows beyond), got {nodes!r}"
        )
    return int(nodes)


@functools.lru_cache(maxsize=8)
def _hermite(nodes: int):
    z, w = np.polynomial.hermite_e.hermegauss(nodes)  # weights sum to sqrt(2 pi): gaussian_mean divides
    z.setflags(write=False)
    w.setflags(write=False)
    return z, w


def _trapezoid(step: float, z_max: float = 12.0):
    """Trapezoid rule for ``N(0, 1)`` on ``[-z_max, z_max]``, nodes at half steps (none at 0)."""
    half = math.ceil(z_max / step)
    z = (np.arange(-half, half) + 0.5) * step
    return z, np.exp(-0.5 * z * z)  # unnormalized: gaussian_mean divides by the sum


def gaussian_mean(fn: Callable, variance: float, *, nodes: int = 200) -> float:
    """``E_z[fn(sqrt(variance) z)]``, ``z ~ N(0, 1)``, by quadrature (float64).

    ``variance <= 1``: ``nodes``-point Gauss-Hermite (probabilists' nodes,
    weights normalized to sum 1; about 1e-15 for these activations at 200
    nodes). Larger ``variance``: Gauss-Hermite stops resolving ``phi'``, whose
    width in ``z`` shrinks like ``1/sqrt(q)`` (200 nodes: error 3e-7 at
    ``q = 4``, 2e-2 at ``q = 64`` for ``E[tanh'^2]``, and numpy's nodes overflow
    beyond 370), so the trapezoid rule on ``z`` in ``[-12, 12]`` with step
    ``0.25 / sqrt(q)`` is used: spectrally accurate for integrands analytic in
    a strip ``|Im a| < pi/2`` (tanh, sigmoid), about 1e-14 for ``q`` up to
    1e8 (``100 sqrt(q)`` points; the step stops shrinking beyond).
    relu's kink: ``relu^2`` and ``relu'^2`` are exact by symmetry (no node at 0
    in either rule), but an ``fn`` with a kink that symmetry does not cancel
    (``relu`` itself, ``|a|``) converges slowly (about 1e-4 at 200 nodes).

    Args:
      fn: a vectorized numpy function of a ``[n]`` array of points.
      variance: ``q >= 0``.
      nodes: Gauss-Hermite nodes, 2..360.

    Example::

        gaussian_mean(lambda a: a**2, 2.0)  # 2.0
    """
    q = _check_scale("variance", variance)
    nodes = _check_nodes(nodes)
    z, w = _hermite(nodes) if q <= 1.0 else _trapezoid(0.25 / math.sqrt(min(q, _MAX_Q)))
    # sum(w f) / sum(w), both summed alike: an integrand equal to 1 gives exactly 1 (normalized
    # weights summed to 1 - 1e-16 with numpy 2.4.6, which moved critical rates of 0 to -6e-17)
    return float(np.sum(w * fn(math.sqrt(q) * z)) / np.sum(w))
