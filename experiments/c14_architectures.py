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

import functools
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.ticker import MaxNLocator

from gradflow import cells, decay_fit, gradient_flow, plots

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

F32 = jnp.float32
SYMBOLS = 8
HIDDEN = 64
FIRST = 3  # "the first few target tokens"
TRAIN_BATCH = 64
GRAD_BATCH = 64  # examples the per-position gradients are measured on (the same for every run)
EVAL_BATCH = 512
LEARNING_RATE = 3e-3
GRAD_DATA, EVAL_DATA, FRAME_DATA = 1, 2, 3  # numpy seeds (the training data: 100 + seed)
FRAME = (8, 8, 1)
FEATURES = 16


def settings(quick: bool) -> dict:
    """Sizes of the quick and the full run."""
    if quick:
        return {"lengths": [10], "seeds": 2, "steps": 200, "frames": 40, "cnn_seeds": 2, "cnn_batch": 16}
    return {"lengths": [10, 20], "seeds": 3, "steps": 800, "frames": 60, "cnn_seeds": 3, "cnn_batch": 32}


@functools.lru_cache
def lstm(hidden: int = HIDDEN):
    """The LSTM cell of every model here (forget bias 1, float32)."""
    return cells.get("lstm", hidden_size=hidden, forget_bias=1.0, dtype="float32")


# ------------------------------------------------------------------------------------------ seq2seq
def s2s_init(key, hidden: int = HIDDEN) -> dict:
    """Encoder LSTM (input: one-hot symbol), decoder LSTM (input: previous target or GO), readout."""
    k_enc, k_dec, k_out = jax.random.split(key, 3)
    return {
        "enc": lstm(hidden).init(k_enc, SYMBOLS),
        "dec": lstm(hidden).init(k_dec, SYMBOLS + 1),
        "out": {
            "w": jax.random.normal(k_out, (hidden, SYMBOLS), F32) / np.sqrt(hidden),
            "b": jnp.zeros((SYMBOLS,), F32),
        },
    }


def source_tokens(seed: int, shape) -> np.ndarray:
    """Random source sequences, int32 ``[..., n, S]`` (numpy, seeded)."""
    return np.random.default_rng(seed).integers(0, SYMBOLS, shape).astype(np.int32)


def s2s_batch(src, reverse):
    """``src [n, S]`` -> ``(x_enc [S, n, K], x_dec [S, n, K+1], targets [S, n])``: the encoder reads
    the source reversed where ``reverse`` (a bool, may be traced); the targets are always in order."""
    src = jnp.asarray(src)
    n, length = src.shape
    order = jnp.where(reverse, jnp.arange(length)[::-1], jnp.arange(length))
    x_enc = jax.nn.one_hot(src[:, order].T, SYMBOLS, dtype=F32)
    prev = jnp.concatenate([jnp.full((n, 1), SYMBOLS, src.dtype), src[:, :-1]], axis=1)
    x_dec = jax.nn.one_hot(prev.T, SYMBOLS + 1, dtype=F32)
    return x_enc, x_dec, src.T


def needed_position(length: int, reverse: bool) -> np.ndarray:
    """Encoder position holding the token target ``j`` needs: ``j``, or ``S - 1 - j`` reversed."""
    j = np.arange(length)
    return length - 1 - j if reverse else j


def _decoder_logits(dec_params, out, carry, x_dec):
    """Decoder from the encoder's final carry -> logits ``[S, B, K]``."""
    cell = lstm(dec_params["w_hh"].shape[0])
    _, ys = jax.lax.scan(lambda c, x: cell.step(dec_params, c, x), carry, x_dec)
    return ys @ out["w"] + out["b"]


def s2s_logits(params, x_enc, x_dec):
    """Encoder over the source, decoder from its final carry: logits ``[S, B, K]``."""
    cell = lstm(params["enc"]["w_hh"].shape[0])
    carry0 = cell.initial_carry(x_enc.shape[1])
    carry, _ = jax.lax.scan(lambda c, x: cell.step(params["enc"], c, x), carry0, x_enc)
    return _decoder_logits(params["dec"], params["out"], carry, x_dec)


def _ce(logits, targets):
    """Per-position batch-mean cross-entropy ``[S]`` (``targets`` one-hot ``[S, B, K]``)."""
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * targets, axis=-1), axis=1)


def s2s_losses(params, x_enc, x_dec, targets):
    """``(loss per target position [S], accuracy per position [S])``; ``targets [S, B]`` ints."""
    logits = s2s_logits(params, x_enc, x_dec)
    loss = _ce(logits, jax.nn.one_hot(targets, SYMBOLS, dtype=F32))
    return loss, jnp.mean(jnp.argmax(logits, -1) == targets, axis=1)


