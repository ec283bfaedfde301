"""What every stage receives (a run context, a recipe) and returns (a stage result)."""

from __future__ import annotations

import dataclasses
import contextlib
from typing import Callable, Optional

from policies.core.sharding import Partitioning
from policies.core.train_loop import LoopResult, Selection
from policies.pretrained import PretrainedLM
from rm.training import LossConfig
from westofn.costs import StageCosts
from westofn.model_dir import ModelDir
from westofn.settings import Batching



@dataclasses.dataclass(frozen=True)
class RunContext:
  """The run-wide settings every stage shares."""

  model_dir: str
  vocabulary: object
  seed: int = 0
  log_every: int = 50
  eval_every: int = 0
  save_every: int = 200
  keep_checkpoints: int = 2   # the newest checkpoint steps each stage keeps on disk
  progress: bool = True
  partitioning: Partitioning = Partitioning()
  costs: Optional[StageCosts] = None   # where each stage's wall and compile time go

  @property
  def layout(self) -> ModelDir:
    """Where the run's stages and files live under ``model_dir``."""
    return ModelDir(self.model_dir)

  def metered(self, name: str):
    """A context that books its wall time and XLA compilations to ``name`` in ``costs``."""
    return self.costs.stage(name) if self.costs is not None else contextlib.nullcontext()


@dataclasses.dataclass(frozen=True)
class RewardModelRecipe:
  """How every reward model of a run is built and trained (base, students, references).

  ``backbone`` starts each RM from a pretrained LM (a new scalar head on its final hidden
  state); otherwise ``model_config(vocab_size=...)`` builds one from scratch.
  ``selection`` keeps each RM's best checkpoint on the validation part and may stop it
  early (every RM of the run, base, students and references alike, gets the same rule).
  ``epochs`` sizes each RM's run to its data: ``epochs`` passes over its training pairs
  (at least ``min_steps``, at most ``num_steps`` steps), so that the learning-rate
  schedule runs its whole course for an RM on little data and on much.
  """

  make_optimizer: Callable
  batching: Batching
  num_steps: int
  loss: LossConfig = LossConfig()
  model_config: Optional[Callable] = None
  backbone: Optional[PretrainedLM] = None
  selection: Optional[Selection] = None
  epochs: Optional[float] = None
  min_steps: int = 0

  def steps_for(self, steps_per_epoch: int) -> int:
    """The run's length: ``num_steps``, or ``epochs`` passes clipped to [min_steps, num_steps]."""
    if self.epochs is None:
      return self.num_steps
    return int(min(self.num_steps, max(self.min_steps, round(self.epochs * steps_per_epoch))))


@dataclasses.dataclass
class StageResult:
  name: str
  metrics: dict
  train: Optional[LoopResult] = None
  model: object = None     # the trained model, for the stages that build on it
  identity: Optional[dict] = None  # what the model is (its stage's identity and step)
