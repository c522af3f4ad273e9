"""Count XLA compilations and traces in a block (the habit of optax's log_compilations)."""

import collections
import contextlib

from jax import monitoring

_EVENTS = {"/jax/core/compile/backend_compile_duration": "compiles", "/jax/core/compile/jaxpr_trace_duration": "traces"}
_COUNTS = collections.Counter()


def _listener(event, duration, **kwargs):
    if event in _EVENTS:
        _COUNTS[_EVENTS[event]] += 1


monitoring.register_event_duration_secs_listener(_listener)


@contextlib.contextmanager
def counting():
    """`with counting() as c:` … then `c["compiles"]`, `c["traces"]`."""
    _COUNTS.clear()
    out = collections.Counter()
    yield out
    out.update(_COUNTS)
