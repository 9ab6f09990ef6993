"""``gradflow.engine.architectures`` against independent references: per-seed numbers recomputed with
``jax.grad`` of losses written independently (seq2seq: Python loops over time steps, no scan; CNN-LSTM:
the encoder vmapped over frames), a hand-written Adam, a least-squares fit by ``np.polyfit``; the
summaries by hand on small cases; the figure drawn."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradflow import cells
from gradflow.engine.architectures import cnn_lstm_gradients, seed_summary, seq2seq_reversal
from gradflow.figures import architectures_figure
from gradflow.learn import CNNLSTM, FrameEncoder, Seq2Seq, blob_frames, random_tokens

K, H, S, SEEDS, STEPS, LR = 3, 4, 3, 2, 2, 1e-2
CELL = cells.get("lstm", hidden_size=H, forget_bias=1.0, dtype="float64")
SIZES = {
    "learning_rate": LR,
    "train_batch": 4,
    "grad_batch": 3,
    "eval_batch": 5,
    "grad_data": 7,
    "eval_data": 8,
}


def test_seed_summary_by_hand():
    got = seed_summary([[1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 0.0]], first=1)
    assert got["median"] == [2.0, 3.0, 4.0, 2.0] and got["per_seed"][1] == [3.0, 4.0, 5.0, 0.0]
    assert (got["first_mean"], got["last_mean"], got["all_mean"]) == (2.0, 2.0, 2.75)


def _loop(params, carry, xs):
    ys = []
    for t in range(xs.shape[0]):
        carry, y = CELL.step(params, carry, xs[t])
        ys.append(y)
    return carry, jnp.stack(ys)


def _onehots(src, reverse):
    """``src [B, S]`` -> encoder and decoder inputs (float64), written out by hand."""
    order = src[:, ::-1] if reverse else src
    prev = jnp.concatenate([jnp.full((src.shape[0], 1), K, src.dtype), src[:, :-1]], axis=1)
    return jax.nn.one_hot(order.T, K, dtype=jnp.float64), jax.nn.one_hot(prev.T, K + 1, dtype=jnp.float64)


def _losses(params, x_enc, x_dec, targets, carry=None):
    """Cross-entropy per target ``[S]``: Python loops over the encoder and the decoder."""
    carry = CELL.initial_carry(x_enc.shape[1]) if carry is None else carry
    carry, _ = _loop(params["enc"], carry, x_enc)
    _, ys = _loop(params["dec"], carry, x_dec)
    logp = jax.nn.log_softmax(ys @ params["out"]["w"] + params["out"]["b"])
    n = x_enc.shape[1]
    return jnp.stack([-jnp.mean(logp[j, jnp.arange(n), targets[:, j]]) for j in range(S)])


def _target_loss(params, x_enc, x_dec, targets, j):
    return _losses(params, x_enc, x_dec, targets)[j]


_input_grad = jax.jit(jax.grad(_target_loss, argnums=1))  # j traced: one compile per order


def _mean_loss(params, src, reverse):
    return jnp.mean(_losses(params, *_onehots(src, reverse), src))


_loss_and_grad = jax.jit(jax.value_and_grad(_mean_loss), static_argnums=2)


def _adam(params, batches, reverse):
    """Adam (b1 0.9, b2 0.999, eps 1e-8, bias-corrected) by hand on the mean of ``_losses``."""
    m = jax.tree_util.tree_map(jnp.zeros_like, params)
    v, curve = m, []
    for i, src in enumerate(batches, start=1):
        loss, g = _loss_and_grad(params, src, reverse)
        curve.append(float(loss))
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        c1, c2 = 1 - 0.9**i, 1 - 0.999**i
        params = jax.tree_util.tree_map(
            lambda p, m, v, c1=c1, c2=c2: p - LR * (m / c1) / (jnp.sqrt(v / c2) + 1e-8), params, m, v
        )
    return params, curve


@pytest.fixture(scope="module")
def seq():
    model = Seq2Seq(CELL, CELL, K)
    return model, seq2seq_reversal(model, S, SEEDS, STEPS, first=1, **SIZES)


@pytest.mark.slow
def test_seq2seq_reversal_per_seed_numbers_equal_loop_autodiff(seq):
    model, res = seq
    grad_src = random_tokens(SIZES["grad_data"], (SIZES["grad_batch"], S), K)
    eval_src = random_tokens(SIZES["eval_data"], (SIZES["eval_batch"], S), K)
    curves = {"normal": [], "reversed": []}
    for s in range(SEEDS):
        p0 = model.init(jax.random.key(s))
        train = random_tokens(100 + s, (STEPS, SIZES["train_batch"], S), K)  # both orders: the same data
        for name, reverse in (("normal", False), ("reversed", True)):
            p, curve = _adam(p0, train, reverse)
            x_enc, x_dec = _onehots(grad_src, reverse)
            for when, params in (("init", p0), ("trained", p)):
                for j in range(S):
                    g = _input_grad(params, x_enc, x_dec, grad_src, j)
                    t = S - 1 - j if reverse else j  # the encoder step holding source token j
                    want = np.log10(np.linalg.norm(g[t]))
                    assert res[when][name]["gradient"]["per_seed"][s][j] == pytest.approx(want, abs=1e-6)
            held_out = float(np.mean(_losses(p, *_onehots(eval_src, reverse), eval_src))) / np.log(K)
            ratio = res["training"][name]["final_ratio_seeds"][s]
            assert ratio == pytest.approx(held_out, rel=1e-9), (name, s)
            curves[name].append(curve)
    for name, c in curves.items():  # the median over two seeds is their mean
        np.testing.assert_allclose(res["training"][name]["curve"], np.mean(c, axis=0) / np.log(K), rtol=1e-9)


def test_seq2seq_reversal_summaries_by_hand(seq):
    res = seq[1]
    for when in ("init", "trained"):
        row = res[when]
        first = {n: np.mean(row[n]["gradient"]["per_seed"], axis=0)[0] for n in ("normal", "reversed")}
        assert row["first_gain"] == pytest.approx(first["reversed"] - first["normal"], abs=1e-12)
        assert row["first_gain_per_step"] == pytest.approx(row["first_gain"] / (S - 1), abs=1e-12)
    tr = res["training"]
    assert tr["loss_gain"] == pytest.approx(tr["normal"]["final_ratio"] - tr["reversed"]["final_ratio"])
    better = sum(
        r <= n
        for n, r in zip(tr["normal"]["final_ratio_seeds"], tr["reversed"]["final_ratio_seeds"], strict=True)
    )
    assert tr["reversed_better_seeds"] == better and len(tr["normal"]["curve"]) == STEPS


def test_seq2seq_reversal_encoder_flow_at_the_first_step_is_brute_force(seq):
    model, res = seq
    grad_src = random_tokens(SIZES["grad_data"], (SIZES["grad_batch"], S), K)
    x_enc, x_dec = _onehots(grad_src, False)
    norms = []
    for s in range(SEEDS):
        p0 = model.init(jax.random.key(s))
        g = jax.grad(lambda c, p0=p0: jnp.mean(_losses(p0, x_enc, x_dec, grad_src, c)))(CELL.initial_carry(3))
        norms.append(np.log10(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree_util.tree_leaves(g)))))
    flow = res["init"]["encoder_flow"]["normal"]
    assert len(flow["log10"]) == S + 1
    assert flow["log10"][0] == pytest.approx(np.mean(norms), abs=1e-9)  # median of two seeds
    assert flow["first_step_vs_vector"] == pytest.approx(flow["log10"][1] - flow["log10"][-1])


T, B, FRAME = 10, 3, (8, 8, 1)


@pytest.fixture(scope="module")
def cnn():
    lstm = cells.get("lstm", hidden_size=H, forget_bias=1.0, dtype="float32")
    models = {"cnn_lstm": CNNLSTM(FrameEncoder(4), lstm), "lstm_pixels": CNNLSTM(None, lstm)}
    with jax.enable_x64(False):
        return models, cnn_lstm_gradients(models, FRAME, T, SEEDS, B, data_seed=5)


def _frame_loss(model, params, frames, labels):
    """The encoder vmapped over frames (or the pixels), the cell in ``lax.scan``, the readout."""
    if model.encoder is None:
        xs = frames.reshape((T, B, -1))
    else:
        xs = jax.vmap(lambda f: model.encoder.apply(params["cnn"], f))(frames)
    step = lambda c, x: model.cell.step(params["lstm"], c, x)  # noqa: E731
    carry, _ = jax.lax.scan(step, model.cell.initial_carry(B), xs)
    logits = carry[1] @ params["out"]["w"] + params["out"]["b"]
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(B), labels]), carry


_frame_grad = jax.jit(jax.grad(_frame_loss, argnums=2, has_aux=True), static_argnums=0)


@pytest.mark.slow
def test_cnn_lstm_gradients_per_seed_equal_loop_autodiff_and_polyfit(cnn):
    models, res = cnn
    assert res["fit_window"] == [3, T - 3] and "carry_log10" not in res["lstm_pixels"]
    k = np.arange(T - 1, -1, -1)  # steps back from the loss
    window = (k >= 3) & (k <= T - 3)
    for name, model in models.items():
        rates = []
        for s in range(SEEDS):
            frames, labels = blob_frames(5 + 10 * s, T, B, FRAME)
            with jax.enable_x64(False):
                params = model.init(jax.random.key(s), FRAME)
                g, carry = _frame_grad(model, params, frames, labels)
            want = np.log10(np.linalg.norm(np.asarray(g, np.float64).reshape(T, -1), axis=1))
            got = np.asarray(res[name]["frame_log10_seeds"][s])
            np.testing.assert_allclose(got, want, atol=1e-4)
            rates.append(np.polyfit(k[window], np.log(10) * got[window], 1)[0])
            if model.encoder is not None:  # the last carry's gradient: dL/dc_T = 0, dL/dh_T by hand
                p = jax.nn.softmax(carry[1] @ params["out"]["w"] + params["out"]["b"])
                dh = (p - jax.nn.one_hot(labels, 2)) @ params["out"]["w"].T / B
                assert res[name]["carry_log10_seeds"][s][-1] == pytest.approx(
                    np.log10(np.linalg.norm(dh)), abs=1e-4
                )
        assert res[name]["frame_rate"] == pytest.approx(np.mean(rates), abs=1e-5)  # median of two seeds
        assert res[name]["min_frame_log10"] == np.min(res[name]["frame_log10_seeds"])
        assert res[name]["all_finite"]
    pixels = res["lstm_pixels"]  # the pixels are the cell's input: the same gradient, the same rate
    assert pixels["input_rate"] == pytest.approx(pixels["frame_rate"], abs=1e-6)


def test_architectures_figure_is_a_png(seq, cnn, tmp_path):
    architectures_figure(seq[1], cnn[1], tmp_path / "fig")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
