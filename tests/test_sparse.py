"""Each sparse rule (jgc/_partial/, by family) against dense evaluation, entry by entry.

For a function f of an array x, every entry of x is changed in turn (to a new random
value) and the output of f, evaluated by `_sparse.point_loss` (the change carried as a
box), must equal f evaluated densely at the changed x, up to rounding (float64). Each
case also names the primitive whose rule it exercises, and checks that the rule kept
the change as a box at least once (so a case does not pass by falling back to dense).
"""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jgc import _jaxpr
from jgc._partial import _box, _sparse, _split


def _rng_array(key, shape):
    """A float64 numpy array (constants of the cases become float64 arrays when traced under x64)."""
    return np.random.default_rng(key).normal(size=shape)


def _evaluate_all(f, x):
    """(sparse outputs, dense outputs) for every entry of x changed, and which rules kept a box."""
    closed = jax.make_jaxpr(f)(x)
    closed = jax.make_jaxpr(lambda *xs: _split.eval_inlined(closed.jaxpr, closed.consts, xs))(x)
    jaxpr = closed.jaxpr
    base = dict(zip(jaxpr.constvars, closed.consts, strict=True))
    base[jaxpr.invars[0]] = x
    for eqn in jaxpr.eqns:
        base.update(zip(eqn.outvars, _box.bind(eqn, [_split.read(base, v) for v in eqn.invars]), strict=True))
    mark, _ = _jaxpr.downstream(jaxpr, [jaxpr.invars[0]])
    run = _sparse.point_loss(jaxpr, [e for e, m in zip(jaxpr.eqns, mark, strict=True) if m], jaxpr.invars[0])
    kept = collections.Counter()
    rule = _sparse.rule

    def recording(name):
        f = rule(name)
        if f is None:
            return None

        def wrapped(r, eqn, reps):
            out = f(r, eqn, reps)
            kept[name] += out is not None and any(isinstance(o, _box.Box) for o in out)
            return out

        return wrapped

    new = jnp.asarray(_rng_array(99, (x.size,)))

    def both(j):
        idx = [jnp.asarray(i, jnp.int32) for i in jnp.unravel_index(j, x.shape)]
        sparse = run(idx, new[j], base)
        dense = f(x.reshape(-1).at[j].set(new[j]).reshape(x.shape))
        return sparse, dense

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_sparse, "rule", recording)
        sparse, dense = jax.jit(jax.vmap(both))(jnp.arange(x.size))
    return sparse, dense, kept


