"""C14: the slides' architectures, measured for gradient flow: encoder-decoder and CNN-LSTM.

Encoder-decoder (deck A, slide 25: the encoder maps the source to a "deep vector", its final carry;
the decoder LSTM starts from it). Task: copy ``S`` symbols (of ``SYMBOLS``); the decoder reads the
previous target token (teacher forcing, a GO token first) and a linear readout predicts target
``j`` = source token ``j``. The encoder reads the source in normal or reversed order (Sutskever et
al. 2014). From encoder input ``t`` to the loss on target ``j`` the shortest path has
``(S - 1 - t) + (j + 1)`` steps: normal order puts the needed token at ``t = j`` (``S`` steps for
every ``j``), reversed order at ``t = S - 1 - j`` (``2j + 1`` steps: 1 for the first target; the
average over ``j`` is unchanged). Measured per target position ``j``: ``log10 ||dL_j / dx_t||`` at
the encoder input that holds the needed token (``L_j`` the batch-mean cross-entropy at target
``j``, ``x_t`` the one-hot source input), at init and after a short Adam training of both orders
(paired: same seeds, same init, same data); also that gradient per unit of the error signal
(minus ``log10 ||dL_j / dlogits_j||``: after training the well-predicted targets send a smaller
error, which hides the path). The training result: held-out loss / ln(SYMBOLS), per-token
accuracy. The "deep vector" bottleneck: ``gradient_flow`` of the total decoder loss through the
encoder, ``||dL/dcarry_t||`` per encoder step (t = S is the vector the decoder starts from).

CNN-LSTM (deck B, slide 27): frames ``[T, B, 8, 8, 1]`` (noise, a bright 3x3 blob in half of the
frames), a Flax convolutional encoder shared by all frames (one call on all ``T * B`` frames) -> 16
features -> LSTM -> readout at the last step (cross-entropy: was there a blob in frame 0). At init:
``||dL/dframe_t||`` per frame, ``||dL/dx_t||`` per feature vector (the same LSTM fed the features
directly), ``||dL/dcarry_t||`` (``gradient_flow`` over the LSTM part), and an LSTM fed the
flattened pixels (no CNN). The frame gradient crosses the CNN once, not once per step, so its decay
rate over frames should be the LSTM's.

Data come from numpy (seeded), params from ``jax.random.key(seed)``; one compiled program per
source length and one for the CNN-LSTM (compiles dominate the run time on CPU). Everything runs
in float32 under ``jax.enable_x64(False)``, so the numbers do not depend on the caller's x64
setting (the tests turn x64 on globally).
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.ticker import MaxNLocator

from gradflow import cells, decay_fit, plots
from gradflow.learn import (
    CNNLSTM,
    FrameEncoder,
    Seq2Seq,
    blob_frames,
    copy_batch,
    fit_copy,
    needed_position,
    random_tokens,
)

CRITERIA = {
    # decades: reversed minus normal, mean log10 ||dL_j/dx_src(j)|| over the first FIRST targets at
    # init, at every source length (0.3 = a factor 2)
    "min_first_gain": 0.3,
    # (normal - reversed) held-out loss / ln(SYMBOLS) after training: reversed trains at least as well
    "min_loss_gain": 0.0,
    # |per-frame rate (through the CNN) - rate of the same LSTM fed the features| / |that rate|
    "max_rate_rel_diff": 0.1,
    # log10: every frame's gradient above this (not cut off)
    "min_frame_log10": -30.0,
}
SYMBOLS, HIDDEN, FIRST = 8, 64, 3  # FIRST: "the first few target tokens"
TRAIN_BATCH, GRAD_BATCH, EVAL_BATCH, LEARNING_RATE = 64, 64, 512, 3e-3
GRAD_DATA, EVAL_DATA, FRAME_DATA = 1, 2, 3  # numpy seeds (the training data: 100 + seed)
FRAME = (8, 8, 1)
LSTM = cells.get("lstm", hidden_size=HIDDEN, forget_bias=1.0, dtype="float32")
SEQ2SEQ = Seq2Seq(LSTM, LSTM, SYMBOLS)
MODELS = {"cnn_lstm": CNNLSTM(FrameEncoder(16), LSTM), "lstm_pixels": CNNLSTM(None, LSTM)}


def settings(quick: bool) -> dict:
    """Sizes of the quick and the full run."""
    if quick:
        return {"lengths": [10], "seeds": 2, "steps": 200, "frames": 40, "cnn_seeds": 2, "cnn_batch": 16}
    return {"lengths": [10, 20], "seeds": 3, "steps": 800, "frames": 60, "cnn_seeds": 3, "cnn_batch": 32}


@jax.jit
def _seq2seq_program(seeds, reverse, train_src, grad_src, eval_src):
    """All runs of one source length (``lax.map``, not vmap: a vmapped orthogonal init hung XLA:CPU
    here): init, Adam, held-out loss/accuracy, per-position gradients and encoder flow."""

    def measure(params, rev):
        batch = copy_batch(grad_src, SYMBOLS, rev)
        grads, err = SEQ2SEQ.position_log10_grads(params, *batch)
        return {"grads": grads, "err": err, "flow": SEQ2SEQ.encoder_flow(params, *batch).total_log10_norms}

    def one(args):
        seed, rev, src = args
        p0 = SEQ2SEQ.init(jax.random.key(seed))
        p, curve = fit_copy(SEQ2SEQ, p0, src, rev, LEARNING_RATE)
        loss, acc = SEQ2SEQ.losses(p, *copy_batch(eval_src, SYMBOLS, rev))
        return {
            "curve": curve,
            "loss": loss,
            "acc": acc,
            "init": measure(p0, rev),
            "trained": measure(p, rev),
        }

    return jax.lax.map(one, (seeds, reverse, train_src))


def _summary(values: np.ndarray) -> dict:
    """Median over seeds of per-target values ``[seeds, S]``, and its first/last/all means."""
    med = np.median(values, axis=0)
    means = {
        f"{k}_mean": float(np.mean(v))
        for k, v in (("first", med[:FIRST]), ("last", med[-FIRST:]), ("all", med))
    }
    return {"median": med.tolist(), "per_seed": values.tolist(), **means}


def _seq2seq(length: int, seeds: int, steps: int) -> dict:
    """Train and measure both orders (a seed's two runs share init and data); medians over seeds."""
    seed, rev = np.tile(np.arange(seeds, dtype=np.int32), 2), np.repeat(np.array([False, True]), seeds)
    train_src = np.stack([random_tokens(100 + int(s), (steps, TRAIN_BATCH, length), SYMBOLS) for s in seed])
    grad_src, eval_src = (
        random_tokens(d, (n, length), SYMBOLS) for d, n in ((GRAD_DATA, GRAD_BATCH), (EVAL_DATA, EVAL_BATCH))
    )
    res = _seq2seq_program(jnp.asarray(seed), jnp.asarray(rev), train_src, grad_src, eval_src)
    res = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), res)
    out, j, orders = (
        {"length": length, "seeds": seeds, "steps": steps},
        np.arange(length),
        (("normal", False), ("reversed", True)),
    )
    for when in ("init", "trained"):
        row, r = {}, res[when]
        for name, rv in orders:
            needed = r["grads"][rev == rv][:, j, needed_position(length, rv)]  # [seeds, S]
            row[name] = {"gradient": _summary(needed), "per_error": _summary(needed - r["err"][rev == rv])}
        for q, suffix in (("gradient", ""), ("per_error", "_per_error")):
            for part in ("first", "last", "all"):
                row[f"{part}_gain{suffix}"] = (
                    row["reversed"][q][f"{part}_mean"] - row["normal"][q][f"{part}_mean"]
                )
        # path length saved for the first targets: S (normal) - (2j + 1) (reversed), averaged
        row["first_gain_per_step"] = row["first_gain"] / (length - float(np.mean(2 * j[:FIRST] + 1)))
        med = {name: np.median(r["flow"][rev == rv], axis=0) for name, rv in orders}
        row["encoder_flow"] = {
            n: {"log10": m.tolist(), "first_step_vs_vector": float(m[1] - m[-1])} for n, m in med.items()
        }
        out[when] = row
    training, ln_k = {}, float(np.log(SYMBOLS))
    for name, rv in orders:
        ratio = res["loss"][rev == rv].mean(axis=1) / ln_k
        training[name] = {
            "final_ratio_seeds": ratio.tolist(),
            "final_ratio": float(np.median(ratio)),
            "accuracy": float(np.median(res["acc"][rev == rv].mean(axis=1))),
            "accuracy_by_position": np.median(res["acc"][rev == rv], axis=0).tolist(),
            "curve": (
                np.median(res["curve"][rev == rv], axis=0)[:: max(1, steps // 50)] / np.log(SYMBOLS)
            ).tolist(),
        }
    training["loss_gain"] = training["normal"]["final_ratio"] - training["reversed"]["final_ratio"]
    pairs = zip(
        training["normal"]["final_ratio_seeds"], training["reversed"]["final_ratio_seeds"], strict=True
    )
    training["reversed_better_seeds"] = sum(r <= n for n, r in pairs)
    return {**out, "training": training}


@jax.jit
def _cnn_program(seeds, frames, labels):
    """At init, per seed: per-frame and per-input gradients of both models, the CNN-LSTM's carry flow."""
    window = (3, frames.shape[1] - 3)  # steps back 3..T-3: away from the loss and from t = 0

    def one(args):
        seed, x, y = args
        out = {}
        for name, model in MODELS.items():
            params = model.init(jax.random.key(seed), FRAME)
            g_frames, g_inputs = model.input_log10_grads(params, x, y)
            out[name] = {"frames": g_frames, "frame_rate": decay_fit(g_frames, window).rate,
                         "input_rate": decay_fit(g_inputs, window).rate}  # fmt: skip
            if model.encoder is not None:
                res = model.carry_flow(params, x, y, fit_window=window)
                out[name].update(carry=res.total_log10_norms, carry_rate=res.total_fit.rate)
        return out

    return jax.lax.map(one, (seeds, frames, labels))


def _cnn_lstm(frames_n: int, seeds: int, batch: int) -> dict:
    """CNN-LSTM and LSTM-on-pixels gradients at init over ``frames_n`` frames; medians over seeds."""
    data = [blob_frames(FRAME_DATA + 10 * s, frames_n, batch, FRAME) for s in range(seeds)]
    res = _cnn_program(
        jnp.arange(seeds, dtype=jnp.int32), np.stack([d[0] for d in data]), np.stack([d[1] for d in data])
    )
    res = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), res)
    out = {"frames": frames_n, "seeds": seeds, "batch": batch, "fit_window": [3, frames_n - 3]}
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
    c, p = out["cnn_lstm"], out["lstm_pixels"]  # rates relative to the rate compared against
    out["frame_vs_features"] = abs(c["frame_rate"] - c["input_rate"]) / abs(c["input_rate"])
    out["frame_vs_carry"] = abs(c["frame_rate"] - c["carry_rate"]) / abs(c["carry_rate"])
    out["cnn_vs_pixels"] = abs(c["frame_rate"] - p["frame_rate"]) / abs(p["frame_rate"])
    return out


