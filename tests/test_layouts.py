"""Layout converters: exact round trips, PyTorch parity against an independent numpy
reimplementation of nn.RNN / nn.LSTM / nn.GRU, parameter counts and error messages.

Dtypes are explicit everywhere, so the tests mean the same with x64 on or off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradflow import cells
from gradflow.seam import param_count, unroll

B, I, H, T = 3, 5, 7, 6
F32 = {"rtol": 1e-5, "atol": 1e-6}

CELLS = {
    "rnn": lambda: cells.rnn(H),
    "lstm": lambda: cells.lstm(H),
    "gru": lambda: cells.gru(H),
    "mgu": lambda: cells.mgu(H),
    "mgu(reset_gate=False)": lambda: cells.mgu(H, reset_gate=False),
}
TORCH_KINDS = ("rnn", "lstm", "gru")


def random_params(kind, key, negative_zero=True):
    """gradflow init with every bias drawn ``N(0, 1)``; one bias entry set to -0.0."""
    params = dict(CELLS[kind]().init(key, I))
    for i, name in enumerate(n for n in sorted(params) if n.startswith("b")):
        bias = np.array(jax.random.normal(jax.random.fold_in(key, i), params[name].shape, params[name].dtype))
        if negative_zero:
            bias[0] = -0.0
        params[name] = bias
    return {k: np.asarray(v) for k, v in params.items()}


def base(kind):
    return kind.split("(")[0]


def assert_same_arrays(actual, desired):
    """Same keys, same dtypes, same bits (including the sign of zero)."""
    assert sorted(actual) == sorted(desired)
    for k in desired:
        np.testing.assert_array_equal(actual[k], desired[k], err_msg=k, strict=True)
        np.testing.assert_array_equal(np.signbit(actual[k]), np.signbit(desired[k]), err_msg=k)


@pytest.mark.parametrize("kind", CELLS)
def test_linen_round_trip_is_exact(kind):
    params = random_params(kind, jax.random.key(0))
    variables = cells.to_linen_params(base(kind), params)
    assert_same_arrays(cells.from_linen_params(base(kind), variables), params)
    assert_same_arrays(cells.from_linen_params(base(kind), variables["params"]), params)  # inner dict too
    again = cells.to_linen_params(base(kind), cells.from_linen_params(base(kind), variables))
    jax.tree_util.tree_map(lambda a, d: np.testing.assert_array_equal(a, d, strict=True), again, variables)


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_torch_round_trip_is_exact(kind):
    params = random_params(kind, jax.random.key(1))
    sd = cells.to_torch(kind, params)
    assert sorted(sd) == ["bias_hh_l0", "bias_ih_l0", "weight_hh_l0", "weight_ih_l0"]
    assert_same_arrays(cells.from_torch(kind, sd), params)
    sd2 = cells.to_torch(kind, params, layer=2)
    assert_same_arrays(cells.from_torch(kind, {**sd, **sd2}, layer=2), params)


# PyTorch's documented equations (torch.nn.RNN / LSTM / GRU), two biases, in float64 numpy.
def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def torch_reference(kind, sd, carry, xs):
    """Run the torch-layout ``sd`` over ``xs: [T, B, I]``; carry ``h`` or ``(c, h)`` (gradflow's order)."""
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    w_ih, w_hh, b_ih, b_hh = (np.asarray(sd[n], np.float64) for n in names)
    c, h = carry if kind == "lstm" else (None, carry)
    c, h = (None if c is None else np.asarray(c, np.float64)), np.asarray(h, np.float64)
    ys = []
    for x in np.asarray(xs, np.float64):
        gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
        if kind == "rnn":
            h = np.tanh(gi + gh)
        elif kind == "lstm":
            i, f, g, o = np.split(gi + gh, 4, axis=-1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
        else:
            (i_r, i_z, i_n), (h_r, h_z, h_n) = np.split(gi, 3, axis=-1), np.split(gh, 3, axis=-1)
            r, z = _sigmoid(i_r + h_r), _sigmoid(i_z + h_z)
            n = np.tanh(i_n + r * h_n)
            h = (1.0 - z) * n + z * h
        ys.append(h)
    return ((c, h) if kind == "lstm" else h), np.stack(ys)


def _data(kind, key):
    k_c, k_x = jax.random.split(key)
    carry = CELLS[kind]().initial_carry(B)
    leaves, treedef = jax.tree_util.tree_flatten(carry)
    keys = jax.random.split(k_c, len(leaves))
    carry = treedef.unflatten(
        [jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)]
    )
    return carry, jax.random.normal(k_x, (T, B, I), jnp.float32)


def _assert_close(actual, desired):
    jax.tree_util.tree_map(lambda a, d: np.testing.assert_allclose(a, d, **F32), actual, desired)


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_torch_layout_computes_the_gradflow_cell(kind):
    params = random_params(kind, jax.random.key(2))
    carry, xs = _data(kind, jax.random.key(3))
    want = unroll(CELLS[kind](), jax.tree_util.tree_map(jnp.asarray, params), carry, xs)
    _assert_close(torch_reference(kind, cells.to_torch(kind, params), carry, xs), want)


@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_torch_to_gradflow_keeps_the_function_not_the_bias_split(kind):
    G = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    k = jax.random.split(jax.random.key(4), 4)
    sd = {  # a torch module's own state, both biases nonzero
        "weight_ih_l0": np.asarray(jax.random.normal(k[0], (G * H, I), jnp.float32)) / I**0.5,
        "weight_hh_l0": np.asarray(jax.random.normal(k[1], (G * H, H), jnp.float32)) / H**0.5,
        "bias_ih_l0": np.asarray(jax.random.normal(k[2], (G * H,), jnp.float32)),
        "bias_hh_l0": np.asarray(jax.random.normal(k[3], (G * H,), jnp.float32)),
    }
    carry, xs = _data(kind, jax.random.key(5))
    want = torch_reference(kind, sd, carry, xs)
    params = cells.from_torch(kind, sd)
    _assert_close(unroll(CELLS[kind](), jax.tree_util.tree_map(jnp.asarray, params), carry, xs), want)
    back = cells.to_torch(kind, params)
    _assert_close(torch_reference(kind, back, carry, xs), want)
    np.testing.assert_array_equal(back["weight_ih_l0"], sd["weight_ih_l0"])
    np.testing.assert_array_equal(back["weight_hh_l0"], sd["weight_hh_l0"])
    kept = slice(2 * H, None) if kind == "gru" else slice(0, 0)  # GRU keeps b_hn in bias_hh's n block
    np.testing.assert_array_equal(back["bias_hh_l0"][kept], sd["bias_hh_l0"][kept])
    summed = np.ones(G * H, bool)
    summed[kept] = False
    np.testing.assert_array_equal(back["bias_hh_l0"][summed], 0.0)


def test_from_torch_accepts_tensors_without_importing_torch():
    class FakeTensor:  # the duck-typed surface of a torch tensor: detach, cpu, __array__
        def __init__(self, a):
            self.a = a

        def detach(self):
            return self

        def cpu(self):
            return self

        def __array__(self, dtype=None, copy=None):
            return np.asarray(self.a, dtype)

    sd = cells.to_torch("lstm", random_params("lstm", jax.random.key(6)))
    assert_same_arrays(
        cells.from_torch("lstm", {k: FakeTensor(v) for k, v in sd.items()}), cells.from_torch("lstm", sd)
    )


def test_parameter_counts():
    key = jax.random.key(7)
    lstm, gru = cells.lstm(64), cells.gru(64)
    assert param_count(lstm, 32).total == 4 * (32 * 64 + 64 * 64 + 64) == 24_832
    assert param_count(gru, 32).total == 3 * (32 * 64 + 64 * 64) + 4 * 64 == 18_688
    torch_lstm = cells.to_torch("lstm", lstm.init(key, 32))
    torch_gru = cells.to_torch("gru", gru.init(key, 32))
    assert sum(v.size for v in torch_lstm.values()) == 4 * (32 * 64 + 64**2 + 2 * 64) == 25_088
    assert sum(v.size for v in torch_gru.values()) == 3 * (32 * 64 + 64**2 + 2 * 64) == 18_816
    variables = cells.to_linen_params("lstm", lstm.init(key, 32))
    assert sum(a.size for a in jax.tree_util.tree_leaves(variables)) == 24_832


def test_bad_kind_and_containers():
    params = random_params("lstm", jax.random.key(8))
    with pytest.raises(ValueError, match=r"unknown kind 'lsmt'; choose from \['gru', 'lstm', 'mgu', 'rnn'\]"):
        cells.to_linen_params("lsmt", params)
    with pytest.raises(ValueError, match=r"unknown kind 'mgu'; choose from \['gru', 'lstm', 'rnn'\]"):
        cells.to_torch("mgu", random_params("mgu", jax.random.key(8)))
    with pytest.raises(TypeError, match="params must be a dict of arrays, got list"):
        cells.to_torch("lstm", [params])
    with pytest.raises(TypeError, match="state_dict must be a dict"):
        cells.from_torch("lstm", None)
    with pytest.raises(ValueError, match="layer must be a non-negative integer"):
        cells.to_torch("lstm", params, layer=-1)


def test_bad_gradflow_params():
    lstm = random_params("lstm", jax.random.key(9))
    with pytest.raises(ValueError, match=r"lstm: params lack key 'b'; expected keys \['b', 'w_hh', 'w_ih'\]"):
        cells.to_torch("lstm", {k: v for k, v in lstm.items() if k != "b"})
    for flag, key in (({"peephole": True}, "peep"), ({"gate_recurrence": True}, "w_gg")):
        variant = cells.lstm(H, **flag).init(jax.random.key(0), I)
        with pytest.raises(ValueError, match=rf"extra keys \['{key}'\].*only the full LSTM"):
            cells.to_linen_params("lstm", variant)
    nig = cells.lstm(H, input_gate=False).init(jax.random.key(0), I)
    with pytest.raises(ValueError, match=r"w_hh has shape \(7, 21\), expected \[H, 4H\].*fewer gates"):
        cells.to_torch("lstm", nig)
    with pytest.raises(ValueError, match=r"lstm: b has shape \(7,\), expected \[4H\] = \(28,\)"):
        cells.to_torch("lstm", {**lstm, "b": lstm["b"][:H]})
    with pytest.raises(ValueError, match=r"gru: b_hn has shape \(3,\), expected \[H\] = \(7,\)"):
        gru = random_params("gru", jax.random.key(0))
        cells.to_linen_params("gru", {**gru, "b_hn": gru["b_hn"][:3]})
    with pytest.raises(ValueError, match="lstm: params lack key 'b'"):
        cells.to_torch("lstm", random_params("gru", jax.random.key(0)))


def test_bad_linen_variables():
    variables = cells.to_linen_params("gru", random_params("gru", jax.random.key(10)))["params"]
    with pytest.raises(ValueError, match=r"gru: linen variables lack \['hn'\]"):
        cells.from_linen_params("gru", {k: v for k, v in variables.items() if k != "hn"})
    with pytest.raises(ValueError, match=r"have extra entries \['ho'\]"):
        cells.from_linen_params("gru", {**variables, "ho": variables["hn"]})
    with pytest.raises(ValueError, match=r"submodule 'hr' has \['bias', 'kernel'\], expected \['kernel'\]"):
        cells.from_linen_params("gru", {**variables, "hr": variables["hn"]})
    with pytest.raises(ValueError, match=r"w_ih has shape \(5, 20\), expected \[I, 3H\] = \(5, 21\)"):
        cells.from_linen_params(
            "gru",
            {
                **variables,
                "in": {"kernel": np.zeros((I, H - 1), np.float32), "bias": np.zeros(H, np.float32)},
            },
        )


def test_bad_torch_state_dict():
    sd = cells.to_torch("gru", random_params("gru", jax.random.key(11)))
    no_bias = {k: v for k, v in sd.items() if k.startswith("weight")}
    with pytest.raises(ValueError, match=r"gru: state_dict has no 'bias_ih_l0'.*bias=True"):
        cells.from_torch("gru", no_bias)
    with pytest.raises(ValueError, match="has no 'weight_ih_l1'"):
        cells.from_torch("gru", sd, layer=1)
    lstm_sd = cells.to_torch("lstm", random_params("lstm", jax.random.key(11)))
    with pytest.raises(ValueError, match="proj_size > 0 are not convertible"):
        cells.from_torch("lstm", {**lstm_sd, "weight_hr_l0": np.zeros((3, H), np.float32)})
    with pytest.raises(ValueError, match=r"weight_hh_l0 has shape \(21, 7\), expected \[4H, H\]"):
        cells.from_torch("lstm", sd)
    with pytest.raises(ValueError, match=r"bias_hh_l0 has shape \(20,\), expected \[3H\] = \(21,\)"):
        cells.from_torch("gru", {**sd, "bias_hh_l0": sd["bias_hh_l0"][:-1]})
