"""Metrics to ``metrics.jsonl`` and TensorBoard event files in the model directory."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping

from policies.core.atomic import write_text_atomic


class MetricsWriter:
  """Appends one JSON object per (step, split) and mirrors scalars to TensorBoard."""

  def __init__(self, log_dir: str, *, tensorboard: bool = True):
    os.makedirs(log_dir, exist_ok=True)
    self.path = os.path.join(log_dir, "metrics.jsonl")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(log_dir)

  def resume_at(self, step: int) -> None:
    """Drops the rows a killed run logged after its last checkpoint (``step``): the resumed
    run logs those steps again, and a reader should see each (step, split) once."""
    if not os.path.exists(self.path):
      return
    with open(self.path, encoding="utf-8") as f:
      lines = f.readlines()
    kept = [l for l in lines if l.endswith("\n") and json.loads(l)["step"] <= step]
    if len(kept) != len(lines):
      write_text_atomic(self.path, "".join(kept))

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    clean = {k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in scalars.items()}
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps({"step": int(step), "split": split, "time": time.time(), **clean}) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class NullWriter:
  def resume_at(self, step):
    pass

  def write(self, step, split, scalars):
    pass

  def close(self):
    pass
