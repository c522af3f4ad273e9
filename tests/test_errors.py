"""Every bad input gets a clear error: what was received, what was expected, which leaf."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc

P = {"a": jnp.ones((2, 3)), "b": jnp.zeros(3)}


def loss(p):
    return jnp.sum(p["a"] ** 2) + jnp.sum(p["b"])


def grad(p):
    return {"a": 2 * p["a"], "b": jnp.ones(3)}


def test_missing_leaf_is_named():
    with pytest.raises(ValueError, match=re.escape("structure differs from params: missing leaves ['b']")):
        jgc.check_grad(loss, lambda p: {"a": 2 * p["a"]}, P)


def test_extra_leaf_is_named():
    with pytest.raises(ValueError, match=re.escape("extra leaves ['c']")):
        jgc.check_grad(loss, lambda p: {**grad(p), "c": jnp.ones(1)}, P)


def test_other_container_is_reported():
    with pytest.raises(ValueError, match=re.escape("other containers than params")):
        jgc.check_grad(lambda p: jnp.sum(p[0]) + jnp.sum(p[1]), lambda p: (jnp.ones(2), jnp.ones(2)), [jnp.ones(2), jnp.ones(2)])


def test_wrong_shape_names_leaf():
    with pytest.raises(ValueError, match=re.escape("grad_fn output ['a']: shape (3, 2) != parameter shape (2, 3).")):
        jgc.check_grad(loss, lambda p: {"a": 2 * p["a"].T, "b": jnp.ones(3)}, P)


def test_wrong_dtype_names_leaf():
    with jax.enable_x64(True):
        with pytest.raises(TypeError, match=re.escape("grad_fn output ['b']: dtype float64 != parameter dtype float32.")):
            jgc.check_grad(loss, lambda p: {"a": 2 * p["a"], "b": jnp.ones(3, jnp.float64)}, P)


def test_none_gradient_for_checked_leaf():
    with pytest.raises(
        TypeError, match=re.escape("grad_fn output ['b'] is NoneType; expected an array of shape (3,) and dtype float32.")
    ):
        jgc.check_grad(loss, lambda p: {"a": 2 * p["a"], "b": None}, P)


def test_loss_not_scalar():
    with pytest.raises(ValueError, match=re.escape("loss_fn must return a scalar; received an array of shape (2, 3) (float32).")):
        jgc.check_grad(lambda p: p["a"] * 2, grad, P)


def test_loss_not_floating_point():
    with pytest.raises(TypeError, match=re.escape("loss_fn must return a floating-point scalar; received dtype int32.")):
        jgc.check_grad(lambda p: jnp.sum(p["a"]).astype(jnp.int32), grad, P)


def test_loss_not_an_array():
    with pytest.raises(TypeError, match=re.escape("loss_fn must return a scalar array; received NoneType: None.")):
        jgc.check_grad(lambda p: None, grad, P)


@pytest.mark.parametrize("params", [{}, [], None])
def test_empty_params(params):
    with pytest.raises(ValueError, match=re.escape("params is empty: received")):
        jgc.check_grad(loss, grad, params)


def test_no_floating_point_leaf():
    with pytest.raises(ValueError, match=re.escape("params has no floating-point leaf to check: received ['n']: int32")):
        jgc.check_grad(loss, grad, {"n": jnp.array(3)})


def test_low_precision_params_are_refused():
    with pytest.raises(TypeError, match=re.escape("['a']: parameter has dtype bfloat16")):
        jgc.check_grad(loss, grad, {"a": jnp.ones(2, jnp.bfloat16)})
    with pytest.raises(TypeError, match=re.escape("['h']: parameter has dtype float16")):
        jgc.numeric_grad(lambda p: jnp.sum(p["h"]), {"h": jnp.ones(2, jnp.float16)})


def test_complex_params_are_refused():
    with pytest.raises(TypeError, match=re.escape("['z']: parameter has complex dtype complex64")):
        jgc.check_grad(loss, grad, {"z": jnp.ones(2, jnp.complex64)})


@pytest.mark.parametrize("which", ["loss_fn", "grad_fn"])
def test_non_callable(which):
    args = {"loss_fn": loss, "grad_fn": grad, which: 3}
    expected = "a callable" if which == "loss_fn" else "a callable or None"
    with pytest.raises(TypeError, match=re.escape(f"{which} must be {expected}; received int: 3.")):
        jgc.check_grad(args["loss_fn"], args["grad_fn"], P)


@pytest.mark.parametrize("eps", [0.0, -1e-3, float("nan"), float("inf")])
def test_bad_eps(eps):
    with pytest.raises(ValueError, match=re.escape(f"eps must be a positive finite scalar or None; received {eps!r}.")):
        jgc.check_grad(loss, grad, P, eps=eps)


def test_eps_wrong_type():
    with pytest.raises(TypeError, match=re.escape("eps must be a positive float or None; received str: '1e-3'.")):
        jgc.numeric_grad(loss, P, eps="1e-3")


def test_bad_tol():
    with pytest.raises(ValueError, match=re.escape("tol must be a positive finite scalar or None; received -1.0.")):
        jgc.check_grad(loss, grad, P, tol=-1.0)


def test_unknown_method():
    with pytest.raises(
        ValueError,
        match=re.escape(
            "method='centered' is not a known stencil; expected one of ['central', 'complex_step', 'five_point', 'forward']."
        ),
    ):
        jgc.check_grad(loss, grad, P, method="centered")


@pytest.mark.parametrize("chunk", [0, -2, 1.5, True])
def test_bad_chunk_size(chunk):
    with pytest.raises(ValueError, match=re.escape(f"chunk_size must be a positive int or None; received {chunk!r}.")):
        jgc.check_grad(loss, grad, P, chunk_size=chunk)


def test_errors_also_raise_under_jit_and_vmap():
    bad = lambda p: {"a": 2 * p["a"].T, "b": jnp.ones(3)}
    with pytest.raises(ValueError, match=re.escape("grad_fn output ['a']: shape (3, 2) != parameter shape (2, 3).")):
        jax.jit(lambda p: jgc.check_grad(loss, bad, p))(P)
    batched = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), P)
    with pytest.raises(ValueError, match=re.escape("grad_fn output ['a']: shape (3, 2) != parameter shape (2, 3).")):
        jax.vmap(lambda p: jgc.check_grad(loss, bad, p))(batched)


# ---------------------------------------------------------------- the last bad inputs (issue 19)

ZERO = {"a": jnp.zeros((2, 3)), "b": jnp.zeros(3)}


@pytest.mark.parametrize("constant", [1.5, np.float64(1.5), jnp.float32(1.5)], ids=["python", "numpy", "jax"])
def test_constant_loss_gets_a_verdict(constant):
    # its gradient is 0, known from the loss's structure: no finite-difference error to bound
    assert jgc.check_grad(lambda p: constant, lambda p: ZERO, P).status == "passed"
    assert jgc.check_grad(lambda p: constant, None, P).status == "passed"
    res = jgc.check_grad(lambda p: constant, lambda p: {**ZERO, "b": jnp.ones(3)}, P)
    assert res.status == "failed" and np.asarray(res.leaf_failed["b"]) and not np.asarray(res.leaf_failed["a"])


def test_a_leaf_the_loss_does_not_read():
    unused = lambda p: jnp.sum(p["a"] ** 2)  # noqa: E731
    assert jgc.check_grad(unused, lambda p: {"a": 2 * p["a"], "b": jnp.zeros(3)}, P).status == "passed"
    res = jgc.check_grad(unused, lambda p: {"a": 2 * p["a"], "b": jnp.ones(3)}, P)
    assert res.status == "failed" and np.asarray(res.leaf_failed["b"]) and not np.asarray(res.leaf_failed["a"])


def test_args_of_the_wrong_shape_name_loss_fn_and_the_argument():
    expected = "loss_fn raised TypeError: dot_general requires contracting dimensions to have the same shape, got (3,) and (4,)."
    with pytest.raises(TypeError, match=re.escape(expected)) as e:
        jgc.check_grad(lambda p, x: jnp.sum(jnp.dot(p["a"], x)) + jnp.sum(p["b"]), None, P, jnp.ones(4))
    assert "It was called as loss_fn(params, args[0]) with" in str(e.value)
    assert "args[0]: float32[4]" in str(e.value) and "(4,) is the shape of args[0]" in str(e.value)
    with pytest.raises(TypeError, match=re.escape(expected)):
        jgc.numeric_grad(lambda p, x: jnp.sum(jnp.dot(p["a"], x)) + jnp.sum(p["b"]), P, jnp.ones(4))


def test_eps_whose_step_rounds_to_zero():
    expected = "eps=1e-30 is too small for float32: the step of ['a'][0, 0] (θ = 1.0) is eps·max(1, |θ|) = 1e-30"
    with pytest.raises(ValueError, match=re.escape(expected)) as e:
        jgc.check_grad(loss, grad, P, eps=1e-30)
    assert "eps ≥ 1.2e-07 (machine epsilon)" in str(e.value)
    with pytest.raises(ValueError, match=re.escape("eps=1e-30 is too small for float32: the step of a coordinate at |θ| = 1")):
        jax.jit(lambda p: jgc.check_grad(loss, grad, p, eps=1e-30))(P)


@pytest.mark.parametrize("key", [jax.random.key(0), jax.random.PRNGKey(0)], ids=["typed", "raw"])
def test_a_single_key_to_check_seeds(key):
    with pytest.raises(ValueError, match=re.escape("check_seeds: keys is a single PRNG key")) as e:
        jgc.check_seeds(loss, grad, lambda k: P, key)
    assert "jax.random.split(jax.random.key(0), 16)" in str(e.value)


def test_deleted_and_donated_arrays_are_named():
    p = {"a": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    p["b"].delete()
    with pytest.raises(ValueError, match=re.escape("params['b'] is an array that has been deleted: it was donated")):
        jgc.check_grad(loss, grad, p)
    x = jnp.ones(3)
    jax.jit(lambda v: v * 2, donate_argnums=0)(x)
    if x.is_deleted():  # backends that honour donation (CPU, GPU, TPU)
        with pytest.raises(ValueError, match=re.escape("args[0] is an array that has been deleted")):
            jgc.check_grad(lambda q, v: loss(q) + jnp.sum(v), grad, P, x)
    key = jax.random.split(jax.random.key(0), 2)
    key.delete()
    with pytest.raises(ValueError, match=re.escape("keys is an array that has been deleted")):
        jgc.check_seeds(loss, grad, lambda k: P, key)


def _ordered_loss(p):
    from jax.experimental import io_callback

    total = io_callback(lambda a: np.float32(np.sum(a**2)), jax.ShapeDtypeStruct((), jnp.float32), p, ordered=True)
    return total


def test_ordered_io_callback_in_the_loss():
    # evaluated in a compiled loop (JAX cannot vmap an ordered callback): a verdict
    assert jgc.check_grad(_ordered_loss, lambda p: 2 * p, jnp.ones(3)).status == "passed"
    with pytest.raises(ValueError, match=re.escape("loss_fn raised ValueError: IO callbacks do not support JVP.")) as e:
        jgc.check_grad(_ordered_loss, None, jnp.ones(3))
    assert "Pass the gradient under test as grad_fn" in str(e.value)
    with pytest.raises(ValueError, match=re.escape("loss_fn raised ValueError: Cannot `vmap` ordered IO callback.")) as e:
        jgc.check_snapshots(_ordered_loss, lambda p: 2 * p, jnp.ones((2, 3)))
    assert "Check one point at a time" in str(e.value)


def test_check_seeds_with_locate():
    expected = "check_seeds(check=jgc.locate): locate is host-side (its recursion depends on the values it measures)"
    with pytest.raises(TypeError, match=re.escape(expected)):
        jgc.check_seeds(loss, grad, lambda k: P, jax.random.split(jax.random.key(0), 2), check=jgc.locate)


def test_a_python_float_leaf_in_check_snapshots():
    expected = "check_snapshots: stacked_params['s'] is a float (2.0), with no leading snapshot axis"
    with pytest.raises(ValueError, match=re.escape(expected)) as e:
        jgc.check_snapshots(lambda p: p["s"] * jnp.sum(p["w"] ** 2), None, {"s": 2.0, "w": jnp.ones((2, 3))})
    assert "jnp.full((2,), value)" in str(e.value)


def test_an_int_key_to_assert_vjp():
    import jgc.testing

    expected = "jgc.testing.assert_vjp: key must be a PRNG key, e.g. jax.random.key(0); received int: 0."
    with pytest.raises(TypeError, match=re.escape(expected)) as e:
        jgc.testing.assert_vjp(jnp.sin, lambda pr, c: (jnp.cos(pr[0]) * c,), jnp.ones(3), key=0)
    assert "is accepted too: uint32 of shape (2,), from jax.random.PRNGKey(0)" in str(e.value)


def test_a_string_leaf_to_relative_error():
    with pytest.raises(TypeError, match=re.escape("relative_error: a['w'] is str: 'x'; expected an array or a number")):
        jgc.relative_error({"w": "x"}, {"w": jnp.ones(2)})


@pytest.mark.parametrize("bad", ["10", 2.5, -1])
def test_a_bad_max_leaves_to_report(bad):
    res = jgc.check_grad(loss, grad, P)
    kind = ValueError if bad == -1 else TypeError
    with pytest.raises(kind, match=re.escape("report(max_leaves=...) must be a non-negative int or None")):
        res.report(max_leaves=bad)


def test_a_complex_loss_is_refused():
    # jax.grad refuses complex outputs; checking the real part silently could pass the wrong gradient
    expected = "loss_fn returned a complex value (complex64) for real parameters; jgc checks the gradient of a real-valued loss"
    with pytest.raises(TypeError, match=re.escape(expected)) as e:
        jgc.check_grad(lambda p: jnp.sum(p * (1 + 2j)), lambda p: jnp.ones(3), jnp.ones(3))
    assert "jnp.real(J)" in str(e.value)
    with pytest.raises(TypeError, match=re.escape(expected)):
        jgc.numeric_grad(lambda p: jnp.sum(p * (1 + 2j)), jnp.ones(3))
