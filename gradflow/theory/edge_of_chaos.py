"""The mean-field fixed point, ``chi_1`` and the order-to-chaos boundary (see ``gradflow.theory``).

Example::

    mean_field("tanh", sigma_w=1.5)   # q_star 0.793, chi_1 1.139, rate +0.065
    critical_sigma_w("tanh", sigma_b=0.05**0.5) ** 2   # 1.761
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from gradflow.theory.gaussian import ACTIVATIONS, _check_activation, _check_nodes, _check_scale, gaussian_mean

_HOMOGENEOUS = ("linear", "relu")  # phi(c x) = c phi(x) for c > 0: chi_1 does not depend on q
_DPHI2_MEAN = {"linear": 1.0, "relu": 0.5}  # E[phi'(z)^2], z ~ N(0, 1)
_TINY_Q = 1e-200  # stands in for q -> 0+ (tanh, sigmoid)


class MeanField(NamedTuple):
    """Mean-field prediction of ``mean_field`` (plain floats).

    Attributes:
      q_star: fixed point of the length map reached from any ``q_0 > 0`` (unique
        for these activations); 0 where the activity dies out, ``inf`` where it
        grows without bound (linear/relu with ``sigma_w^2 E[phi(z)^2] >= 1``),
        NaN where every ``q`` is a fixed point (linear at ``sigma_w = 1``, relu at
        ``sigma_w^2 = 2``, both without bias or input).
      chi_1: ``sigma_w^2 E[phi'(sqrt(q*) z)^2]`` (the ``q -> 0+`` limit at ``q* = 0``).
      rate: ``0.5 ln chi_1``, the predicted slope of ``ln ||dL/dh_t||`` per step
        going back from the loss (negative: vanishing; ``-inf`` at ``chi_1 = 0``).
      depth_scale: ``xi = -1 / ln chi_1`` (Schoenholz et al. 2017), signed:
        positive in the ordered phase, where the squared gradient norm falls by
        ``e`` every ``xi`` steps (the norm every ``2 xi``); negative in the chaotic
        phase, where it grows by ``e`` every ``|xi|`` steps; ``inf`` at
        ``chi_1 = 1``. Equals ``-1 / (2 rate)``.
      activation, sigma_w, sigma_b, input_scale: the inputs.
    """

    q_star: float
    chi_1: float
    rate: float
    depth_scale: float
    activation: str
    sigma_w: float
    sigma_b: float
    input_scale: float


def _fixed_point(activation: str, sw2: float, c: float, nodes: int) -> float:
    """``q*`` of ``q -> sw2 E[phi(sqrt(q) z)^2] + c``, reached from ``q_0 > 0``."""
    phi, _ = ACTIVATIONS[activation]
    if sw2 == 0.0:
        return c
    if activation in _HOMOGENEOUS:  # linear length map q -> a q + c
        a = sw2 * gaussian_mean(lambda x: phi(x) ** 2, 1.0, nodes=nodes)
        if a < 1.0 - 1e-12:
            return c / (1.0 - a)
        return math.nan if (a <= 1.0 + 1e-12 and c == 0.0) else math.inf  # marginal: every q is fixed

    # tanh, sigmoid: phi^2 <= 1, so q* <= c + sw2. excess(q) = map(q)/q - 1 changes sign once
    # (tanh: tanh(x)/x falls with |x|; sigmoid: checked in tests); bisect it in log q.
    def excess(q):
        return (c + sw2 * gaussian_mean(lambda x: phi(x) ** 2, q, nodes=nodes)) / q - 1.0

    lo, hi = math.log(_TINY_Q), math.log(c + sw2)
    if not excess(_TINY_Q) > 0:
        return 0.0  # tanh, c = 0, sigma_w <= 1: the activity dies out
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if excess(math.exp(mid)) > 0 else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def _chi_1(activation: str, sw2: float, q_star: float, nodes: int) -> float:
    _, dphi = ACTIVATIONS[activation]
    if activation in _HOMOGENEOUS:
        # chi_1 does not depend on q (q* may be 0, inf or NaN here) and E[phi'(z)^2] is exact:
        # phi' = 1 (linear; relu on half the line). Quadrature sums its weights to 1 - 1e-16 with
        # some numpy versions, which moved the linear edge (chi_1 = 1) off its exact place.
        return sw2 * _DPHI2_MEAN[activation]
    if q_star == 0.0:
        q_star = _TINY_Q  # the q -> 0+ limit
    return sw2 * gaussian_mean(lambda x: dphi(x) ** 2, q_star, nodes=nodes)


def mean_field(
    activation: str, sigma_w: float, sigma_b: float = 0.0, input_scale: float = 0.0, *, nodes: int = 200
) -> MeanField:
    """Mean-field fixed point ``q*``, ``chi_1``, per-step gradient rate and depth scale.

    Applies to ``h' = phi(W h + U x + b)`` (gradflow's ``rnn`` with
    ``recurrent_init='normal'``, inputs ``x ~ N(0, 1)``) and, with
    ``input_scale=0``, to the ``plain`` stack ``x' = phi(x) @ W + b``. See
    ``MeanField`` for the fields and the module docstring for conventions.
    The input term assumes many inputs: with ``I`` inputs the per-step input
    variance ``input_scale^2 |x_t|^2 / I`` fluctuates (chi-squared, std
    ``sqrt(2/I)``); at ``I = 16`` a chaotic tanh RNN (N = 1024, sigma_w = 2)
    measures a rate 12% above this prediction, at ``I = 256`` 2%.

    Args:
      activation: 'linear', 'relu', 'sigmoid' or 'tanh'.
      sigma_w, sigma_b, input_scale: standard deviations (>= 0).
      nodes: Gauss-Hermite nodes (see ``gaussian_mean``).

    Example::

        mf = mean_field("tanh", 2.0, 0.3)
        mf.rate   # compare with gradient_flow(...).fit.rate
    """
    _check_activation(activation)
    sw = _check_scale("sigma_w", sigma_w)
    sb = _check_scale("sigma_b", sigma_b)
    su = _check_scale("input_scale", input_scale)
    nodes = _check_nodes(nodes)
    q_star = _fixed_point(activation, sw * sw, sb * sb + su * su, nodes)
    chi_1 = _chi_1(activation, sw * sw, q_star, nodes)
    if chi_1 == 0.0:
        rate, depth_scale = -math.inf, 0.0
    else:
        log_chi = math.log(chi_1)
        rate = 0.5 * log_chi
        depth_scale = math.inf if log_chi == 0.0 else -1.0 / log_chi
    return MeanField(q_star, chi_1, rate, depth_scale, activation, sw, sb, su)


def _bisect(fn: Callable[[float], float], lo: float, hi: float) -> float:
    """Root of ``fn`` in ``[lo, hi]`` given ``fn(lo) < 0 <= fn(hi)``, to float precision."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if fn(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def critical_sigma_w(
    activation: str, sigma_b: float = 0.0, input_scale: float = 0.0, *, nodes: int = 200
) -> float:
    """The order-to-chaos boundary: the ``sigma_w`` where ``chi_1 = 1`` at this ``sigma_b``.

    Found by bracketing (doubling ``sigma_w``) and bisection; ``chi_1`` grows with
    ``sigma_w`` for these activations. tanh at ``sigma_b = input_scale = 0``: 1;
    relu: ``sqrt(2)`` (He init); linear: 1.

    Example::

        critical_sigma_w("tanh", sigma_b=0.05**0.5) ** 2  # 1.761
    """
    _check_activation(activation)
    sb = _check_scale("sigma_b", sigma_b)
    su = _check_scale("input_scale", input_scale)
    nodes = _check_nodes(nodes)

    def excess(sw):
        return mean_field(activation, sw, sb, su, nodes=nodes).chi_1 - 1.0

    lo, hi = 0.0, 1.0
    while excess(hi) < 0:
        lo, hi = hi, 2.0 * hi
        if hi > 1e6:
            raise ValueError(f"no critical sigma_w below 1e6 for {activation} at sigma_b={sb}")
    return _bisect(excess, lo, hi)


