"""JAX's default random numbers, bit for bit, in programs that compile faster on CPU.

Every key a run draws from (``jax.random.split``, ``normal``, ``uniform``, ``fold_in``, Flax and
optax initializers) goes through the Threefry-2x32 hash. On XLA:CPU, JAX lowers each use of the
hash as a rolled loop of 5 blocks of rounds: a while loop of small kernels per draw, ~0.25 s of
compile each on a laptop CPU, and a run's init has 5-15 draws. ``key(seed)`` gives a typed key of
an equivalent implementation (``jax.extend.random.define_prng_impl``) whose hash is written out in
straight-line ``jnp`` ops: XLA fuses each draw into one kernel, which compiles in ~0.6x the time and
runs ~3x faster. The bits are JAX's own (tested against ``jax.random.key`` for splits, fold-ins,
bits, normal and uniform draws of many shapes), so every number gradflow measures is unchanged.

Where JAX's stream is not the partitionable Threefry (``jax_default_prng_impl`` other than
``threefry2x32``, or ``jax_threefry_partitionable`` off), ``key`` returns ``jax.random.key(seed)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.random import define_prng_impl, threefry_prng_impl

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def threefry2x32(k1, k2, x1, x2):
    """The Threefry-2x32 hash (20 rounds), elementwise: ``uint32`` keys (scalars or ``x1``'s shape)
    and counters ``x1, x2``; two ``uint32`` arrays out.

    The same function as JAX's ``threefry2x32`` primitive, unrolled, in ``lax`` ops on arrays of one
    shape (``jnp``'s broadcasting per op made tracing a draw ~8x slower)."""
    shape = jnp.shape(x1)
    full = lambda v: lax.broadcast_in_dim(v, shape, ()) if jnp.ndim(v) == 0 else v  # noqa: E731
    const = lambda c: lax.full(shape, np.uint32(c))  # noqa: E731
    ks = (full(k1), full(k2))
    ks = (*ks, lax.bitwise_xor(lax.bitwise_xor(ks[0], ks[1]), const(_PARITY)))
    x1, x2 = lax.add(x1, ks[0]), lax.add(x2, ks[1])
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x1 = lax.add(x1, x2)
            x2 = lax.bitwise_or(lax.shift_left(x2, const(r)), lax.shift_right_logical(x2, const(32 - r)))
            x2 = lax.bitwise_xor(x1, x2)
        x1 = lax.add(x1, ks[(block + 1) % 3])
        x2 = lax.add(lax.add(x2, ks[(block + 2) % 3]), const(block + 1))
    return x1, x2


def _hash_iota(key, shape):
    """The hash of the 64-bit counters 0 .. prod(shape) - 1 (high and low words), shaped ``shape``."""
    n = math.prod(shape)
    if n >= 2**32:
        raise NotImplementedError(f"random draw of {n} entries: gradflow's fast keys take under 2^32")
    low = lax.iota(np.uint32, n).reshape(shape)
    return threefry2x32(key[0], key[1], jnp.zeros(shape, np.uint32), low)


def _split(key, shape):
    bits1, bits2 = _hash_iota(key, tuple(shape))
    return jnp.stack([bits1, bits2], axis=bits1.ndim)


def _fold_in(key, data):
    count = threefry_prng_impl.seed(jnp.asarray(data, np.uint32))
    bits1, bits2 = threefry2x32(key[0], key[1], count[:1], count[1:])
    return jnp.concatenate([bits1, bits2])


def _random_bits(key, bit_width, shape):
    bits1, bits2 = _hash_iota(key, tuple(shape))
    if bit_width == 64:
        return (bits1.astype(np.uint64) << np.uint64(32)) | bits2.astype(np.uint64)
    dtype = {8: np.uint8, 16: np.uint16, 32: np.uint32}[bit_width]
    return (bits1 ^ bits2).astype(dtype)


IMPL = define_prng_impl(
    key_shape=(2,),
    seed=threefry_prng_impl.seed,
    split=_split,
    random_bits=_random_bits,
    fold_in=_fold_in,
    name="threefry2x32_unrolled",
    tag="gfy",
)


def same_stream() -> bool:
    """Whether ``key`` draws JAX's default stream (partitionable Threefry, JAX's default)."""
    return jax.config.jax_default_prng_impl == "threefry2x32" and bool(jax.config.jax_threefry_partitionable)


def key(seed):
    """A typed PRNG key: ``jax.random.key(seed)``'s stream, in faster-compiling programs (see above).

    ``seed``: an integer scalar (traced or not). Use it where a compiled program makes its own keys;
    the key's draws equal ``jax.random.key(seed)``'s bit for bit.
    """
    return jax.random.key(seed, impl=IMPL) if same_stream() else jax.random.key(seed)
