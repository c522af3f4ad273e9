"""Parameters that are equinox Modules or flax parameter trees (skipped when the package is missing)."""

import pathlib
import runpy
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def _apply(how, check, key):
    """plain / jit / vmap over two keys; the params are built from the key inside `check`."""
    if how == "plain":
        res = check(key)
    elif how == "jit":
        res = jax.jit(check)(key)
    else:
        return jax.vmap(check)(jax.random.split(key, 2))
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], res)


def _failing(res):
    ok = [np.asarray(v) for v in jax.tree_util.tree_leaves(res.leaf_passed)]
    return [p for p, c, v in zip(res.layout.paths, res.layout.checked, ok, strict=True) if c and not v.all()]


@pytest.fixture
def example(monkeypatch):
    """Import an example script as a module (examples/ is not a package)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))

    def load(name):
        module = __import__(name)
        monkeypatch.delitem(sys.modules, name)
        return module

    return load


@pytest.mark.parametrize("how", ["plain", "jit", "vmap"])
@pytest.mark.parametrize("bug", [False, True])
def test_equinox_module(dtype, how, bug, example):
    eqx = pytest.importorskip("equinox")
    ex = example("equinox_model")
    x = jax.random.normal(jax.random.key(1), (6, 3), dtype)
    y = jax.random.normal(jax.random.key(2), (6, 2), dtype)

    def check(key):
        model = ex.MLP(3, 4, 2, key, dtype)
        assert isinstance(model, eqx.Module)
        return jgc.check_grad(ex.loss, lambda m, x, y: ex.manual_grad(m, x, y, bug=bug), model, x, y)

    res = _apply(how, check, jax.random.key(0))
    np.testing.assert_array_equal(res.passed, not bug)
    assert _failing(res) == ([".b1"] if bug else [])
    assert res.layout.checked == (True, True, True, True, False, False)
    assert "not checked (not floating point): .activation (PjitFunction), .num_updates (int32)" in res.report()


def test_equinox_stock_mlp_with_filter_grad_and_autodiff(dtype):
    eqx = pytest.importorskip("equinox")

    def loss(m, x):
        return jnp.mean(jax.vmap(m)(x) ** 2)

    x = jnp.linspace(-1, 1, 12, dtype=dtype).reshape(4, 3)
    model = eqx.nn.MLP(3, 2, 4, 1, key=jax.random.key(0), dtype=dtype)
    res = jgc.check_grad(loss, eqx.filter_grad(loss), model, x, autodiff=True)
    assert bool(res.passed) and bool(res.autodiff.passed)
    assert res.layout.paths[-2:] == (".activation", ".final_activation")
    # a wrong gradient: the first layer's weight gradient doubled
    bad = lambda m, x: eqx.tree_at(lambda g: g.layers[0].weight, g := eqx.filter_grad(loss)(m, x), 2 * g.layers[0].weight)  # noqa: E731
    res = jgc.check_grad(loss, bad, model, x)
    assert not bool(res.passed) and _failing(res) == [".layers[0].weight"]


@pytest.mark.parametrize("how", ["plain", "jit", "vmap"])
@pytest.mark.parametrize("bug", [False, True])
def test_flax_linen_params(dtype, how, bug, example):
    pytest.importorskip("flax")
    ex = example("flax_model")
    x = jax.random.normal(jax.random.key(1), (6, 3), dtype)
    y = jax.random.normal(jax.random.key(2), (6, 4), dtype)

    def check(key):
        variables = ex.model.init(key, x)
        return jgc.check_grad(ex.loss, lambda v, x, y: ex.manual_grad(v, x, y, bug=bug), variables, x, y)

    res = _apply(how, check, jax.random.key(0))
    np.testing.assert_array_equal(res.passed, not bug)
    assert _failing(res) == (["['params']['Dense_1']['kernel']"] if bug else [])


@pytest.mark.parametrize("name", ["equinox_model", "flax_model"])
def test_examples_run(name, capsys):
    pytest.importorskip(name.split("_")[0])
    runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
    assert "FAILED" in capsys.readouterr().out


def test_equinox_module_in_hvp_and_vjp():
    eqx = pytest.importorskip("equinox")
    with jax.enable_x64(True):
        model = eqx.nn.MLP(3, 1, 4, 1, key=jax.random.key(0), dtype=jnp.float64)
        x = jnp.linspace(-1, 1, 12, dtype=jnp.float64).reshape(4, 3)

        def loss(m, x):
            return jnp.mean(jax.vmap(m)(x) ** 2)

        def hvp(m, v, x, scale=1.0):
            params, static = eqx.partition(m, eqx.is_inexact_array)
            v_params, _ = eqx.partition(v, eqx.is_inexact_array)  # v keeps the Module's function leaves
            grad = lambda p: eqx.filter_grad(loss)(eqx.combine(p, static), x)  # noqa: E731
            out = jax.jvp(grad, (params,), (v_params,))[1]
            return eqx.tree_at(lambda g: g.layers[1].bias, out, scale * out.layers[1].bias)

        assert bool(jgc.check_hvp(loss, hvp, model, x, key=jax.random.key(1)).passed)
        res = jgc.check_hvp(loss, lambda m, v, x: hvp(m, v, x, scale=2.0), model, x, key=jax.random.key(1))
        assert _failing(res) == [".layers[1].bias"]

        def layer(m, x):
            return jax.vmap(m)(x)

        def vjp(primals, c):
            return eqx.filter_vjp(layer, *primals)[1](c)  # None on the Module's function leaves

        res = jgc.check_vjp(layer, vjp, model, x, key=jax.random.key(2))
        assert bool(res.passed) and res.layout.paths[0] == "[0].layers[0].weight" and res.layout.paths[-1] == "[1]"
