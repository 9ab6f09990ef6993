"""Closed-form gradient rates of particular architectures, and the rate of a registry cell at init.

``linear_rate`` (linear orthogonal RNN, exact), ``residual_rate`` (residual stack without norm),
``stack_log10_ratio`` (plain or residual stack, mean field layer by layer) and ``predicted_rate``
(the closed form that applies to a registry cell's options, NaN where none does).
"""

from __future__ import annotations

import math

import numpy as np

from gradflow.theory.edge_of_chaos import mean_field
from gradflow.theory.gaussian import ACTIVATIONS, _check_activation, _check_nodes, _check_scale, gaussian_mean


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
