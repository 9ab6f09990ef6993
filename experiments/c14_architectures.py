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

Runs and measures: ``gradflow.engine.architectures`` (one compiled program per source length, one
for the CNN-LSTM); figure: ``gradflow.figures.architectures``. Everything runs in float32 under
``jax.enable_x64(False)``: the numbers do not depend on the caller's x64 setting.
"""

from pathlib import Path

import jax

from gradflow import cells
from gradflow.engine.architectures import cnn_lstm_gradients, seq2seq_reversal
from gradflow.figures import architectures_figure
from gradflow.learn import CNNLSTM, FrameEncoder, Seq2Seq

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
# the copy task's sizes and numpy data seeds (training data: 100 + seed); the frames' seed
COPY = {"learning_rate": 3e-3, "train_batch": 64, "grad_batch": 64, "eval_batch": 512, "grad_data": 1,
        "eval_data": 2, "first": FIRST}  # fmt: skip
FRAME_DATA = 3
FRAME = (8, 8, 1)
LSTM = cells.get("lstm", hidden_size=HIDDEN, forget_bias=1.0, dtype="float32")
SEQ2SEQ = Seq2Seq(LSTM, LSTM, SYMBOLS)
MODELS = {"cnn_lstm": CNNLSTM(FrameEncoder(16), LSTM), "lstm_pixels": CNNLSTM(None, LSTM)}


def settings(quick: bool) -> dict:
    """Sizes of the quick and the full run."""
    if quick:
        return {"lengths": [10], "seeds": 2, "steps": 200, "frames": 40, "cnn_seeds": 2, "cnn_batch": 16}
    return {"lengths": [10, 20], "seeds": 3, "steps": 800, "frames": 60, "cnn_seeds": 3, "cnn_batch": 32}


def run(out: Path, quick: bool) -> dict:
    """Seq2seq (each source length, both orders) and CNN-LSTM; figure ``out/c14.png``."""
    cfg = settings(quick)
    with jax.enable_x64(False):
        seq = {
            f"S={S}": seq2seq_reversal(SEQ2SEQ, S, cfg["seeds"], cfg["steps"], **COPY) for S in cfg["lengths"]
        }
        cnn = cnn_lstm_gradients(
            MODELS, FRAME, cfg["frames"], cfg["cnn_seeds"], cfg["cnn_batch"], data_seed=FRAME_DATA
        )
    c, p = cnn["cnn_lstm"], cnn["lstm_pixels"]  # rates relative to the rate compared against
    cnn["frame_vs_features"] = abs(c["frame_rate"] - c["input_rate"]) / abs(c["input_rate"])
    cnn["frame_vs_carry"] = abs(c["frame_rate"] - c["carry_rate"]) / abs(c["carry_rate"])
    cnn["cnn_vs_pixels"] = abs(c["frame_rate"] - p["frame_rate"]) / abs(p["frame_rate"])
    out = Path(out)
    architectures_figure(seq[list(seq)[-1]], cnn, out / "c14")  # the longest source length
    return {
        "settings": {**cfg, "hidden": HIDDEN, "symbols": SYMBOLS, "first_tokens": FIRST},
        "seq2seq": seq,
        "cnn_lstm": cnn,
        "figure": str(out / "c14.png"),
        "runs": [],
    }


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
