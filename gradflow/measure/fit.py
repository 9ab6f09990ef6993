"""Exponential decay fits of per-step gradient norms, and the first/last finite entries rule."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

LN10 = 2.302585092994046


class DecayFit(NamedTuple):
    """Least-squares fit ``ln ||dL/dh_t|| ~ a + rate * k`` with ``k = T - t`` steps back.

    ``rate < 0``: the gradient vanishes going back, ``half_life = ln 2 / |rate|``
    steps; ``rate > 0``: it grows and ``half_life`` is the doubling length.
    ``gradflow.describe_rate(rate, half_life)`` puts a fit into words.
    ``r2`` is the coefficient of determination. All NaN when fewer than two
    finite points lie in the window.
    """

    rate: jnp.ndarray
    half_life: jnp.ndarray
    r2: jnp.ndarray


def decay_fit(log10_norms, window: tuple[int, int] | None = None, *, xp=jnp) -> DecayFit:
    """Fit the per-step log-rate of ``log10_norms: [..., T+1]`` (entry t = after t steps).

    Args:
      log10_norms: ``[T+1]``, or ``[..., T+1]`` for one fit per row; entries that are -inf (zero
        gradient) or NaN are left out of the fit.
      window: ``(k_min, k_max)`` in steps back from the loss, inclusive;
        ``None`` fits all steps.
      xp: ``jax.numpy`` (traceable, the input's dtype) or ``numpy`` (on the host in float64, no
        compile: how the sweep fits its runs).

    Returns:
      ``DecayFit`` of shape ``[...]`` (scalars for one row).

    Example::

        decay_fit(jnp.log10(0.5 ** jnp.arange(10.0, -1, -1))).rate  # ln 0.5
    """
    y = xp.asarray(log10_norms, np.float64 if xp is np else None) * LN10
    n = y.shape[-1]
    k = xp.arange(n - 1, -1, -1, dtype=y.dtype)
    mask = xp.isfinite(y)
    if window is not None:
        k_min, k_max = window
        mask &= (k >= k_min) & (k <= k_max)
    w = mask.astype(y.dtype)
    y = xp.where(mask, y, 0.0)
    total = lambda a: a.sum(axis=-1, keepdims=True)  # noqa: E731
    count = total(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        k_mean = total(w * k) / count
        y_mean = total(w * y) / count
        dk = xp.where(mask, k - k_mean, 0.0)
        dy = xp.where(mask, y - y_mean, 0.0)
        var_k = total(dk * dk)
        rate = total(dk * dy) / var_k
        ss_tot = total(dy * dy)
        ss_res = total(xp.square(dy - rate * dk))
        r2 = xp.where(ss_tot > 0, 1.0 - ss_res / ss_tot, 1.0)[..., 0]
        ok = count[..., 0] >= 2
        rate = xp.where(ok, rate[..., 0], np.nan).astype(y.dtype)
        return DecayFit(rate, np.log(2.0) / xp.abs(rate), xp.where(ok, r2, np.nan).astype(y.dtype))


def finite_ends(values) -> tuple[float, float]:
    """The first and last finite entries of a 1-D ``values`` (``(nan, nan)`` when there are none).

    The one rule for every first/last summary gradflow writes (``log10_first_last_ratio``, a rate's
    first and last evaluation): a ``-inf`` log norm (a gradient that is exactly 0, e.g.
    ``log10_norms[T]`` when the loss does not read the final carry) and NaN padding are left out,
    as ``decay_fit`` leaves them out.

    Example::

        finite_ends([-np.inf, 2.0, 1.0, -np.inf])  # (2.0, 1.0)
    """
    v = np.asarray(values, np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    return (float(v[0]), float(v[-1])) if v.size else (float("nan"), float("nan"))
