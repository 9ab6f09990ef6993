"""Each gradflow cell reproduces the matching Flax cell (linen and nnx) with mapped
parameters over a full ``lax.scan``, and the Flax adapters wrap cells faithfully.

Dtypes are explicit everywhere, so the tests mean the same with x64 on or off."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiered
from flax import nnx

from gradflow import cells
from gradflow.seam import unroll

B, I, H, T = 3, 5, 7, 20
F32 = {"rtol": 1e-5, "atol": 1e-6}
F64 = {"rtol": 1e-10, "atol": 1e-12}

# (kind, gradflow cell factory, linen cell); MGU with both reset_gate settings.
LINEN_CASES = {
    "rnn/SimpleCell": ("rnn", lambda **kw: cells.rnn(H, **kw), lambda: nn.SimpleCell(H)),
    "lstm/LSTMCell": ("lstm", lambda **kw: cells.lstm(H, **kw), lambda: nn.LSTMCell(H)),
    "lstm/OptimizedLSTMCell": ("lstm", lambda **kw: cells.lstm(H, **kw), lambda: nn.OptimizedLSTMCell(H)),
    "gru/GRUCell": ("gru", lambda **kw: cells.gru(H, **kw), lambda: nn.GRUCell(H)),
    "mgu/MGUCell": ("mgu", lambda **kw: cells.mgu(H, **kw), lambda: nn.MGUCell(H)),
    "mgu/MGUCell(reset_gate=False)": (
        "mgu",
        lambda **kw: cells.mgu(H, reset_gate=False, **kw),
        lambda: nn.MGUCell(H, reset_gate=False),
    ),
}


def perturb_biases(tree, key, scale=0.5):
    """Add ``N(0, scale^2)`` noise to every leaf whose name starts with 'b' (b, b_ih, b_hn, bias)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    keys = jax.random.split(key, len(leaves))
    out = [
        a + scale * jax.random.normal(k, a.shape, a.dtype) if str(path[-1].key).startswith("b") else a
        for (path, a), k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, out)


def random_like(tree, key):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)]
    )


def data(cell, key, dtype=jnp.float32):
    """Random carry (leaves ``[B, H]``) and inputs ``xs: [T, B, I]``."""
    k_c, k_x = jax.random.split(key)
    return random_like(cell.initial_carry(B), k_c), jax.random.normal(k_x, (T, B, I), dtype)


def linen_step(module):
    return lambda variables, carry, x: module.apply(variables, carry, x)


def assert_trees_close(actual, desired, tol):
    jax.tree_util.tree_map(lambda a, d: np.testing.assert_allclose(a, d, **tol), actual, desired)


@pytest.mark.parametrize("case", tiered(list(LINEN_CASES), {"lstm/LSTMCell", "gru/GRUCell"}))
def test_gradflow_params_drive_linen_cell(case):
    kind, make_cell, make_module = LINEN_CASES[case]
    cell, module = make_cell(), make_module()
    k_p, k_b, k_d = jax.random.split(jax.random.key(0), 3)
    params = perturb_biases(cell.init(k_p, I), k_b)
    carry, xs = data(cell, k_d)
    want = unroll(cell, params, carry, xs)
    got = unroll(linen_step(module), cells.to_linen_params(kind, params), carry, xs)
    assert_trees_close(got, want, F32)


@pytest.mark.parametrize("case", tiered(list(LINEN_CASES), {"lstm/LSTMCell", "gru/GRUCell"}))
def test_linen_params_drive_gradflow_cell(case):
    kind, make_cell, make_module = LINEN_CASES[case]
    cell, module = make_cell(), make_module()
    k_p, k_b, k_d = jax.random.split(jax.random.key(1), 3)
    carry, xs = data(cell, k_d)
    variables = perturb_biases(module.init(k_p, carry, xs[0]), k_b)
    want = unroll(linen_step(module), variables, carry, xs)
    got = unroll(cell, cells.from_linen_params(kind, variables), carry, xs)
    assert_trees_close(got, want, F32)


