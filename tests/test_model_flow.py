"""model_flow on unmodified Flax models against brute force: the model rewritten by hand as Python loops
over Flax's own cells with the same parameters, and jax.grad with respect to zero perturbations added to
every layer's carry at every step (all layers in one jax.grad)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiered
from flax import linen as nn
from flax import nnx

import gradflow

F64 = jnp.float64
B, T, I = 2, 6, 3


def carry_norms(g):
    """log10 of the Frobenius norm over batch and features, per step: [T+1, B, ...] -> [T+1]."""
    with np.errstate(divide="ignore"):
        return np.log10(np.sqrt(np.sum(np.square(np.asarray(g)), axis=tuple(range(1, g.ndim)))))


def add(carry, eps):
    return jax.tree_util.tree_map(jnp.add, carry, eps)


def loop(cell, cell_params, carry, xs, eps, reverse=False):
    """The layer by hand: carry += eps[t] before step t, carry += eps[T] at the end; ys in input order."""
    order = range(xs.shape[1] - 1, -1, -1) if reverse else range(xs.shape[1])
    ys = {}
    for k, t in enumerate(order):
        carry = add(carry, jax.tree_util.tree_map(lambda e, k=k: e[k], eps))
        carry, ys[t] = cell.apply({"params": cell_params}, carry, xs[:, t])
    carry = add(carry, jax.tree_util.tree_map(lambda e: e[-1], eps))
    return carry, jnp.stack([ys[t] for t in range(xs.shape[1])], axis=1)


def zero_eps(carry, length=T):
    return jax.tree_util.tree_map(lambda c: jnp.zeros((length + 1, *c.shape), c.dtype), carry)


def assert_flow_equals(flow, eps_grads):
    expected = jax.tree_util.tree_map(carry_norms, eps_grads)
    got = jax.tree_util.tree_map(np.asarray, flow.log10_norms)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-8), got, expected)


def assert_tree_close(a, b, atol=1e-10):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-10, atol=atol)


def inputs(shape=(B, T, I), seed=1):
    return jax.random.normal(jax.random.key(seed), shape, F64)


class TwoLayer(nn.Module):
    """LSTM then GRU, written as Flax's examples write it; the loss reads the GRU's final carry too."""

    @nn.compact
    def __call__(self, x):
        x = nn.RNN(nn.LSTMCell(5, param_dtype=F64))(x)
        carry, x = nn.RNN(nn.GRUCell(4, param_dtype=F64), return_carry=True)(x)
        return carry, nn.Dense(1, param_dtype=F64)(x)


def two_layer_loss(outputs):
    carry, y = outputs
    return jnp.sum(jnp.sin(y)) + 0.3 * jnp.sum(carry**2)


def test_two_layer_linen_model_equals_brute_force():
    model, x = TwoLayer(), inputs()
    variables = model.init(jax.random.key(0), x)
    p = variables["params"]
    lstm, gru = nn.LSTMCell(5, param_dtype=F64), nn.GRUCell(4, param_dtype=F64)
    c1 = lstm.initialize_carry(jax.random.key(0), (B, I))
    c2 = gru.initialize_carry(jax.random.key(0), (B, 5))

    def by_hand(params, eps):
        _, h = loop(lstm, params["LSTMCell_0"], c1, x, eps[0])
        carry, h = loop(gru, params["GRUCell_0"], c2, h, eps[1])
        y = h @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]
        return two_layer_loss((carry, y))

    eps = (zero_eps(c1), zero_eps(c2))
    loss, (grads, eps_grads) = jax.value_and_grad(by_hand, argnums=(0, 1))(p, eps)
    flows = gradflow.model_flow(model, variables, x, two_layer_loss)

    assert list(flows) == ["RNN_0", "RNN_1"]
    assert_flow_equals(flows["RNN_0"], eps_grads[0])
    assert_flow_equals(flows["RNN_1"], eps_grads[1])
    assert np.isfinite(flows["RNN_1"].log10_norms).all()  # the loss reads the GRU's final carry
    np.testing.assert_allclose(flows["RNN_0"].loss, loss, rtol=1e-12)
    assert_tree_close(flows["RNN_1"].grads, grads)
    assert_tree_close(
        flows["RNN_0"].grads, jax.grad(lambda q: two_layer_loss(model.apply({"params": q}, x)))(p)
    )
    assert flows["RNN_0"].nonfinite_step == -1 and flows["RNN_0"].grad_share.shape == (T,)


def test_under_jit_the_same_numbers():
    model, x = TwoLayer(), inputs()
    variables = model.init(jax.random.key(0), x)
    eager = gradflow.model_flow(model, variables, x, two_layer_loss)
    jitted = jax.jit(lambda v, x: gradflow.model_flow(model, v, x, two_layer_loss))(variables, x)
    for key in eager:
        assert_tree_close(jitted[key].log10_norms, eager[key].log10_norms)
        np.testing.assert_allclose(jitted[key].total_fit.rate, eager[key].total_fit.rate, rtol=1e-10)


class BiModel(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Bidirectional(nn.RNN(nn.GRUCell(4, param_dtype=F64)), nn.RNN(nn.LSTMCell(3, param_dtype=F64)))(
            x
        )
        return nn.Dense(2, param_dtype=F64)(x)


def test_bidirectional_layer_each_direction_equals_brute_force():
    model, x = BiModel(), inputs()
    variables = model.init(jax.random.key(0), x)
    p = variables["params"]
    gru, lstm = nn.GRUCell(4, param_dtype=F64), nn.LSTMCell(3, param_dtype=F64)
    cf = gru.initialize_carry(jax.random.key(0), (B, I))
    cb = lstm.initialize_carry(jax.random.key(0), (B, I))

    def loss_fn(y):
        return jnp.sum(jnp.tanh(y[:, :2]) ** 2) + jnp.sum(y[:, -1])

    def by_hand(eps):
        _, forward = loop(gru, p["GRUCell_0"], cf, x, eps[0])
        _, backward = loop(lstm, p["LSTMCell_0"], cb, x, eps[1], reverse=True)
        h = jnp.concatenate([forward, backward], axis=-1)
        return loss_fn(h @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])

    eps_grads = jax.grad(by_hand)((zero_eps(cf), zero_eps(cb)))
    flows = gradflow.model_flow(model, variables, x, loss_fn)
    assert sorted(flows) == ["RNN_0", "RNN_1"]
    assert_flow_equals(flows["RNN_0"], eps_grads[0])
    assert_flow_equals(flows["RNN_1"], eps_grads[1])  # processing order: its h_0 is at the sequence's end


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.RNN(nn.LSTMCell(4, param_dtype=F64), name="lstm")(nn.Dense(3, param_dtype=F64)(x))


class Nested(nn.Module):
    def setup(self):
        self.encoder = Encoder()
        self.head = nn.Dense(1, param_dtype=F64)

    def __call__(self, x):
        return self.head(self.encoder(x)[:, -1])


def test_nested_encoder_path_and_numbers():
    model, x = Nested(), inputs()
    variables = model.init(jax.random.key(0), x)
    p = variables["params"]
    lstm = nn.LSTMCell(4, param_dtype=F64)
    c0 = lstm.initialize_carry(jax.random.key(0), (B, 3))

    def by_hand(params, eps):
        enc = params["encoder"]
        z = x @ enc["Dense_0"]["kernel"] + enc["Dense_0"]["bias"]
        _, h = loop(lstm, enc["LSTMCell_0"], c0, z, eps)
        y = h[:, -1] @ params["head"]["kernel"] + params["head"]["bias"]
        return jnp.sum(y**2)

    grads, eps_grads = jax.grad(by_hand, argnums=(0, 1))(p, zero_eps(c0))
    flows = gradflow.model_flow(model, variables, x, lambda y: jnp.sum(y**2))
    assert list(flows) == ["encoder/lstm"]
    assert_flow_equals(flows["encoder/lstm"], eps_grads)
    assert_tree_close(flows["encoder/lstm"].grads, grads)  # also the Dense before the layer (input taps)


class NnxModel(nnx.Module):
    def __init__(self, rngs):
        self.embed = nnx.Linear(I, 4, param_dtype=F64, rngs=rngs)
        self.rnn = nnx.RNN(nnx.LSTMCell(4, 5, param_dtype=F64, rngs=rngs), rngs=rngs)
        self.out = nnx.Linear(5, 1, param_dtype=F64, rngs=rngs)

    def __call__(self, x):
        return self.out(self.rnn(self.embed(x)))


def test_nnx_model_equals_brute_force():
    model, x = NnxModel(nnx.Rngs(0)), inputs()
    cell = model.rnn.cell
    c0 = cell.initialize_carry((B, 4), nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def by_hand(params, eps):
        m = nnx.merge(graphdef, params, rest)
        carry, ys = m.embed(x), {}
        carry = c0
        z = m.embed(x)
        for t in range(T):
            carry = add(carry, jax.tree_util.tree_map(lambda e, t=t: e[t], eps))
            carry, ys[t] = m.rnn.cell(carry, z[:, t])
        return jnp.sum(jnp.cos(m.out(jnp.stack([ys[t] for t in range(T)], axis=1))))

    eps = zero_eps(c0)
    grads, eps_grads = jax.grad(by_hand, argnums=(0, 1))(params, eps)
    eps_grads = jax.tree_util.tree_map(lambda g: g.at[T].set(0.0), eps_grads)  # the final carry is unread
    flows = gradflow.model_flow(model, x, lambda y: jnp.sum(jnp.cos(y)))
    assert list(flows) == ["rnn"]
    assert_flow_equals(flows["rnn"], eps_grads)
    assert_tree_close(flows["rnn"].grads, grads)


@pytest.mark.slow
def test_log_norms_stay_finite_where_float32_underflows():
    """A contracting tanh layer over 200 steps in float32: its gradients underflow float32, the taps'
    log norms do not, and they equal the float64 brute force (jax.grad of scanned perturbations)."""
    init = nn.initializers.normal(0.05)

    class Small(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.RNN(nn.SimpleCell(8, kernel_init=init, recurrent_kernel_init=init))(x)[:, -1]

    cell = nn.SimpleCell(8)
    model, x = Small(), inputs((2, 200, 3)).astype(jnp.float32)
    variables = model.init(jax.random.key(0), x)
    flow = gradflow.model_flow(model, variables, x, jnp.sum)["RNN_0"]

    p64 = jax.tree_util.tree_map(lambda a: a.astype(F64), variables["params"]["SimpleCell_0"])
    x64 = x.astype(F64)
    c0 = jnp.zeros((2, 8), F64)

    def by_hand(eps):
        def body(h, inp):
            x_t, e_t = inp
            return cell.apply({"params": p64}, h + e_t, x_t)

        _, ys = jax.lax.scan(body, c0, (jnp.swapaxes(x64, 0, 1), eps[:-1]))
        return jnp.sum(ys[-1] + 0 * eps[-1])

    expected = carry_norms(jax.grad(by_hand)(jnp.zeros((201, 2, 8), F64)))
    log10 = np.asarray(flow.log10_norms)
    assert expected[0] < -60  # far below float32's smallest normal number, 1e-38
    np.testing.assert_allclose(log10[:-1], expected[:-1], rtol=0, atol=1e-3)
    assert log10[-1] == -np.inf  # the loss does not read the final carry


def test_errors_are_one_line():
    class NoRnn(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(x)

    class HandLoop(nn.Module):
        @nn.compact
        def __call__(self, x):
            cell = nn.GRUCell(3)
            carry = cell.initialize_carry(jax.random.key(0), x[:, 0].shape)
            for t in range(x.shape[1]):
                carry, _ = cell(carry, x[:, t])
            return carry

    x = inputs().astype(jnp.float32)
    for model, match in [(NoRnn(), r"ran no nn\.RNN layer"), (HandLoop(), r"runs outside nn\.RNN")]:
        variables = model.init(jax.random.key(0), x)
        with pytest.raises(ValueError, match=match) as err:
            gradflow.model_flow(model, variables, x, jnp.sum)
        assert "\n" not in str(err.value)

    class NnxLoop(nnx.Module):
        def __init__(self, rngs):
            self.cell = nnx.GRUCell(I, 3, rngs=rngs)

        def __call__(self, x):
            carry = self.cell.initialize_carry((x.shape[0], I), nnx.Rngs(0))
            for t in range(x.shape[1]):
                carry, _ = self.cell(carry, x[:, t])
            return carry

    with pytest.raises(ValueError, match=r"its cell cell runs outside nnx\.RNN") as err:
        gradflow.model_flow(NnxLoop(nnx.Rngs(0)), x, jnp.sum)
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match=r"linen or flax\.nnx module"):
        gradflow.model_flow(lambda x: x, {}, x, jnp.sum)
    with pytest.raises(ValueError, match="must return a scalar"):
        variables = TwoLayer().init(jax.random.key(0), inputs())
        gradflow.model_flow(TwoLayer(), variables, inputs(), lambda out: out[1])


class Options(nn.Module):
    """nn.RNN's call options: gradflow's scan must give Flax's outputs exactly."""

    kwargs: dict

    @nn.compact
    def __call__(self, x, seq_lengths=None):
        kw = dict(self.kwargs)
        if seq_lengths is not None:
            kw["seq_lengths"] = seq_lengths
        out = nn.RNN(nn.GRUCell(4, param_dtype=F64), **kw.pop("init", {}))(x, **kw)
        return out if not isinstance(out, tuple) else out[0] * 2.0 + out[1][..., -1, :]


