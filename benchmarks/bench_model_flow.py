"""Cost of ``model_flow`` on an unmodified Flax model, as ratios measured side by side in one process.

    python benchmarks/bench_model_flow.py            # Embed -> nn.RNN(cell) -> Dense, B = 32
    python benchmarks/bench_model_flow.py --quick    # tiny sizes, checks the script runs

For Flax's LSTMCell, GRUCell and SimpleCell at (H = 128, T = 100) and (H = 64, T = 200), jitted,
median of interleaved calls: ``model_flow`` (the per-step flow of the layer and the parameter
gradients, one backward pass) and ``model_value_and_grad`` (gradflow's scan, no taps), each divided
by the user's own ``jax.value_and_grad`` of the model's loss (Flax's ``nn.RNN``).

Measured (2-core CPU, jax 0.10.2, flax 0.12.8, median of 15), model_flow / jax.value_and_grad:
with ``gradient_flow``'s earlier taps (4f94d9c) 1.11-1.16 (GRU H=128: 0.98); on the shared fast
taps (afcf6af) 1.035-1.093. model_value_and_grad / plain: 0.97-1.02 before and after.
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import optax
from _timing import interleaved_medians

import gradflow

CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.SimpleCell}


class Net(nn.Module):
    hidden: int
    cell: str

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(16, 32)(tokens)
        x = nn.RNN(CELLS[self.cell](self.hidden))(x)
        return nn.Dense(4)(x[:, -1])


def bench(cell, hidden, steps, batch, reps):
    model = Net(hidden, cell)
    tokens = jax.random.randint(jax.random.key(0), (batch, steps), 0, 16)
    labels = jax.random.randint(jax.random.key(1), (batch,), 0, 4)
    variables = model.init(jax.random.key(2), tokens)

    def loss_fn(logits):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def plain_loss(params):
        return loss_fn(model.apply({"params": params}, tokens))

    flow = jax.jit(lambda v: gradflow.model_flow(model, v, tokens, loss_fn))
    ours = jax.jit(lambda v: gradflow.model_value_and_grad(model, v, tokens, loss_fn))
    plain = jax.jit(lambda v: jax.value_and_grad(plain_loss)(v["params"]))
    fns = {"flow": flow, "ours": ours, "plain": plain}
    t = interleaved_medians({name: (lambda fn=fn: fn(variables)) for name, fn in fns.items()}, reps)
    print(
        f"{cell:<4} H={hidden:<3} T={steps:<3}  model_flow / jax.value_and_grad "
        f"{t['flow'] / t['plain']:.3f}  model_value_and_grad / jax.value_and_grad "
        f"{t['ours'] / t['plain']:.3f}  (plain {t['plain'] * 1e3:.1f} ms)",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the script runs")
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args()
    sizes = [(16, 20)] if args.quick else [(128, 100), (64, 200)]
    reps = args.reps or (3 if args.quick else 15)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; B = 32, median of {reps}")
    for cell in CELLS:
        for hidden, steps in sizes:
            bench(cell, hidden, steps, 32, reps)


if __name__ == "__main__":
    main()