def critical_line(
    activation: str, sigma_b_values, input_scale: float = 0.0, *, nodes: int = 200
) -> np.ndarray:
    """``critical_sigma_w`` for each ``sigma_b`` in ``sigma_b_values: [K]`` -> ``[K]`` (same shape).

    Example::

        sb = np.linspace(0, 1, 11); plt.plot(critical_line("tanh", sb), sb, "k--")
    """
    sigma_b_values = np.asarray(sigma_b_values, dtype=float)
    out = [critical_sigma_w(activation, float(sb), input_scale, nodes=nodes) for sb in sigma_b_values.flat]
    return np.asarray(out, dtype=float).reshape(sigma_b_values.shape)


def autonomous_tanh_rate(g: float, *, nodes: int = 200) -> float:
    """Mean-field gradient rate of ``h' = tanh(g W h)``, ``W_ij ~ N(0, 1/N)``: ``mean_field('tanh', g).rate``.

    ``g <= 1``: the activity dies out (``q* = 0``) and the rate is ``ln g``;
    ``g > 1``: ``0.5 ln(g^2 E[tanh'(sqrt(D) z)^2])`` with
    ``D = g^2 E[tanh(sqrt(D) z)^2]``. The top Lyapunov exponent of the map
    should match it at large N (far from ``g = 1``).

    Example::

        autonomous_tanh_rate(0.5)  # ln 0.5
    """
    return mean_field("tanh", g, 0.0, 0.0, nodes=nodes).rate
