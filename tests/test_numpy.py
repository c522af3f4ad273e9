"""NumPy code as it is: host losses, the course's exercise (`jgc.course`), CS231n layer pairs
(`jgc.check_layer`), and the dtype and shape rules of a NumPy backward pass."""

import copy
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))

import _cs231n as L  # noqa: E402
import course_numpy as C  # noqa: E402
from test_pipeline import counting  # noqa: E402

KEY = jax.random.key(0)


def _failed(res):
    return {k for k, v in res.leaf_failed.items() if bool(v)}


def _as(dtype, tree):
    return jax.tree_util.tree_map(lambda x: x.astype(dtype) if isinstance(x, np.ndarray) and x.dtype.kind == "f" else x, tree)


# ---------------------------------------------------------------- the course's 3-layer exercise


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_course_exercise_correct_passes_and_planted_bugs_fail_both_named(dtype):
    X, Y, parameters = C.gradient_check_n_test_case()
    X, parameters = X.astype(dtype), _as(dtype, parameters)
    before = copy.deepcopy(parameters)
    ok = jgc.course(C.forward_propagation_n, C.backward_propagation_n, parameters, X, Y)
    assert ok.status == "passed", ok.report()
    assert float(ok.rel_error) < (1e-7 if dtype == np.float64 else 1e-4)
    bad = jgc.course(C.forward_propagation_n, C.backward_propagation_n_with_bugs, parameters, X, Y)
    assert bad.status == "failed" and _failed(bad) == {"W2", "b1"}, bad.report()
    text = bad.report()
    assert "forward_propagation ran on the host" in text
    assert "ignored: ['dZ3'], ['dA2'], ['dZ2'], ['dA1'], ['dZ1']" in text
    assert all(np.array_equal(before[k], parameters[k]) and before[k].dtype == parameters[k].dtype for k in parameters)
    # the hint reads the factor of each planted bug
    assert "analytic ≈ 2 × numeric" in text and "analytic ≈ 4 × numeric" in text
    if dtype == np.float32:  # NumPy's int64 masks make the gradients float64: cast, every leaf named
        note = next(n for n in bad.notes if "cast to float32" in n)
        assert all(f"['{k}'] (float64)" in note for k in ("W1", "b1", "W2", "b2", "W3", "b3")), note


def test_course_check_grad_is_the_same_check():
    """jgc.course is check_grad on the course's functions: same numbers."""
    X, Y, parameters = C.gradient_check_n_test_case()
    with jax.enable_x64(True):
        via = jgc.check_grad(
            lambda p, X, Y: C.forward_propagation_n(X, Y, p),
            lambda p, X, Y: C.backward_propagation_n(X, Y, C.forward_propagation_n(X, Y, p)[1]),
            parameters,
            X,
            Y,
        )
    res = jgc.course(C.forward_propagation_n, C.backward_propagation_n, parameters, X, Y)
    assert res.status == via.status == "passed"
    np.testing.assert_array_equal(np.asarray(res.analytic_flat), np.asarray(via.analytic_flat))
    np.testing.assert_allclose(np.asarray(res.numeric_flat), np.asarray(via.numeric_flat), rtol=1e-6)


# ---------------------------------------------------------------- layer pairs

# every layer in float64, the cheap ones in float32 too; the rest of float32 in the slow tier
LAYER_CASES = [(n, "float64") for n in L.LAYERS] + [(n, "float32") for n in ("affine", "relu")]
LAYER_CASES += [pytest.param(n, "float32", marks=pytest.mark.slow) for n in ("batchnorm", "conv", "maxpool", "rnn_step")]


@pytest.mark.parametrize("name,dtype", LAYER_CASES)
def test_numpy_layer_pair_correct_passes_planted_bug_fails_named(name, dtype):
    forward, backward, buggy, inputs, bad = L.case(name, np.dtype(dtype))
    before = copy.deepcopy(inputs)
    ok = jgc.check_layer(forward, backward, *inputs, key=KEY)
    assert ok.status == "passed", ok.report()
    assert set(ok.leaf_passed) == {n for n, x in zip(L_names(forward), inputs) if isinstance(x, np.ndarray)}
    res = jgc.check_layer(forward, buggy, *inputs, key=KEY)
    assert res.status == "failed" and _failed(res) == bad, res.report()
    assert res.kind == "check_layer" and res.report().startswith("jgc check_layer FAILED")
    for x, y in zip(inputs, before):  # nothing mutated: not the arrays, not bn_param (batchnorm writes into it)
        assert (np.array_equal(x, y) and x.dtype == y.dtype) if isinstance(x, np.ndarray) else x == y


