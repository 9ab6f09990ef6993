"""C14 (seq2seq with/without source reversal, CNN-LSTM): measured verdict, numbers checked against
plain ``jax.grad`` of independently written losses (Python loops, no scan), verdict flips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradflow import cells, claims
from gradflow.learn import blob_frames, random_tokens


@pytest.fixture(scope="module")
def c14_quick(tmp_path_factory):
    module = claims.load_experiment("c14_architectures")
    result = claims.run_claim(claims.get("C14"), tmp_path_factory.mktemp("c14"), quick=True)
    return module, result


def test_quick_run_is_reproduced_with_a_png(c14_quick):
    module, result = c14_quick
    assert result.verdict == "reproduced", result.measured
    seq = result.numbers["seq2seq"]["S=10"]
    assert seq["init"]["first_gain"] >= module.CRITERIA["min_first_gain"]
    assert seq["init"]["all_gain"] == pytest.approx(0.0, abs=0.1)  # the average path is unchanged
    assert seq["training"]["loss_gain"] > 0
    with open(result.figure, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def _lstm_loop(cell, params, carry, xs):
    """Python loop over time steps (no scan): final carry and outputs."""
    ys = []
    for t in range(xs.shape[0]):
        carry, y = cell.step(params, carry, xs[t])
        ys.append(y)
    return carry, jnp.stack(ys)


def _target_loss(params, x_enc, x_dec, targets, j):
    """Batch-mean cross-entropy at target j, written out independently of the experiment."""
    cell = cells.get("lstm", hidden_size=params["enc"]["w_hh"].shape[0], forget_bias=1.0)
    carry, _ = _lstm_loop(cell, params["enc"], cell.initial_carry(x_enc.shape[1]), x_enc)
    _, ys = _lstm_loop(cell, params["dec"], carry, x_dec)
    logits = ys[j] @ params["out"]["w"] + params["out"]["b"]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(logp[jnp.arange(logits.shape[0]), targets[:, j]])


def test_per_position_gradient_is_plain_autodiff(c14_quick):
    module, result = c14_quick
    S = 10
    seq = result.numbers["seq2seq"]["S=10"]
    with jax.enable_x64(False):
        params = jax.jit(module.SEQ2SEQ.init)(jax.random.key(0))  # seed 0 at init (jit: one compile)
        src = random_tokens(module.COPY["grad_data"], (module.COPY["grad_batch"], S), module.SYMBOLS)
        prev = np.concatenate([np.full((src.shape[0], 1), module.SYMBOLS), src[:, :-1]], axis=1)
        x_dec = jax.nn.one_hot(prev.T, module.SYMBOLS + 1, dtype=jnp.float32)
        grad = jax.jit(jax.grad(_target_loss, argnums=1))  # j traced: one compile
        for name, order in (("normal", src), ("reversed", src[:, ::-1])):
            x_enc = jax.nn.one_hot(order.T, module.SYMBOLS, dtype=jnp.float32)
            for j in (0, S - 1):
                g = grad(params, x_enc, x_dec, src, j)
                t = j if name == "normal" else S - 1 - j  # where the needed token sits
                direct = float(jnp.log10(jnp.linalg.norm(g[t])))
                reported = seq["init"][name]["gradient"]["per_seed"][0][j]
                assert reported == pytest.approx(direct, abs=1e-4), (name, j)
    # reversed: target 0's token is one step from the decoder, so its gradient is the larger
    first = {n: seq["init"][n]["gradient"]["per_seed"][0][0] for n in ("normal", "reversed")}
    assert first["reversed"] > first["normal"]


def test_cnn_lstm_per_frame_gradient_is_plain_autodiff(c14_quick):
    module, result = c14_quick
    cnn = result.numbers["cnn_lstm"]
    T, B = cnn["frames"], cnn["batch"]
    with jax.enable_x64(False):
        model = module.MODELS["cnn_lstm"]
        params = jax.jit(model.init, static_argnums=1)(jax.random.key(0), module.FRAME)
        frames, labels = blob_frames(module.FRAME_DATA, T, B, module.FRAME)  # seed 0's frames
        cell = cells.get("lstm", hidden_size=module.HIDDEN, forget_bias=1.0)
        encoder = model.encoder

        def loss(frames):  # the conv vmapped over time, the LSTM in lax.scan, plain jax.grad
            feats = jax.vmap(lambda f: encoder.apply(params["cnn"], f))(frames)
            carry, _ = jax.lax.scan(
                lambda c, x: cell.step(params["lstm"], c, x), cell.initial_carry(B), feats
            )
            logits = carry[1] @ params["out"]["w"] + params["out"]["b"]
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(B), labels]), carry

        g, carry = jax.jit(jax.grad(loss, has_aux=True))(jnp.asarray(frames))
        direct = np.log10(np.sqrt(np.sum(np.square(np.asarray(g, np.float64)), axis=(1, 2, 3, 4))))
        np.testing.assert_allclose(cnn["cnn_lstm"]["frame_log10_seeds"][0], direct, atol=1e-4)
        # the last carry's gradient (gradient_flow) by hand: dL/dc_T = 0, dL/dh_T = (p - y) W^T / B
        p = jax.nn.softmax(carry[1] @ params["out"]["w"] + params["out"]["b"])
        dh = (p - jax.nn.one_hot(labels, 2)) @ params["out"]["w"].T / B
    carry_last = cnn["cnn_lstm"]["carry_log10_seeds"][0][-1]
    assert float(np.log10(np.linalg.norm(np.asarray(dh)))) == pytest.approx(carry_last, abs=1e-4)
    assert cnn["cnn_lstm"]["all_finite"] and cnn["frame_vs_features"] < 0.1


def test_tightened_criteria_flip_the_verdict(c14_quick):
    module, result = c14_quick
    numbers, criteria = result.numbers, result.criteria
    gain = min(v["init"]["first_gain"] for v in numbers["seq2seq"].values())
    verdict, _ = module.verdict(numbers, {**criteria, "min_first_gain": gain + 0.01})
    assert verdict == "not reproduced"
    rel = numbers["cnn_lstm"]["frame_vs_features"]
    verdict, text = module.verdict(numbers, {**criteria, "max_rate_rel_diff": rel / 2})
    assert verdict == "reproduced under conditions" and "CNN-LSTM rate" in text
    loss_gain = min(v["training"]["loss_gain"] for v in numbers["seq2seq"].values())
    verdict, text = module.verdict(numbers, {**criteria, "min_loss_gain": loss_gain + 0.01})
    assert verdict == "reproduced under conditions" and "training S=10" in text
    assert module.verdict(numbers, criteria)[0] == "reproduced"