# ------------------------------------------------------------------------------------------ running
def run(out: Path, quick: bool) -> dict:
    """Seq2seq (each source length, both orders) and CNN-LSTM; figure ``out/c14.png``."""
    with jax.enable_x64(False):
        cfg = settings(quick)
        seq = {f"S={S}": _seq2seq(S, cfg["seeds"], cfg["steps"]) for S in cfg["lengths"]}
        cnn = _cnn_lstm(cfg["frames"], cfg["cnn_seeds"], cfg["cnn_batch"])
    out = Path(out)
    _figure(seq, cnn, out / "c14")
    return {
        "settings": {**cfg, "hidden": HIDDEN, "symbols": SYMBOLS, "first_tokens": FIRST},
        "seq2seq": seq,
        "cnn_lstm": cnn,
        "figure": str(out / "c14.png"),
        "runs": [],
    }


def _figure(seq: dict, cnn: dict, path: Path) -> None:
    """Three panels: needed-token gradient per target (longest S), encoder-step flow, CNN-LSTM frames."""
    fig, axes = plots.figure(1, 3, size=(15.0, 4.4))
    ax = axes[0]
    key = list(seq)[-1]
    s = seq[key]
    j = np.arange(s["length"])
    for i, name in enumerate(("normal", "reversed")):
        st = plots.style(i)
        for when, ls, mark in (("init", st["linestyle"], "o"), ("trained", "--", "s")):
            ax.plot(
                j,
                s[when][name]["gradient"]["median"],
                color=st["color"],
                linestyle=ls,
                marker=mark,
                markersize=3,
                label=f"{name} source, {when}",
            )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"target position j ({key})")
    ax.set_ylabel("log10 ||dL_j / dx_src(j)||")
    ax.set_title("seq2seq: gradient to the needed source token", fontsize=plots.LABEL_SIZE)
    ax.legend(fontsize=plots.LEGEND_SIZE)

    ax = axes[1]
    t = np.arange(s["length"] + 1)
    for i, name in enumerate(("normal", "reversed")):
        st = plots.style(i)
        for when, ls in (("init", st["linestyle"]), ("trained", "--")):
            ax.plot(t, s[when]["encoder_flow"][name]["log10"], color=st["color"], linestyle=ls,
                    label=f"{name} source, {when}")  # fmt: skip
    ax.axvline(s["length"], color="grey", linewidth=0.8)
    ax.annotate('"deep vector"', (s["length"], ax.get_ylim()[0]), fontsize=plots.TICK_SIZE, ha="right",
                va="bottom")  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("encoder step t (carry after t source tokens)")
    ax.set_ylabel("log10 ||dL/dcarry_t||, total decoder loss")
    ax.set_title("seq2seq: gradient reaching each encoder step", fontsize=plots.LABEL_SIZE)
    ax.legend(fontsize=plots.LEGEND_SIZE)

    ax = axes[2]
    T = cnn["frames"]
    c, px = cnn["cnn_lstm"], cnn["lstm_pixels"]
    st = [plots.style(i) for i in range(3)]
    ax.plot(np.arange(T), c["frame_log10"], color=st[0]["color"], linestyle=st[0]["linestyle"],
            label=f"CNN-LSTM: dL/dframe_t (rate {c['frame_rate']:+.3f}/step)")  # fmt: skip
    ax.plot(np.arange(-1, T), c["carry_log10"], color=st[1]["color"], linestyle=st[1]["linestyle"],
            label=f"CNN-LSTM: dL/dcarry after frame t (rate {c['carry_rate']:+.3f}/step)")  # fmt: skip
    ax.plot(np.arange(T), px["frame_log10"], color=st[2]["color"], linestyle=st[2]["linestyle"],
            label=f"LSTM on pixels, no CNN: dL/dframe_t (rate {px['frame_rate']:+.3f}/step)")  # fmt: skip
    ax.set_xlabel(f"frame t (loss after frame {T - 1})")
    ax.set_ylabel("log10 gradient norm")
    ax.set_title("CNN-LSTM at init: gradient per frame", fontsize=plots.LABEL_SIZE)
    ax.legend(fontsize=plots.LEGEND_SIZE - 1)
    plots.save_figure(fig, path, ("png",), dpi=110)