def position_log10_grads(params, x_enc, x_dec, targets):
    """``([S_j, S_t], [S_j])``: ``log10 ||dL_j / dx_t||`` (norm over batch and symbols) and
    ``log10 ||dL_j / dlogits_j||`` (the error signal at target ``j``)."""
    jac = jax.jacrev(lambda xe: s2s_losses(params, xe, x_dec, targets)[0])(x_enc)  # [S, S, B, K]
    logits = s2s_logits(params, x_enc, x_dec)
    err = (jax.nn.softmax(logits) - jax.nn.one_hot(targets, SYMBOLS, dtype=F32)) / x_enc.shape[1]
    return 0.5 * jnp.log10(jnp.sum(jnp.square(jac), axis=(2, 3))), 0.5 * jnp.log10(
        jnp.sum(jnp.square(err), axis=(1, 2))
    )


def _decoder_total_loss(ys, carry, lp):
    """Total decoder loss from the encoder's final carry (``gradient_flow``'s ``loss_fn``)."""
    del ys
    dec, out, x_dec, targets = lp  # targets one-hot: loss_params must be floating
    return jnp.mean(_ce(_decoder_logits(dec, out, carry, x_dec), targets))


def encoder_flow(params, x_enc, x_dec, targets):
    """``[S+1]``: ``log10 ||dL/dcarry_t||`` of the total decoder loss through the encoder, t = 0..S
    (``gradient_flow``; the "deep vector" is t = S)."""
    cell = lstm(params["enc"]["w_hh"].shape[0])
    res = gradient_flow(
        cell,
        params["enc"],
        cell.initial_carry(x_enc.shape[1]),
        x_enc,
        _decoder_total_loss,
        loss_params=(params["dec"], params["out"], x_dec, jax.nn.one_hot(targets, SYMBOLS, dtype=F32)),
        step_shares=False,
    )
    return res.total_log10_norms


@jax.jit
def _seq2seq_program(seeds, reverse, train_src, grad_src, eval_src):
    """All runs of one source length, ``lax.map`` over runs (seed, order): init, Adam (one
    ``lax.scan`` over the steps of ``train_src [R, steps, B, S]``), held-out loss and accuracy, and
    per-position gradients and encoder flow at init and trained (on ``grad_src``)."""
    opt = optax.adam(LEARNING_RATE)

    def measure(params, rev):
        batch = s2s_batch(grad_src, rev)
        grads, err = position_log10_grads(params, *batch)
        return {"grads": grads, "err": err, "flow": encoder_flow(params, *batch)}

    def one(args):
        seed, rev, src = args
        p0 = s2s_init(jax.random.key(seed))

        def step(state, src_i):
            p, opt_state = state
            batch = s2s_batch(src_i, rev)
            loss, g = jax.value_and_grad(lambda p: s2s_losses(p, *batch)[0].mean())(p)
            updates, opt_state = opt.update(g, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), loss

        (p, _), curve = jax.lax.scan(step, (p0, opt.init(p0)), src)
        loss, acc = s2s_losses(p, *s2s_batch(eval_src, rev))
        return {
            "curve": curve,
            "loss": loss,
            "acc": acc,
            "init": measure(p0, rev),
            "trained": measure(p, rev),
        }

    # lax.map, not vmap: vmapping the LSTM's orthogonal init (a batched QR) in a program hung
    # XLA:CPU intermittently here (jax 0.10.2, all threads idle); the vmapped training alone ran
    return jax.lax.map(one, (seeds, reverse, train_src))


def _orders(seeds: int):
    """Runs: seeds x (normal, reversed), normal first; a seed's two runs share init and data."""
    seed = np.tile(np.arange(seeds, dtype=np.int32), 2)
    return seed, np.repeat(np.array([False, True]), seeds)


def _summary(values: np.ndarray) -> dict:
    """Median over seeds of per-target values ``[seeds, S]``, and its first/last/all means."""
    med = np.median(values, axis=0)
    return {
        "median": med.tolist(),
        "per_seed": values.tolist(),
        "first_mean": float(np.mean(med[:FIRST])),
        "last_mean": float(np.mean(med[-FIRST:])),
        "all_mean": float(np.mean(med)),
    }


