"""Training step costs: gradient_flow inside the train step vs a plain jax.value_and_grad step, and
LSTM vs GRU time per step.

Each timed call is 50 Adam steps of one run in one jitted ``lax.scan`` (the way ``gradflow.train``
runs a chunk), adding problem, batch 32; medians of interleaved calls (see ``_timing.py``).

    python benchmarks/bench_train.py [--steps-T 100] [--hidden 64] [--reps 7] [--before REV]

``--before REV`` also times the gradient_flow of an earlier commit (default: before issue 17's
cheaper taps) in the same process; ``--before ''`` leaves it out.

Measured (2-core CPU, quiet, defaults, 9 reps): flow/plain lstm 0.928x (before 1.007x), gru 1.025x
(before 1.153x), rnn 0.968x (before 1.128x); an earlier, busier run: lstm 1.014x (1.058x), gru 1.082x
(1.182x), rnn 0.989x (1.300x).
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(__file__))
import _before
from _timing import interleaved_medians

from gradflow import cells, gradient_flow, tasks
from gradflow.engine.training import Model

K = 50


def chunk(model: Model, task, batch: int, with_flow: bool, flow_fn=gradient_flow):
    tx = optax.adam(1e-3)
    params = model.init(jax.random.key(0), task.input_size)
    opt_state = tx.init(params)

    def loss_and_grads(p, b):
        if not with_flow:
            return jax.value_and_grad(lambda q: task.loss(model.apply(q, b.xs), b))(p)
        res = flow_fn(
            model.cell.step,
            p["cell"],
            model.cell.initial_carry(batch),
            b.xs,
            lambda ys, carry, readout: task.loss(model.outputs(readout, ys), b),
            loss_params=p["readout"],
            step_shares=False,
        )
        return (res.loss, res.total_log10_norms), {"cell": res.grads[0], "readout": res.grads[1]}

    @jax.jit
    def run(params, opt_state):
        def body(state, i):
            p, o = state
            b = task.sample(jax.random.fold_in(jax.random.key(1), i), batch)
            _, grads = loss_and_grads(p, b)
            updates, o = tx.update(grads, o, p)
            return (optax.apply_updates(p, updates), o), None

        (p, _o), _ = jax.lax.scan(body, (params, opt_state), jnp.arange(K))
        return p

    return lambda: run(params, opt_state)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps-T", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--before", default=_before.BEFORE, help="git revision to compare with ('': none)")
    args = ap.parse_args()
    task = tasks.get("adding", steps=args.steps_T)
    before = _before.load(args.before) if args.before else None
    fns = {}
    for name in ("lstm", "gru", "rnn"):
        model = Model(cells.get(name, hidden_size=args.hidden), 1, readout="last")
        fns[f"{name} plain"] = chunk(model, task, args.batch, with_flow=False)
        fns[f"{name} flow"] = chunk(model, task, args.batch, with_flow=True)
        if before is not None:
            fns[f"{name} before"] = chunk(model, task, args.batch, True, before.gradient_flow)
    t = interleaved_medians(fns, args.reps)
    device = jax.devices()[0].device_kind
    print(f"adding T={args.steps_T}, hidden {args.hidden}, batch {args.batch}, Adam; {device}")
    for name in ("lstm", "gru", "rnn"):
        plain, flow = t[f"{name} plain"] / K, t[f"{name} flow"] / K
        print(
            f"{name:5s} ms/step: plain value_and_grad {1000 * plain:.3f}, "
            f"with gradient_flow {1000 * flow:.3f}  -> flow/plain {flow / plain:.3f}x (target <= 1.10)"
            + (f"; before ({args.before}) {t[f'{name} before'] / K / plain:.3f}x" if before else "")
        )
    print(f"GRU / LSTM time per step (with gradient_flow): {t['gru flow'] / t['lstm flow']:.2f}")
    print(f"GRU / LSTM time per step (plain):              {t['gru plain'] / t['lstm plain']:.2f}")


if __name__ == "__main__":
    main()
