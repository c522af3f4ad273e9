"""A bug corpus: small models with hand-written backward passes and planted bugs.

`MODELS` is the registry: a list of `Model(name, init, loss_fn, grad_fn, bugs)` with

- `init(key, dtype) -> (params, args)`: a random point and the extra arguments
  (data, labels, a dropout key) for `loss_fn(params, *args)`;
- `grad_fn(params, *args)`: the hand-written, correct gradient;
- `bugs`: dict name -> (bad_grad_fn, wrong_leaf_path), where `wrong_leaf_path` is the
  leaf a checker should name, spelled as `jax.tree_util.keystr` spells it.

Every loss is written with complex-safe operations (comparisons on the real part,
no abs of the parameters' path) so `method="complex_step"` can be measured too.
Used by tests/test_corpus.py and benchmarks/verdicts.py (which puts tests/ on
sys.path); the models are tiny so the whole corpus checks in seconds.
"""

from ._dense import DENSE
from ._model import Model as Model
from ._model import all_variants as all_variants
from ._structured import STRUCTURED

MODELS: list[Model] = DENSE + STRUCTURED

__all__ = ["MODELS", "Model", "all_variants"]
