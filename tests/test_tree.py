"""θ ⇄ pytree: ravel/unravel round trips and flat index → (path, index), on random pytrees."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jgc import _tree

shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)
leaf = st.tuples(shapes, st.sampled_from(["float32", "int32", "bool"]))
trees = st.recursive(
    leaf,
    lambda kids: st.one_of(
        st.lists(kids, min_size=1, max_size=3), st.dictionaries(st.sampled_from("abcd"), kids, min_size=1, max_size=3)
    ),
    max_leaves=8,
)


def _build(spec, counter=[0]):  # noqa: B006 (a running counter gives every leaf distinct values)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], str):
        shape, dtype = spec
        counter[0] += 1
        return (np.arange(int(np.prod(shape, dtype=int))).reshape(shape) + counter[0]).astype(dtype)
    if isinstance(spec, list):
        return [_build(s) for s in spec]
    return {k: _build(v) for k, v in spec.items()}


@settings(max_examples=40, deadline=None)
@given(trees)
def test_round_trip_and_locate(spec):
    params = _build(spec)
    leaves = jax.tree_util.tree_leaves(params)
    if not any(np.issubdtype(x.dtype, np.floating) for x in leaves):
        return
    lay = _tree.layout(params)
    theta = _tree.ravel(lay, params)
    assert theta.shape == (lay.n,) and lay.n == sum(x.size for x in leaves if x.dtype == np.float32)
    back = _tree.unravel(lay, theta, params)
    for a, b in zip(jax.tree_util.tree_leaves(back), leaves):
        np.testing.assert_array_equal(np.asarray(a), b)
        assert np.asarray(a).dtype == b.dtype
    full = _tree.unravel_full(lay, theta)
    keyed = jax.tree_util.tree_flatten_with_path(params)[0]
    for j in range(lay.n):
        path, index = lay.locate(j)
        k = lay.paths.index(path)
        assert float(jax.tree_util.tree_leaves(full)[k][index]) == float(theta[j])
        assert jax.tree_util.keystr(keyed[k][0]) == path
    for x, ok in zip(jax.tree_util.tree_leaves(full), lay.checked):
        assert np.isnan(np.asarray(x)).all() != ok or np.asarray(x).size == 0


def test_mixed_float_dtypes_promote_and_cast_back():
    with jax.enable_x64(True):
        params = {"a": jnp.ones(2, jnp.float32), "b": jnp.full(3, 0.1, jnp.float64)}
        lay = _tree.layout(params)
        theta = _tree.ravel(lay, params)
        assert theta.dtype == jnp.float64 and lay.low_dtype == jnp.float32
        back = _tree.unravel(lay, theta, params)
        assert back["a"].dtype == jnp.float32 and back["b"].dtype == jnp.float64
        assert float(back["b"][0]) == 0.1