@pytest.mark.parametrize("case", tiered(list(LINEN_CASES), {"lstm/LSTMCell", "gru/GRUCell"}))
def test_linen_equivalence_float64(case):
    kind, make_cell, make_module = LINEN_CASES[case]
    with jax.enable_x64(True):
        cell, module = make_cell(dtype="float64"), make_module()
        k_p, k_b, k_d = jax.random.split(jax.random.key(2), 3)
        params = perturb_biases(cell.init(k_p, I), k_b)
        carry, xs = data(cell, k_d, jnp.float64)
        assert xs.dtype == jnp.float64 and params["w_hh"].dtype == jnp.float64
        want = unroll(cell, params, carry, xs)
        got = unroll(linen_step(module), cells.to_linen_params(kind, params), carry, xs)
        assert_trees_close(got, want, F64)


@pytest.mark.parametrize("case", tiered(list(LINEN_CASES), {"lstm/LSTMCell", "gru/GRUCell"}))
def test_from_linen_matches_module_apply_and_gradflow(case):
    kind, make_cell, make_module = LINEN_CASES[case]
    module = make_module()
    wrapped = cells.from_linen(module)
    k_p, k_b, k_d = jax.random.split(jax.random.key(3), 3)
    variables = perturb_biases(wrapped.init(k_p, I), k_b)
    carry, xs = data(wrapped, k_d)
    got = unroll(wrapped, variables, carry, xs)
    assert_trees_close(got, unroll(linen_step(module), variables, carry, xs), F32)
    assert_trees_close(got, unroll(make_cell(), cells.from_linen_params(kind, variables), carry, xs), F32)
    zero = module.initialize_carry(jax.random.key(9), (B, I))
    assert_trees_close(wrapped.initial_carry(B), zero, {"rtol": 0, "atol": 0})


def test_from_linen_under_jit_and_grad():
    module = nn.LSTMCell(H)
    wrapped, cell = cells.from_linen(module), cells.lstm(H)
    variables = perturb_biases(wrapped.init(jax.random.key(4), I), jax.random.key(5))
    carry, xs = data(wrapped, jax.random.key(6))

    def loss(step, params):
        final, ys = unroll(step, params, carry, xs)
        return jnp.sum(ys**2) + jnp.sum(final[0])

    got = jax.jit(jax.grad(lambda v: loss(wrapped, v)))(variables)
    want = jax.grad(lambda p: loss(cell, p))(cells.from_linen_params("lstm", variables))
    assert_trees_close(cells.from_linen_params("lstm", got), want, F32)


# nnx cells: (kind, factory(rngs), gradflow params extracted from the module's Param dict)
def _cat(*arrays):
    return jnp.concatenate(arrays, axis=-1)


def _nnx_lstm(p):  # nnx.LSTMCell names its forget-gate input Linear 'if_'
    return {
        "w_ih": _cat(*(p[n]["kernel"] for n in ("ii", "if_", "ig", "io"))),
        "w_hh": _cat(*(p[n]["kernel"] for n in ("hi", "hf", "hg", "ho"))),
        "b": _cat(*(p[n]["bias"] for n in ("hi", "hf", "hg", "ho"))),
    }


NNX_BIAS = {"bias_init": nnx.initializers.normal(0.5)}
NNX_CASES = {
    "LSTMCell": ("lstm", lambda n, rngs: nnx.LSTMCell(n, H, rngs=rngs, **NNX_BIAS), _nnx_lstm),
    "OptimizedLSTMCell": (
        "lstm",
        lambda n, rngs: nnx.OptimizedLSTMCell(n, H, rngs=rngs, **NNX_BIAS),
        lambda p: {"w_ih": p["dense_i"]["kernel"], "w_hh": p["dense_h"]["kernel"], "b": p["dense_h"]["bias"]},
    ),
    "GRUCell": (  # nnx.GRUCell has no b_hn (its dense_h has no bias), unlike linen's GRUCell
        "gru",
        lambda n, rngs: nnx.GRUCell(n, H, rngs=rngs, **NNX_BIAS),
        lambda p: {
            "w_ih": p["dense_i"]["kernel"],
            "w_hh": p["dense_h"]["kernel"],
            "b_ih": p["dense_i"]["bias"],
            "b_hn": jnp.zeros(H, p["dense_i"]["bias"].dtype),
        },
    ),
    "SimpleCell": (
        "rnn",
        lambda n, rngs: nnx.SimpleCell(n, H, rngs=rngs, **NNX_BIAS),
        lambda p: {"w_ih": p["dense_i"]["kernel"], "w_hh": p["dense_h"]["kernel"], "b": p["dense_i"]["bias"]},
    ),
}


