"""A trained run, restored from its ``MODEL_DIR`` alone: the operative config the run wrote
(``config.gin``) rebuilds its vocabulary, batching and reward-model recipe, and each reward
model stage (``stage.json`` + Orbax checkpoints) restores into that recipe's model. No
training data is read and nothing is retrained. Used by ``westofn.evaluate``,
``westofn.score`` and ``westofn.export``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
from typing import Optional

import gin
import numpy as np

from policies.core.stage_dir import StageDir, StageRecord, model_identity
from westofn import compat
from westofn.errors import ConfigError
from westofn.model_dir import ModelDir

log = logging.getLogger("westofn")


@dataclasses.dataclass
class TrainedRun:
  model_dir: str
  bindings: dict   # the arguments gin gave ``westofn.train.train`` in that run

  @property
  def vocabulary(self):
    return self.bindings["vocabulary"]

  @property
  def rm_recipe(self):
    return self.bindings["rm_recipe"]

  @property
  def batching(self):
    return self.rm_recipe.batching

  @property
  def data(self):
    return self.bindings["data"]


@dataclasses.dataclass
class RestoredRewardModel:
  name: str          # the stage, relative to MODEL_DIR (e.g. 'base_rm')
  model: object      # rm.model.RewardModel or rm.pairwise.PairwisePreferenceModel
  pairwise: bool
  step: int
  metadata: dict     # the checkpoint's: held-out reward_mean / reward_std / accuracy
  identity: dict     # the stage's record: data digests, model, settings


def load_run(model_dir: str) -> TrainedRun:
  """Parses ``model_dir/config.gin`` and returns the run's (evaluated) train arguments."""
  path = ModelDir(model_dir).config_gin
  if not os.path.exists(path):
    raise ConfigError(f"{model_dir}: no config.gin; is it a westofn MODEL_DIR (made by "
                      "python -m westofn.train)?")
  train_module = importlib.import_module("westofn.train")
  gin.clear_config()
  gin.configurable(train_module.train)
  try:
    text = open(path, encoding="utf-8").read()
    gin.parse_config(train_module.GROUPS)   # what a run older than its groups did not bind
    gin.parse_config(compat.upgrade_config(text))   # a run of any earlier version
    bindings = gin.get_bindings("westofn.train.train")
  except (ValueError, TypeError, KeyError, OSError, ImportError) as e:
    raise ConfigError(f"{path}: cannot be read back: {e}".replace("\n", " ")) from e
  return TrainedRun(model_dir=model_dir, bindings=bindings)


def reward_model_stages(model_dir: str) -> dict:
  """``{name: directory}`` of every trained reward-model stage under ``model_dir``."""
  return ModelDir(model_dir).reward_model_stages()


def default_stage(model_dir: str) -> str:
  """The run's product: the newest West-of-N student, else the base RM, else the only RM."""
  layout = ModelDir(model_dir)
  stages = layout.reward_model_stages()
  students = [s for s in stages if layout.is_west_of_n_student(s)]
  if students:
    return max(students, key=lambda s: os.path.getmtime(StageRecord.file_in(stages[s])))
  if "base_rm" in stages:
    return "base_rm"
  if len(stages) == 1:
    return next(iter(stages))
  raise ConfigError(f"{model_dir}: no reward model stage to pick by default; give --stage, one "
                    f"of {sorted(stages)}")


def resolve_stage(model_dir: str, stage: Optional[str]) -> tuple[str, str]:
  """``(name, directory)`` of a stage given by name (``base_rm``), path relative to
  ``model_dir`` or ``None`` (``default_stage``)."""
  stages = reward_model_stages(model_dir)
  name = default_stage(model_dir) if stage is None else os.path.normpath(stage)
  if name not in stages:
    raise ConfigError(f"{model_dir}: no trained reward model stage {stage!r}; the run has "
                      f"{sorted(stages) or 'none'}")
  return name, stages[name]


def _heldout_scale(stage: StageDir) -> dict:
  """The held-out reward mean/std from the stage's evaluation, for a stage whose checkpoint
  does not carry them (one run for 0 steps)."""
  path = stage.record.eval_path
  if not os.path.exists(path):
    return {}
  with np.load(path) as arrays:
    if "chosen" not in arrays.files:
      return {}
    both = np.concatenate([arrays["chosen"], arrays["rejected"]])
  return {"reward_mean": float(both.mean()), "reward_std": float(both.std())}


def restore_reward_model(run: TrainedRun, stage: Optional[str] = None) -> RestoredRewardModel:
  """The stage's reward model with its trained parameters (the best ones on validation
  data where the run selected checkpoints: they became its last checkpoint)."""
  from westofn.stages.reward_model import build_reward_model
  name, stage_dir = resolve_stage(run.model_dir, stage)
  directory = StageDir(stage_dir)
  identity = directory.record.identity
  pairwise = identity["kind"] == "pairwise"
  model = build_reward_model(model_config=run.rm_recipe.model_config,
                             backbone=run.rm_recipe.backbone,
                             vocabulary=run.vocabulary, seed=int(identity.get("seed", 0)),
                             pairwise=pairwise)
  built = json.loads(json.dumps(model_identity(model.backbone.cfg), default=repr))
  if identity.get("model") != built:
    changed = sorted(k for k in set(built) | set(identity.get("model") or {})
                     if built.get(k) != (identity.get("model") or {}).get(k))
    raise ConfigError(f"{stage_dir}: its model ({', '.join(changed)}) differs from the one "
                      f"{run.model_dir}/config.gin builds; was config.gin overwritten by another "
                      "run?")
  # read-only: the run may still be training into this directory
  checkpoints = directory.checkpoints(0, read_only=True)
  try:
    # A stage run for 0 steps saved nothing: its model is the one built (e.g. an imported RM).
    metadata = checkpoints.restore(model, strict=True) or {}   # a damaged stage: refused
    step = checkpoints.latest_step() or 0
  finally:
    checkpoints.close()
  if "reward_mean" not in metadata and not pairwise:
    metadata.update(_heldout_scale(directory))
  log.info("restored %s (%s, step %d) from %s", name, identity["kind"], step, stage_dir)
  return RestoredRewardModel(name, model, pairwise, step, metadata, identity)


def truncated_responses(prompt, responses, batching) -> int:
  """How many of an item's responses (token ids) the RM reads only in part: a response
  longer than ``max_response_len`` with its EOS loses its end, and when the prompt does not
  fit ``row_len`` beside the longest response, every response loses the prompt's start."""
  kept = [min(len(r) + 1, batching.max_response_len) for r in responses]   # + EOS
  if len(prompt) + max(kept) > batching.row_len:
    return len(responses)
  return sum(len(r) + 1 > batching.max_response_len for r in responses)