def verdict(numbers: dict, criteria: dict):
    """Reproduced: at every source length reversal raises the first targets' gradient at init by
    ``min_first_gain`` decades and trains at least as well, and the CNN-LSTM passes gradient to
    every frame at the rate of its LSTM fed the features directly. Not reproduced: the reversal gain
    is missing at every length. Otherwise reproduced under conditions (the failing parts named)."""
    seq = numbers["seq2seq"]
    grad_ok = {k: v["init"]["first_gain"] >= criteria["min_first_gain"] for k, v in seq.items()}
    train_ok = {k: v["training"]["loss_gain"] >= criteria["min_loss_gain"] for k, v in seq.items()}
    cnn = numbers["cnn_lstm"]
    c = cnn["cnn_lstm"]
    cnn_ok = (
        c["all_finite"]
        and c["min_frame_log10"] >= criteria["min_frame_log10"]
        and cnn["frame_vs_features"] <= criteria["max_rate_rel_diff"]
    )
    parts = []
    for k, v in seq.items():
        tr, init, trained = v["training"], v["init"], v["trained"]
        flow = {w: {n: v[w]["encoder_flow"][n]["first_step_vs_vector"] for n in ("normal", "reversed")}
                for w in ("init", "trained")}  # fmt: skip
        parts.append(
            f"seq2seq {k}: reversed - normal gradient to the needed source token, first {FIRST} targets "
            f"{init['first_gain']:+.2f} decades at init ({init['first_gain_per_step']:.3f}/step of path "
            f"saved; last {FIRST} {init['last_gain']:+.2f}, mean over j {init['all_gain']:+.2f}), "
            f"{trained['first_gain']:+.2f} after {v['steps']} steps ({trained['first_gain_per_error']:+.2f} "
            f"per unit error); loss/ln{SYMBOLS} {tr['normal']['final_ratio']:.3f} normal vs "
            f"{tr['reversed']['final_ratio']:.3f} reversed (accuracy {tr['normal']['accuracy']:.2f} vs "
            f"{tr['reversed']['accuracy']:.2f}, reversed better on {tr['reversed_better_seeds']}/"
            f"{v['seeds']} seeds); deep vector -> encoder step 1: {flow['init']['normal']:+.2f} decades "
            f"at init, {flow['trained']['normal']:+.2f} normal / {flow['trained']['reversed']:+.2f} "
            "reversed trained"
        )
    parts.append(
        f"CNN-LSTM (T={cnn['frames']}, init): per-frame rate {c['frame_rate']:+.4f} vs the LSTM fed the "
        f"features {c['input_rate']:+.4f} ln/step ({100 * cnn['frame_vs_features']:.1f}% apart; carry "
        f"{c['carry_rate']:+.4f}, LSTM on pixels {cnn['lstm_pixels']['frame_rate']:+.4f}), min frame "
        f"gradient 10^{c['min_frame_log10']:.1f}"
    )
    measured = "; ".join(parts)
    if not any(grad_ok.values()):
        return "not reproduced", measured
    if all(grad_ok.values()) and all(train_ok.values()) and cnn_ok:
        return "reproduced", measured
    failed = [f"reversal gain {k}" for k in seq if not grad_ok[k]]
    failed += [f"training {k}" for k in seq if not train_ok[k]] + ([] if cnn_ok else ["CNN-LSTM rate"])
    return "reproduced under conditions", measured + f" (fails: {', '.join(failed)})"
