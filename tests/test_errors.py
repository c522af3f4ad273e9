"""Every bad input gets a clear error: what was received, what was expected, which leaf."""

import re

import jax
import jax.numpy as jnp
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
