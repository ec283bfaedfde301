"""Reward-model stages: the base RM, the pairwise judge, the human-100% reference, and the
one trainer they and the West-of-N students share."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Callable, Optional, Sequence

import numpy as np
from flax import nnx

from policies.core.sharding import bytes_per_device
from policies.core.stage_dir import StageDir, model_identity, pairs_digest, params_digest
from policies.core.train_loop import to_device
from policies.transformer import Decoder, count_params
from rm.losses import gold_correct
from rm.model import RewardModel, make_reward_model
from rm.pairwise import PairwiseEval, PairwisePreferenceModel, train_pairwise_model
from rm.training import EvalResult, TrainResult, step_temp_bytes, train_reward_model
from westofn import compat
from westofn.errors import ConfigError
from westofn.eval_sets import evaluate_sets_cached
from rm.pairwise import pair_batches
from westofn.pipeline import PreferenceData
from westofn.settings import RewardModelRecipe
from westofn.stages.common import RunContext, StageResult
from westofn.settings import DataSource

log = logging.getLogger("westofn")


def build_reward_model(*, model_config: Optional[Callable], backbone, vocabulary, seed: int,
                       pairwise: bool = False):
  """A new pointwise RM (or pairwise model) from a pretrained LM ``backbone`` (a Hugging Face
  sequence-classification RM directory brings its ``score`` head along) or, without one,
  from scratch with ``model_config(vocab_size=...)``."""
  model_cls = PairwisePreferenceModel if pairwise else RewardModel
  if backbone is not None:
    model = model_cls(backbone.load(seed=seed), rngs=nnx.Rngs(params=seed))
    if model.backbone.cfg.vocab_size < vocabulary.vocab_size:
      raise ConfigError(f"the vocabulary has {vocabulary.vocab_size} tokens but the pretrained "
                        f"model {backbone.describe()} only {model.backbone.cfg.vocab_size}")
    head = backbone.load_reward_head()
    if head is not None:
      if pairwise:
        raise ConfigError(f"{backbone.describe()} is a reward model (a score head); a pairwise "
                          "judge starts from a language model")
      model.head_w[...], model.head_b[...] = head
    return model
  if model_config is None:
    raise ConfigError("give RewardModelRecipe.model_config (a reward model from scratch) or "
                      "RewardModelRecipe.backbone (one initialised from a pretrained LM)")
  cfg = model_config(vocab_size=vocabulary.vocab_size)
  if pairwise:
    rngs = nnx.Rngs(params=seed)
    return model_cls(Decoder(cfg, rngs=rngs), rngs=rngs)
  return make_reward_model(cfg, seed=seed)


def gold_verdicts(evaluation, gold) -> np.ndarray:
  """Per pair with a gold preference (gold ties dropped): 1 if a pointwise or pairwise
  evaluation ranks it as the gold reward does, 0 if not, 0.5 for the model's tie; ``gold``
  is the pairs' gold rewards ``(chosen, rejected)``. What paired tests over pairs compare."""
  if isinstance(evaluation, PairwiseEval):
    c, r = evaluation.prob_chosen, np.full_like(evaluation.prob_chosen, 0.5)
  else:
    c, r = evaluation.chosen, evaluation.rejected
  correct, counted = gold_correct(np.asarray(c), np.asarray(r), *map(np.asarray, gold))
  return np.asarray(correct, np.float64)[np.asarray(counted)]


def gold_metrics(evaluation, gold) -> dict:
  """Accuracy against the gold reward (gold ties dropped) of a pointwise or pairwise
  evaluation, given the held-out pairs' gold rewards ``(chosen, rejected)``."""
  verdicts = gold_verdicts(evaluation, gold)
  return {"gold_accuracy": float(verdicts.mean()) if verdicts.size else float("nan"),
          "gold_pairs": int(verdicts.size)}


