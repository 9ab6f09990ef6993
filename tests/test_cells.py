"""The built-in cells: gradients, scan vs loop, registry, input checks, counts, init, combinators."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import CELLS, LOSSES, make
from conftest import tiered, tree_allclose
from jax.test_util import check_grads

import gradflow
from gradflow import cells

LOSS = LOSSES["mixed"]  # reads every output and every final-carry leaf


def _loss_of(cell, xs_is_none):
    """Scalar loss of the unrolled cell as a function of (params, carry0[, xs])."""

    def loss(params, carry0, xs=None):
        carry, ys = gradflow.unroll(cell, params, carry0, xs)
        return LOSS(ys, carry)

    return (lambda params, carry0: loss(params, carry0)) if xs_is_none else loss


def _loop(cell, params, carry0, xs):
    """Reference for ``unroll``: a Python loop over ``cell.step``, outputs stacked."""
    if cell.params_per_step:
        length = jax.tree_util.tree_leaves(params)[0].shape[0]
        per_step = [(jax.tree_util.tree_map(lambda a, t=t: a[t], params), None) for t in range(length)]
    else:
        length = jax.tree_util.tree_leaves(xs)[0].shape[0]
        per_step = [(params, jax.tree_util.tree_map(lambda a, t=t: a[t], xs)) for t in range(length)]
    carry, ys = carry0, []
    for p, x in per_step:
        carry, y = cell.step(p, carry, x)
        ys.append(y)
    return carry, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ys)


# ---------------------------------------------------------------- gradients, scan vs loop


@pytest.mark.parametrize("name", tiered(sorted(CELLS), {"lstm", "residual"}))
def test_check_grads(name):
    """First derivatives (forward and reverse) against finite differences, w.r.t. params, carry0, xs."""
    cell, params, carry0, xs = make(name, "float64")
    f = jax.jit(_loss_of(cell, xs is None))
    args = (params, carry0) if xs is None else (params, carry0, xs)
    # 1e-5 as JAX's float64 default: central differences (eps 1e-4) of batch norm's rsqrt are off by ~3e-6
    check_grads(f, args, order=1, modes=["fwd", "rev"], atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm-peephole"])
def test_check_grads_second_order(name):
    """Second derivatives (slow, so one cell: the LSTM with the most terms)."""
    cell, params, carry0, xs = make(name, "float64")
    f = jax.jit(_loss_of(cell, xs is None))
    args = (params, carry0) if xs is None else (params, carry0, xs)
    check_grads(f, args, order=2, modes=["fwd", "rev"], atol=1e-5, rtol=1e-5)


FAST_CELLS = {"lstm", "gru", "rnn-tanh", "residual", "bidirectional-lstm"}


@pytest.mark.parametrize("name", tiered(sorted(CELLS), FAST_CELLS))
def test_unroll_equals_python_loop_values_and_vjp(name):
    cell, params, carry0, xs = make(name, "float64")
    if xs is None:  # depth stack: the layers' params are the scanned sequence
        scan = lambda p, c: gradflow.unroll(cell, p, c, None)  # noqa: E731
        loop = lambda p, c: _loop(cell, p, c, None)  # noqa: E731
        primals = (params, carry0)
    else:
        scan = lambda p, c, x: gradflow.unroll(cell, p, c, x)  # noqa: E731
        loop = lambda p, c, x: _loop(cell, p, c, x)  # noqa: E731
        primals = (params, carry0, xs)
    out_scan, vjp_scan = jax.vjp(scan, *primals)
    out_loop, vjp_loop = jax.vjp(loop, *primals)
    tree_allclose(out_scan, out_loop, rtol=1e-10, atol=1e-12)
    # the loop really ran: the final carry moved away from carry0
    assert not np.allclose(jax.tree_util.tree_leaves(out_loop[0])[0], jax.tree_util.tree_leaves(carry0)[0])

    leaves, tree = jax.tree_util.tree_flatten(out_scan)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    ct = jax.tree_util.tree_unflatten(
        tree, [jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves, strict=True)]
    )
    g_scan, g_loop = vjp_scan(ct), vjp_loop(ct)
    tree_allclose(g_scan, g_loop, rtol=1e-10, atol=1e-12)
    assert all(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(g_scan))


# ---------------------------------------------------------------- registry

SIZE = {"rnn": "hidden_size", "lstm": "hidden_size", "gru": "hidden_size", "mgu": "hidden_size"}
SIZE |= {"stacked": "hidden_size", "bidirectional": "hidden_size", "residual": "width", "plain": "width"}


def test_names():
    expected = ["bidirectional", "gru", "lstm", "mgu", "plain", "residual", "rnn", "stacked"]
    assert cells.names() == expected


@pytest.mark.parametrize("name", sorted(SIZE))
def test_options_are_the_defaults_get_accepts(name):
    opts = cells.options(name)
    size = SIZE[name]
    assert next(iter(opts)) == size and opts[size] is None
    # every listed option (with its listed default) is accepted, and the cell runs a step
    cell = cells.get(name, **{**opts, size: 3})
    assert isinstance(cell, gradflow.Cell)
    params = cell.init(jax.random.key(0), 3)
    if cell.params_per_step:
        params = jax.tree_util.tree_map(lambda a: a[0], params)
    x = jnp.ones((2, 3), jnp.float32)
    carry, _ = cell.step(
        params, cell.initial_carry(2), cells.bidirectional_xs(x) if name == "bidirectional" else x
    )
    assert jax.tree_util.tree_structure(carry) == jax.tree_util.tree_structure(cell.initial_carry(2))


def test_options_state_the_documented_defaults():
    assert cells.options("lstm")["forget_bias"] == 1.0
    assert cells.options("mgu")["forget_bias"] == 1.0
    assert cells.options("gru")["update_bias"] == 0.0
    assert cells.options("rnn")["recurrent_init"] == "normal"
    assert cells.options("lstm")["recurrent_init"] == "orthogonal"
    assert cells.options("residual")["alpha"] is None and "alpha" not in cells.options("plain")
    assert cells.options("stacked")["dropout"] == 0.0
    with pytest.raises(ValueError, match=re.escape("unknown cell 'lsmt'; choose from ['bidirectional'")):
        cells.options("lsmt")


def _raises(match, name, **opts):
    with pytest.raises(ValueError, match=match):
        cells.get(name, **opts)


def test_get_unknown_cell_names_it_and_the_choices():
    choices = "['bidirectional', 'gru', 'lstm', 'mgu', 'plain', 'residual', 'rnn', 'stacked']"
    _raises(re.escape(f"unknown cell 'lsmt'; choose from {choices}"), "lsmt", hidden_size=4)
    _raises(re.escape(f"unknown cell 'gruu'; choose from {choices}"), "stacked", hidden_size=4, cell="gruu")


def test_get_unknown_option_names_option_cell_and_the_options():
    _raises(
        r"unknown option 'forget_bais' for cell 'lstm'; options: \[.*'forget_bias'",
        "lstm",
        hidden_size=4,
        forget_bais=1.0,
    )
    _raises(r"unknown option 'alpha' for cell 'plain'; options: \[.*'norm'", "plain", width=4, alpha=1.0)
    # options of the inner cell of a combinator are checked too
    _raises(
        r"unknown option 'forget_bais' for cell 'lstm'",
        "bidirectional",
        hidden_size=4,
        cell_options={"forget_bais": 1.0},
    )


def test_get_missing_size():
    _raises(re.escape("cell 'lstm' needs hidden_size=<int>"), "lstm", forget_bias=2.0)
    _raises(re.escape("cell 'residual' needs width=<int>"), "residual", depth=3)


@pytest.mark.parametrize(
    ("name", "opts", "match"),
    [
        (
            "rnn",
            {"activation": "swish"},
            "unknown activation 'swish'; choose from ['linear', 'relu', 'sigmoid', 'tanh']",
        ),
        ("plain", {"activation": "gelu"}, "unknown activation 'gelu'; choose from ['linear'"),
        (
            "rnn",
            {"recurrent_init": "xavier"},
            "unknown recurrent_init 'xavier'; choose from ['identity', 'normal', 'orthogonal']",
        ),
        ("lstm", {"recurrent_init": "xavier"}, "unknown recurrent_init 'xavier'; choose from ['identity'"),
        ("gru", {"recurrent_init": "xavier"}, "unknown recurrent_init 'xavier'; choose from ['identity'"),
        ("mgu", {"recurrent_init": "xavier"}, "unknown recurrent_init 'xavier'; choose from ['identity'"),
        (
            "rnn",
            {"dtype": "float16"},
            "unknown dtype 'float16'; choose from ['float32', 'float64']",
        ),
        ("lstm", {"dtype": "int32"}, "unknown dtype 'int32'; choose from ['float32', 'float64']"),
        ("rnn", {"hidden_size": 0}, "hidden_size must be a positive integer, got 0"),
        ("rnn", {"hidden_size": -3}, "hidden_size must be a positive integer, got -3"),
        ("gru", {"hidden_size": 2.5}, "hidden_size must be a positive integer, got 2.5"),
        ("lstm", {"hidden_size": True}, "hidden_size must be a positive integer, got True"),
        ("residual", {"width": "4"}, "width must be a positive integer, got '4'"),
        ("plain", {"depth": 0}, "depth must be a positive integer, got 0"),
        (
            "lstm",
            {"coupled": True, "input_gate": False},
            "coupled=True (CIFG) needs input_gate=True and forget_gate=True",
        ),
        (
            "lstm",
            {"coupled": True, "forget_gate": False},
            "coupled=True (CIFG) needs input_gate=True and forget_gate=True",
        ),
        ("stacked", {"dropout": 1.5}, "dropout must be in [0, 1), got 1.5"),
        ("stacked", {"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ("stacked", {"dropout": -0.1}, "dropout must be in [0, 1), got -0.1"),
    ],
)
def test_get_bad_values_name_the_value_and_the_choices(name, opts, match):
    size = SIZE[name]
    _raises(re.escape(match), name, **{size: 4, **opts})


@pytest.mark.parametrize(
    ("name", "opts", "match"),
    [
        ("lstm", {"forget_bias": "abc"}, "lstm option forget_bias: expected a number, got 'abc'"),
        ("rnn", {"weight_scale": None}, "rnn option weight_scale: expected a number, got None"),
        ("gru", {"update_bias": True}, "gru option update_bias: expected a number, got True"),
        ("lstm", {"peephole": "yes"}, "lstm option peephole: expected true or false, got 'yes'"),
        ("plain", {"bias_scale": [0.1]}, "plain option bias_scale: expected a number, got [0.1]"),
    ],
)
def test_get_options_of_the_wrong_type_name_cell_option_and_type(name, opts, match):
    with pytest.raises(TypeError, match=re.escape(match)):
        cells.get(name, **{SIZE[name]: 4, **opts})
    if name == "lstm":  # the inner cell of a combinator says the same
        with pytest.raises(TypeError, match=re.escape(match)):
            cells.get("stacked", hidden_size=4, cell_options=opts)


@pytest.mark.slow
def test_get_accepts_numbers_of_any_kind_for_float_options():
    """ints, numpy scalars and traced arrays (a sweep vmaps over init scales) are numbers."""
    x = jnp.ones((3, 2, 1), jnp.float32)

    def rate(scale):
        cell = cells.get("rnn", hidden_size=4, weight_scale=scale)
        params, h0 = cell.init(jax.random.key(0), 1), cell.initial_carry(2)
        return gradflow.gradient_flow(cell, params, h0, x, lambda ys, h: jnp.sum(h)).total_fit.rate

    direct = [float(rate(s)) for s in (2, np.float32(0.5))]
    traced = jax.vmap(rate)(jnp.array([2.0, 0.5], jnp.float32))
    np.testing.assert_allclose(np.asarray(traced), direct, rtol=1e-5)


@pytest.mark.parametrize("name", ["residual", "plain"])
def test_get_unknown_norm(name):
    _raises(r"unknown norm 'group'; choose from .*'batch'.*'layer'", name, width=4, norm="group")


def test_get_stacked_bad_num_layers():
    _raises(r"num_layers must be a positive integer, got 2.5", "stacked", hidden_size=4, num_layers=2.5)


def test_get_rejects_a_non_float_dtype_object():
    _raises(r"dtype.*int32", "rnn", hidden_size=4, dtype=jnp.int32)


# ---------------------------------------------------------------- gradient_flow input checks


def _sq(ys, carry):
    return jnp.sum(jnp.square(jax.tree_util.tree_leaves(ys)[0]))


def _small(name, hidden=5, input_size=4, **opts):
    cell = cells.get(name, hidden_size=hidden, dtype="float64", **opts)
    return cell, cell.init(jax.random.key(0), input_size)


def _flow_raises(match, step, params, carry0, xs, loss_fn=_sq, exc=ValueError):
    with pytest.raises(exc, match=match):
        gradflow.gradient_flow(step, params, carry0, xs, loss_fn)


XS = jnp.ones((6, 3, 4), jnp.float64)  # [T, B, I] = [6, 3, 4]


def test_flow_accepts_the_good_inputs():
    # the fixtures of the failing cases below are fine when used correctly
    for name in ("rnn", "lstm"):
        cell, p = _small(name)
        res = gradflow.gradient_flow(cell, p, cell.initial_carry(3), XS, LOSS)
        assert np.all(np.isfinite(res.total_log10_norms)) and res.total_log10_norms.shape == (7,)


def test_flow_wrong_input_size():
    cell, p = _small("rnn")  # built for input 4
    _flow_raises(
        r"rnn: input x has shape \(3, 7\), expected \[B, 4\]",
        cell,
        p,
        cell.initial_carry(3),
        jnp.ones((6, 3, 7)),
    )
    cell, p = _small("lstm")
    _flow_raises(
        r"expected \[B, 4\].*xs must be \[T, B, 4\]", cell, p, cell.initial_carry(3), jnp.ones((6, 3, 7))
    )


def test_flow_carry_does_not_match():
    lstm, p = _small("lstm")
    rnn_carry = jnp.zeros((3, 5), jnp.float64)
    _flow_raises(
        r"lstm: carry is an array of shape \(3, 5\), expected the tuple \(c, h\)", lstm, p, rnn_carry, XS
    )
    wrong_h = (jnp.zeros((3, 6), jnp.float64), jnp.zeros((3, 6), jnp.float64))
    _flow_raises(r"lstm: carry c has shape \(3, 6\), expected \[B, 5\]", lstm, p, wrong_h, XS)
    fgr_carry = cells.get("lstm", hidden_size=5, gate_recurrence=True, dtype="float64").initial_carry(3)
    _flow_raises(r"lstm: carry is 3 parts, expected the tuple \(c, h\)", lstm, p, fgr_carry, XS)
    rnn, p = _small("rnn")
    _flow_raises(
        r"rnn: carry h has shape \(3, 7\), expected \[B, 5\]", rnn, p, jnp.zeros((3, 7), jnp.float64), XS
    )
    stack = cells.stacked([rnn, rnn])
    sp = stack.init(jax.random.key(0), 4)
    _flow_raises(r"stacked: carry has 1 layers, expected 2", stack, sp, (rnn.initial_carry(3),), XS)
    _flow_raises(r"carry0 leaves must be floating arrays", rnn, p, jnp.zeros((3, 5), jnp.int32), XS)


def test_flow_rnn_given_an_lstm_carry():
    rnn, p = _small("rnn")
    lstm_carry = cells.get("lstm", hidden_size=5, dtype="float64").initial_carry(3)
    _flow_raises(r"rnn: carry h is a tuple, expected one \[B, 5\] array", rnn, p, lstm_carry, XS)


def test_flow_carry_dtype_differs_from_the_params():
    rnn, p = _small("rnn")
    _flow_raises(
        r"carry0 does not match the carry that step returns: carry0 is float32\[3, 5\], "
        r"step returns float64\[3, 5\]",
        rnn,
        p,
        jnp.zeros((3, 5), jnp.float32),
        XS,
    )


def test_flow_xs_without_a_time_axis():
    rnn, p = _small("rnn")
    # [B, I] = [3, 4]: read as T=3, batch 4 != 3
    _flow_raises(
        r"xs has shape \[3, 4\] but the carry has batch 3; "
        r"expected xs as \[T, 3, \.\.\.\] \(time axis first\)",
        rnn,
        p,
        rnn.initial_carry(3),
        jnp.ones((3, 4)),
    )
    # [B, I] = [4, 4]: the step sees x of shape (4,)
    _flow_raises(
        r"rnn: input x has shape \(4,\), expected \[B, 4\]", rnn, p, rnn.initial_carry(4), jnp.ones((4, 4))
    )
    _flow_raises(
        r"xs has a scalar leaf; expected a leading time axis \[T, B, \.\.\.\]",
        rnn,
        p,
        rnn.initial_carry(3),
        jnp.float64(1.0),
    )

    def two_inputs(params, h, x):
        return rnn.step(params, h, x[0] + x[1])

    _flow_raises(r"xs has a scalar leaf", two_inputs, p, rnn.initial_carry(3), (XS, jnp.float64(1.0)))


def test_flow_xs_leaves_with_different_lengths():
    rnn, p = _small("rnn")

    def two_inputs(params, h, x):
        return rnn.step(params, h, x[0] + x[1])

    xs = (XS, jnp.ones((5, 3, 4), jnp.float64))
    _flow_raises(
        r"xs must share one leading time axis \[T, \.\.\.\]; got .*\[6, 3, 4\].*\[5, 3, 4\]",
        two_inputs,
        p,
        rnn.initial_carry(3),
        xs,
    )
    _flow_raises(
        r"xs has T = 0 steps; expected at least one", rnn, p, rnn.initial_carry(3), jnp.ones((0, 3, 4))
    )


def test_flow_batch_mismatch():
    for name in ("rnn", "lstm"):
        cell, p = _small(name)
        _flow_raises(
            r"xs has shape \[6, 2, 4\] but the carry has batch 3; expected xs as \[T, 3, \.\.\.\]",
            cell,
            p,
            cell.initial_carry(3),
            jnp.ones((6, 2, 4)),
        )


def test_flow_loss_must_return_a_scalar():
    rnn, p = _small("rnn")
    _flow_raises(
        r"loss_fn\(ys, final_carry\) must return a scalar, got float64\[5\]",
        rnn,
        p,
        rnn.initial_carry(3),
        XS,
        lambda ys, h: jnp.sum(ys, axis=(0, 1)),
    )
    _flow_raises(
        r"must return a scalar", rnn, p, rnn.initial_carry(3), XS, lambda ys, h: (jnp.sum(ys), jnp.sum(h))
    )


def test_flow_depth_stack_with_xs_of_the_wrong_length():
    cell = cells.get("residual", width=5, depth=6, dtype="float64")
    p = cell.init(jax.random.key(0), 5)
    x0 = jnp.ones((3, 5), jnp.float64)
    _flow_raises(
        r"xs must have one entry per layer: the stack has L = \[6\] layers", cell, p, x0, jnp.ones((4, 3, 5))
    )
    _flow_raises(r"residual: carry x has shape \(3, 7\), expected \[B, 5\]", cell, p, jnp.ones((3, 7)), None)
    # a bare depth-stack step without params_per_step gets all L layers at once
    _flow_raises(
        r"step got layer weights of shape \(6, 5, 5\), expected \[5, 5\]",
        cell.step,
        p,
        x0,
        jnp.ones((6, 3, 5)),
    )
    assert gradflow.gradient_flow(cell, p, x0, None, _sq).total_log10_norms.shape == (7,)


def test_flow_step_not_a_cell_nor_callable():
    rnn, p = _small("rnn")
    for bad in (42, "lstm"):
        _flow_raises(
            r"expected a gradflow.Cell or a step function .* got (int|str)",
            bad,
            p,
            rnn.initial_carry(3),
            XS,
            exc=TypeError,
        )


def test_flow_bidirectional_needs_paired_xs():
    bi = cells.bidirectional(cells.get("rnn", hidden_size=5, dtype="float64"))
    p = bi.init(jax.random.key(0), 4)
    _flow_raises(r"pass xs = gradflow.cells.bidirectional_xs\(xs\)", bi, p, bi.initial_carry(3), XS)


# ---------------------------------------------------------------- parameter counts


def _count(name, input_size, **opts):
    return gradflow.param_count(cells.get(name, **opts), input_size)


def test_param_count_lstm_gru_rnn_mgu():
    I, H = 32, 64
    lstm = _count("lstm", I, hidden_size=H)
    assert lstm.total == 24832 == 4 * (I * H + H * H + H)
    assert "one bias per gate" in lstm.bias_convention
    assert sum(lstm.by_leaf.values()) == lstm.total and len(lstm.by_leaf) == 3
    assert _count("gru", I, hidden_size=H).total == 18688 == 3 * (I * H + H * H) + 4 * H
    assert _count("rnn", I, hidden_size=H).total == I * H + H * H + H
    assert _count("rnn", 7, hidden_size=3).total == 7 * 3 + 9 + 3
    assert _count("mgu", I, hidden_size=H).total == 2 * (I * H + H * H) + 3 * H
    assert _count("mgu", I, hidden_size=H, reset_gate=False).total == 2 * (I * H + H * H) + 2 * H


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ({"input_gate": False}, lambda I, H: 3 * (I * H + H * H + H)),
        ({"forget_gate": False}, lambda I, H: 3 * (I * H + H * H + H)),
        ({"output_gate": False}, lambda I, H: 3 * (I * H + H * H + H)),
        ({"coupled": True}, lambda I, H: 3 * (I * H + H * H + H)),
        ({"input_activation": False}, lambda I, H: 4 * (I * H + H * H + H)),
        ({"output_activation": False}, lambda I, H: 4 * (I * H + H * H + H)),
        ({"peephole": True}, lambda I, H: 4 * (I * H + H * H + H) + 3 * H),
        ({"gate_recurrence": True}, lambda I, H: 4 * (I * H + H * H + H) + (3 * H) ** 2),
    ],
)
def test_param_count_greff_variants(opts, expected):
    for I, H in ((32, 64), (5, 3)):
        assert _count("lstm", I, hidden_size=H, **opts).total == expected(I, H)


@pytest.mark.parametrize("kind", ["residual", "plain"])
def test_param_count_depth_stacks(kind):
    L, D = 7, 12
    assert _count(kind, D, width=D, depth=L).total == L * (D * D + D)
    assert _count(kind, D, width=D, depth=L, norm="layer").total == L * (D * D + D) + 2 * L * D
    assert _count(kind, D, width=D, depth=L, norm="batch").total == L * (D * D + D) + 2 * L * D


def test_param_count_combinators():
    I, H = 6, 5
    one = 4 * (I * H + H * H + H)
    above = 4 * (H * H + H * H + H)  # the second layer reads the first's output
    assert _count("stacked", I, hidden_size=H, num_layers=2).total == one + above
    assert _count("bidirectional", I, hidden_size=H).total == 2 * one


# ---------------------------------------------------------------- initialisation statistics


def test_rnn_normal_init_std():
    H, sigma = 512, 1.7
    p = cells.get("rnn", hidden_size=H, weight_scale=sigma, dtype="float64").init(jax.random.key(1), 8)
    w = np.asarray(p["w_hh"])
    assert w.shape == (H, H)
    np.testing.assert_allclose(np.std(w * np.sqrt(H)), sigma, rtol=0.02)
    assert abs(np.mean(w * np.sqrt(H))) < 0.02 * sigma


@pytest.mark.parametrize("rho", [0.9, 1.3])
def test_rnn_orthogonal_init_singular_values(rho):
    H = 128
    p = cells.get("rnn", hidden_size=H, recurrent_init="orthogonal", weight_scale=rho).init(
        jax.random.key(2), 8
    )
    assert p["w_hh"].dtype == jnp.float32
    s = np.linalg.svd(np.asarray(p["w_hh"], np.float64), compute_uv=False)
    np.testing.assert_allclose(s, rho, rtol=1e-5)


def test_rnn_identity_init():
    rho = 0.75
    p = cells.get("rnn", hidden_size=6, recurrent_init="identity", weight_scale=rho, dtype="float64").init(
        jax.random.key(3), 2
    )
    np.testing.assert_array_equal(p["w_hh"], rho * np.eye(6))


def test_rnn_bias_and_input_scale():
    H, sigma_b = 4096, 0.3
    cell = cells.get("rnn", hidden_size=H, bias_scale=sigma_b, dtype="float64")
    b = jax.jit(lambda key: cell.init(key, 3)["b"])(jax.random.key(4))  # jit: skip the [H, H] draw
    np.testing.assert_allclose(np.std(np.asarray(b)), sigma_b, rtol=0.05)
    assert not np.any(cells.get("rnn", hidden_size=8, dtype="float64").init(jax.random.key(4), 3)["b"])

    I, H, scale = 256, 512, 2.5
    p = cells.get("rnn", hidden_size=H, input_scale=scale, dtype="float64").init(jax.random.key(5), I)
    assert p["w_ih"].shape == (I, H)
    np.testing.assert_allclose(np.std(np.asarray(p["w_ih"]) * np.sqrt(I)), scale, rtol=0.02)


def test_depth_stack_weight_std():
    D, L, sigma = 256, 4, 1.4
    p = cells.get("plain", width=D, depth=L, weight_scale=sigma, bias_scale=0.2, dtype="float64").init(
        jax.random.key(6), D
    )
    assert p["w"].shape == (L, D, D) and p["b"].shape == (L, D)
    np.testing.assert_allclose(np.std(np.asarray(p["w"]) * np.sqrt(D)), sigma, rtol=0.02)
    np.testing.assert_allclose(np.std(np.asarray(p["b"])), 0.2, rtol=0.1)


@pytest.mark.parametrize("name", ["lstm", "gru", "mgu"])
def test_gated_recurrent_blocks_are_each_orthogonal(name):
    H, rho = 32, 0.8
    p = cells.get(name, hidden_size=H, weight_scale=rho).init(jax.random.key(7), 3)
    blocks = np.split(np.asarray(p["w_hh"], np.float64), p["w_hh"].shape[1] // H, axis=1)
    assert len(blocks) == {"lstm": 4, "gru": 3, "mgu": 2}[name]
    for b in blocks:
        np.testing.assert_allclose(np.linalg.svd(b, compute_uv=False), rho, rtol=1e-5)
    assert not np.allclose(blocks[0], blocks[1])  # independent draws per gate


def test_lstm_bias_init():
    H, fb = 4, 2.5
    b = cells.get("lstm", hidden_size=H, forget_bias=fb, dtype="float64").init(jax.random.key(0), 3)["b"]
    rows = [[0] * H, [fb] * H, [0] * H, [0] * H]  # i, f, g, o
    np.testing.assert_array_equal(np.asarray(b).reshape(4, H), rows)
    # CIFG: blocks i, g, o; input gate at -forget_bias so f = 1 - i starts at sigmoid(forget_bias)
    b = cells.get("lstm", hidden_size=H, forget_bias=fb, coupled=True, dtype="float64").init(
        jax.random.key(0), 3
    )["b"]
    np.testing.assert_array_equal(np.asarray(b).reshape(3, H), [[-fb] * H, [0] * H, [0] * H])
    # NIG: blocks f, g, o
    b = cells.get("lstm", hidden_size=H, forget_bias=fb, input_gate=False, dtype="float64").init(
        jax.random.key(0), 3
    )["b"]
    np.testing.assert_array_equal(np.asarray(b).reshape(3, H), [[fb] * H, [0] * H, [0] * H])
    p = cells.get("lstm", hidden_size=H, peephole=True, dtype="float64").init(jax.random.key(0), 3)
    np.testing.assert_array_equal(p["peep"], np.zeros((3, H)))


@pytest.mark.parametrize(
    ("name", "opts"),
    [
        ("lstm", {"forget_bias": 40.0}),
        ("lstm", {"forget_bias": 40.0, "coupled": True}),
        ("lstm", {"forget_bias": 40.0, "peephole": True}),
        ("gru", {"update_bias": 40.0}),
        ("mgu", {"forget_bias": 40.0}),
    ],
)
def test_gate_bias_init_acts_on_the_state(name, opts):
    """With zero weights, a huge forget/update bias at init copies the state through a step."""
    cell = cells.get(name, hidden_size=4, dtype="float64", **opts)
    p = cell.init(jax.random.key(0), 3)
    p = {k: (jnp.zeros_like(v) if k.startswith("w_") else v) for k, v in p.items()}
    state = jax.random.normal(jax.random.key(1), (2, 4), jnp.float64)
    carry = (state, jnp.zeros_like(state)) if name == "lstm" else state
    new, _ = cell.step(p, carry, jnp.ones((2, 3), jnp.float64))
    kept = new[0] if name == "lstm" else new
    np.testing.assert_allclose(kept, state, rtol=1e-12)
    # and a zero bias does not keep it
    cell0 = cells.get(
        name, hidden_size=4, dtype="float64", **{k: (0.0 if "bias" in k else v) for k, v in opts.items()}
    )
    p0 = {
        k: (jnp.zeros_like(v) if k.startswith("w_") else v)
        for k, v in cell0.init(jax.random.key(0), 3).items()
    }
    new0, _ = cell0.step(p0, carry, jnp.ones((2, 3), jnp.float64))
    assert not np.allclose(new0[0] if name == "lstm" else new0, state, atol=0.1)


def test_gru_update_bias_sets_the_z_block():
    H, ub = 4, -1.5
    p = cells.get("gru", hidden_size=H, update_bias=ub, dtype="float64").init(jax.random.key(0), 3)
    np.testing.assert_array_equal(np.asarray(p["b_ih"]).reshape(3, H), [[0] * H, [ub] * H, [0] * H])  # r z n
    np.testing.assert_array_equal(p["b_hn"], np.zeros(H))


# ---------------------------------------------------------------- stacked: dropout between layers


def _recorder(width, dtype=jnp.float64):
    """A layer whose carry is the input it was given: shows what dropout passed upward."""
    return gradflow.Cell(
        init=lambda key, input_size: {},
        initial_carry=lambda batch: jnp.zeros((batch, width), dtype),
        step=lambda params, carry, x: (x, x),
    )


def test_stacked_dropout_only_between_layers():
    B, I, H = 4, 3, 16
    rnn = cells.get("rnn", hidden_size=H, dtype="float64")
    gru = cells.get("gru", hidden_size=H, dtype="float64")
    drop, ref = cells.stacked([rnn, gru], dropout=0.5), cells.stacked([rnn, gru])
    params = drop.init(jax.random.key(0), I)
    carry = (jax.random.normal(jax.random.key(1), (B, H), jnp.float64), jnp.ones((B, H), jnp.float64))
    x = jax.random.normal(jax.random.key(2), (B, I), jnp.float64)

    c_ref, y_ref = ref.step(params, carry, x)
    c_drop, _ = drop.step(params, carry, (x, jax.random.key(3)))
    np.testing.assert_array_equal(c_drop[0], c_ref[0])  # layer 0: recurrent edge and input untouched
    assert not np.allclose(c_drop[1], c_ref[1], atol=1e-3)  # layer 1 read a dropped input
    # without a key, dropout is off: exactly the dropout=0 stack
    c_eval, y_eval = drop.step(params, carry, x)
    np.testing.assert_array_equal(y_eval, y_ref)
    tree_allclose(c_eval, c_ref, rtol=0)
    # and over a sequence: dropout_inputs keys never touch layer 0
    xs = jax.random.normal(jax.random.key(4), (5, B, I), jnp.float64)
    carry_d, _ = gradflow.unroll(drop, params, carry, cells.dropout_inputs(xs, jax.random.key(5)))
    carry_r, _ = gradflow.unroll(ref, params, carry, xs)
    np.testing.assert_array_equal(carry_d[0], carry_r[0])
    assert not np.allclose(carry_d[1], carry_r[1], atol=1e-3)


def test_stacked_dropout_is_inverted_and_keeps_the_expectation():
    B, I, H, rate = 4, 3, 8, 0.3
    rnn = cells.get("rnn", hidden_size=H, dtype="float64")
    stack = cells.stacked([rnn, _recorder(H)], dropout=rate)
    params = stack.init(jax.random.key(0), I)
    carry = stack.initial_carry(B)
    x = jax.random.normal(jax.random.key(1), (B, I), jnp.float64)
    y0, _ = rnn.step(params[0], carry[0], x)

    keys = jax.random.split(jax.random.key(2), 2000)
    seen = jax.vmap(lambda k: stack.step(params, carry, (x, k))[0][1])(keys)  # [K, B, H]
    ratio = np.asarray(seen / y0)
    # each entry is dropped (0) or scaled by 1 / (1 - rate)
    assert np.all(np.isclose(ratio, 0.0) | np.isclose(ratio, 1.0 / (1.0 - rate), rtol=1e-12))
    np.testing.assert_allclose(np.mean(ratio == 0.0), rate, atol=0.02)
    np.testing.assert_allclose(np.mean(ratio), 1.0, atol=0.03)
    # a fresh mask per key (32 entries each: repeats among 2000 keys would be a bug)
    assert len({m.tobytes() for m in ratio == 0.0}) > 1900


# ---------------------------------------------------------------- bidirectional


def _bi_setup():
    T, B, I = 7, 2, 3
    fwd = cells.get("lstm", hidden_size=4, dtype="float64")
    # a different cell and width backward, so the two halves cannot be mixed up unnoticed
    bwd = cells.get("gru", hidden_size=3, dtype="float64")
    bi = cells.bidirectional(fwd, bwd)
    params = bi.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
    return fwd, bwd, bi, params, xs


def test_bidirectional_ys_match_a_hand_built_reference():
    fwd, bwd, bi, params, xs = _bi_setup()
    B = xs.shape[1]
    _, ys = gradflow.unroll(bi, params, bi.initial_carry(B), cells.bidirectional_xs(xs))
    out = cells.bidirectional_ys(ys)
    assert out.shape == (xs.shape[0], B, 4 + 3)

    _, y_f = gradflow.unroll(fwd, params["fwd"], fwd.initial_carry(B), xs)
    _, y_b_rev = gradflow.unroll(bwd, params["bwd"], bwd.initial_carry(B), xs[::-1])
    np.testing.assert_allclose(out[..., :4], y_f, rtol=1e-12)
    np.testing.assert_allclose(out[..., 4:], y_b_rev[::-1], rtol=1e-12)
    # the backward half at t = T-1 has read x_{T-1} only: one step of bwd from its initial carry
    _, y_last = bwd.step(params["bwd"], bwd.initial_carry(B), xs[-1])
    np.testing.assert_allclose(out[-1, :, 4:], y_last, rtol=1e-12)


def test_bidirectional_output_at_t0_sees_the_last_input():
    fwd, _, bi, params, xs = _bi_setup()
    B = xs.shape[1]

    def bi_out0(x_last):
        full = xs.at[-1].set(x_last)
        return cells.bidirectional_ys(
            gradflow.unroll(bi, params, bi.initial_carry(B), cells.bidirectional_xs(full))[1]
        )[0]

    def fwd_out0(x_last):
        return gradflow.unroll(fwd, params["fwd"], fwd.initial_carry(B), xs.at[-1].set(x_last))[1][0]

    j_bi = np.asarray(jax.jacfwd(bi_out0)(xs[-1]))  # [B, 4 + 3, B, I]
    j_fwd = np.asarray(jax.jacfwd(fwd_out0)(xs[-1]))  # [B, 4, B, I]
    assert j_bi.shape == (B, 7, B, 3) and j_fwd.shape == (B, 4, B, 3)
    assert np.max(np.abs(j_bi[:, 4:])) > 1e-3  # through the backward half ...
    np.testing.assert_array_equal(j_bi[:, :4], 0.0)  # ... never the forward half
    np.testing.assert_array_equal(j_fwd, 0.0)


# ---------------------------------------------------------------- depth stacks


def test_residual_with_alpha_zero_is_the_identity():
    D, L, B = 6, 9, 3
    cell = cells.get("residual", width=D, depth=L, alpha=0.0, bias_scale=1.0, dtype="float64")
    params = cell.init(jax.random.key(0), D)
    x0 = jax.random.normal(jax.random.key(1), (B, D), jnp.float64)
    out, ys = gradflow.unroll(cell, params, x0, None)
    np.testing.assert_array_equal(out, x0)
    np.testing.assert_array_equal(ys, jnp.broadcast_to(x0, (L, B, D)))
    v = jax.random.normal(jax.random.key(2), (B, D), jnp.float64)
    res = gradflow.gradient_flow(cell, params, x0, None, lambda ys, x: jnp.sum(x * v))
    np.testing.assert_allclose(res.log10_norms, np.log10(np.linalg.norm(v)), rtol=1e-12)
    # alpha != 0 changes the map (the test above can fail)
    moved = cells.get("residual", width=D, depth=L, alpha=0.5, bias_scale=1.0, dtype="float64")
    assert not np.allclose(gradflow.unroll(moved, params, x0, None)[0], x0)


def test_linear_plain_stack_is_the_matrix_product():
    D, L, B = 5, 4, 3
    cell = cells.get("plain", width=D, depth=L, activation="linear", dtype="float64")
    params = cell.init(jax.random.key(0), D)
    x0 = jax.random.normal(jax.random.key(1), (B, D), jnp.float64)
    w = [np.asarray(params["w"][l]) for l in range(L)]
    out, _ = gradflow.unroll(cell, params, x0, None)
    np.testing.assert_allclose(out, np.asarray(x0) @ w[0] @ w[1] @ w[2] @ w[3], rtol=1e-12)
    # dL/dx_t for L = <x_L, v> is v (W_{t+1} ... W_L)^T, so its norm is known in closed form
    v = np.asarray(jax.random.normal(jax.random.key(2), (B, D), jnp.float64))
    res = gradflow.gradient_flow(cell, params, x0, None, lambda ys, x: jnp.sum(x * v))
    expected, g = [np.linalg.norm(v)], v
    for l in reversed(range(L)):
        g = g @ w[l].T
        expected.append(np.linalg.norm(g))
    np.testing.assert_allclose(res.norms, expected[::-1], rtol=1e-10)