OPTIONS = ["time_major", "reverse", "reverse-keep_order-seq_lengths", "return_carry", "seq_lengths"]
OPTION_KWARGS = {
    "time_major": {"time_major": True},
    "reverse": {"reverse": True},
    "reverse-keep_order-seq_lengths": {"reverse": True, "keep_order": True, "seq_lengths": True},
    "return_carry": {"init": {"return_carry": True}},
    "seq_lengths": {"seq_lengths": True},
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "option", tiered(OPTIONS, {"time_major", "reverse-keep_order-seq_lengths"}, ids=OPTIONS)
)
def test_rnn_options_give_flaxs_own_outputs_and_gradients(option):
    kwargs = dict(OPTION_KWARGS[option])
    lengths = jnp.array([T, T - 2]) if kwargs.pop("seq_lengths", False) else None
    model, x = Options(kwargs), inputs()
    if kwargs.get("time_major"):
        x = jnp.swapaxes(x, 0, 1)
    variables = model.init(jax.random.key(0), x, lengths)
    weights = jax.random.normal(jax.random.key(5), model.apply(variables, x, lengths).shape, F64)

    def loss_fn(out):
        return jnp.sum(jnp.tanh(out) * weights)

    flows = gradflow.model_flow(model, variables, x, loss_fn, seq_lengths=lengths)
    (flow,) = flows.values()
    loss, grads = jax.value_and_grad(lambda p: loss_fn(model.apply({"params": p}, x, lengths)))(
        variables["params"]
    )
    np.testing.assert_allclose(flow.loss, loss, rtol=1e-12)
    assert_tree_close(flow.grads, grads)
    assert np.isfinite(np.asarray(flow.log10_norms)[:-1]).all()


def test_seq_lengths_with_return_carry_is_refused_in_one_line():
    model, x = Options({"init": {"return_carry": True}}), inputs()
    lengths = jnp.array([T, T - 2])
    variables = model.init(jax.random.key(0), x, lengths)
    with pytest.raises(ValueError, match="seq_lengths and return_carry=True") as err:
        gradflow.model_flow(model, variables, x, jnp.sum, seq_lengths=lengths)
    assert "\n" not in str(err.value)