W, X = _rng_array(1, (4, 5)), _rng_array(2, (5, 6))
IDS = np.array([2, 0, 2, 3], np.int32)  # repeated ids
IMG = _rng_array(3, (2, 3, 5, 4))  # NCHW
KER = _rng_array(4, (2, 3, 3, 2))  # OIHW
CASES = {
    # (function of x, shape of x, the primitive whose rule must keep a box)
    "column bias (k,1)": (lambda b: jnp.tanh(W @ X + b), (4, 1), "add"),
    "row bias (1,m)": (lambda b: jnp.tanh(W @ X + b), (1, 6), "add"),
    "scalar-like bias (1,1)": (lambda b: W @ X * b, (1, 1), None),  # the change spreads everywhere: dense
    "bias broadcast both ways": (lambda b: b + jnp.ones((4, 1)), (1, 3), "add"),
    "broadcast_in_dim (3,1)->(2,3,4)": (lambda x: lax.broadcast_in_dim(x, (2, 3, 4), (1, 2)) * 2, (3, 1), "broadcast_in_dim"),
    "broadcast_in_dim (3,)->(3,4)": (lambda x: jnp.sin(lax.broadcast_in_dim(x, (3, 4), (0,))), (3,), "broadcast_in_dim"),
    "broadcast_in_dim (1,4)->(2,3,4)": (lambda x: lax.broadcast_in_dim(x, (2, 3, 4), (1, 2)), (1, 4), "broadcast_in_dim"),
    "W @ X, W changed": (lambda w: w @ X, (4, 5), "dot_general"),
    "W @ X, X changed": (lambda x: W @ x, (5, 6), "dot_general"),
    "einsum with batch": (lambda x: jnp.einsum("bij,bjk->bik", x, _rng_array(5, (2, 3, 4))), (2, 2, 3), "dot_general"),
    "einsum contract on the left": (lambda x: jnp.einsum("ij,kjl->kil", _rng_array(6, (3, 4)), x), (2, 4, 3), "dot_general"),
    "reshape (2,6)->(3,4)": (lambda x: jnp.tanh(x).reshape(3, 4), (2, 6), "reshape"),
    "reshape (2,3,4)->(6,4)": (lambda x: x.reshape(6, 4), (2, 3, 4), "reshape"),
    "reshape (6,4)->(2,3,4)": (lambda x: x.reshape(2, 3, 4), (6, 4), "reshape"),
    "reshape (2,3,4)->(2,12)": (lambda x: x.reshape(2, 12), (2, 3, 4), "reshape"),
    "reshape (12,)->(3,4)": (lambda x: x.reshape(3, 4), (12,), "reshape"),
    "reshape (4,)->(1,4,1)": (lambda x: x.reshape(1, 4, 1), (4,), "reshape"),
    "reshape of a 2-row window (6,4)->(3,8)": (  # rows [1, 3) of (6, 4) are entries [4, 12) of (3, 8): not a box
        lambda u: lax.dynamic_update_slice(jnp.zeros((6, 4)), u * jnp.ones((2, 4)), (jnp.int32(1), jnp.int32(0))).reshape(3, 8),
        (1, 1),
        "dynamic_update_slice",
    ),
    "flatten after a column box": (lambda w: (w @ X).reshape(-1), (4, 5), "reshape"),
    "squeeze": (lambda x: jnp.squeeze(jnp.tanh(x), 1), (3, 1, 2), "squeeze"),
    "expand_dims": (lambda x: jnp.expand_dims(x, 1) * jnp.ones((3, 2, 4)), (3, 4), "broadcast_in_dim"),
    "transpose": (lambda x: jnp.transpose(x, (2, 0, 1)), (2, 3, 4), "transpose"),
    "slice with strides": (lambda x: x[1:5:2, ::3], (6, 5), "slice"),
    "dynamic_slice": (lambda x: lax.dynamic_slice(x, (jnp.int32(2), jnp.int32(1)), (3, 2)), (4, 4), "dynamic_slice"),
    "dynamic_slice clamped": (lambda x: lax.dynamic_slice(x, (jnp.int32(5), jnp.int32(-1)), (2, 2)), (4, 4), "dynamic_slice"),
    "pad negative and interior": (lambda x: lax.pad(x, 0.5, ((-1, 2, 1), (1, 0, 0))), (4, 3), "pad"),
    "concatenate first": (lambda x: jnp.concatenate([x, jnp.ones((2, 3))], 0), (3, 3), "concatenate"),
    "concatenate second": (lambda x: jnp.concatenate([jnp.ones((3, 2)), x], 1), (3, 3), "concatenate"),
    "concatenate with itself": (lambda x: jnp.concatenate([x, jnp.sin(x)], 1), (3, 2), "concatenate"),
    "stack": (lambda x: jnp.stack([jnp.ones(3), x], 0), (3,), "stack"),
    "gather rows (embedding)": (lambda e: e[IDS], (4, 3), "gather"),
    "take along axis 1": (lambda x: jnp.take(x, IDS, axis=1), (2, 4), "gather"),
    "scatter-add, operand changed": (lambda x: x.at[IDS].add(1.5), (4, 3), "scatter-add"),
    "scatter-add, updates changed": (lambda u: jnp.zeros((5, 3)).at[IDS].add(u), (4, 3), "scatter-add"),
    "dynamic_update_slice, operand": (
        lambda x: lax.dynamic_update_slice(x, jnp.ones((2, 2)), (jnp.int32(1), jnp.int32(2))),
        (4, 4),
        "dynamic_update_slice",
    ),
    "dynamic_update_slice, update": (
        lambda u: lax.dynamic_update_slice(jnp.ones((4, 4)), u, (jnp.int32(3), jnp.int32(1))),
        (2, 2),
        "dynamic_update_slice",
    ),
    "sum over axis 0": (lambda x: jnp.sum(jnp.tanh(x), 0), (3, 4), "reduce_sum"),
    "max over axes (0, 2)": (lambda x: jnp.max(x, (0, 2)), (2, 3, 4), "reduce_max"),
    "min over axis 1": (lambda x: jnp.min(x, 1), (3, 4), "reduce_min"),
    "argmax": (lambda x: jnp.argmax(x, 1), (3, 4), "argmax"),
    "mean": (lambda x: jnp.mean(x, 1, keepdims=True), (3, 4), "reduce_sum"),
    "cumsum": (lambda x: jnp.cumsum(x, 1), (3, 4), "cumsum"),
    "sort": (lambda x: jnp.sort(x, 0), (4, 3), "sort"),
    "flip": (lambda x: jnp.flip(x, 0), (4, 3), "rev"),
    "tile": (lambda x: jnp.tile(x, (1, 2)), (3, 2), "tile"),
    "split": (lambda x: jnp.split(x, 2, axis=1)[1] * 2, (3, 4), "split"),
    "relu (custom_jvp, inlined)": (lambda x: jax.nn.relu(x) * 2, (3, 4), "max"),
    "nested jit (inlined)": (lambda x: jax.jit(lambda y: jnp.tanh(y) @ W)(x), (3, 4), "dot_general"),
    "conv input NCHW": (lambda x: lax.conv_general_dilated(x, KER, (1, 1), "SAME"), (2, 3, 5, 4), "conv_general_dilated"),
    "conv kernel NCHW": (lambda k: lax.conv_general_dilated(IMG, k, (2, 1), "VALID"), (2, 3, 3, 2), "conv_general_dilated"),
    "conv input NHWC": (
        lambda x: lax.conv_general_dilated(
            x, jnp.transpose(KER, (2, 3, 1, 0)), (1, 2), ((1, 0), (0, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        ),
        (2, 5, 4, 3),
        "conv_general_dilated",
    ),
    "conv kernel HWIO, dilated": (
        lambda k: lax.conv_general_dilated(
            jnp.transpose(IMG, (0, 2, 3, 1)), k, (1, 1), "SAME", rhs_dilation=(2, 1), dimension_numbers=("NHWC", "HWIO", "NHWC")
        ),
        (3, 2, 3, 2),
        "conv_general_dilated",
    ),
    "max pool": (
        lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID"),
        (2, 3, 4, 4),
        "reduce_window_max",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_matches_dense(case):
    f, shape, primitive = CASES[case]
    with jax.enable_x64(True):
        x = jnp.asarray(_rng_array(7, shape))
        sparse, dense, kept = _evaluate_all(f, x)
        assert primitive is None or kept[primitive] > 0, f"{primitive} fell back to dense: {dict(kept)}"
        sparse, dense = np.asarray(sparse), np.asarray(dense)
        assert sparse.shape == dense.shape and sparse.dtype == dense.dtype
        scale = max(1.0, float(np.max(np.abs(dense))))
        np.testing.assert_allclose(sparse, dense, rtol=0, atol=1e-13 * scale)


def test_grouped_conv_falls_back_to_dense():
    """A rule that cannot show a case exact leaves it to dense evaluation (feature groups)."""
    with jax.enable_x64(True):
        k = _rng_array(8, (4, 1, 2, 2))
        x = jnp.asarray(_rng_array(9, (1, 2, 4, 4)))
        f = lambda x: lax.conv_general_dilated(x, k, (1, 1), "VALID", feature_group_count=2)  # noqa: E731
        sparse, dense, kept = _evaluate_all(f, x)
        assert kept["conv_general_dilated"] == 0
        np.testing.assert_allclose(sparse, dense, rtol=0, atol=1e-13 * float(np.max(np.abs(dense))))


def test_each_primitive_has_one_rule_family():
    """The rule table joins the families' tables: a primitive named in two would lose one rule."""
    names = [name for family in _sparse.FAMILIES for name in family.RULES]
    assert len(names) == len(set(names)) == len(_sparse.RULES)
    assert _sparse.rule("dot_general") is _sparse.RULES["dot_general"] and _sparse.rule("while") is None
