"""gradflow.engine.rng: JAX's default random stream, bit for bit, from the unrolled Threefry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradflow import cells
from gradflow.engine import rng

SHAPES = [(), (1,), (3,), (64, 64), (7, 5, 3), (1001,)]


def _pair(seed):
    return jax.random.key(seed), rng.key(seed)


def _same(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**31 + 7])
@pytest.mark.parametrize("shape", SHAPES)
def test_draws_equal_jax_default_stream(seed, shape):
    ref, fast = _pair(seed)
    _same(jax.random.key_data(fast), jax.random.key_data(ref))
    _same(jax.random.normal(fast, shape), jax.random.normal(ref, shape))
    _same(
        jax.random.uniform(fast, shape, minval=-2, maxval=3),
        jax.random.uniform(ref, shape, minval=-2, maxval=3),
    )
    for dtype in (jnp.uint8, jnp.uint16, jnp.uint32):
        _same(jax.random.bits(fast, shape, dtype), jax.random.bits(ref, shape, dtype))
    _same(jax.random.key_data(jax.random.split(fast, 5)), jax.random.key_data(jax.random.split(ref, 5)))
    _same(
        jax.random.key_data(jax.random.split(fast, (2, 3))),
        jax.random.key_data(jax.random.split(ref, (2, 3))),
    )
    _same(jax.random.key_data(jax.random.fold_in(fast, 41)), jax.random.key_data(jax.random.fold_in(ref, 41)))


def test_float64_and_64_bit_draws_equal():
    with jax.enable_x64(True):
        ref, fast = _pair(9)
        _same(jax.random.normal(fast, (17, 4), jnp.float64), jax.random.normal(ref, (17, 4), jnp.float64))
        _same(jax.random.bits(fast, (5,), jnp.uint64), jax.random.bits(ref, (5,), jnp.uint64))


def test_compiled_and_mapped_draws_equal():
    """Inside jit and lax.map (how the sweep uses it), with traced seeds, and a cell's whole init."""
    seeds = jnp.arange(4, dtype=jnp.uint32)

    def init(make_key):
        def one(seed):
            k_init, k_x = jax.random.split(make_key(seed))
            lstm = cells.get("lstm", hidden_size=8).init(k_init, 3)
            ortho = cells.get("rnn", hidden_size=8, recurrent_init="orthogonal").init(k_init, 3)
            return lstm, ortho, jax.random.normal(k_x, (10, 2, 3))

        return jax.jit(lambda s: jax.lax.map(one, s))(seeds)

    for a, b in zip(
        jax.tree_util.tree_leaves(init(jax.random.key)), jax.tree_util.tree_leaves(init(rng.key)), strict=True
    ):
        _same(a, b)


def test_other_streams_fall_back_to_jax():
    with jax.threefry_partitionable(False):
        assert not rng.same_stream()
        _same(jax.random.normal(rng.key(3), (4,)), jax.random.normal(jax.random.key(3), (4,)))
    assert rng.same_stream()


def test_hash_matches_the_reference_vector():
    """Threefry-2x32, 20 rounds: the Random123 known-answer test (key and counter all ones)."""
    ones = np.uint32(0xFFFFFFFF)
    x1, x2 = rng.threefry2x32(ones, ones, jnp.asarray([ones]), jnp.asarray([ones]))
    assert (int(x1[0]), int(x2[0])) == (0x1CB996FC, 0xBB002BE7)
