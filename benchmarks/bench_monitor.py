"""Cost of the Monitor in a jitted training step, as ratios measured side by side in one process.

    python benchmarks/bench_monitor.py            # embedding -> LSTM(128) -> readout, T=100, B=32
    python benchmarks/bench_monitor.py --quick    # tiny sizes, checks the script runs

The train step is the user's own: loss, gradients, optax clip + Adam. Prints median times and ratios:
  1. monitored every update (model_flow of the LSTM layer in the same backward pass, plus the
     statistics) vs unmonitored (target <= 1.15);
  2. monitored with every=10 (the flow on one update in ten, plain gradients on the others) over
     blocks of 10 updates vs 10 unmonitored updates (target <= 1.02);
  3. Monitor.log on the host per update (due and not due), next to the step's time.
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import numpy as np
import optax
from _timing import interleaved_medians

import gradflow


class Net(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(16, 32)(tokens)
        x = nn.RNN(nn.LSTMCell(self.hidden))(x)
        return nn.Dense(4)(x[:, -1])


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args()
    hidden, steps, batch = (16, 20, 8) if args.quick else (128, 100, 32)
    reps = args.reps or (5 if args.quick else 30)

    model = Net(hidden)
    tokens = jax.random.randint(jax.random.key(0), (batch, steps), 0, 16)
    labels = jax.random.randint(jax.random.key(1), (batch,), 0, 4)
    params = model.init(jax.random.key(2), tokens)["params"]
    clip = optax.clip_by_global_norm(1.0)
    tx = optax.chain(clip, optax.adam(1e-3))
    opt_state = tx.init(params)
    monitor = gradflow.Monitor(every=10)

    def loss_fn(logits):
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def plain(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: loss_fn(model.apply({"params": p}, tokens)))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def monitored(params, opt_state, due):
        loss, grads, flow = monitor.grads(model, {"params": params}, tokens, loss_fn, due=due)
        clipped, _ = clip.update(grads, clip.init(params))
        updates, opt_state = tx.update(grads, opt_state, params)
        return (
            optax.apply_updates(params, updates),
            opt_state,
            monitor.stats(loss, grads, flow=flow, clipped=clipped),
        )

    def block(step, n):
        def run():
            out = None
            for i in range(n):
                out = step(i)
            return out

        return run

    times = interleaved_medians(
        {
            "plain": block(lambda i: plain(params, opt_state), 1),
            "every update": block(lambda i: monitored(params, opt_state, True), 1),
            "plain x10": block(lambda i: plain(params, opt_state), 10),
            "every=10 x10": block(lambda i: monitored(params, opt_state, i % 10 == 0), 10),
        },
        reps,
    )
    print(f"LSTM {hidden}, T={steps}, B={batch}, {jax.devices()[0].platform}; medians of {reps}")
    ratio1 = times["every update"] / times["plain"]
    ms = {k: f"{v * 1e3:.2f} ms" for k, v in times.items()}
    print(
        f"1. monitored every update {ms['every update']} vs plain {ms['plain']}: "
        f"ratio {ratio1:.3f} (target <= 1.15)"
    )
    ratio2 = times["every=10 x10"] / times["plain x10"]
    print(
        f"2. every=10, 10 updates {ms['every=10 x10']} vs plain {ms['plain x10']}: "
        f"ratio {ratio2:.3f} (target <= 1.02)"
    )
    _, _, stats = monitored(params, opt_state, True)
    log_times = {True: [], False: []}
    for i in range(200):
        t0 = time.perf_counter()
        monitor.log(i, stats)
        log_times[monitor.due(i)].append(time.perf_counter() - t0)
    print(
        f"3. Monitor.log on the host: due {np.median(log_times[True]) * 1e6:.0f} us, "
        f"not due {np.median(log_times[False]) * 1e6:.0f} us per update"
    )


if __name__ == "__main__":
    main()
