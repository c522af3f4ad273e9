"""The pipeline: what compiles per check, how long executables live, one verdict across modes,
NumPy backward passes, and the inputs a reliability probe found mishandled."""

import gc
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import counting

import jgc
from jgc import _jit


def loss(p, x):
    return jnp.sum(jnp.tanh(p["w"] * x)) + jnp.sum(p["b"] ** 2)


def grad(p, x):
    return {"w": x * (1 - jnp.tanh(p["w"] * x) ** 2), "b": 2 * p["b"]}


P = {"w": jnp.array([0.3, -1.2]), "b": jnp.array([0.5, 0.1, -0.2])}
X = jnp.array([2.0, 0.5])


def test_compile_what_depends_on_the_loss_once():
    f = lambda p, x: loss(p, x)  # noqa: E731  (a function no other test has compiled)
    g = lambda p, x: grad(p, x)  # noqa: E731
    with counting() as first:
        res = jgc.check_grad(f, g, P, X)
    assert bool(res.passed)
    assert first["compiles"] == 2  # the probe program of f, the gradient program of g (with J(θ) again)
    with counting() as again:
        str(jgc.check_grad(f, g, P, X))  # the verdict and the report run on the host: nothing compiles
    assert again["compiles"] == 0
    g2 = lambda p, x: {**grad(p, x), "b": 2.0 * p["b"]}  # noqa: E731
    with counting() as new_grad:
        jgc.check_grad(f, g2, P, X)
    assert new_grad["compiles"] == 1  # the probe program of f is reused
    assert again["traces"] <= 3  # the loss's jaxpr for the engine's plan; no program is traced again


def test_other_layouts_compile_only_their_programs():
    f = lambda p: jnp.sum(jnp.sin(p["a"])) + jnp.sum(p["c"] ** 3)  # noqa: E731
    g = lambda p: {"a": jnp.cos(p["a"]), "c": 3 * p["c"] ** 2}  # noqa: E731
    for size in (3, 5):
        params = {"a": jnp.linspace(0, 1, size), "c": jnp.ones(size)}
        with counting() as c:
            res = jgc.check_grad(f, g, params)
        assert bool(res.passed)
        # the probe and gradient programs, no verdict program for the new layout; a float32 check
        # whose leaves were re-checked in float64 compiles those two programs in float64 too
        rechecked = int(res.run.recheck) == 1  # the float64 re-check ran
        assert c["compiles"] == (4 if rechecked else 2), res.notes
        with jax.enable_x64(True), counting() as c:
            assert bool(jgc.check_grad(f, g, jax.tree.map(lambda x: x.astype(jnp.float64), params)).passed)
        # the float64 re-check may already have compiled this layout's float64 probe program; its
        # gradient program carries the term scale, which a float64 check's first pass goes without
        assert c["compiles"] <= 3 if rechecked else c["compiles"] == 2, c


def _maps() -> int:
    with open(f"/proc/{os.getpid()}/maps") as f:
        return sum(1 for _ in f)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc (Linux)")
def test_executables_die_with_their_functions():
    """Distinct checks do not keep their executables (the process would die after a few hundred)."""

    def one(c):
        f = lambda p: jnp.sum(jnp.sin(c * p) ** 2)  # noqa: E731
        g = lambda p: 2 * c * jnp.sin(c * p) * jnp.cos(c * p)  # noqa: E731
        assert bool(jgc.check_grad(f, g, jnp.linspace(0.1, 0.5, 5)).passed)

    for i in range(5):  # warm up JAX's own one-time allocations
        one(float(i))
    gc.collect()
    before = _maps()
    checks = 20
    for i in range(checks):
        one(1.0 + 0.01 * i)
    gc.collect()
    jgc.check_grad(loss, grad, P, X)  # a lookup drops the entries of dead functions
    assert (_maps() - before) / checks <= 5
    assert len(_jit.PROGRAMS) <= _jit.MAX_PROGRAMS


def test_program_cache_is_bounded_and_weak():
    programs = _jit.Programs(size=3)
    fns = [lambda x, i=i: x + i for i in range(5)]
    for f in fns:
        programs.get(("k", _jit.Ref(f)), lambda: object())
    assert len(programs) == 3  # least recently used dropped
    del fns, f
    gc.collect()
    assert len(programs) == 0  # the functions are gone, so are their programs


# ---------------------------------------------------------------- one verdict across modes


def test_same_coordinates_same_verdict_in_every_mode():
    # the example: a float32 loss with a large constant part and the correct gradient
    f = lambda p: jnp.sum(p**2) + 3e3  # noqa: E731
    w = jnp.array([0.1, 0.2, -0.15, 0.12, -0.08, 0.18], jnp.float32)
    full = jgc.check_grad(f, lambda p: 2 * p, w)
    sampled = jgc.check_grad(f, lambda p: 2 * p, w, coords=6, key=jax.random.key(0))
    assert sampled.status == full.status == "passed", (full.report(), sampled.report())
    np.testing.assert_array_equal(np.asarray(sampled.noise.bound) > 0, np.asarray(full.noise.bound) > 0)
    wrong = lambda p: 2.2 * p  # noqa: E731
    assert jgc.check_grad(f, wrong, w).status == jgc.check_grad(f, wrong, w, coords=6, key=jax.random.key(0)).status == "failed"