def L_names(forward):
    import inspect

    return list(inspect.signature(forward).parameters)


def test_layer_pair_in_jax_is_traced_and_compiled_once():
    def affine_forward(x, w, b):
        return x @ w + b[None], (x, w)

    def affine_backward(dout, cache):
        x, w = cache
        return dout @ w.T, x.T @ dout, dout.sum(axis=0)

    x, w, b = jnp.ones((3, 4)), jnp.linspace(-1, 1, 20).reshape(4, 5), jnp.zeros(5)
    res = jgc.check_layer(affine_forward, affine_backward, x, w, b, key=KEY)
    assert res.status == "passed" and not any("host" in n for n in res.notes), res.report()
    with counting() as again:
        jgc.check_layer(affine_forward, affine_backward, x, w, b, key=KEY)
    assert again["compiles"] == 0


@pytest.mark.slow
def test_layer_pair_in_jax_under_jit():
    def affine_forward(x, w, b):
        return x @ w + b[None], (x, w)

    def affine_backward(dout, cache):
        x, w = cache
        return dout @ w.T, x.T @ dout, 2 * dout.sum(axis=0)  # db twice too large

    x, w, b = jnp.ones((3, 4)), jnp.linspace(-1, 1, 20).reshape(4, 5), jnp.zeros(5)
    failed = jax.jit(lambda x: jgc.check_layer(affine_forward, affine_backward, x, w, b, key=KEY).leaf_failed)(x)
    assert {k: bool(v) for k, v in failed.items()} == {"x": False, "w": False, "b": True}


def test_layer_pair_errors_name_backward_and_forward():
    forward, backward, _, inputs, _ = L.case("affine")
    with pytest.raises(
        ValueError,
        match=re.escape(
            "backward returned 2 gradient(s); expected 3, one per floating-point input of forward in order (x, w, b)"
        ),
    ):
        jgc.check_layer(forward, lambda d, c: backward(d, c)[:2], *inputs, key=KEY)
    with pytest.raises(TypeError, match=re.escape("forward must return (out, cache), a pair; received ndarray")):
        jgc.check_layer(lambda x, w, b: forward(x, w, b)[0], backward, *inputs, key=KEY)
    with pytest.raises(ValueError, match="pass key=jax.random.key"):
        jgc.check_layer(forward, backward, *inputs)


# ---------------------------------------------------------------- host losses


def np_loss(p, x):
    return np.sum(np.tanh(p["w"] * x)) + np.sum(p["b"] ** 2)


def np_grad(p, x):
    return {"w": x * (1 - np.tanh(p["w"] * x) ** 2), "b": 2 * p["b"]}