def _seq2seq(length: int, seeds: int, steps: int) -> dict:
    """Train and measure both orders at source length ``length``; the numbers, medians over seeds."""
    seed, rev = _orders(seeds)
    train_src = np.stack([source_tokens(100 + int(s), (steps, TRAIN_BATCH, length)) for s in seed])
    res = _seq2seq_program(
        jnp.asarray(seed),
        jnp.asarray(rev),
        train_src,
        source_tokens(GRAD_DATA, (GRAD_BATCH, length)),
        source_tokens(EVAL_DATA, (EVAL_BATCH, length)),
    )
    res = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), res)
    ln_k = float(np.log(SYMBOLS))
    out = {"length": length, "seeds": seeds, "steps": steps}
    j = np.arange(length)
    for when in ("init", "trained"):
        row = {}
        for name, r in (("normal", False), ("reversed", True)):
            needed = res[when]["grads"][rev == r][:, j, needed_position(length, r)]  # [seeds, S]
            row[name] = {
                "gradient": _summary(needed),
                "per_error": _summary(needed - res[when]["err"][rev == r]),
            }
        for q in ("gradient", "per_error"):
            for part in ("first", "last", "all"):
                row[f"{part}_gain" + ("" if q == "gradient" else "_per_error")] = (
                    row["reversed"][q][f"{part}_mean"] - row["normal"][q][f"{part}_mean"]
                )
        # path length saved for the first targets: S (normal) - (2j + 1) (reversed), averaged
        row["first_gain_per_step"] = row["first_gain"] / (length - float(np.mean(2 * j[:FIRST] + 1)))
        flow = {}
        for name, r in (("normal", False), ("reversed", True)):
            med = np.median(res[when]["flow"][rev == r], axis=0)
            # log10 (gradient at encoder step 1 / at the deep vector): negative = lost on the way back
            flow[name] = {"log10": med.tolist(), "first_step_vs_vector": float(med[1] - med[-1])}
        row["encoder_flow"] = flow
        out[when] = row
    training = {}
    for name, r in (("normal", False), ("reversed", True)):
        sel = rev == r
        ratio = res["loss"][sel].mean(axis=1) / ln_k
        training[name] = {
            "final_ratio_seeds": ratio.tolist(),
            "final_ratio": float(np.median(ratio)),
            "accuracy": float(np.median(res["acc"][sel].mean(axis=1))),
            "accuracy_by_position": np.median(res["acc"][sel], axis=0).tolist(),
            "curve": (np.median(res["curve"][sel], axis=0)[:: max(1, steps // 50)] / ln_k).tolist(),
        }
    training["loss_gain"] = training["normal"]["final_ratio"] - training["reversed"]["final_ratio"]
    pairs = zip(
        training["normal"]["final_ratio_seeds"], training["reversed"]["final_ratio_seeds"], strict=True
    )
    training["reversed_better_seeds"] = sum(r <= n for n, r in pairs)
    out["training"] = training
    return out


# ----------------------------------------------------------------------------------------- CNN-LSTM
class FrameEncoder(nn.Module):
    """Per-frame convolutional encoder: conv 3x3 (8) -> relu -> conv 3x3 stride 2 (16) -> relu -> dense."""

    features: int = FEATURES

    @nn.compact
    def __call__(self, frames):  # [N, H, W, C] -> [N, features]
        x = nn.relu(nn.Conv(8, (3, 3), dtype=F32, param_dtype=F32)(frames))
        x = nn.relu(nn.Conv(16, (3, 3), strides=(2, 2), dtype=F32, param_dtype=F32)(x))
        x = x.reshape((x.shape[0], -1))
        return jnp.tanh(nn.Dense(self.features, dtype=F32, param_dtype=F32)(x))


def cnn_frames(seed: int, frames: int, n: int):
    """``(frames [T, n, 8, 8, 1] float32, labels [n] int32)`` (numpy, seeded): noise, a 3x3 blob of
    ones in each frame with probability 1/2; label = blob in frame 0."""
    rng = np.random.default_rng(seed)
    x = 0.1 * rng.standard_normal((frames, n, *FRAME))
    on = rng.random((frames, n)) < 0.5
    pos = rng.integers(0, FRAME[0] - 2, (frames, n, 2))
    for t, b in zip(*np.nonzero(on), strict=True):
        r, c = pos[t, b]
        x[t, b, r : r + 3, c : c + 3, 0] += 1.0
    return x.astype(np.float32), on[0].astype(np.int32)


def cnn_init(key, pixels: bool = False) -> dict:
    """CNN-LSTM params (``pixels=False``) or the LSTM on flattened pixels (no CNN, same LSTM seed)."""
    k_cnn, k_lstm, k_out = jax.random.split(key, 3)
    params = {
        "lstm": lstm().init(k_lstm, int(np.prod(FRAME)) if pixels else FEATURES),
        "out": {"w": jax.random.normal(k_out, (HIDDEN, 2), F32) / np.sqrt(HIDDEN), "b": jnp.zeros((2,), F32)},
    }
    if not pixels:
        params["cnn"] = FrameEncoder().init(k_cnn, jnp.zeros((1, *FRAME), F32))
    return params


def lstm_inputs(params, frames):
    """``[T, B, I]``: CNN features of every frame (one conv call for all frames), or the pixels."""
    T, B = frames.shape[:2]
    flat = frames.reshape((T * B, *frames.shape[2:]))
    if "cnn" in params:
        return FrameEncoder().apply(params["cnn"], flat).reshape((T, B, -1))
    return flat.reshape((T, B, -1))


def _last_ce(ys, carry, lp):
    """Cross-entropy of the readout at the last step (``gradient_flow``'s ``loss_fn``)."""
    del ys
    out, labels = lp  # labels one-hot [B, 2]
    logits = carry[1] @ out["w"] + out["b"]
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(logits) * labels, axis=-1))


def lstm_loss(params, xs, labels):
    """The LSTM part fed ``xs [T, B, I]`` directly: readout of the last ``h``, cross-entropy."""
    cell = lstm()
    carry, _ = jax.lax.scan(lambda c, x: cell.step(params["lstm"], c, x), cell.initial_carry(xs.shape[1]), xs)
    return _last_ce(None, carry, (params["out"], jax.nn.one_hot(labels, 2, dtype=F32)))


def cnn_lstm_loss(params, frames, labels):
    """The CNN-LSTM (or pixel LSTM) loss on the frames."""
    return lstm_loss(params, lstm_inputs(params, frames), labels)


def _log10_norms(g):
    """Per time step (axis 0): log10 of the norm over everything else."""
    return 0.5 * jnp.log10(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim))))


