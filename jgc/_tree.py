"""θ ⇄ pytree: which leaves are checked, and flat index ⇄ (leaf path, index).

A pytree of parameters is split into *checked* leaves (floating-point arrays, raveled
into one vector θ) and *unchecked* leaves (integer, boolean, PRNG-key and non-array
leaves), which are passed to the loss unchanged. `None` is an empty subtree, as in JAX.
Everything here runs on shapes and dtypes only, so it works on tracers; the per-leaf
views take flat vectors with any leading batch axes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ._typing import PyTree

_LOW_PRECISION = (jnp.bfloat16, jnp.float16)


def is_array(x) -> bool:
    """True for values that travel through `jit` as data: JAX and NumPy arrays."""
    return isinstance(x, (jax.Array, np.ndarray, np.generic))


def is_key(x) -> bool:
    """A typed PRNG key array (`jax.random.key(0)`): data, but not a number."""
    return is_array(x) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def dtype_name(leaf) -> str:
    """The dtype of an array leaf as text (`key<fry>` for typed keys), else the type's name."""
    if is_key(leaf):
        return str(leaf.dtype)
    return jnp.dtype(leaf.dtype).name if is_array(leaf) else type(leaf).__name__


def _float_leaf(path: str, leaf) -> bool:
    """Whether a parameter leaf is checked; raises on dtypes no check can handle."""
    if not is_array(leaf) or is_key(leaf):
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
    """Static description of a parameter pytree (hashable, no arrays).

    The derived maps (sizes, offsets, segment ids) are computed once per layout.
    """

    treedef: Any  # jax.tree_util.PyTreeDef
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    checked: tuple[bool, ...]

    @functools.cached_property
    def checked_index(self) -> tuple[int, ...]:
        """Positions (among all leaves) of the checked leaves, in θ order."""
        return tuple(i for i, c in enumerate(self.checked) if c)

    @functools.cached_property
    def sizes(self) -> tuple[int, ...]:
        """Number of coordinates of each checked leaf, in θ order."""
        return tuple(int(np.prod(self.shapes[i], dtype=int)) for i in self.checked_index)

    @functools.cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start of each checked leaf in θ."""
        return tuple(int(o) for o in np.cumsum((0,) + self.sizes)[:-1])

    @property
    def n(self) -> int:
        """Length of θ."""
        return sum(self.sizes)

    @property
    def k(self) -> int:
        """Number of checked leaves."""
        return len(self.checked_index)

    @functools.cached_property
    def segments(self) -> np.ndarray:
        """For each θ coordinate, the index (in θ order) of the checked leaf it belongs to."""
        return np.repeat(np.arange(self.k, dtype=np.int32), self.sizes)

    @property
    def dtype(self):
        """dtype of θ: the promoted dtype of the checked leaves."""
        return np.result_type(*(self.dtypes[i] for i in self.checked_index))

    @property
    def low_dtype(self):
        """The least precise checked dtype: it sets the defaults."""
        return min((jnp.dtype(self.dtypes[i]) for i in self.checked_index), key=lambda d: d.itemsize)

    @property
    def checked_paths(self) -> tuple[str, ...]:
        return tuple(self.paths[i] for i in self.checked_index)

    def name(self, i: int) -> str:
        """Leaf i's path for messages ("params" for a single array)."""
        return self.paths[i] or "params"

    def locate(self, flat_index: int) -> tuple[str, tuple[int, ...]]:
        """Flat θ index → (leaf path, index inside the leaf)."""
        k = int(self.segments[flat_index])
        leaf = self.checked_index[k]
        return self.paths[leaf], tuple(int(i) for i in np.unravel_index(flat_index - self.offsets[k], self.shapes[leaf]))


def layout(params: PyTree, name: str = "params") -> Layout:
    """Describe `params`; raises if nothing in it can be checked."""
    keyed, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not keyed:
        raise ValueError(f"{name} is empty: received {params!r}; expected a pytree with at least one floating-point array leaf.")
    paths, shapes, dtypes, checked = [], [], [], []
    for key, leaf in keyed:
        path = jax.tree_util.keystr(key)
        ok = _float_leaf(path, leaf)
        paths.append(path)
        shapes.append(tuple(int(s) for s in np.shape(leaf)) if is_array(leaf) else ())
        dtypes.append(dtype_name(leaf))
        checked.append(ok)
    listing = ", ".join(f"{p or name}: {d}{list(s) if s else ''}" for p, d, s in zip(paths, dtypes, shapes))
    if not any(checked):
        raise ValueError(
            f"{name} has no floating-point leaf to check: received {listing}; expected at least one float32 or float64 array."
        )
    lay = Layout(treedef, tuple(paths), tuple(shapes), tuple(dtypes), tuple(checked))
    if lay.n == 0:
        raise ValueError(
            f"{name} has no coordinate to check: every floating-point leaf has size 0 (received {listing}); "
            "expected at least one leaf with a nonzero size."
        )
    return lay