@pytest.mark.parametrize("case", tiered(list(NNX_CASES), {"LSTMCell", "GRUCell"}))
@pytest.mark.parametrize("given", ["module", "factory"])
def test_from_nnx_matches_gradflow_cell(case, given):
    kind, factory, extract = NNX_CASES[case]
    if given == "module":
        wrapped = cells.from_nnx(factory(I, nnx.Rngs(0)))
        params = wrapped.init(None, I)  # a built module ignores the key
    else:
        wrapped = cells.from_nnx(factory)
        params = wrapped.init(jax.random.key(0), I)
    assert isinstance(params, dict)
    cell = cells.get(kind, hidden_size=H)
    carry, xs = data(cell, jax.random.key(7))
    got = unroll(wrapped, params, carry, xs)
    assert_trees_close(got, unroll(cell, extract(params), carry, xs), F32)
    assert_trees_close(wrapped.initial_carry(B), cell.initial_carry(B), {"rtol": 0, "atol": 0})


def test_from_nnx_factory_uses_the_key():
    wrapped = cells.from_nnx(NNX_CASES["GRUCell"][1])
    a, b = wrapped.init(jax.random.key(0), I), wrapped.init(jax.random.key(1), I)
    assert not np.allclose(a["dense_h"]["kernel"], b["dense_h"]["kernel"])
    assert_trees_close(wrapped.init(jax.random.key(0), I), a, {"rtol": 0, "atol": 0})


@pytest.mark.slow
def test_from_nnx_under_jit_grad_vmap_over_params():
    """A batch of 4 nnx OptimizedLSTMCell params (same layout as gradflow's lstm)."""
    wrapped, cell = cells.from_nnx(NNX_CASES["OptimizedLSTMCell"][1]), cells.lstm(H)
    extract = NNX_CASES["OptimizedLSTMCell"][2]
    batch = jax.vmap(lambda k: wrapped.init(k, I))(jax.random.split(jax.random.key(8), 4))
    assert batch["dense_h"]["kernel"].shape == (4, H, 4 * H)
    carry, xs = data(cell, jax.random.key(9))

    def loss(step, params):
        final, ys = unroll(step, params, carry, xs)
        return jnp.sum(ys**2) + jnp.sum(final[0])

    traces = []

    def nnx_loss(params):
        traces.append(1)
        return loss(wrapped, params)

    grad_fn = jax.jit(jax.vmap(jax.grad(nnx_loss)))
    grads = grad_fn(batch)
    grad_fn(random_like(batch, jax.random.key(10)))  # new values, same shapes: no retrace
    values = jax.vmap(lambda p: loss(wrapped, p))(batch)
    ref_grad = jax.jit(jax.grad(lambda p: loss(cell, p)))
    for m in range(4):
        member = jax.tree_util.tree_map(lambda a, m=m: a[m], batch)
        want = ref_grad(extract(member))
        assert_trees_close(extract(jax.tree_util.tree_map(lambda a, m=m: a[m], grads)), want, F32)
        np.testing.assert_allclose(values[m], loss(cell, extract(member)), **F32)
    assert len(traces) == 1