P64 = {"w": np.array([0.3, -1.2, 0.7]), "b": np.array([0.5, -0.2])}
X64 = np.array([2.0, 0.5, -1.0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_host_loss_sequential_and_vectorized_same_verdict(dtype):
    p, x = _as(dtype, P64), X64.astype(dtype)
    with jax.enable_x64(dtype == "float64"):
        seq = jgc.check_grad(np_loss, np_grad, p, x)
        vec_loss = lambda p, x: np.sum(np.tanh(p["w"] * x), axis=-1) + np.sum(p["b"] ** 2, axis=-1)  # noqa: E731
        vec = jgc.check_grad(vec_loss, np_grad, p, x, vectorized=True)
    assert seq.status == vec.status == "passed", seq.report()
    np.testing.assert_allclose(np.asarray(seq.numeric_flat), np.asarray(vec.numeric_flat), rtol=1e-5)
    calls = lambda r: (int(r.host_cost[1]), int(r.host_cost[0]))  # noqa: E731  (points, callbacks)
    (points_s, calls_s), (points_v, calls_v) = calls(seq), calls(vec)
    assert points_v >= int(vec.num_evals)  # vectorized: every point (padding included)
    assert 2 * 5 < points_s <= int(seq.num_evals) + 32  # sequential: distinct points of each chunk once
    assert calls_s < points_s / 4 and calls_v < points_v / 4  # a chunk per callback
    assert "loss_fn called once per point" in seq.notes[0] and "at once (vectorized)" in vec.notes[0]
    assert "partial evaluation does not apply" in seq.notes[0]


def test_host_loss_second_check_compiles_nothing():
    f = lambda p, x: np_loss(p, x)  # noqa: E731  (a function no other test has compiled)
    with jax.enable_x64(True):
        jgc.check_grad(f, np_grad, P64, X64)
        with counting() as again:
            res = jgc.check_grad(f, np_grad, P64, X64)
    assert res.status == "passed" and again["compiles"] == 0


def test_host_loss_under_jit_and_vmap_is_refused_with_why():
    p32 = _as(np.float32, P64)
    msg = "loss_fn cannot be traced (it raised TracerArrayConversionError"
    with pytest.raises(TypeError, match=re.escape(msg)) as e:
        jax.jit(lambda p: jgc.check_grad(np_loss, np_grad, p, X64.astype(np.float32)).passed)(p32)
    assert "params['b'] is a traced value" in str(e.value) and "outside the transformation" in str(e.value)
    stacked = jax.tree_util.tree_map(lambda x: np.stack([x, x]), p32)
    with pytest.raises(TypeError, match=re.escape(msg)):
        jax.vmap(lambda p: jgc.check_grad(np_loss, np_grad, p, X64.astype(np.float32)).passed)(stacked)


def test_host_loss_that_is_not_deterministic_fails():
    rng = np.random.RandomState(0)
    noisy = lambda p, x: np_loss(p, x) + 1e-6 * rng.rand()  # noqa: E731
    with jax.enable_x64(True):
        res = jgc.check_grad(noisy, np_grad, P64, X64)
    assert res.status == "failed" and not bool(res.deterministic), res.report()


def test_host_loss_located_and_sampled():
    wrong = lambda p, x: {**np_grad(p, x), "b": 3 * p["b"]}  # noqa: E731
    with jax.enable_x64(True):
        res = jgc.check_grad(np_loss, wrong, P64, X64, coords=3, key=KEY)
    assert res.status == "failed" and _failed(res) == {"b"}, res.report()


# ---------------------------------------------------------------- dtypes and shapes of a NumPy gradient


def test_float64_numpy_gradient_for_float32_params_is_cast_with_a_note_naming_every_leaf():
    p32, x32 = _as(np.float32, P64), X64.astype(np.float32)
    grad64 = lambda p, x: jax.tree_util.tree_map(lambda g: g.astype(np.float64), np_grad(p, x))  # noqa: E731
    loss = lambda p, x: jnp.sum(jnp.tanh(p["w"] * x)) + jnp.sum(p["b"] ** 2)  # noqa: E731  (a JAX loss)
    res = jgc.check_grad(loss, grad64, p32, x32)
    assert res.status == "passed", res.report()
    assert "grad_fn returned ['b'] (float64), ['w'] (float64) for float32 parameters: cast to float32" in res.notes
    assert np.asarray(res.analytic_flat).dtype == np.float32


def test_gradient_shapes_that_only_broadcast_are_refused_naming_every_leaf():
    def grad_rows(p, x):
        g = np_grad(p, x)
        return {"w": g["w"][None], "b": g["b"][None]}  # (1, D) for (D,)

    with jax.enable_x64(True):
        with pytest.raises(
            ValueError,
            match=re.escape(
                "grad_fn output ['b']: shape (1, 2) != parameter shape (2,) (it only broadcasts); grad_fn output ['w']: shape (1, 3) != parameter shape (3,) (it only broadcasts). Shapes must match exactly"
            ),
        ):
            jgc.check_grad(np_loss, grad_rows, P64, X64)


def test_jax_gradient_wrong_shapes_all_named():
    loss = lambda p, x: jnp.sum(jnp.tanh(p["w"] * x)) + jnp.sum(p["b"] ** 2)  # noqa: E731
    rows = lambda p, x: {"w": (x * (1 - jnp.tanh(p["w"] * x) ** 2))[None], "b": 2 * p["b"][:, None]}  # noqa: E731
    p32 = _as(np.float32, P64)
    msg = "grad_fn output ['b']: shape (2, 1) != parameter shape (2,) (it only broadcasts); grad_fn output ['w']: shape (1, 3)"
    with pytest.raises(ValueError, match=re.escape(msg)):
        jgc.check_grad(loss, rows, p32, X64.astype(np.float32))


def test_course_keys_missing_gradient_is_named():
    X, Y, parameters = C.gradient_check_n_test_case()

    def backward(X, Y, cache):
        g = C.backward_propagation_n(X, Y, cache)
        del g["db2"]
        return g

    with pytest.raises(
        ValueError,
        match=re.escape(
            "backward_propagation returned a dict without a gradient for parameter ['b2']: expected a key 'b2' (or the course's 'db2')"
        ),
    ):
        jgc.course(C.forward_propagation_n, backward, parameters, X, Y)


def test_host_loss_sees_float64_on_any_thread_directions_and_locate():
    """Under jax.enable_x64 (thread-local), the callback may run on another thread, where JAX would
    convert float64 to float32: the loss still sees float64 inputs, and locate finds the entry."""
    seen = set()

    def loss(p, x):
        seen.add(p["w"].dtype)
        return np.sum(np.tanh(p["w"] * x))

    def grad(p, x):
        g = x * (1 - np.tanh(p["w"] * x) ** 2)
        g[37] += 1e-3
        return {"w": g}

    p, x = {"w": np.linspace(-1, 1, 64)}, np.linspace(0.5, 2, 64)
    with jax.enable_x64(True):
        res = jgc.check_directions(loss, grad, p, x, key=KEY)
        found = jgc.locate(loss, grad, p, x, key=KEY)
        num = jgc.numeric_grad(loss, p, x)["w"]
    assert seen == {np.dtype(np.float64)}
    assert res.status == "failed" and res.tol == 1e-6, res.report()
    assert [(c.path, c.index) for c in found.wrong] == [("['w']", (37,))]
    np.testing.assert_allclose(num, x * (1 - np.tanh(p["w"] * x) ** 2), rtol=1e-8)


def test_host_loss_error_is_raised_as_the_users_naming_loss_fn():
    def loss(p, x):
        if p["w"][0] > 0.3:  # raised at the first step up from θ
            raise ValueError("boom from the user's loss")
        return np_loss(p, x)

    with jax.enable_x64(True):
        with pytest.raises(ValueError, match=re.escape("loss_fn raised ValueError: boom from the user's loss")) as e:
            jgc.check_grad(loss, np_grad, P64, X64)
    assert "params: {['b']: float64[2], ['w']: float64[3]}" in str(e.value)


def test_host_loss_that_returns_a_vector_is_refused_naming_loss_fn():
    with jax.enable_x64(True):
        with pytest.raises(
            ValueError, match=re.escape("loss_fn must return a scalar cost (or (cost, cache)); received an array of shape (3,)")
        ):
            jgc.check_grad(lambda p, x: np.tanh(p["w"] * x), np_grad, P64, X64)


def test_numpy_code_that_traces_is_compiled_unless_host_true():
    loss = lambda p, x: (p["w"] * x).sum() + (p["b"] ** 2).sum()  # noqa: E731  (NumPy code that traces)
    grad = lambda p, x: {"w": x.copy(), "b": 2 * p["b"]}  # noqa: E731
    with jax.enable_x64(True):
        compiled = jgc.check_grad(loss, grad, P64, X64)
        host = jgc.check_grad(loss, grad, P64, X64, host=True)
    assert compiled.status == host.status == "passed"
    assert not any("ran on the host" in n for n in compiled.notes) and "loss_fn ran on the host" in host.notes[0]


def test_host_loss_with_grad_fn_none_says_a_gradient_is_needed():
    with pytest.raises(TypeError, match=re.escape("loss_fn cannot be traced: jgc evaluates it under jax.jit")) as e:
        jgc.check_grad(np_loss, None, _as(np.float32, P64), X64.astype(np.float32))
    assert "grad_fn=None differentiates loss_fn with jax.grad" in str(e.value) and "Pass the gradient under test" in str(e.value)


def test_host_loss_results_at_two_points_stack():
    """What a host loss cost is data (`host_cost`), its notes the same at every point: checks of a
    NumPy loss at init and after training stack with np.stack, and the stack reports."""
    points = [P64, {"w": P64["w"] + 0.5, "b": P64["b"] - 0.25}]
    with jax.enable_x64(True):
        results = [jgc.check_grad(np_loss, np_grad, p, X64) for p in points]
    assert all(r.status == "passed" for r in results)
    stacked = jax.tree.map(lambda *a: np.stack(a), *results)
    assert stacked.host_cost.shape == (2, 4) and (stacked.host_cost[:, 1] > 10).all()
    assert "all passed" in stacked.report()
    assert any(n.startswith("host cost: ") for n in results[0].notes)
