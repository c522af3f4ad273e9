"""Partial evaluation per leaf: what a leaf's probes do not change is computed once.

See README.md in this folder. The engine (`jgc/_engine.py`) uses `trace`, the programs and
the path names; tests and benchmarks use `plan`. The tunables (`FORCE`, `MIN_FLOPS_SAVED`,
`MIN_SAVING`) live in `_cost` and are read there: set them on `jgc._partial._cost`.
"""

from ._cost import PARTIAL as PARTIAL
from ._cost import PLAIN_EFFECTS as PLAIN_EFFECTS
from ._cost import PLAIN_LITTLE as PLAIN_LITTLE
from ._cost import PLAIN_STENCIL as PLAIN_STENCIL
from ._cost import PLAIN_TRACED as PLAIN_TRACED
from ._cost import SPARSE as SPARSE
from ._programs import Base as Base
from ._programs import EntryFun as EntryFun
from ._programs import LeafFun as LeafFun
from ._split import Traced as Traced
from ._split import plan as plan
from ._split import trace as trace