def reward_model_stage(*, name: str, stage_dir: str, train_pairs: Sequence, eval_pairs: Sequence,
                       run: RunContext, recipe: RewardModelRecipe, pairwise: bool = False,
                       validation_pairs: Optional[Sequence] = None,
                       eval_gold: Optional[tuple] = None,
                       start: Optional[StageResult] = None) -> StageResult:
  """Trains one reward model in ``stage_dir`` (resuming) and evaluates it on ``eval_pairs``.

  ``pairwise=True`` trains a pairwise preference model (``rm.pairwise``) on the same
  pairs, in both orders, instead of a pointwise RM. With ``recipe.selection`` the
  checkpoint is chosen on ``validation_pairs`` (never on ``eval_pairs``). ``eval_gold``
  (the held-out pairs' gold rewards, chosen and rejected) adds ``gold_accuracy``.
  ``start``: a trained RM of the same architecture whose parameters this one starts from
  (continued training) instead of a new initialisation.
  """
  with run.metered(name):
    return _train_and_evaluate(name=name, stage_dir=stage_dir, train_pairs=train_pairs,
                               eval_pairs=eval_pairs, run=run, recipe=recipe, pairwise=pairwise,
                               validation_pairs=validation_pairs, eval_gold=eval_gold,
                               start=start)