def test_from_nnx_rejects_bad_input():
    with pytest.raises(TypeError, match="got the class LSTMCell"):
        cells.from_nnx(nnx.LSTMCell)
    with pytest.raises(TypeError, match=r"factory must be a function factory\(input_size, rngs\)"):
        cells.from_nnx(42)
    with pytest.raises(TypeError, match=r"factory must take factory\(input_size, rngs\)"):
        cells.from_nnx(lambda rngs: None)
    with pytest.raises(TypeError, match=r"returned: expected a flax\.nnx recurrent cell"):
        cells.from_nnx(lambda n, rngs: nnx.Linear(n, 3, rngs=rngs)).init(jax.random.key(0), I)
    with pytest.raises(TypeError, match=r"expected a flax\.nnx recurrent cell"):
        cells.from_nnx(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="init input_size must be a positive integer, got 0"):
        cells.from_nnx(NNX_CASES["GRUCell"][1]).init(jax.random.key(0), 0)
    wrapped = cells.from_nnx(nnx.GRUCell(I, H, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="input_size=4 but the module has in_features=5"):
        wrapped.init(None, 4)
    with pytest.raises(ValueError, match="params have structure"):
        wrapped.step({"dense_i": {}}, wrapped.initial_carry(B), jnp.zeros((B, I), jnp.float32))


def test_from_linen_rejects_bad_input():
    with pytest.raises(TypeError, match="got the class LSTMCell"):
        cells.from_linen(nn.LSTMCell)
    with pytest.raises(TypeError, match=r"expected a flax.linen recurrent cell .* got Dense"):
        cells.from_linen(nn.Dense(3))
    with pytest.raises(ValueError, match="input_size must be a positive integer"):
        cells.from_linen(nn.GRUCell(H), input_size=0)
    wrapped = cells.from_linen(nn.GRUCell(H))
    with pytest.raises(ValueError, match="init input_size must be a positive integer, got None"):
        wrapped.init(jax.random.key(0), None)
    inner = wrapped.init(jax.random.key(0), I)["params"]
    with pytest.raises(ValueError, match=r"params must be the variables dict \{'params': ...\}"):
        wrapped.step(inner, wrapped.initial_carry(B), jnp.zeros((B, I), jnp.float32))


def _tanh_step(p, h, x):
    h = jnp.tanh(h @ p["w"] + x @ p["u"])
    return h, h


def test_from_function_matches_the_step():
    k_w, k_u, k_d = jax.random.split(jax.random.key(10), 3)
    f32 = jnp.float32
    params = {"w": jax.random.normal(k_w, (H, H), f32) / H**0.5, "u": jax.random.normal(k_u, (I, H), f32)}
    from_tree = cells.from_function(_tanh_step, init=params, initial_carry=jnp.zeros(H, f32))
    from_fns = cells.from_function(
        _tanh_step, init=lambda key, n: params, initial_carry=lambda b: jnp.zeros((b, H), f32)
    )
    assert from_tree.init(None, I) is not None and from_tree.initial_carry(B).shape == (B, H)
    carry, xs = data(from_fns, k_d)
    want = unroll(_tanh_step, params, carry, xs)
    for cell in (from_tree, from_fns):
        assert_trees_close(unroll(cell, cell.init(jax.random.key(0), I), carry, xs), want, F32)
        assert_trees_close(cell.initial_carry(B), jnp.zeros((B, H), f32), {"rtol": 0, "atol": 0})


def test_from_function_rejects_bad_input():
    ok = {"init": {"w": jnp.eye(H, dtype=jnp.float32)}, "initial_carry": jnp.zeros(H, jnp.float32)}
    with pytest.raises(TypeError, match="step must be a function step"):
        cells.from_function("tanh", **ok)
    with pytest.raises(TypeError, match=r"step must take step\(params, carry, x\)"):
        cells.from_function(lambda p, x: (x, x), **ok)
    with pytest.raises(TypeError, match="init must be a params pytree or a function"):
        cells.from_function(_tanh_step, init=None, initial_carry=ok["initial_carry"])
    with pytest.raises(TypeError, match="non-array leaves of type str"):
        cells.from_function(_tanh_step, init={"w": "eye"}, initial_carry=ok["initial_carry"])
    with pytest.raises(TypeError, match=r"init must take init\(key, input_size\)"):
        cells.from_function(_tanh_step, init=lambda key: {}, initial_carry=ok["initial_carry"])
    with pytest.raises(TypeError, match=r"initial_carry must take initial_carry\(batch_size\)"):
        cells.from_function(_tanh_step, init=ok["init"], initial_carry=lambda: jnp.zeros(H, jnp.float32))
    with pytest.raises(TypeError, match="initial_carry must be a function batch_size -> carry"):
        cells.from_function(_tanh_step, init=ok["init"], initial_carry=None)
