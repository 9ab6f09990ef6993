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

Modules (every public name is re-exported here): ``gaussian`` (``ACTIVATIONS``,
``gaussian_mean``), ``edge_of_chaos`` (``mean_field``, ``critical_sigma_w``, ``critical_line``,
``autonomous_tanh_rate``), ``rates`` (``linear_rate``, ``residual_rate``, ``stack_log10_ratio``,
``predicted_rate``).

Example::

    from gradflow import theory
    mf = theory.mean_field("tanh", sigma_w=1.5)   # q_star 0.793, chi_1 1.139, rate +0.065
    theory.critical_sigma_w("tanh", sigma_b=0.05**0.5) ** 2   # 1.761
"""

from gradflow.theory.edge_of_chaos import MeanField as MeanField
from gradflow.theory.edge_of_chaos import autonomous_tanh_rate as autonomous_tanh_rate
from gradflow.theory.edge_of_chaos import critical_line as critical_line
from gradflow.theory.edge_of_chaos import critical_sigma_w as critical_sigma_w
from gradflow.theory.edge_of_chaos import mean_field as mean_field
from gradflow.theory.gaussian import ACTIVATIONS as ACTIVATIONS
from gradflow.theory.gaussian import gaussian_mean as gaussian_mean
from gradflow.theory.rates import linear_rate as linear_rate
from gradflow.theory.rates import predicted_rate as predicted_rate
from gradflow.theory.rates import residual_rate as residual_rate
from gradflow.theory.rates import stack_log10_ratio as stack_log10_ratio