def _train_and_evaluate(*, name: str, stage_dir: str, train_pairs: Sequence,
                        eval_pairs: Sequence, run: RunContext, recipe: RewardModelRecipe,
                        pairwise: bool, validation_pairs: Optional[Sequence],
                        eval_gold: Optional[tuple], start: Optional[StageResult]) -> StageResult:
  selection = recipe.selection
  if selection is not None and not validation_pairs:
    raise ConfigError(f"{name}: checkpoint selection (RewardModelRecipe.selection) needs a "
                      "'validation' part "
                      "in DataSource.split, e.g. {'train': 0.35, 'validation': 0.05, "
                      "'unlabeled': 0.4, 'heldout': 0.2}")
  stage = StageDir(stage_dir)
  vocabulary, batching, seed = run.vocabulary, recipe.batching, run.seed
  model = build_reward_model(model_config=recipe.model_config, backbone=recipe.backbone,
                             vocabulary=vocabulary, seed=seed, pairwise=pairwise)
  if start is not None:
    if type(start.model) is not type(model) or (start.model.backbone.cfg
                                                 != model.backbone.cfg):
      raise ConfigError(f"{name} cannot start from {start.name}: another kind of model or "
                        "another architecture")
    nnx.update(model, nnx.state(start.model, nnx.Param))
  mesh = run.partitioning.mesh()
  run.partitioning.place(model, mesh)
  train_stream = pair_batches(train_pairs, batching, vocabulary, seed=seed, shuffle=True,
                              pairwise=pairwise)
  num_steps = recipe.steps_for(len(train_stream.epoch(0)))
  identity = {
      "kind": "pairwise" if pairwise else "pointwise", "seed": seed,
      "train_pairs": pairs_digest(train_pairs), "model": model_identity(model.backbone.cfg),
      "backbone": recipe.backbone.describe() if recipe.backbone is not None else None,
      "batching": dataclasses.asdict(batching),
      "loss": None if pairwise else dataclasses.asdict(recipe.loss)}
  if selection is not None:   # left out when off, so that older records still match
    identity.update(selection=selection.record(), eval_every=run.eval_every,
                    validation_pairs=pairs_digest(validation_pairs))
  if recipe.epochs is not None:
    identity.update(epochs=recipe.epochs, min_steps=recipe.min_steps)
  if start is not None:   # left out when off, so that older records still match
    identity["start"] = {"stage": start.name, "params": params_digest(start.model)}
  averaging = {"average_decay": selection.average_decay} if (
      selection is not None and selection.average_decay) else {}
  optimizer = recipe.make_optimizer(model, total_steps=num_steps, **averaging)
  if hasattr(optimizer, "record"):
    identity["optimizer"] = optimizer.record()
  stage.record.check_identity(identity, added_later=compat.REWARD_MODEL_ADDED_LATER)
  log.info("%s: %s parameters, %d train pairs, %d held-out pairs, %d steps; %s",
           name, f"{count_params(model):,}", len(train_pairs), len(eval_pairs), num_steps,
           run.partitioning.describe(mesh))
  eval_cls = PairwiseEval if pairwise else EvalResult
  checkpoints = stage.checkpoints(run.save_every, keep=run.keep_checkpoints)
  done = checkpoints.latest_step()
  if selection is None:
    eval_key = lambda step: {"step": step, "eval_pairs": pairs_digest(eval_pairs)}
    finished = done == num_steps
  else:  # an early-stopped run finishes before num_steps: the key names the budget instead
    eval_key = lambda step: {"num_steps": num_steps, "eval_pairs": pairs_digest(eval_pairs)}
    finished = done is not None
  cached = stage.reuse(eval_key(done), checkpoints=checkpoints, model=model, finished=finished,
                       eval_cls=eval_cls)
  if cached is not None:
    metrics = dict(cached.metrics)
    log.info("%s: finished (step %d) with held-out accuracy %.4f; reusing it", name, done,
             metrics["accuracy"])
    return StageResult(name, metrics, TrainResult(done, cached, [], metrics.get("best_step")),
                       model)
  run.partitioning.place(optimizer, mesh)
  memory = (f"per device: parameters {bytes_per_device(nnx.state(model, nnx.Param)) / 1e6:.1f} MB"
            f", optimizer state "
            f"{bytes_per_device(nnx.state(optimizer, nnx.optimizer.OptState)) / 1e6:.1f} MB")
  if run.partitioning.memory_report and not pairwise:
    first = to_device(next(iter(train_stream(0))).arrays(), mesh)
    memory += (f", activations and workspace of a step (XLA) "
               f"{step_temp_bytes(model, optimizer, first, recipe.loss) / 1e6:.1f} MB")
  log.info("%s: %s", name, memory)
  log.info("%s: %s", name, optimizer.wrt.describe(model) if hasattr(optimizer.wrt, "describe")
           else "all parameters train")
  eval_batches = pair_batches(eval_pairs, batching, vocabulary, seed=0, shuffle=False,
                              rows=batching.eval_rows, pairwise=pairwise).one_pass()
  writer = stage.metrics_writer()
  best = (stage.checkpoints(0, subdir="best_checkpoint", model_only=True, keep=1)
          if selection is not None else None)
  disk = checkpoints.bytes_per_step(model, optimizer) * checkpoints.keep + (
      best.bytes_per_step(model) if best is not None else 0)
  log.info("%s: its checkpoints take up to %.2f GB (the last %d steps%s; "
           "RunSettings.keep_checkpoints)", name, disk / 1e9, checkpoints.keep,
           " and the best parameters" if best is not None else "")
  try:
    common = dict(model=model, optimizer=optimizer, train_batches=train_stream,
                  num_steps=num_steps, writer=writer, checkpoints=checkpoints,
                  eval_batches=eval_batches, eval_every=run.eval_every,
                  log_every=run.log_every, mesh=mesh, progress=run.progress, desc=name)
    if selection is not None:
      common.update(selection=selection, best_checkpoints=best, validation_batches=pair_batches(
          validation_pairs, batching, vocabulary, seed=0, shuffle=False,
          rows=batching.eval_rows, pairwise=pairwise).one_pass())
    result = (train_pairwise_model(**common) if pairwise else
              train_reward_model(loss=recipe.loss, **common))
  finally:
    writer.close()
    checkpoints.close()
    if best is not None:
      best.close()
  metrics = dict(result.eval.metrics)
  if eval_gold is not None:
    metrics.update(gold_metrics(result.eval, eval_gold))
  if selection is not None:
    metrics.update(best_step=result.best_step, stopped_at=result.step)
    if result.best_step is None:   # 0 steps (an imported RM as it is): nothing to select
      log.info("%s: trained 0 steps, so no checkpoint was selected", name)
    else:
      log.info("%s: kept step %d of %d (validation %s)", name, result.best_step, result.step,
               selection.metric)
  stage.save_result(eval_key(result.step), metrics, result.eval)
  return StageResult(name, metrics, result, model)