def input_log10_grads(params, frames, labels):
    """``([T], [T])``: ``log10 ||dL/dframe_t||`` and ``log10 ||dL/dx_t||`` (``x_t`` the LSTM input:
    the CNN features, or the pixels), one backward pass."""
    xs, pull = jax.vjp(lambda f: lstm_inputs(params, f), frames)
    g_x = jax.grad(lstm_loss, argnums=1)(params, xs, labels)
    (g_f,) = pull(g_x)
    return _log10_norms(g_f), _log10_norms(g_x)


def fit_window(frames_n: int) -> tuple[int, int]:
    """Steps back 3..T-3 for the rate fits (away from the loss and from t = 0)."""
    return (3, frames_n - 3)


@functools.partial(jax.jit, static_argnums=(3,))
def _cnn_program(seeds, frames, labels, window):
    """At init, per seed (``lax.map``; ``frames [R, T, B, 8, 8, 1]``): for the CNN-LSTM the
    per-frame and per-feature gradients and ``gradient_flow`` over its LSTM (carry norms ``[T+1]``),
    for the LSTM on pixels the per-frame gradients; decay rates fitted over ``window``."""

    def one(args):
        seed, x, y = args
        out = {}
        for name, pixels in (("cnn_lstm", False), ("lstm_pixels", True)):
            params = cnn_init(jax.random.key(seed), pixels)
            g_frames, g_inputs = input_log10_grads(params, x, y)
            row = {
                "frames": g_frames,
                "frame_rate": decay_fit(g_frames, window).rate,
                "input_rate": decay_fit(g_inputs, window).rate,
            }
            if not pixels:
                cell = lstm()
                res = gradient_flow(
                    cell,
                    params["lstm"],
                    cell.initial_carry(x.shape[1]),
                    lstm_inputs(params, x),
                    _last_ce,
                    loss_params=(params["out"], jax.nn.one_hot(y, 2, dtype=F32)),
                    step_shares=False,
                    fit_window=window,
                )
                row["carry"] = res.total_log10_norms
                row["carry_rate"] = res.total_fit.rate
            out[name] = row
        return out

    return jax.lax.map(one, (seeds, frames, labels))


def _cnn_lstm(frames_n: int, seeds: int, batch: int) -> dict:
    """CNN-LSTM and LSTM-on-pixels gradients at init over ``frames_n`` frames; medians over seeds."""
    data = [cnn_frames(FRAME_DATA + 10 * s, frames_n, batch) for s in range(seeds)]
    window = fit_window(frames_n)
    res = _cnn_program(
        jnp.arange(seeds, dtype=jnp.int32),
        np.stack([d[0] for d in data]),
        np.stack([d[1] for d in data]),
        window,
    )
    res = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), res)
    out = {"frames": frames_n, "seeds": seeds, "batch": batch, "fit_window": list(window)}
    for name, r in res.items():
        row = {
            "frame_log10": np.median(r["frames"], axis=0).tolist(),
            "frame_log10_seeds": r["frames"].tolist(),
            "frame_rate": float(np.median(r["frame_rate"])),
            "input_rate": float(np.median(r["input_rate"])),
            "min_frame_log10": float(np.min(r["frames"])),
            "all_finite": bool(np.all(np.isfinite(r["frames"]))),
        }
        if "carry" in r:
            row["carry_log10"] = np.median(r["carry"], axis=0).tolist()
            row["carry_log10_seeds"] = r["carry"].tolist()
            row["carry_rate"] = float(np.median(r["carry_rate"]))
        out[name] = row
    c, p = out["cnn_lstm"], out["lstm_pixels"]
    # through the CNN vs the same LSTM fed the features, relative to that LSTM's rate
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
