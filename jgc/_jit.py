"""jit plumbing: static/dynamic partition of pytrees, and the lifetime of compiled programs.

Per check, jgc compiles only what depends on the user's functions (the probe program of
`loss_fn`, the gradient program of `grad_fn`). Each program is a fresh `jax.jit` object
kept in a small LRU, keyed on the functions and the static configuration; the functions
are held by weak reference where Python allows it, so an entry — and with it its compiled
executables — goes when the user's function is garbage-collected, or when the LRU drops
it. Nothing is kept by a module-level `jit` with the functions as static arguments (that
would keep every executable for the life of the process).

The cache is shared by every thread: a lock guards it, so checks may run concurrently (a
sweep in a thread pool). A program is a `jax.jit` object, itself safe to call from many
threads; two threads asking for one key get the same object, hence the same executables
and bit-identical results.
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import threading
import weakref
from collections.abc import Callable, Hashable

import jax

from . import _tree
from ._typing import Tracer

# Compiled programs kept at most (each holds the executables of one function at a few shapes).
MAX_PROGRAMS = 48


# ---------------------------------------------------------------- static / dynamic


@dataclasses.dataclass(frozen=True)
class Static:
    """A non-array leaf of params or args, carried through jit as a static value."""

    value: object

    def _key(self):
        try:
            return (type(self.value), hash(self.value))
        except TypeError:
            return (type(self.value), id(self.value))

    def __hash__(self):
        return hash(self._key())

    def __eq__(self, other):
        if not isinstance(other, Static):
            return False
        if self.value is other.value:
            return True
        try:
            return self._key() == other._key() and bool(self.value == other.value)
        except Exception:  # noqa: BLE001 -- values whose == is not a bool (arrays inside) compare by identity
            return False


def partition(tree):
    """(dynamic leaves: arrays, None elsewhere; static part: treedef and the other leaves)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    dynamic = [leaf if _tree.is_array(leaf) else None for leaf in leaves]
    static = tuple(None if _tree.is_array(leaf) else Static(leaf) for leaf in leaves)
    return dynamic, (treedef, static)


def combine(dynamic, static):
    treedef, statics = static
    leaves = [d if s is None else s.value for d, s in zip(dynamic, statics, strict=True)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def is_traced(tree) -> bool:
    return any(isinstance(x, Tracer) for x in jax.tree_util.tree_leaves(tree))


# ---------------------------------------------------------------- references to user functions


class Ref:
    """A user function for cache keys: weak where possible; equal when the functions are equal
    (hashable ones, e.g. two bound methods of one object) or identical (the others)."""

    __slots__ = ("_get", "_hash", "_by_id", "_inner", "__weakref__")

    def __init__(self, fn: Callable):
        try:
            self._hash, self._by_id = hash(fn), False
        except TypeError:
            self._hash, self._by_id = id(fn), True
        self._inner = ()
        if getattr(fn, "jgc_wrapper", False):  # jgc's own wrapper of user functions (held as Refs)
            self._get, self._inner = (lambda: fn), tuple(refs(fn))
            return
        try:
            self._get = weakref.WeakMethod(fn) if inspect.ismethod(fn) else weakref.ref(fn)
        except TypeError:  # builtins and some callables cannot be weakly referenced: held, bounded by the LRU
            self._get = lambda: fn

    def __call__(self) -> Callable:
        fn = self._get()
        if fn is None:
            raise ReferenceError("the function of a jgc check was garbage-collected while it was in use")
        return fn

    @property
    def alive(self) -> bool:
        return self._get() is not None and all(r.alive for r in self._inner)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        if not isinstance(other, Ref):
            return NotImplemented
        if self is other:
            return True
        a, b = self._get(), other._get()
        if a is None or b is None:
            return False
        if a is b:
            return True
        if self._by_id or other._by_id:
            return False
        try:
            return bool(a == b)
        except Exception:  # noqa: BLE001
            return False


def refs(key) -> list[Ref]:
    if isinstance(key, Ref):
        return [key]
    if isinstance(key, tuple):
        return [r for k in key for r in refs(k)]
    if dataclasses.is_dataclass(key) and not isinstance(key, type):
        return [r for f in dataclasses.fields(key) for r in refs(getattr(key, f.name))]
    return []


# ---------------------------------------------------------------- the program cache


class Programs:
    """An LRU of compiled programs keyed on hashable descriptions that may hold `Ref`s.

    An entry whose functions are gone is dropped at the next lookup (with its executables).
    Every operation holds the cache's lock (reentrant: a key's `==` may call a user's `__eq__`).
    """

    def __init__(self, size: int = MAX_PROGRAMS):
        self.size = size
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.RLock()

    def get(self, key: Hashable, build: Callable[[], Callable]) -> Callable:
        with self._lock:
            self._drop_dead()
            program = self._entries.pop(key, None)
            if program is None:
                program = build()  # a `jax.jit` object: cheap, compiles on its first call
            self._entries[key] = program
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
            return program

    def _drop_dead(self):
        """Drop the entries whose functions were garbage-collected (call it holding the lock)."""
        dead = [k for k in self._entries if not all(r.alive for r in refs(k))]
        for k in dead:
            self._entries.pop(k, None)

    def __len__(self):
        with self._lock:
            self._drop_dead()
            return len(self._entries)

    def clear(self):
        with self._lock:
            self._entries.clear()


PROGRAMS = Programs()


class Program:
    """A jgc program (`jax.jit` of a check's step), called with `jax_debug_nans` and `jax_debug_infs`
    off for the call (thread-local, restored after it): NaN or inf at a probe point is data for
    the verdict (the report lists the non-finite values by leaf), and the programs mask 0/0 of
    their own (null probes, empty groups) that the flags would stop at. Under the caller's own
    `jax.jit` the flags apply to that program's outputs, as JAX defines them."""

    __slots__ = ("jitted",)

    def __init__(self, jitted: Callable):
        self.jitted = jitted

    def __call__(self, *args):
        with jax.debug_nans(False), jax.debug_infs(False):
            return self.jitted(*args)


def program(key: Hashable, fn: Callable, **jit_kwargs) -> Callable:
    """`jax.jit(fn, **jit_kwargs)`, cached on `key` (which must identify `fn` completely)."""
    return PROGRAMS.get(key, lambda: Program(jax.jit(fn, **jit_kwargs)))


# ---------------------------------------------------------------- a check on the host or inside one jit


@dataclasses.dataclass(frozen=True)
class Traced:
    """A check called on traced inputs: `body` inside one jit (inlined under the caller's jit;
    under `vmap` alone, one compiled program instead of op-by-op execution)."""

    body: Callable  # a module-level function: body(*fns, params, args, options, eps, tol, key)
    fns: tuple  # Refs of the user's functions (None where not given)
    static: tuple
    options: object

    def __call__(self, dynamic, eps, tol, key):
        params, args = combine(dynamic, self.static)
        fns = [None if f is None else f() for f in self.fns]
        return self.body(*fns, params, args, self.options, eps, tol, key)


def check(body: Callable, fns: tuple, params, args, options, eps=None, tol=None, key=None):
    """`body(*fns, params, args, options, eps, tol, key)` on the host, or inside one jit when
    any input is traced."""
    dynamic, static = partition((params, args))
    if is_traced((dynamic, eps, tol, key)):
        from . import _validate

        _validate.step(eps, _tree.layout(params), None, getattr(options, "method", "central"))  # eps is concrete here only
        spec = Traced(body, tuple(None if f is None else Ref(f) for f in fns), static, options)
        return program(("traced", spec), spec)(dynamic, eps, tol, key)
    return body(*fns, params, args, options, eps, tol, key)