def leaves_up_to(lay: Layout, tree: PyTree, name: str, like: str) -> list:
    """The subtrees of `tree` at the positions of the leaves of `lay` (None allowed where
    the params hold a leaf that is not checked); raises a named error on another structure."""
    try:
        return lay.treedef.flatten_up_to(tree)
    except (ValueError, TypeError):
        pass
    keyed, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: x is None)
    given = {jax.tree_util.keystr(k): v for k, v in keyed}
    missing = [p for p in lay.paths if p not in given]
    extra = [p for p, v in given.items() if p not in lay.paths and v is not None]
    parts = []
    if missing:
        parts.append(f"missing leaves {', '.join(missing)}")
    if extra:
        parts.append(f"extra leaves {', '.join(extra)}")
    if not parts:
        raise ValueError(
            f"{name} returned a pytree with other containers than {like}: received {treedef}, expected {lay.treedef}."
        )
    raise ValueError(
        f"{name} returned a pytree whose structure differs from {like}: {'; '.join(parts)}. "
        f"Expected the structure of {like}: {lay.treedef}."
    )


def ravel(lay: Layout, tree: PyTree) -> jax.Array:
    """The checked leaves of `tree` (structured like the params) as one vector θ."""
    leaves = lay.treedef.flatten_up_to(tree)
    parts = [jnp.ravel(jnp.asarray(leaves[i], lay.dtype)) for i in lay.checked_index]
    return jnp.concatenate(parts) if len(parts) > 1 else parts[0]


def unravel(lay: Layout, theta: jax.Array, params: PyTree, keep_complex: bool = False) -> PyTree:
    """`params` with its checked leaves taken from θ (cast back to each leaf's dtype).

    With `keep_complex`, a complex θ gives complex leaves (float32 → complex64,
    float64 → complex128) so the imaginary part of a complex step survives.
    """
    leaves = list(lay.treedef.flatten_up_to(params))
    for i, o, s in zip(lay.checked_index, lay.offsets, lay.sizes):
        dtype = lay.dtypes[i]
        if keep_complex and jnp.iscomplexobj(theta):
            dtype = jnp.result_type(dtype, jnp.complex64)
        leaves[i] = theta[o : o + s].reshape(lay.shapes[i]).astype(dtype)
    return jax.tree_util.tree_unflatten(lay.treedef, leaves)


def unravel_full(lay: Layout, flat, fill=np.nan) -> PyTree:
    """A pytree like the params from a flat vector ordered like θ (any leading batch axes):
    checked leaves from it, unchecked leaves filled with `fill` (NaN marks "not checked")."""
    batch = flat.shape[:-1]
    leaves = [np.full(batch + s, fill, flat.dtype) for s in lay.shapes]
    for i, o, s in zip(lay.checked_index, lay.offsets, lay.sizes):
        leaves[i] = flat[..., o : o + s].reshape(batch + lay.shapes[i])
    return jax.tree_util.tree_unflatten(lay.treedef, leaves)


def per_leaf(lay: Layout, values, fill=np.nan) -> PyTree:
    """A pytree like the params with one scalar per leaf from `values` (..., k) (`fill` on unchecked leaves)."""
    batch = values.shape[:-1]
    leaves = [np.full(batch, fill, values.dtype)] * len(lay.shapes)
    for k, i in enumerate(lay.checked_index):
        leaves[i] = values[..., k]
    return jax.tree_util.tree_unflatten(lay.treedef, leaves)


def to_float64(tree):
    """Float arrays of a pytree cast to float64 (call it under x64), the rest unchanged.

    The cast is done on the host and the result put on the device: JAX arrays (a loss may
    index NumPy arrays with them) and no eager JAX operation, so nothing compiles."""

    def up(x):
        if is_array(x) and not is_key(x) and jnp.issubdtype(np.asarray(x).dtype, jnp.floating):
            return jax.device_put(np.asarray(x, np.float64))
        return x

    return jax.tree_util.tree_map(up, tree)
