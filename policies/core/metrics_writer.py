"""Metrics to ``metrics.jsonl`` and TensorBoard event files in the model directory."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping


class MetricsWriter:
  """Appends one JSON object per (step, split) and mirrors scalars to TensorBoard."""

  def __init__(self, log_dir: str, *, tensorboard: bool = True):
    os.makedirs(log_dir, exist_ok=True)
    self.path = os.path.join(log_dir, "metrics.jsonl")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(log_dir)

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
  def write(self, step, split, scalars):
    pass

  def close(self):
    pass