def evaluation_parts(data: PreferenceData) -> dict:
  """What every RM of a run is selected and evaluated on: the same validation part, the
  held-out part and, where the data has them, the held-out gold rewards."""
  if "heldout" not in data.tokenized:
    raise ConfigError(f"DataSource.split has the parts {sorted(data.tokenized)} but no "
                      "'heldout' part, which every reward model is evaluated on: name one, "
                      "e.g. {'train': 0.9, 'heldout': 0.1}")
  return dict(eval_pairs=data.tokenized["heldout"],
              validation_pairs=data.tokenized.get("validation"), eval_gold=data.gold("heldout"))


def base_rm(*, data: PreferenceData, run: RunContext, recipe: RewardModelRecipe) -> StageResult:
  """RM(human): the base reward model on the human-labelled part."""
  train = data.tokenized["train"]
  result = reward_model_stage(name="base_rm", stage_dir=run.layout.stage("base_rm"),
                              train_pairs=train, run=run, recipe=recipe, **evaluation_parts(data))
  result.metrics["trained_on"] = f"human {len(train)}"
  return result


def pairwise_judge(*, data: PreferenceData, run: RunContext,
                   recipe: RewardModelRecipe) -> StageResult:
  """The paper's West-of-N judge: a pairwise preference model on the same human pairs."""
  train = data.tokenized["train"]
  result = reward_model_stage(
      name="pairwise_pm", stage_dir=run.layout.stage("pairwise_pm"),
      train_pairs=train, run=run, recipe=recipe, pairwise=True, **evaluation_parts(data))
  result.metrics["trained_on"] = f"human {len(train)} (pairwise)"
  return result


def human_100(*, data: PreferenceData, run: RunContext, recipe: RewardModelRecipe) -> StageResult:
  """The reference RM(human 100%): trained on the unlabeled part's human labels too."""
  if "unlabeled" not in data.tokenized:
    raise ConfigError("the human_100 stage trains on the 'train' and 'unlabeled' parts")
  both = data.tokenized["train"] + data.tokenized["unlabeled"]
  result = reward_model_stage(
      name="human_100", stage_dir=run.layout.stage("human_100"), train_pairs=both,
      run=run, recipe=recipe, **evaluation_parts(data))
  result.metrics["trained_on"] = f"human {len(both)} (with the unlabeled part's labels)"
  return result


def _model_key(result: StageResult) -> str:
  """Which trained model this is: its name, last step and held-out outputs."""
  h = hashlib.sha256(f"{result.name}|{getattr(result.train, 'step', None)}".encode())
  for field in ("chosen", "rejected", "prob_chosen"):
    h.update(np.asarray(getattr(getattr(result.train, "eval", None), field, ()),
                        np.float32).tobytes())
  return h.hexdigest()[:16]


def evaluate_named_sets(*, data: PreferenceData, run: RunContext, recipe: RewardModelRecipe,
                        rm_results: Sequence[StageResult], source: DataSource) -> dict:
  """``{RM name: {set name: metrics}}`` on the named evaluation sets
  (``DataSource.eval_paths``) for every RM of the run, kept in ``model_dir/eval_sets/``."""
  if not data.eval_sets:
    return {}
  out = {}
  for r in rm_results:
    if r.model is None:
      continue
    out[r.name] = evaluate_sets_cached(
        r.model, data.eval_sets, cache_path=run.layout.eval_sets_cache(r.name),
        model_key=_model_key(r), batching=recipe.batching, vocabulary=run.vocabulary,
        pairwise=isinstance(r.model, PairwisePreferenceModel), sections=source.eval_sections,
        count_overrides=source.eval_count_overrides)
    for name, m in out[r.name].items():
      log.info("%s on %s: accuracy %.4f ± %.4f (%d pairs)", r.name, name, m["accuracy"],
               m["accuracy_se"], m["num_pairs"])
  return out
