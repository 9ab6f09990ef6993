"""Closed-form predictions for gradient flow at initialization (numpy, float64).

Mean-field theory (Poole et al. 2016, Schoenholz et al. 2017) for a random
network whose pre-activations ``a`` follow ``a' = W phi(a) + b (+ U x)``:

* length map ``q' = sigma_w^2 E_z[phi(sqrt(q) z)^2] + sigma_b^2 + input_scale^2``,
  ``z ~ N(0, 1)``, with fixed point ``q*``;
* ``chi_1 = sigma_w^2 E_z[phi'(sqrt(q*) z)^2]``: the factor by which the squared
  gradient norm grows per layer (or step) going back, so the predicted per-step
  rate of ``ln ||dL/dh_t||`` (gradflow's ``fit.rate``) is ``0.5 ln chi_1``;
  ``chi_1 = 1`` is the edge of chaos.

Conventions: ``sigma_w``, ``sigma_b`` are standard deviations, ``W_ij ~ N(0,
sigma_w^2 / N)``, ``b_i ~ N(0, sigma_b^2)`` (the papers write the variances).
``input_scale`` is gradflow's ``rnn`` option: ``U_ij ~ N(0, input_scale^2 / I)``
with inputs ``x ~ N(0, 1)`` adds ``input_scale^2`` to the pre-activation
variance; a depth stack (``plain``: ``x' = phi(x) @ W + b``) has
``input_scale = 0``. Gaussian expectations: ``gaussian_mean`` (Gauss-Hermite
for ``q <= 1``, a trapezoid rule fine enough for ``phi'`` beyond; see there).
The theory assumes infinite width and independent weights per step; measured
rates approach it as ``O(1/N)``, and slowly near ``chi_1 = 1``.

Example::

    from gradflow import theory
    mf = theory.mean_field("tanh", sigma_w=1.5)   # q_star 0.793, chi_1 1.139, rate +0.065
    theory.critical_sigma_w("tanh", sigma_b=0.05**0.5) ** 2   # 1.761
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

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
_HOMOGENEOUS = ("linear", "relu")  # phi(c x) = c phi(x) for c > 0: chi_1 does not depend on q
_MAX_Q = 1e8  # gaussian_mean's trapezoid step stops shrinking here (1e6 points)
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
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()  # probabilists' weights sum to sqrt(2 pi): normalize to a N(0, 1) average
    z.setflags(write=False)
    w.setflags(write=False)
    return z, w


def _trapezoid(step: float, z_max: float = 12.0):
    """Trapezoid rule for ``N(0, 1)`` on ``[-z_max, z_max]``, nodes at half steps (none at 0)."""
    half = math.ceil(z_max / step)
    z = (np.arange(-half, half) + 0.5) * step
    w = np.exp(-0.5 * z * z)
    return z, w / w.sum()


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
    return float(np.dot(w, fn(math.sqrt(q) * z)))


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
        q_star = 1.0  # chi_1 does not depend on q (q* may be 0, inf or NaN here)
    elif q_star == 0.0:
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


def linear_rate(rho: float) -> float:
    """``ln rho``: the exact per-step rate of a linear RNN ``h' = W h`` with ``W = rho Q``, Q orthogonal.

    Every singular value of ``W^k`` is ``rho^k``, so ``||dL/dh_t|| = rho^(T-t)
    ||dL/dh_T||`` exactly (gradflow: ``rnn(activation='linear',
    recurrent_init='orthogonal', weight_scale=rho)``).

    Example::

        linear_rate(0.9)  # -0.105: the gradient halves every 6.6 steps
    """
    rho = _check_scale("rho", rho)
    return -math.inf if rho == 0.0 else math.log(rho)


def residual_rate(activation: str, sigma_w: float, alpha: float = 1.0) -> float:
    """Per-layer gradient rate of gradflow's ``residual`` stack without norm, where it is exponential.

    Block ``x' = x + alpha (phi(x) @ W + b)``, ``W_ij ~ N(0, sigma_w^2 / D)``.
    Going back, ``g = g' + alpha D_phi W g'`` with ``D_phi = diag(phi'(x))``; the
    cross term averages to zero, so ``E||g||^2 = (1 + alpha^2 sigma_w^2
    E[phi'^2]) ||g'||^2``:

    * relu: ``E[phi'^2] = 1/2`` at any scale: rate ``0.5 ln(1 + alpha^2 sigma_w^2 / 2)``;
    * linear: rate ``0.5 ln(1 + alpha^2 sigma_w^2)``;
    * tanh, sigmoid: NaN. The activations grow with depth, ``E[phi'^2]`` falls
      with them, and the gradient grows subexponentially, like
      ``exp(c sigma_w sqrt(L))`` for tanh (Yang & Schoenholz 2017): no per-layer
      rate exists.

    The bias does not enter. ``alpha`` is the branch scale (gradflow's default
    is ``1/sqrt(L)``; pass it explicitly here).

    Example::

        residual_rate("relu", 1.0)  # 0.5 ln 1.5 = 0.203 per layer
    """
    _check_activation(activation)
    sw = _check_scale("sigma_w", sigma_w)
    alpha = _check_scale("alpha", alpha)
    if activation == "relu":
        return 0.5 * math.log1p(0.5 * (alpha * sw) ** 2)
    if activation == "linear":
        return 0.5 * math.log1p((alpha * sw) ** 2)
    return math.nan


def stack_log10_ratio(
    kind: str,
    depth: int,
    sigma_w: float = 1.0,
    *,
    activation: str = "tanh",
    alpha: float | None = None,
    q0: float = 1.0,
    nodes: int = 200,
) -> float:
    """Mean-field ``log10 ||dL/dx_0|| / ||dL/dx_L||`` of a ``plain`` or ``residual`` stack, layer by layer.

    No norm, ``b = 0``, inputs of variance ``q0``, ``W_ij ~ N(0, sigma_w^2 / D)``. Per layer, with
    ``chi_l = E[phi'(sqrt(q_l) z)^2]`` and ``E_l = E[phi(sqrt(q_l) z)^2]``:

    * plain ``x' = phi(x) W``: squared gradient x ``sigma_w^2 chi_l``, ``q_{l+1} = sigma_w^2 E_l``;
    * residual ``x' = x + alpha phi(x) W``: squared gradient x ``1 + alpha^2 sigma_w^2 chi_l``,
      ``q_{l+1} = q_l + alpha^2 sigma_w^2 E_l``; ``alpha`` defaults to ``1/sqrt(depth)`` (gradflow's
      ``residual`` default).

    Unlike ``mean_field`` (the fixed point) this follows ``q_l`` from ``q0``, so it also covers the
    residual stack, whose activations grow without a fixed point.

    Example::

        stack_log10_ratio("plain", 200, 0.5**0.5)   # -31.0: the ordered tanh stack loses 31 decades
    """
    if kind not in ("plain", "residual"):
        raise ValueError(f"unknown stack kind {kind!r}; choose from ['plain', 'residual']")
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    phi, dphi = ACTIVATIONS[_check_activation(activation)]
    sw2 = _check_scale("sigma_w", sigma_w) ** 2
    a2 = 1.0 / depth if alpha is None else _check_scale("alpha", alpha) ** 2
    q, nodes, total = _check_scale("q0", q0), _check_nodes(nodes), 0.0
    for _ in range(int(depth)):
        chi = gaussian_mean(lambda x: dphi(x) ** 2, q, nodes=nodes)
        second = gaussian_mean(lambda x: phi(x) ** 2, q, nodes=nodes)
        if kind == "residual":
            total += 0.5 * math.log10(1.0 + a2 * sw2 * chi)
            q += a2 * sw2 * second
        else:
            total += 0.5 * math.log10(sw2 * chi)
            q = sw2 * second
    return float(total)


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


def predicted_rate(cell: str, options: dict) -> float:
    """The theory's per-step rate for a registry cell at init, NaN where no closed form applies.

    ``cell`` a registry name and ``options`` every one of its options (defaults filled in:
    ``{**gradflow.cells.options(cell), **given}``): ``rnn`` with
    ``recurrent_init='normal'`` -> ``mean_field(activation, weight_scale,
    bias_scale, input_scale).rate``; ``rnn`` linear orthogonal -> ``linear_rate``;
    ``plain`` without norm -> ``mean_field(..., input_scale=0)``; ``residual``
    without norm -> ``residual_rate`` (relu, linear; alpha default ``1/sqrt(depth)``).
    Gated cells (LSTM, GRU, ...) have no closed form here: NaN.

    Example::

        opts = {**gradflow.cells.options("rnn"), "hidden_size": 64, "weight_scale": 0.5}
        predicted_rate("rnn", opts)   # -0.69 + input term
    """
    if cell not in ("rnn", "plain", "residual"):
        return math.nan
    opts = options
    act = opts.get("activation")
    if act not in ACTIVATIONS:
        return math.nan
    if cell == "rnn":
        if opts["recurrent_init"] == "normal":
            return mean_field(act, opts["weight_scale"], opts["bias_scale"], opts["input_scale"]).rate
        if opts["recurrent_init"] == "orthogonal" and act == "linear":  # exact, inputs or not
            return linear_rate(opts["weight_scale"])
        return math.nan
    if opts.get("norm") is not None:
        return math.nan
    if cell == "plain":
        return mean_field(act, opts["weight_scale"], opts["bias_scale"]).rate
    alpha = opts["alpha"] if opts["alpha"] is not None else 1.0 / math.sqrt(opts["depth"])
    return residual_rate(act, opts["weight_scale"], alpha)
