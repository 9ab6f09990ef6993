"""Watch your own training loop: gradient statistics computed inside the jitted update, logged outside.

Inside ``jit`` (no host callbacks) ``Monitor.stats`` makes a flat dict of scalars from what the update
already has: the loss, the global gradient norm before and after clipping, the norm per module (by
parameter path, filtered), and for each recurrent layer its flow rate, half-life and log10
first/last ratio (from ``model_flow`` or ``gradient_flow``; ``Monitor.grads`` gets the gradients and
the flow in one backward pass, the flow only on updates that are due). Outside ``jit``
``Monitor.log`` hands due updates to the sinks (``gradflow.sinks``) and to a windowed ``Detector``
that words the numbers as sentences a person can act on.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradflow.measure import GradientFlow

PyTree = Any
LN2 = math.log(2.0)


def grad_norms(grads: PyTree, select: str | None = None) -> dict[str, jax.Array]:
    """Global norm of the gradient per module: leaves grouped by their path minus the last key
    (``"encoder/LSTMCell_0/hf"`` holds ``kernel`` and ``bias``); ``select`` keeps the modules whose
    path matches the regular expression (``re.search``). Works under ``jit``.

    Example::

        grad_norms({"Dense_0": {"kernel": g, "bias": b}})  # {"Dense_0": ||(g, b)||}
    """
    pattern = re.compile(select) if select else None
    squares: dict[str, list] = collections.defaultdict(list)
    for path, leaf in jax.tree_util.tree_flatten_with_path(grads)[0]:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
            continue
        module = jax.tree_util.keystr(path[:-1] or path, simple=True, separator="/") or "params"
        if pattern is None or pattern.search(module):
            squares[module].append(jnp.sum(jnp.square(leaf.astype(jnp.float32))))
    return {m: jnp.sqrt(sum(v)) for m, v in sorted(squares.items())}


def flow_stats(flows: dict[str, GradientFlow]) -> dict[str, jax.Array]:
    """Per recurrent layer: ``flow/<layer>/rate`` (ln per step back), ``half_life`` (steps; inf when
    the gradient does not shrink), ``log10_first_last`` (log10 of ||dL/dh|| at the first over the
    last finite step: how much smaller an error from the sequence's start arrives) and ``steps``
    (T). Works under ``jit``."""
    out = {}
    for layer, flow in flows.items():
        total = flow.total_log10_norms
        finite = jnp.isfinite(total)
        first = total[jnp.argmax(finite)]
        last = total[total.shape[0] - 1 - jnp.argmax(finite[::-1])]
        rate = flow.total_fit.rate
        out[f"flow/{layer}/rate"] = rate.astype(jnp.float32)
        out[f"flow/{layer}/half_life"] = jnp.where(rate < 0, LN2 / -rate, jnp.inf).astype(jnp.float32)
        out[f"flow/{layer}/log10_first_last"] = jnp.where(jnp.any(finite), first - last, jnp.nan).astype(
            jnp.float32
        )
        out[f"flow/{layer}/steps"] = jnp.asarray(total.shape[0] - 1, jnp.float32)
    return out


@dataclass(frozen=True)
class Thresholds:
    """When the ``Detector`` speaks (documented defaults).

    Attributes:
      vanish_reach: a layer vanishes when an error from its first step reaches the weights at less
        than this fraction of its size (``exp(rate * T)``, median rate over the window): 1e-3.
      explode_reach: it explodes when that factor exceeds this: 1e3.
      norm_growth: the global gradient norm grew (or fell) by at least this factor between the
        smallest (largest) value in the window and the latest: 1e3. A fall is worded with the loss:
        "as the loss fell ..x" when the loss fell 10x or more in the window, else "learning may
        have stalled".
      clip_share: clipping is reported when it was active on at least this share of the window's
        updates: 0.5.
      spike_factor: a loss above this multiple of the window's median loss is a spike: 10.
    """

    vanish_reach: float = 1e-3
    explode_reach: float = 1e3
    norm_growth: float = 1e3
    clip_share: float = 0.5
    spike_factor: float = 10.0


def _size(x: float) -> str:
    """A factor in 2 significant digits, far from 1 as a short power of ten: ``9.1e3``, ``1e-4``, ``12.3``."""
    if x > 0 and math.isfinite(x) and (x >= 1e3 or x < 1e-2):
        mantissa, exponent = f"{x:.1e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{x:.3g}"


def _loss_fall(recent) -> str:
    """How the loss moved while the gradient norm fell: with it (fitting), or not (stalled)."""
    losses = [r["loss"] for _, r in recent if math.isfinite(r.get("loss", math.nan))]
    if not losses or losses[-1] <= 0 or max(losses) <= 0:
        return ""
    fall = max(losses) / losses[-1]
    if fall >= 10:
        return f", as the loss fell {_size(fall)}x"
    return (
        f", while the loss fell only {_size(fall)}x: learning may have stalled "
        "(check the learning rate and saturated units)"
    )


class Detector:
    """Turns logged records into sentences, over a window of the last ``window`` updates.

    ``update(step, record) -> list[str]``: every finding that holds now (empty when all is well):
    a vanishing or exploding recurrent layer, a global gradient norm that grew or fell by
    ``norm_growth``, clipping active on most updates, a non-finite loss or gradient, a loss spike.
    See ``Thresholds``.

    Example::

        Detector(window=200).update(1000, {"loss": 0.3, "grad_norm": 4e3, ...})
        # ['global gradient norm grew 1e3x over the last 200 updates; clip or lower the learning rate']
    """

    def __init__(self, window: int = 200, thresholds: Thresholds = Thresholds()):
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"Detector: window must be a positive integer, got {window!r}")
        self.window = window
        self.thresholds = thresholds
        self.records: collections.deque[tuple[int, dict]] = collections.deque()
        self.last_finite: tuple[int, float] | None = None

    def _recent(self, step: int) -> list[tuple[int, dict]]:
        while self.records and self.records[0][0] <= step - self.window:
            self.records.popleft()
        return list(self.records)

    def spike(self, loss: float) -> bool:
        """Whether ``loss`` is a spike against the window's median loss."""
        losses = [r["loss"] for _, r in self.records if math.isfinite(r.get("loss", math.nan))]
        return (
            len(losses) >= 3
            and math.isfinite(loss)
            and loss > self.thresholds.spike_factor * float(np.median(losses))
        )

    def update(self, step: int, record: dict) -> list[str]:
        th = self.thresholds
        spike = self.spike(float(record.get("loss", math.nan)))
        self.records.append((step, record))
        recent = self._recent(step)
        found = []
        loss, norm = float(record.get("loss", math.nan)), float(record.get("grad_norm", math.nan))
        if not (math.isfinite(loss) and math.isfinite(norm)):
            before = ""
            if self.last_finite:
                last_step, last_norm = self.last_finite
                before = f"; the last finite gradient norm was {last_norm:.3g} at update {last_step}"
            found.append(f"update {step}: the loss is {loss:.3g} and the gradient norm {norm:.3g}{before}")
        else:
            self.last_finite = (step, norm)
        if spike:
            found.append(
                f"update {step}: the loss jumped to {loss:.3g}, over {th.spike_factor:g}x the recent median"
            )
        for layer in sorted({k.split("/")[1] for k in record if k.startswith("flow/")}):
            found += self._layer(layer, recent)
        found += self._norms(step, recent)
        return found

    def _layer(self, layer: str, recent) -> list[str]:
        rates = [
            r[f"flow/{layer}/rate"] for _, r in recent if math.isfinite(r.get(f"flow/{layer}/rate", math.nan))
        ]
        if not rates:
            return []
        rate = float(np.median(rates))
        steps = int(recent[-1][1][f"flow/{layer}/steps"])
        reach = math.exp(rate * steps) if rate * steps < 700 else math.inf
        if reach < self.thresholds.vanish_reach:
            return [
                f"{layer}: the gradient halves every {LN2 / -rate:.3g} steps; an error {steps} steps back "
                f"reaches the weights at {_size(reach)} of its size"
            ]
        if reach > self.thresholds.explode_reach:
            return [
                f"{layer}: the gradient doubles every {LN2 / rate:.3g} steps back; an error {steps} steps "
                f"back reaches the weights {_size(reach)}x larger; clip or scale down the recurrent weights"
            ]
        return []

    def _norms(self, step: int, recent) -> list[str]:
        th = self.thresholds
        norms = [(s, r["grad_norm"]) for s, r in recent if math.isfinite(r.get("grad_norm", math.nan))]
        found = []
        if len(norms) >= 2:
            span = step - norms[0][0]
            latest = norms[-1][1]
            low, high = min(n for _, n in norms), max(n for _, n in norms)
            if low > 0 and latest / low >= th.norm_growth:
                found.append(
                    f"global gradient norm grew {_size(latest / low)}x over the last {span} updates; "
                    "clip or lower the learning rate"
                )
            elif latest > 0 and high / latest >= th.norm_growth:
                found.append(
                    f"global gradient norm fell {_size(high / latest)}x over the last {span} updates"
                    + _loss_fall(recent)
                )
        clipped = [r for _, r in recent if "grad_norm_clipped" in r and math.isfinite(r["grad_norm_clipped"])]
        active = [r for r in clipped if r["grad_norm_clipped"] < r["grad_norm"] * (1 - 1e-6)]
        if clipped and len(active) >= th.clip_share * len(clipped) and active:
            before = float(np.median([r["grad_norm"] for r in active]))
            after = float(np.median([r["grad_norm_clipped"] for r in active]))
            found.append(
                f"clipping was active on {len(active)} of the last {len(clipped)} logged updates "
                f"(median norm {before:.3g} before, {after:.3g} after)"
            )
        return found


class Monitor:
    """Gradient statistics of your own training loop; see the module docstring.

    Args:
      every: log every ``every`` updates (``due(step)``).
      sinks: objects with ``write(step, record, sentences)`` and ``close()``, e.g.
        ``gradflow.sinks("runs/watch", tensorboard=True)``.
      select: regular expression on module paths for the per-module gradient norms (None: all).
      detector: a ``Detector`` (default ``Detector()``; ``None``-like ``False`` turns it off).
      spike_window: after a loss spike, every update is due for this many updates.

    Example::

        monitor = gradflow.Monitor(every=10, sinks=gradflow.sinks("runs/watch"))

        @jax.jit
        def update(params, opt_state, x, y, due):
            loss, grads, flow = monitor.grads(model, {"params": params}, x, partial(xent, y=y), due=due)
            clipped = clip(grads)
            stats = monitor.stats(loss, grads, flow=flow, clipped=clipped)
            ...
            return params, opt_state, stats

        for step in range(steps):
            params, opt_state, stats = update(params, opt_state, x, y, monitor.due(step))
            for sentence in monitor.log(step, stats):
                print(sentence)
    """

    def __init__(
        self,
        *,
        every: int = 10,
        sinks: Iterable = (),
        select: str | None = None,
        detector: Detector | bool = True,
        spike_window: int = 100,
    ):
        for name, value in (("every", every), ("spike_window", spike_window)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Monitor: {name} must be a positive integer, got {value!r}")
        self.every = every
        self.sinks = list(sinks)
        self.select = select
        self.detector = Detector() if detector is True else (detector or None)
        self.spike_window = spike_window
        self.watch_until = -1
        self.sentences: list[tuple[int, str]] = []

    def due(self, step: int) -> bool:
        """Whether update ``step`` is logged (and its flow measured): every ``every``, and every
        update for ``spike_window`` updates after a loss spike."""
        return step % self.every == 0 or step <= self.watch_until

    def grads(self, model, *args, due, **apply_kwargs) -> tuple[jax.Array, PyTree, dict[str, jax.Array]]:
        """``(loss, grads, flow)`` of a Flax model in one backward pass (``model_flow``'s arguments);
        on updates that are not ``due`` (a traced bool) plain gradients and NaN flow statistics."""
        from gradflow.measure import model_flow, model_value_and_grad  # flax.nnx: imported when used

        def with_flow(_):
            flows = model_flow(model, *args, **apply_kwargs)
            first = next(iter(flows.values()))
            return first.loss, first.grads, flow_stats(flows)

        def without(_):
            loss, grads = model_value_and_grad(model, *args, **apply_kwargs)
            shapes = jax.eval_shape(with_flow, None)[2]
            return loss, grads, {k: jnp.full(v.shape, jnp.nan, v.dtype) for k, v in shapes.items()}

        return jax.lax.cond(jnp.asarray(due), with_flow, without, None)

    def stats(
        self,
        loss: jax.Array,
        grads: PyTree,
        *,
        flow: dict[str, jax.Array] | dict[str, GradientFlow] | None = None,
        clipped: PyTree = None,
    ) -> dict[str, jax.Array]:
        """The update's statistics, a flat dict of scalars (works under ``jit``): ``loss``,
        ``grad_norm``, ``grad_norm_clipped`` (when ``clipped`` gradients are given),
        ``grad_norm/<module>``, and ``flow/<layer>/...`` (from ``grads``' third value, or
        ``{name: GradientFlow}``)."""
        out = {
            "loss": jnp.asarray(loss, jnp.float32),
            "grad_norm": optax.tree.norm(grads).astype(jnp.float32),
        }
        if clipped is not None:
            out["grad_norm_clipped"] = optax.tree.norm(clipped).astype(jnp.float32)
        out.update({f"grad_norm/{m}": n for m, n in grad_norms(grads, self.select).items()})
        if flow:
            first = next(iter(flow.values()))
            out.update(flow_stats(flow) if isinstance(first, GradientFlow) else flow)
        return out

    def log(self, step: int, stats: dict[str, jax.Array]) -> list[str]:
        """Outside ``jit``: a due update goes to the sinks and the detector; returns the detector's
        sentences (empty when all is well or the update is not due). A loss spike makes the next
        ``spike_window`` updates due."""
        step = int(step)
        if self.detector is not None and step > self.watch_until:
            loss = float(jax.device_get(stats["loss"]))
            if self.detector.spike(loss):
                self.watch_until = step + self.spike_window
        if not self.due(step):
            return []
        record = {k: float(v) for k, v in jax.device_get(stats).items()}
        sentences = self.detector.update(step, record) if self.detector is not None else []
        self.sentences += [(step, s) for s in sentences]
        for sink in self.sinks:
            sink.write(step, record, sentences)
        return sentences

    def close(self) -> None:
        """Flush and close the sinks."""
        for sink in self.sinks:
            sink.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
