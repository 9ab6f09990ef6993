"""The slides' architectures over seeds, one compiled program per shape: seq2seq source reversal, CNN-LSTM.

``seq2seq_reversal``: a ``Seq2Seq`` on the copy task (``learn.copy_batch``), the source read in
normal and in reversed order, paired (a seed's two runs share init, training data and held-out
data). Per run: Adam (``learn.fit_copy``), held-out loss and accuracy, and at init and after
training ``log10 ||dL_j / dx_t||`` at the encoder step ``t`` that holds the token target ``j``
needs (``learn.needed_position``), the error signal ``log10 ||dL_j / dlogits_j||`` and the encoder
flow (``Seq2Seq.encoder_flow``). From encoder input ``t`` to the loss on target ``j`` the shortest
path has ``(S - 1 - t) + (j + 1)`` steps: ``S`` for every ``j`` in normal order, ``2j + 1`` reversed.

``cnn_lstm_gradients``: ``CNNLSTM`` models at init on ``learn.blob_frames``: the gradient per frame
and per cell input (``CNNLSTM.input_log10_grads``) with their decay rates, and for a model with an
encoder the carry flow (``CNNLSTM.carry_flow``).

Runs go through ``lax.map`` (not vmap: a vmapped orthogonal init hung XLA:CPU). Data come from
numpy (seeded), params from ``jax.random.key(seed)``. Pure: returns numbers, never prints or writes.

Example::

    model = Seq2Seq(cells.get("lstm", hidden_size=64), cells.get("lstm", hidden_size=64), symbols=8)
    res = seq2seq_reversal(model, length=10, seeds=2, steps=200)
    res["init"]["first_gain"]    # decades: reversed - normal, first 3 targets, at init
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gradflow.learn import CNNLSTM, Seq2Seq, blob_frames, copy_batch, fit_copy, needed_position, random_tokens
from gradflow.measure import decay_fit

ORDERS = (("normal", False), ("reversed", True))
TRAIN_DATA_OFFSET = 100  # a seed's training tokens: random_tokens(100 + seed, ...)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _seq2seq_program(model: Seq2Seq, learning_rate: float, seeds, reverse, train_src, grad_src, eval_src):
    """All runs of one source length: init, Adam, held-out loss/accuracy, gradients and encoder flow."""

    def measure(params, rev):
        batch = copy_batch(grad_src, model.symbols, rev)
        grads, err = model.position_log10_grads(params, *batch)
        return {"grads": grads, "err": err, "flow": model.encoder_flow(params, *batch).total_log10_norms}

    def one(args):
        seed, rev, src = args
        p0 = model.init(jax.random.key(seed))
        p, curve = fit_copy(model, p0, src, rev, learning_rate)
        loss, acc = model.losses(p, *copy_batch(eval_src, model.symbols, rev))
        return {
            "curve": curve,
            "loss": loss,
            "acc": acc,
            "init": measure(p0, rev),
            "trained": measure(p, rev),
        }

    return jax.lax.map(one, (seeds, reverse, train_src))


def seed_summary(values, first: int) -> dict:
    """Median over seeds of per-target values ``[seeds, S]`` and its means over the first ``first``
    targets, the last ``first`` and all: ``{"median": [S], "per_seed": [seeds, S], "first_mean",
    "last_mean", "all_mean"}``."""
    values = np.asarray(values)
    med = np.median(values, axis=0)
    parts = (("first", med[:first]), ("last", med[-first:]), ("all", med))
    return {
        "median": med.tolist(),
        "per_seed": values.tolist(),
        **{f"{k}_mean": float(np.mean(v)) for k, v in parts},
    }


def seq2seq_reversal(
    model: Seq2Seq,
    length: int,
    seeds: int,
    steps: int,
    *,
    learning_rate: float = 3e-3,
    train_batch: int = 64,
    grad_batch: int = 64,
    eval_batch: int = 512,
    grad_data: int = 1,
    eval_data: int = 2,
    first: int = 3,
) -> dict:
    """Train and measure both source orders on the copy task; medians over seeds ``0..seeds-1``.

    Seed ``s`` trains on ``random_tokens(100 + s, [steps, train_batch, length])``; gradients are
    taken on ``random_tokens(grad_data, [grad_batch, length])``, held-out loss on ``eval_data``.
    Returns ``{"length", "seeds", "steps", "init": row, "trained": row, "training": ...}``; a row
    holds per order ``{"gradient", "per_error"}`` (``seed_summary`` of ``[seeds, S]``: the needed
    token's gradient, and it minus the error signal), the gains reversed - normal
    ``{first,last,all}_gain[_per_error]`` (decades), ``first_gain_per_step`` (per step of path
    saved) and ``encoder_flow`` per order (``log10 [S+1]`` medians, ``first_step_vs_vector``).
    ``training`` per order: held-out loss / ln(symbols) (``final_ratio``, ``final_ratio_seeds``),
    accuracy (overall, by position), the median training curve (about 50 points); and
    ``loss_gain`` (normal - reversed ratio), ``reversed_better_seeds``.
    """
    k = model.symbols
    seed, rev = np.tile(np.arange(seeds, dtype=np.int32), 2), np.repeat(np.array([False, True]), seeds)
    train_src = np.stack(
        [random_tokens(TRAIN_DATA_OFFSET + int(s), (steps, train_batch, length), k) for s in seed]
    )
    grad_src = random_tokens(grad_data, (grad_batch, length), k)
    eval_src = random_tokens(eval_data, (eval_batch, length), k)
    res = _seq2seq_program(
        model, learning_rate, jnp.asarray(seed), jnp.asarray(rev), train_src, grad_src, eval_src
    )
    res = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), res)
    out, j = {"length": length, "seeds": seeds, "steps": steps}, np.arange(length)
    for when in ("init", "trained"):
        row, r = {}, res[when]
        for name, rv in ORDERS:
            needed = r["grads"][rev == rv][:, j, needed_position(length, rv)]  # [seeds, S]
            row[name] = {
                "gradient": seed_summary(needed, first),
                "per_error": seed_summary(needed - r["err"][rev == rv], first),
            }
        for q, suffix in (("gradient", ""), ("per_error", "_per_error")):
            for part in ("first", "last", "all"):
                row[f"{part}_gain{suffix}"] = (
                    row["reversed"][q][f"{part}_mean"] - row["normal"][q][f"{part}_mean"]
                )
        # path length saved for the first targets: S (normal) - (2j + 1) (reversed), averaged
        row["first_gain_per_step"] = row["first_gain"] / (length - float(np.mean(2 * j[:first] + 1)))
        med = {name: np.median(r["flow"][rev == rv], axis=0) for name, rv in ORDERS}
        row["encoder_flow"] = {
            n: {"log10": m.tolist(), "first_step_vs_vector": float(m[1] - m[-1])} for n, m in med.items()
        }
        out[when] = row
    training, ln_k = {}, float(np.log(k))
    for name, rv in ORDERS:
        ratio = res["loss"][rev == rv].mean(axis=1) / ln_k
        training[name] = {
            "final_ratio_seeds": ratio.tolist(),
            "final_ratio": float(np.median(ratio)),
            "accuracy": float(np.median(res["acc"][rev == rv].mean(axis=1))),
            "accuracy_by_position": np.median(res["acc"][rev == rv], axis=0).tolist(),
            "curve": (
                np.median(res["curve"][rev == rv], axis=0)[:: max(1, steps // 50)] / np.log(k)
            ).tolist(),
        }
    training["loss_gain"] = training["normal"]["final_ratio"] - training["reversed"]["final_ratio"]
    pairs = zip(
        training["normal"]["final_ratio_seeds"], training["reversed"]["final_ratio_seeds"], strict=True
    )
    training["reversed_better_seeds"] = sum(r <= n for n, r in pairs)
    return {**out, "training": training}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _cnn_program(models: tuple, frame_shape: tuple, seeds, frames, labels):
    """At init, per seed: per-frame and per-input gradients of each model, the carry flow with an encoder."""
    window = (3, frames.shape[1] - 3)  # steps back 3..T-3: away from the loss and from t = 0

    def one(args):
        seed, x, y = args
        out = {}
        for name, model in models:
            params = model.init(jax.random.key(seed), frame_shape)
            g_frames, g_inputs = model.input_log10_grads(params, x, y)
            out[name] = {
                "frames": g_frames,
                "frame_rate": decay_fit(g_frames, window).rate,
                "input_rate": decay_fit(g_inputs, window).rate,
            }
            if model.encoder is not None:
                res = model.carry_flow(params, x, y, fit_window=window)
                out[name].update(carry=res.total_log10_norms, carry_rate=res.total_fit.rate)
        return out

    return jax.lax.map(one, (seeds, frames, labels))


def cnn_lstm_gradients(
    models: dict[str, CNNLSTM], frame_shape, frames: int, seeds: int, batch: int, *, data_seed: int = 3
) -> dict:
    """Gradients at init of each model over ``frames`` frames; medians over seeds ``0..seeds-1``.

    Seed ``s`` draws params from ``key(s)`` and ``blob_frames(data_seed + 10 s, frames, batch,
    frame_shape)``; rates are ``decay_fit`` over steps back 3..T-3 (ln/step). Returns ``{"frames",
    "seeds", "batch", "fit_window", name: ...}`` with per model ``frame_log10 [T]`` (median),
    ``frame_log10_seeds [seeds, T]``, ``frame_rate``, ``input_rate`` (the cell's input: features or
    pixels), ``min_frame_log10``, ``all_finite``, and for a model with an encoder ``carry_log10
    [T+1]``, ``carry_log10_seeds``, ``carry_rate`` (``||dL/dcarry_t||``, t = 0 before frame 0).
    """
    frame_shape = tuple(frame_shape)
    data = [blob_frames(data_seed + 10 * s, frames, batch, frame_shape) for s in range(seeds)]
    res = _cnn_program(
        tuple(models.items()),
        frame_shape,
        jnp.arange(seeds, dtype=jnp.int32),
        np.stack([d[0] for d in data]),
        np.stack([d[1] for d in data]),
    )
    res = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), res)
    out = {"frames": frames, "seeds": seeds, "batch": batch, "fit_window": [3, frames - 3]}
    for name, r in res.items():
        out[name] = {
            "frame_log10": np.median(r["frames"], axis=0).tolist(),
            "frame_log10_seeds": r["frames"].tolist(),
            **{k: float(np.median(r[k])) for k in ("frame_rate", "input_rate")},
            "min_frame_log10": float(np.min(r["frames"])),
            "all_finite": bool(np.all(np.isfinite(r["frames"]))),
        }
        if "carry" in r:
            out[name]["carry_log10"] = np.median(r["carry"], axis=0).tolist()
            out[name]["carry_log10_seeds"] = r["carry"].tolist()
            out[name]["carry_rate"] = float(np.median(r["carry_rate"]))
    return out


__all__ = ["cnn_lstm_gradients", "seed_summary", "seq2seq_reversal"]
