"""Random signs for the checks that need no Gaussian: a counter hashed with the key's data.

jax.random's threefry is unrolled into a large program whose compilation costs more than a
small check itself; the dot-product test, the Taylor direction and check_rule's exact checks
need only random signs (unit variance; |⟨e, s⟩| ≤ t‖e‖ but for a 2·exp(−t²/2) chance,
Hoeffding), which a counter through MurmurHash3's finaliser, seeded from the key, gives in a
few integer operations. Works on typed and raw keys, batched under vmap.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _fmix(h):
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 whose output bits each depend on every input bit."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def bits(key, shape, salt: int = 0) -> jax.Array:
    """uint32 random words: a counter hashed with the key's data (no threefry: a test's only
    randomness is signs, and threefry's unrolled rounds cost more to compile than the test)."""
    words = (
        jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        else key.reshape(-1).astype(jnp.uint32)
    )
    seed = jnp.uint32(0x9E3779B9)
    for i in range(words.shape[0]):
        seed = _fmix(seed ^ words[i] + jnp.uint32(i))
    seed = _fmix(seed ^ jnp.uint32(salt & 0xFFFFFFFF) + jnp.uint32(0x632BE5AB))
    counter = jax.lax.iota(jnp.uint32, int(np.prod(shape, dtype=int))).reshape(shape)
    return _fmix(_fmix(counter ^ seed) + seed)


def signs(key, shape, dtype, salt: int = 0) -> jax.Array:
    """±1 of `dtype` with the given shape (complex dtypes: ±1 ± 1j); `salt` draws another stream."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        real = jnp.finfo(dtype).dtype
        b = bits(key, (2,) + tuple(shape), salt)
        s = 1 - 2 * (b >> 31).astype(real)
        return (s[0] + 1j * s[1]).astype(dtype)
    b = bits(key, tuple(shape), salt)
    return 1 - 2 * (b >> 31).astype(dtype)
