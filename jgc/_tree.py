"""θ ⇄ pytree: which leaves are checked, and flat index ⇄ (leaf path, index).

A pytree of parameters is split into *checked* leaves (floating-point arrays, raveled
into one vector θ with `jax.flatten_util.ravel_pytree`) and *unchecked* leaves
(integer, boolean and non-array leaves), which are passed to the loss unchanged.
Everything here runs on shapes and dtypes only, so it works on tracers.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._typing import PyTree

_LOW_PRECISION = (jnp.bfloat16, jnp.float16)


def is_array(x) -> bool:
    """True for values that travel through `jit` as data: JAX and NumPy arrays."""
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def _float_leaf(path: str, leaf) -> bool:
    """Whether a parameter leaf is checked; raises on dtypes no check can handle."""
    if not is_array(leaf):
        return False
    dtype = jnp.dtype(leaf.dtype)
    if dtype in _LOW_PRECISION:
        raise TypeError(
            f"{path}: parameter has dtype {dtype.name}; finite differences in "
            f"{dtype.name} have at most 3 correct digits, so no verdict would mean "
            "anything. Cast the parameters to float32 or float64 first, e.g. "
            "jax.tree.map(lambda x: x.astype(jnp.float32), params)."
        )
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"{path}: parameter has complex dtype {dtype.name}; jgc checks gradients "
            "of real parameters only (split complex parameters into real and "
            "imaginary parts)."
        )
    return bool(jnp.issubdtype(dtype, jnp.floating))


@dataclasses.dataclass(frozen=True)
class Layout:
    """Static description of a parameter pytree (hashable, no arrays)."""

    treedef: jax.tree_util.PyTreeDef
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    checked: tuple[bool, ...]

    @property
    def checked_index(self) -> tuple[int, ...]:
        """Positions (among all leaves) of the checked leaves, in θ order."""
        return tuple(i for i, c in enumerate(self.checked) if c)

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of coordinates of each checked leaf, in θ order."""
        return tuple(int(np.prod(self.shapes[i], dtype=int)) for i in self.checked_index)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Start of each checked leaf in θ."""
        return tuple(int(o) for o in np.cumsum((0,) + self.sizes)[:-1])

    @property
    def n(self) -> int:
        """Length of θ."""
        return sum(self.sizes)

    @property
    def dtype(self):
        """dtype of θ: the promoted dtype of the checked leaves."""
        return np.result_type(*(self.dtypes[i] for i in self.checked_index))

    @property
    def low_dtype(self):
        """The least precise checked dtype: it sets the noise, so it sets the defaults."""
        return min((jnp.dtype(self.dtypes[i]) for i in self.checked_index), key=lambda d: d.itemsize)

    def locate(self, flat_index: int) -> tuple[str, tuple[int, ...]]:
        """Flat θ index → (leaf path, index inside the leaf)."""
        k = int(np.searchsorted(self.offsets, flat_index, side="right")) - 1
        leaf = self.checked_index[k]
        return self.paths[leaf], tuple(int(i) for i in np.unravel_index(flat_index - self.offsets[k], self.shapes[leaf]))


def layout(params: PyTree) -> Layout:
    """Describe `params`; raises if nothing in it can be checked."""
    keyed, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not keyed:
        raise ValueError(f"params is empty: received {params!r}; expected a pytree with at least one floating-point array leaf.")
    paths, shapes, dtypes, checked = [], [], [], []
    for key, leaf in keyed:
        path = jax.tree_util.keystr(key)
        ok = _float_leaf(path, leaf)
        paths.append(path)
        shapes.append(tuple(int(s) for s in np.shape(leaf)))
        dtypes.append(jnp.dtype(leaf.dtype).name if is_array(leaf) else type(leaf).__name__)
        checked.append(ok)
    if not any(checked):
        listing = ", ".join(f"{p}: {d}" for p, d in zip(paths, dtypes))
        raise ValueError(
            f"params has no floating-point leaf to check: received {listing}; expected at least one float32 or float64 array."
        )
    return Layout(treedef, tuple(paths), tuple(shapes), tuple(dtypes), tuple(checked))


def ravel(lay: Layout, tree: PyTree) -> jax.Array:
    """The checked leaves of `tree` (structured like the params) as one vector θ."""
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: x is None)
    flat, _ = ravel_pytree([jnp.asarray(leaves[i], lay.dtype) for i in lay.checked_index])
    return flat


def unravel(lay: Layout, theta: jax.Array, params: PyTree, keep_complex: bool = False) -> PyTree:
    """`params` with its checked leaves taken from θ (cast back to each leaf's dtype).

    With `keep_complex`, a complex θ gives complex leaves (float32 → complex64,
    float64 → complex128) so the imaginary part of a complex step survives.
    """
    leaves = list(jax.tree_util.tree_leaves(params))
    for i, o, s in zip(lay.checked_index, lay.offsets, lay.sizes):
        dtype = lay.dtypes[i]
        if keep_complex and jnp.iscomplexobj(theta):
            dtype = jnp.result_type(dtype, jnp.complex64)
        leaves[i] = theta[o : o + s].reshape(lay.shapes[i]).astype(dtype)
    return jax.tree_util.tree_unflatten(lay.treedef, leaves)


def unravel_full(lay: Layout, theta: jax.Array, fill=jnp.nan) -> PyTree:
    """A pytree like the params, every leaf in θ's dtype: checked leaves from θ,
    unchecked leaves filled with `fill` (NaN marks "not checked")."""
    leaves = [jnp.full(s, fill, theta.dtype) for s in lay.shapes]
    for i, o, s in zip(lay.checked_index, lay.offsets, lay.sizes):
        leaves[i] = theta[o : o + s].reshape(lay.shapes[i])
    return jax.tree_util.tree_unflatten(lay.treedef, leaves)


def per_leaf(lay: Layout, values: jax.Array, fill=jnp.nan) -> PyTree:
    """A pytree like the params with one scalar per leaf (`fill` for unchecked leaves)."""
    leaves = [jnp.asarray(fill, values.dtype)] * len(lay.shapes)
    for k, i in enumerate(lay.checked_index):
        leaves[i] = values[k]
    return jax.tree_util.tree_unflatten(lay.treedef, leaves)


def segment_ids(lay: Layout) -> np.ndarray:
    """For each θ coordinate, the index (in θ order) of the checked leaf it belongs to."""
    return np.repeat(np.arange(len(lay.sizes)), lay.sizes)
