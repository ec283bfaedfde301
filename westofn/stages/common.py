"""What every stage receives (a run context, a recipe) and returns (a stage result)."""

from __future__ import annotations

import dataclasses
import contextlib
from typing import Optional

from policies.core.sharding import Partitioning
from policies.core.train_loop import LoopResult
from westofn.costs import StageCosts
from westofn.model_dir import ModelDir
from westofn.settings import RunSettings



@dataclasses.dataclass(frozen=True, kw_only=True)
class RunContext(RunSettings):
  """The run-wide settings every stage shares: ``RunSettings`` and where the run lives."""

  model_dir: str
  vocabulary: object
  partitioning: Partitioning = Partitioning()
  costs: Optional[StageCosts] = None   # where each stage's wall and compile time go

  @property
  def layout(self) -> ModelDir:
    """Where the run's stages and files live under ``model_dir``."""
    return ModelDir(self.model_dir)

  def metered(self, name: str):
    """A context that books its wall time and XLA compilations to ``name`` in ``costs``."""
    return self.costs.stage(name) if self.costs is not None else contextlib.nullcontext()


@dataclasses.dataclass
class StageResult:
  name: str
  metrics: dict
  train: Optional[LoopResult] = None
  model: object = None     # the trained model, for the stages that build on it
  identity: Optional[dict] = None  # what the model is (its stage's identity and step)
