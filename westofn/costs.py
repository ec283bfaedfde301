"""Where a run's time went: each stage's wall time, its XLA compilations and their cost.

``train`` runs every stage inside ``StageCosts.stage(name)``; each stage logs one line
(``base_rm: 81.2 s wall: 4 XLA compilations took 35.1 s ...``), and the report gets the
table (stage, wall, compilations, compile, compute). ``costs.json`` in the model directory
holds the same figures for scripts (``benchmarks/time_to_result.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Optional

from policies.core.atomic import write_text_atomic
from policies.core.compile_meter import CompileCost, CompileMeter

log = logging.getLogger("westofn")
# The report's timing section starts with this (timings differ between runs of one config).
TITLE = "Where the time went"


class StageCosts:
  """The compile and compute cost of each stage of one run, in the order they ran; with
  ``path``, written there after each stage, so a run killed part way keeps its finished
  stages' costs."""

  def __init__(self, path: Optional[str] = None):
    self.stages: list[tuple[str, CompileCost]] = []
    self.path = path

  @contextlib.contextmanager
  def stage(self, name: str):
    with CompileMeter() as meter:
      yield
    self.stages.append((name, meter.cost))
    log.info("%s: %s", name, meter.cost.describe())
    if self.path:
      self.write_json(self.path)

  def total(self) -> CompileCost:
    out = CompileCost()
    for _, c in self.stages:
      out.wall_s += c.wall_s
      out.compiles += c.compiles
      out.cache_hits += c.cache_hits
      out.trace_s += c.trace_s
      out.lower_s += c.lower_s
      out.backend_s += c.backend_s
    return out

  def table(self) -> str:
    lines = ["", f"{TITLE} (XLA compilations counted from JAX's events; a read from the "
             "persistent compilation cache counts as one):", "",
             "| stage | wall s | XLA compilations (cache hits) | compile s | compile share | "
             "compute s |", "|---|---|---|---|---|---|"]
    for name, c in self.stages + [("all stages", self.total())]:
      share = c.compile_s / c.wall_s if c.wall_s else 0.0
      lines.append(f"| {name} | {c.wall_s:.1f} | {c.compiles} ({c.cache_hits}) | "
                   f"{c.compile_s:.1f} | {share:.0%} | {c.compute_s:.1f} |")
    return "\n".join(lines) + "\n"

  def write_json(self, path: str) -> None:
    write_text_atomic(path, json.dumps(
        {"stages": [{"stage": n, **c.as_dict()} for n, c in self.stages],
         "total": self.total().as_dict()}, indent=2))

