"""How long a piece of work spent compiling: XLA compilations counted from JAX's own events.

JAX reports each compilation through ``jax.monitoring``: tracing a function to a jaxpr,
lowering it to StableHLO, and the backend's compile (or its read from the persistent
compilation cache, which reports a hit as well). ``CompileMeter`` listens to those events
while it is open, so a pipeline stage can say how many programs it compiled, what that
cost, and how much of its wall time was left for computing.
"""

from __future__ import annotations

import dataclasses
import time

from jax import monitoring

_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_BACKEND = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT = "/jax/compilation_cache/cache_hits"


@dataclasses.dataclass
class CompileCost:
  """What one metered piece of work spent: wall seconds, XLA compilations (backend
  compiles, persistent-cache hits included) and the seconds of tracing, lowering and
  compiling."""

  wall_s: float = 0.0
  # Backend compilations; those the persistent cache answered count too, and apart.
  compiles: int = 0
  cache_hits: int = 0
  # Seconds in each phase of turning a Python function into an executable.
  trace_s: float = 0.0
  lower_s: float = 0.0
  backend_s: float = 0.0

  @property
  def compile_s(self) -> float:
    """Seconds from a Python function to an executable: trace, lower, compile."""
    return self.trace_s + self.lower_s + self.backend_s

  @property
  def compute_s(self) -> float:
    """Everything else: running programs, and the host work around them."""
    return max(self.wall_s - self.compile_s, 0.0)

  def as_dict(self) -> dict:
    return {"wall_s": round(self.wall_s, 3), "compiles": self.compiles,
            "cache_hits": self.cache_hits, "compile_s": round(self.compile_s, 3),
            "trace_s": round(self.trace_s, 3), "lower_s": round(self.lower_s, 3),
            "backend_compile_s": round(self.backend_s, 3),
            "compute_s": round(self.compute_s, 3)}

  def describe(self) -> str:
    hits = f", {self.cache_hits} from the persistent cache" if self.cache_hits else ""
    return (f"{self.wall_s:.1f} s wall: {self.compiles} XLA compilations{hits} took "
            f"{self.compile_s:.1f} s (trace {self.trace_s:.1f}, lower {self.lower_s:.1f}, "
            f"compile {self.backend_s:.1f}), {self.compute_s:.1f} s left for compute")


class CompileMeter:
  """``with CompileMeter() as m: ...``, then ``m.cost``: the compilations made inside.

  Meters nest: an outer one counts what inner ones count. Each listens from ``__enter__``
  to ``__exit__`` only; JAX's listeners are process-wide, so work on other threads at the
  same time is counted too.
  """

  def __init__(self):
    self.cost = CompileCost()
    self._t0 = None

  def _on_duration(self, event: str, seconds: float, **_) -> None:
    if event == _TRACE:
      self.cost.trace_s += seconds
    elif event == _LOWER:
      self.cost.lower_s += seconds
    elif event == _BACKEND:
      self.cost.backend_s += seconds
      self.cost.compiles += 1

  def _on_event(self, event: str, **_) -> None:
    if event == _CACHE_HIT:
      self.cost.cache_hits += 1

  def __enter__(self) -> "CompileMeter":
    self._t0 = time.perf_counter()
    monitoring.register_event_duration_secs_listener(self._on_duration)
    monitoring.register_event_listener(self._on_event)
    return self

  def __exit__(self, *exc) -> None:
    monitoring.unregister_event_duration_listener(self._on_duration)
    monitoring.unregister_event_listener(self._on_event)
    self.cost.wall_s = time.perf_counter() - self._t0
