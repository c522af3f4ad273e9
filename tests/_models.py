"""Tiny models with hand-written gradients, shared by the core tests."""

import jax
import jax.numpy as jnp


def mlp_init(key, dtype=jnp.float32, sizes=(3, 4, 2)):
    keys = jax.random.split(key, len(sizes) - 1)
    return {
        "layers": [
            {
                "W": jax.random.normal(k, (a, b), dtype) / jnp.sqrt(a).astype(dtype),
                "b": 0.1 * jax.random.normal(jax.random.fold_in(k, 1), (b,), dtype),
            }
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])
        ]
    }


def mlp_data(key, dtype=jnp.float32, m=5, sizes=(3, 4, 2)):
    kx, ky = jax.random.split(key)
    return jax.random.normal(kx, (m, sizes[0]), dtype), jax.random.normal(ky, (m, sizes[-1]), dtype)


LAM = 0.05


def mlp_loss(p, x, y):
    """Mean squared error of a tanh MLP (linear last layer) plus L2 on the weights."""
    a = x
    *hidden, last = p["layers"]
    for layer in hidden:
        a = jnp.tanh(a @ layer["W"] + layer["b"][None])
    out = a @ last["W"] + last["b"][None]
    l2 = sum(jnp.sum(layer["W"] ** 2) for layer in p["layers"])
    return 0.5 * jnp.mean(jnp.sum((out - y) ** 2, axis=1)) + 0.5 * LAM * l2


def mlp_grad(p, x, y):
    """Hand-written backward pass of mlp_loss."""
    m = x.shape[0]
    acts, a = [x], x
    *hidden, last = p["layers"]
    for layer in hidden:
        a = jnp.tanh(a @ layer["W"] + layer["b"][None])
        acts.append(a)
    out = a @ last["W"] + last["b"][None]
    dz = (out - y) / m
    grads = []
    for i in reversed(range(len(p["layers"]))):
        layer = p["layers"][i]
        grads.append({"W": acts[i].T @ dz + LAM * layer["W"], "b": dz.sum(0)})
        if i:
            dz = (dz @ layer["W"].T) * (1 - acts[i] ** 2)
    return {"layers": grads[::-1]}


def planted(grad_fn, layer, name, index, factor=2.0):
    """grad_fn with one entry of one leaf multiplied by `factor` (a planted bug)."""

    def bad(p, *args):
        g = grad_fn(p, *args)
        leaf = g["layers"][layer][name]
        g["layers"][layer][name] = leaf.at[index].multiply(factor)
        return g

    return bad


def forgot_l2(p, x, y):
    """A classic bug: the backward pass forgets the L2 term of the weights."""
    g = mlp_grad(p, x, y)
    for gl, pl in zip(g["layers"], p["layers"]):
        gl["W"] = gl["W"] - LAM * pl["W"]
    return g


def mlp_grad_bug(p, x, y, bug):
    """mlp_grad with coordinate bug[1] (flat) of leaf bug[0] (in tree order) doubled.

    The bug is data, so one compiled check serves every planted position.
    """
    g = mlp_grad(p, x, y)
    leaves, treedef = jax.tree_util.tree_flatten(g)
    out = []
    for k, leaf in enumerate(leaves):
        hit = (bug[0] == k) & (jnp.arange(leaf.size) == bug[1])
        out.append(leaf * jnp.where(hit, 2.0, 1.0).reshape(leaf.shape).astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def mlp_loss_bug(p, x, y, bug):
    return mlp_loss(p, x, y)


def _first_chunk(res, m, chunk):
    """Probes of the first engine call's first chunk (evaluated twice: the determinism check): the
    noise probe (8·bases + 1: four coordinates, two spacings, and J(θ)), followed by the check's
    own probes where the stencil shares the noise probe's offsets (central, forward)."""
    import numpy as np

    import jgc

    probes = np.shape(res.noise.doubled)[-1]
    q = 8 * len(jgc._noise.EC_POINTS[m][0]) + 1
    merged = res.method in ("central", "forward")
    if chunk is None:
        chunk = jgc._engine.chunk_size(res.layout.n, probes + 1, m)
    return min(chunk, q + probes if merged else q)


def fixed_evals(res, m=2, chunk=None):
    """What every check spends besides its probes: the noise probe (64 evaluations), J(θ) (m) and
    the first chunk once more (the determinism check)."""
    return 64 + m + m * _first_chunk(res, m, chunk)


def evals(res, m=2, chunk=None):
    """The loss evaluations of a check on the engine: the noise probe and J(θ), the first chunk
    once more (`fixed_evals`), m per probe, m again per probe evaluated at step 2h, and what
    resolving unresolved leaves and confirming failures cost (`resolve_evals`)."""
    import numpy as np

    doubled = np.asarray(res.noise.doubled)
    probes = doubled.shape[-1]
    base = fixed_evals(res, m, chunk) + m * probes
    redone = np.asarray(res.resolve_evals)
    exact = base + m * doubled.sum(axis=-1) + redone
    if not np.any(redone):
        return exact
    # resolution re-measured some probes and replaced their `doubled` flags: stage 1's own count is
    # only known to lie between every probe without and every probe with the doubled step
    low = base + redone
    got = np.asarray(res.num_evals)
    return np.where((got >= low) & (got <= low + m * probes), got, exact)
