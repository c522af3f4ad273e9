"""A bug corpus: small models with hand-written backward passes and planted bugs.

`MODELS` is the registry: a list of `Model(name, init, loss_fn, grad_fn, bugs, tags)` with

- `init(key, dtype) -> (params, args)`: a random point and the extra arguments
  (data, labels, a dropout key) for `loss_fn(params, *args)`;
- `grad_fn(params, *args)`: the hand-written, correct gradient;
- `bugs`: dict name -> (bad_grad_fn, wrong_leaf_path), where `wrong_leaf_path` is the
  leaf a checker should name, spelled as `jax.tree_util.keystr` spells it;
- `tags`: dict bug name -> size category, "gross" (relative error on the wrong leaf
  ≥ 1e-2), "moderate" (1e-3 … 1e-2) or "subtle" (< 1e-3), measured by `bug_size`
  in float64 at seed 0 (tests/test_corpus.py checks every tag).

`ALARMS` is a third registry in the same format, kept apart from `MODELS`: the classes of
false alarms of issue 18 (kink-prone ReLU nets, max-pool, spatial norms, large arguments,
the classic course network, lower precision inside, a gradient rounded through float32;
tests/corpus/_alarms.py). Its losses are correct and its bugs planted as in `MODELS`;
`ALARMS_EXACT_LOSS` names the loss whose `jax.grad` equals a model's hand-written gradient
where that is not `loss_fn` itself (a loss with casts to bfloat16/float16).

`OPS` is a second registry in the same format: one model per JAX op (jax.numpy, jax.nn,
jax.scipy, jax.lax), whose correct gradient is `jax.grad` and whose bugs are planted
on `['w']` (tests/corpus/_ops.py).

Every loss is written with complex-safe operations (comparisons on the real part,
no abs of the parameters' path) so `method="complex_step"` can be measured too, except
the models named in `NOT_COMPLEX_SAFE` and `OPS_NOT_COMPLEX_SAFE`. Models in
`FLOAT64_ONLY` compute in float32 inside a float64 loss and are only run with float64
params. Used by tests/test_corpus*.py and benchmarks/verdicts.py (which puts tests/ on
sys.path); the models are tiny so the whole corpus checks in seconds.
"""

from . import _alarms, _blocks, _conv, _numerics
from ._alarms import ALARMS as ALARMS
from ._blocks import BLOCKS
from ._conv import CONV
from ._dense import DENSE
from ._model import CATEGORIES as CATEGORIES
from ._model import Model as Model
from ._model import all_variants as all_variants
from ._model import bug_size as bug_size
from ._model import category as category
from ._model import group_variants as group_variants
from ._model import params_signature as params_signature
from ._model import size_category as size_category
from ._norms import NORMS
from ._numerics import NUMERICS
from ._ops import OPS as OPS
from ._ops import OPS_NOT_COMPLEX_SAFE as OPS_NOT_COMPLEX_SAFE
from ._run import Batch as Batch
from ._run import outcome as outcome
from ._run import variants_at as variants_at
from ._sequence import SEQUENCE
from ._structured import STRUCTURED

# the first corpus (gross bugs on small, well-scaled models), then the classes added to judge verdicts
ORIGINAL: list[Model] = DENSE + STRUCTURED
ADDED: list[Model] = NUMERICS + NORMS + CONV + SEQUENCE + BLOCKS
MODELS: list[Model] = ORIGINAL + ADDED

ALARMS_EXACT_LOSS = dict(_alarms.EXACT_LOSS)
ALARMS_NOT_COMPLEX_SAFE: set[str] = set(_alarms.NOT_COMPLEX_SAFE)
FLOAT64_ONLY: set[str] = set(_numerics.FLOAT64_ONLY)
NOT_COMPLEX_SAFE: set[str] = _numerics.NOT_COMPLEX_SAFE | _blocks.NOT_COMPLEX_SAFE | _conv.NOT_COMPLEX_SAFE

__all__ = [
    "ADDED",
    "ALARMS",
    "ALARMS_EXACT_LOSS",
    "ALARMS_NOT_COMPLEX_SAFE",
    "Batch",
    "CATEGORIES",
    "FLOAT64_ONLY",
    "MODELS",
    "Model",
    "NOT_COMPLEX_SAFE",
    "OPS",
    "OPS_NOT_COMPLEX_SAFE",
    "ORIGINAL",
    "all_variants",
    "bug_size",
    "category",
    "group_variants",
    "outcome",
    "params_signature",
    "size_category",
    "variants_at",
]
