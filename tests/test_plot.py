"""res.plot(): a matplotlib Figure, rendered without a display (Agg)."""

import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jgc

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def loss(p, x):
    return jnp.sum(jnp.tanh(x @ p["W"]) ** 2) + jnp.sum(p["b"] ** 2)


def grad(p, x, bug=False):
    t = jnp.tanh(x @ p["W"])
    gW = x.T @ (2 * t * (1 - t**2))
    return {"W": gW.at[1, 2].add(1.0) if bug else gW, "b": 2 * p["b"]}


def _params(dtype):
    return {"W": jax.random.normal(jax.random.key(0), (3, 4), dtype), "b": jnp.ones(2, dtype)}


X = jnp.linspace(-1, 1, 15).reshape(5, 3)


def test_failing_plot_has_heatmap_of_failing_leaf(dtype, tmp_path):
    res = jgc.check_grad(loss, lambda p, x: grad(p, x, bug=True), _params(dtype), X.astype(dtype))
    fig = res.plot()
    assert isinstance(fig, matplotlib.figure.Figure)
    bar, heat, cbar = fig.axes
    assert bar.get_xscale() == "log"
    assert [t.get_text() for t in bar.get_yticklabels()] == ["['b']  (2,)", "['W']  (3, 4)"]  # worst at the top
    assert heat.get_title() == "|numeric − analytic| on ['W']  (worst at (1, 2))"
    image = heat.get_images()[0].get_array()
    assert image.shape == (3, 4) and np.unravel_index(np.argmax(image), image.shape) == (1, 2)
    assert float(bar.lines[0].get_xdata()[0]) == pytest.approx(float(res.tol))
    assert "FAILED" in fig._suptitle.get_text()
    out = tmp_path / "plot.png"
    fig.savefig(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_passing_and_batched_plots():
    res = jgc.check_grad(loss, grad, _params(jnp.float32), X)
    fig = res.plot()
    assert len(fig.axes) == 1 and "passed" in fig._suptitle.get_text()
    batch = jax.vmap(lambda p: jgc.check_grad(loss, lambda p, x: grad(p, x, bug=True), p, X))(
        jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), _params(jnp.float32))
    )
    fig = batch.plot()
    assert fig._suptitle.get_text().startswith("worst of 2 seeds (seed ")
    assert len(fig.axes) == 3
    fig = res.plot(leaf="['W']")  # a heatmap on request, even for a passing leaf
    assert len(fig.axes) == 3
    with pytest.raises(
        ValueError, match=re.escape("leaf=\"['b']\" has shape (2,) (float32); a heatmap needs a checked 2-D leaf.")
    ):
        res.plot(leaf="['b']")
    with pytest.raises(ValueError, match=re.escape("leaf='W' is not a leaf of this result")):
        res.plot(leaf="W")


def test_example_saves_png(tmp_path):
    import runpy

    path = tmp_path / "out.png"
    runpy.run_path(str(pathlib.Path(__file__).resolve().parent.parent / "examples" / "plot.py"), run_name="example")["main"](
        str(path)
    )
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_import_jgc_does_not_import_matplotlib():
    code = "import sys, jgc; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=pathlib.Path(__file__).parent.parent
    )
    assert out.stdout.strip() == "False"