def test_sampled_every_coordinate_is_the_full_check():
    with jax.enable_x64(True):
        p = jax.tree.map(lambda a: a.astype(jnp.float64), P)
        x = X.astype(jnp.float64)
        bad = lambda p, x: {**grad(p, x), "b": 1.5 * grad(p, x)["b"]}  # noqa: E731
        full = jgc.check_grad(loss, bad, p, x)
        every = jgc.check_grad(loss, bad, p, x, coords=100, key=jax.random.key(3))
        np.testing.assert_array_equal(every.groups.failed, full.groups.failed)
        np.testing.assert_array_equal(every.groups.passed, full.groups.passed)
        np.testing.assert_allclose(every.numeric_flat, full.numeric_flat[np.asarray(every.index)], rtol=1e-12, atol=1e-9)


# ---------------------------------------------------------------- functions that cannot be traced


def test_numpy_backward_pass_runs_on_the_host():
    cube = lambda p: jnp.sum(p["w"] ** 3)  # noqa: E731
    numpy_grad = lambda p: {"w": 3 * np.asarray(p["w"]) ** 2}  # noqa: E731  (the course writes NumPy)
    res = jgc.check_grad(cube, numpy_grad, {"w": jnp.array([0.5, 1.0])})
    assert bool(res.passed)
    assert any("grad_fn ran on the host" in n for n in res.notes) and "grad_fn ran on the host" in res.report()
    wrong = jgc.check_grad(cube, lambda p: {"w": 2 * np.asarray(p["w"]) ** 2}, {"w": jnp.array([0.5, 1.0])})
    assert bool(wrong.failed)
    with pytest.raises(TypeError, match=re.escape("grad_fn cannot be traced: jgc evaluates it under jax.jit")) as e:
        jax.jit(lambda q: jgc.check_grad(cube, numpy_grad, q))({"w": jnp.array([0.5, 1.0])})
    assert "only when the inputs are concrete" in str(e.value)


@pytest.mark.parametrize(
    "bad_loss",
    [
        lambda p: float(jnp.sum(p["w"] ** 2)),
        lambda p: jnp.asarray(np.sum(np.asarray(p["w"]) ** 2)),
        lambda p: jnp.sum(p["w"]) if p["w"][0] > 0 else jnp.sum(-p["w"]),
    ],
    ids=["float", "np.asarray", "python-if"],
)
def test_untraceable_loss_names_loss_fn(bad_loss):
    with pytest.raises(TypeError, match=re.escape("loss_fn cannot be traced: jgc evaluates it under jax.jit")) as e:
        jgc.check_grad(bad_loss, None, {"w": jnp.array([0.5, 1.0])})
    assert "jnp.where or jax.lax.cond" in str(e.value)


# ---------------------------------------------------------------- inputs a reliability probe found mishandled


def test_none_leaf_in_params():
    params = {"w": jnp.ones(3), "extra": None}
    f = lambda p: jnp.sum(p["w"] ** 2)  # noqa: E731
    assert bool(jgc.check_grad(f, jax.grad(f), params).passed)  # jax.grad returns None there too
    assert bool(jgc.check_grad(f, lambda p: {"w": 2 * p["w"], "extra": None}, params).passed)


def test_zero_size_leaf_reports():
    params = {"w": jnp.ones(3), "z": jnp.zeros((0, 2))}
    res = jgc.check_grad(lambda p: jnp.sum(p["w"] ** 2) + jnp.sum(p["z"]), lambda p: {"w": 2 * p["w"], "z": p["z"]}, params)
    assert bool(res.passed)
    row = [line for line in res.report().splitlines() if "['z']" in line][0]
    assert "(0, 2)" in row and "size 0" in row
    assert res.numeric["z"].shape == (0, 2) and len(res.worst(10)) == 3


def test_only_leaf_of_size_zero():
    with pytest.raises(ValueError, match=re.escape("params has no coordinate to check: every floating-point leaf has size 0")):
        jgc.check_grad(lambda p: jnp.sum(p), lambda p: p, jnp.zeros(0))


def test_typed_prng_key_leaf_is_passed_through():
    params = {"w": jnp.ones(3), "k": jax.random.key(3)}
    f = lambda p: jnp.sum(p["w"] ** 2 * jax.random.uniform(p["k"], (3,)))  # noqa: E731
    res = jgc.check_grad(f, lambda p: {"w": 2 * p["w"] * jax.random.uniform(p["k"], (3,)), "k": None}, params)
    assert bool(res.passed) and res.layout.checked == (False, True)
    assert "not checked (not floating point): ['k'] (key<fry>)" in res.report()


def test_worst_with_a_negative_count():
    res = jgc.check_grad(loss, grad, P, X)
    with pytest.raises(ValueError, match=re.escape("worst(k) needs a non-negative int k; received -1.")):
        res.worst(-1)


@pytest.mark.parametrize(
    "keys", [jax.random.split(jax.random.key(0), 0), jnp.zeros((2, 3), jnp.uint32)], ids=["no keys", "shape (2, 3)"]
)
def test_check_seeds_bad_keys(keys):
    init = lambda k: {"w": jax.random.normal(k, (3,))}  # noqa: E731
    with pytest.raises(ValueError, match=re.escape("keys must be a non-empty batch of PRNG keys")):
        jgc.check_seeds(lambda p: jnp.sum(p["w"] ** 2), None, init, keys)


def test_check_snapshots_empty_stack():
    with pytest.raises(
        ValueError, match=re.escape("stacked_params must be stacked along a leading axis of the same nonzero length")
    ):
        jgc.check_snapshots(lambda p: jnp.sum(p["w"] ** 2), None, {"w": jnp.zeros((0, 3))})


def test_jvp_fn_wrong_shape_names_jvp_fn_and_output_leaf():
    with pytest.raises(ValueError, match=re.escape("jvp_fn output ['y']: shape (2,) != output shape (3,).")):
        jgc.check_jvp(lambda x: {"y": jnp.sin(x)}, lambda pr, tg: {"y": jnp.ones(2)}, jnp.ones(3), key=jax.random.key(0))
