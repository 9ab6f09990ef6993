"""from_equinox against Equinox's own cells; adapters take layers and callable pytrees as users pass them."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cases import brute_force_log10_norms
from conftest import tiered, tree_allclose
from flax import linen as nn
from flax import nnx

import gradflow
from gradflow import cells

F64 = jnp.float64
B, T, I, H = 3, 7, 4, 5


def xs_(seed=1):
    return jax.random.normal(jax.random.key(seed), (T, B, I), F64)


def by_hand(module, carry, xs):
    """Equinox's own module on every example and step, in Python loops."""
    ys = []
    for t in range(xs.shape[0]):
        carry = jax.tree_util.tree_map(
            lambda *leaves: jnp.stack(leaves),
            *[module(xs[t, b], jax.tree_util.tree_map(lambda c, b=b: c[b], carry)) for b in range(B)],
        )
        ys.append(carry[0] if isinstance(carry, tuple) else carry)
    return carry, jnp.stack(ys)


@pytest.mark.parametrize("kind", tiered(["gru", "lstm"], {"lstm"}))
def test_cells_equal_the_equinox_modules_outputs(kind):
    make = {"gru": eqx.nn.GRUCell, "lstm": eqx.nn.LSTMCell}[kind]
    module = make(I, H, dtype=F64, key=jax.random.key(0))
    cell = cells.from_equinox(module)
    params = cell.init(None, I)
    carry0 = cell.initial_carry(B)
    assert jax.tree_util.tree_structure(carry0) == jax.tree_util.tree_structure(
        (0, 0) if kind == "lstm" else 0
    )
    carry, ys = gradflow.unroll(cell, params, carry0, xs_())
    want_carry, want_ys = by_hand(module, carry0, xs_())
    tree_allclose(carry, want_carry, rtol=1e-12)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-12)


@pytest.mark.parametrize("kind", tiered(["gru", "lstm"], {"lstm"}))
def test_gradient_norms_equal_brute_force(kind):
    make = {"gru": eqx.nn.GRUCell, "lstm": eqx.nn.LSTMCell}[kind]
    cell = cells.from_equinox(make(I, H, dtype=F64, key=jax.random.key(2)))
    params = cell.init(None, I)
    carry0 = jax.tree_util.tree_map(lambda c: c + 0.1, cell.initial_carry(B))

    def loss(ys, carry):
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree_util.tree_leaves(carry))

    res = gradflow.gradient_flow(cell, params, carry0, xs_(), loss)
    expected = brute_force_log10_norms(cell, params, carry0, xs_(), loss)
    tree_allclose(res.log10_norms, expected, rtol=1e-10, atol=1e-10)
    grads = jax.grad(lambda p: loss(*gradflow.unroll(cell, p, carry0, xs_())[::-1]))(params)
    tree_allclose(res.grads, grads, rtol=1e-10, atol=1e-12)


class Elman(eqx.Module):
    """A cell-like Equinox module of the user's own: arrays are params, the rest static."""

    w: jax.Array
    u: jax.Array
    hidden_size: int = eqx.field(static=True)
    activation: str = eqx.field(static=True, default="tanh")

    def __call__(self, x, h):
        return getattr(jnp, self.activation)(self.w @ h + self.u @ x)


def test_a_users_own_equinox_cell():
    kw, ku = jax.random.split(jax.random.key(3))
    module = Elman(jax.random.normal(kw, (H, H), F64) / 2, jax.random.normal(ku, (H, I), F64), H)
    cell = cells.from_equinox(module)
    params = cell.init(None, I)
    assert jax.tree_util.tree_leaves(params) == [module.w, module.u]  # the static fields are not params
    carry, ys = gradflow.unroll(cell, params, cell.initial_carry(B), xs_())
    np.testing.assert_allclose(carry, by_hand(module, cell.initial_carry(B), xs_())[0], rtol=1e-12)
    own = cells.from_equinox(module, initial_carry=jnp.ones(H), output=lambda h: 2 * h)
    carry, ys = gradflow.unroll(own, params, own.initial_carry(B), xs_())
    np.testing.assert_allclose(ys[-1], 2 * by_hand(module, jnp.ones((B, H)), xs_())[0], rtol=1e-12)


def test_from_function_takes_a_callable_pytree_as_params():
    """An Equinox module passed as init= is params, not an init function (it used to be called)."""
    module = eqx.nn.GRUCell(I, H, dtype=F64, key=jax.random.key(0))
    cell = cells.from_function(
        lambda m, h, x: (jax.vmap(m)(x, h),) * 2, init=module, initial_carry=jnp.zeros(H, F64)
    )
    params = cell.init(jax.random.key(9), I)
    assert type(params) is type(module)
    tree_allclose(params, module, rtol=0)
    carry, _ = gradflow.unroll(cell, cell.init(None, I), cell.initial_carry(B), xs_())
    np.testing.assert_allclose(carry, by_hand(module, jnp.zeros((B, H), F64), xs_())[0], rtol=1e-12)


def test_layers_give_their_cells():
    lin = cells.from_linen(nn.RNN(nn.LSTMCell(H, param_dtype=F64)))
    ref = cells.from_linen(nn.LSTMCell(H, param_dtype=F64))
    params = ref.init(jax.random.key(0), I)
    tree_allclose(lin.init(jax.random.key(0), I), params, rtol=0)
    tree_allclose(
        gradflow.unroll(lin, params, lin.initial_carry(B), xs_()),
        gradflow.unroll(ref, params, ref.initial_carry(B), xs_()),
        rtol=0,
    )
    rnn = nnx.RNN(nnx.GRUCell(I, H, param_dtype=F64, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(0))
    cell = cells.from_nnx(rnn)
    _, ys = gradflow.unroll(cell, cell.init(None, I), cell.initial_carry(B), xs_())
    np.testing.assert_allclose(ys, jnp.swapaxes(rnn(jnp.swapaxes(xs_(), 0, 1)), 0, 1), rtol=1e-12)


def test_one_line_errors():
    with pytest.raises(TypeError, match="pass an instance"):
        cells.from_equinox(eqx.nn.GRUCell)
    with pytest.raises(TypeError, match="expected a callable equinox Module"):
        cells.from_equinox(lambda x, h: h)
    module = Elman(jnp.eye(H), jnp.ones((H, I)), H)
    with pytest.raises(ValueError, match="input_size=3 but the module has input_size=4"):
        cells.from_equinox(eqx.nn.GRUCell(I, H, key=jax.random.key(0))).init(None, 3)

    class NoSize(eqx.Module):
        w: jax.Array

        def __call__(self, x, h):
            return h

    with pytest.raises(TypeError, match="no integer hidden_size"):
        cells.from_equinox(NoSize(jnp.eye(2)))
    assert cells.from_equinox(module).init(None, I) is not None
