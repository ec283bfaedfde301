"""Policy-improvement stages: ReST Grow/Improve (and best-of-N rejection-sampling fine-tuning)
with a reward model, and DPO on preference pairs. Each starts from the SFT policy, measures
it and every improved policy on held-out prompts, and resumes after a kill."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Callable, Optional, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from policies import objectives
from policies.core.atomic import write_jsonl_atomic, write_npz_atomic, write_text_atomic
from policies.core.stage_dir import StageDir, pairs_digest
from policies.dpo import DpoBatches, pack_pairs, reference_logprobs, train_dpo
from policies.policy import Policy
from policies.sft import SequenceBatches, train_policy
from rm import tasks
from westofn import compat
from westofn.errors import ConfigError
from westofn.policy_measures import (before_and_after, gold_per_prompt, measure_policy,
                                     reward_model_fingerprint, reward_scale)
from westofn.plots import plot_improvement
from westofn.pipeline import PreferenceData
from westofn.stages.common import RunContext, StageResult
from policies.core.stage_dir import short_digest
from westofn.samples import pad_ragged, reuse_or_sample, score_texts
from westofn.settings import Dpo, PolicySft, Rest

log = logging.getLogger("westofn")
EVAL_SEED = 4242   # every policy of a run is measured on samples drawn with this seed offset


def fresh_policy(policy: Policy, **changes) -> Policy:
  """A policy with its own copy of the weights (training it leaves the SFT policy alone)."""
  return dataclasses.replace(policy, model=nnx.clone(policy.model), **changes)


def scored_samples(reward_model: StageResult, run: RunContext, settings, prompts, texts,
                   scale) -> tuple:
  """Each text's RM reward, its validity and its normalised reward, [prompts, responses]."""
  rewards_BxN, valid_BxN = pad_ragged(score_texts(reward_model.model, run.vocabulary, prompts,
                                                  texts, **settings.scoring.kwargs()))
  normalised_BxN = np.asarray(objectives.normalize_rewards(rewards_BxN, mean=scale[0],
                                                            std=scale[1]))
  return rewards_BxN, valid_BxN, normalised_BxN


@dataclasses.dataclass
class ImprovementStart:
  """What a policy-improvement stage that samples the policy begins with: what it depends on
  (``upstream``) and its directory named by that, a copy of the policy to improve, the RM's
  reward scale, the measure of a policy on the held-out prompts, and the starting policy's
  own measures as the first step."""
  upstream: dict
  digest: str
  root: StageDir
  scale: tuple
  current: Policy
  measure: Callable
  steps: list
  rows_by_step: dict


def start_improvement(*, data: PreferenceData, run: RunContext, settings, record: dict,
                      policy: StageResult, reference: StageResult, reward_model: StageResult,
                      make_optimizer: Optional[Callable], name: str,
                      directory: Callable[[str], str], **upstream_more) -> ImprovementStart:
  """The common beginning of ReST, HIR and C-RLFT: ``record`` is the settings as the stage's
  identity records them; ``upstream_more`` what else its directory's name depends on."""
  if make_optimizer is None:
    raise ConfigError(f"the {name} stage fine-tunes the policy and needs "
                      "PolicyRecipe.improve_optimizer (or PolicyRecipe.make_optimizer)")
  scale = reward_scale(reward_model)
  upstream = {"settings": record, "policy": policy.identity,
              "reward_model": reward_model_fingerprint(reward_model), "seed": run.seed,
              **upstream_more}
  digest = short_digest(upstream, 10)
  root = StageDir(directory(digest))
  write_text_atomic(root.file("upstream.json"),
                    json.dumps(upstream, indent=2, sort_keys=True, default=repr))
  current = fresh_policy(policy.model, max_new_tokens=settings.max_new_tokens,
                         temperature=settings.temperature)
  measure = lambda p: measure_on_heldout(data, run, policy=p, reference=reference.model,
                                         reward_model=reward_model, scale=scale,
                                         settings=settings)
  metrics, rows = measure(current)
  return ImprovementStart(upstream, digest, root, scale, current, measure,
                          [{"label": "start", "kept": None, **metrics}], {"start": rows})


def measure_on_heldout(data: PreferenceData, run: RunContext, *, policy, reference: Policy,
                       reward_model: StageResult, scale, settings):
  heldout = sorted({p.prompt for p in data.raw["heldout"]})[:settings.eval_prompts]
  return measure_policy(
      policy=policy, reference=reference, prompts=heldout, num_samples=settings.eval_samples,
      seed=run.seed + EVAL_SEED, reward_model=reward_model.model, scale=scale,
      vocabulary=run.vocabulary,
      gold_reward=data.gold_task.gold_reward if data.gold_task is not None else None,
      **settings.scoring.kwargs())


def write_measures(stage: StageDir, steps: list, rows: dict, title: str) -> None:
  """Over all steps: their measures, each prompt's gold reward per step (a gold task), the
  plot, and ten held-out prompts' responses before and after."""
  write_jsonl_atomic(stage.file("measures.jsonl"), steps)
  gold = {label: gold_per_prompt(r) for label, r in rows.items()}
  if all(g is not None for g in gold.values()):
    write_npz_atomic(stage.file("gold_per_prompt.npz"), **gold)
  plot_improvement(steps, stage.file("improvement.png"))
  write_text_atomic(stage.file("before_after.md"), before_and_after(
      rows[steps[0]["label"]], rows[steps[-1]["label"]], title=title))


def grow_prompts(data: PreferenceData, limit: Optional[int]) -> list[str]:
  """ReST's training prompts: those of the 'train' and 'unlabeled' parts (no labels needed)."""
  prompts = {p.prompt for part in ("train", "unlabeled") for p in data.raw.get(part, [])}
  return sorted(prompts)[:limit]


def rest(*, data: PreferenceData, run: RunContext, settings: Rest, policy: StageResult,
         reward_model: StageResult, sft_settings: PolicySft, make_optimizer: Optional[Callable],
         reference: Optional[StageResult] = None, name: str = "rest",
         tag: str = "") -> StageResult:
  """ReST with ``reward_model`` from ``policy`` (the SFT policy, or an improved one; the KL is
  measured from ``reference``, the SFT policy by default). Writes, under
  ``model_dir/rest/<digest of everything upstream>/``, per Improve step ``provenance.jsonl``
  (prompt, response, reward, normalised reward, threshold, kept), checkpoints and the
  measured samples; over all steps ``measures.jsonl``, ``improvement.png`` and
  ``before_after.md``. Grow samples go to ``model_dir/rest_samples/``, named by the policy,
  prompts and settings.
  Returns the improved policy (``StageResult.model``) and the last step's measures."""
  start = start_improvement(data=data, run=run, settings=settings,
                            record=compat.improvement_record(settings),
                            policy=policy, reference=reference or policy,
                            reward_model=reward_model, make_optimizer=make_optimizer,
                            name="rest", directory=run.layout.rest,
                            sft_shape=dataclasses.asdict(sft_settings), tag=tag)
  root = start.root   # what every Improve step builds on
  current, measure, steps, rows_by_step = (start.current, start.measure, start.steps,
                                           start.rows_by_step)
  vocab, mesh = run.vocabulary, run.partitioning.mesh()
  prompts = grow_prompts(data, settings.num_prompts)
  prompt_vocab = tasks.field_vocabulary(vocab, "prompt")
  response_vocab = tasks.field_vocabulary(vocab, "chosen")
  prompt_ids = [np.asarray(prompt_vocab.encode(p), np.int32) for p in prompts]
  previous = short_digest(start.upstream, 16)
  log.info("%s: %d prompts x %d samples, %d grow x %d improve steps with %s", name, len(prompts),
           settings.num_samples, settings.grow_steps, len(settings.improve_thresholds),
           reward_model.name)
  for g in range(1, settings.grow_steps + 1):
    # Named by what the samples depend on: ReST with another RM from the same policy
    # grows from the same samples, drawn once.
    sampling = {"policy": policy.identity if g == 1 else previous, "prompts": prompts,
                "seed": run.seed + 100 * g,
                **{k: getattr(settings, k) for k in ("num_samples", "max_new_tokens",
                                                     "temperature")}}
    samples_path = run.layout.rest_samples(short_digest(sampling, 12))
    samples = reuse_or_sample(current, prompts, settings.num_samples, seed=run.seed + 100 * g,
                              samples_path=samples_path)
    texts = [[s.text for s in row if s.text.strip()] for row in samples]
    rewards_BxN, valid_BxN, normalised_BxN = scored_samples(reward_model, run, settings,
                                                            prompts, texts, start.scale)
    for i, threshold in enumerate(settings.improve_thresholds, start=1):
      label = f"grow {g} improve {i}"
      if settings.keep == "best":
        keep_BxN = objectives.best_of_n_keep(jnp.asarray(rewards_BxN), jnp.asarray(valid_BxN))
      else:
        keep_BxN = objectives.threshold_keep(jnp.asarray(normalised_BxN),
                                              jnp.asarray(valid_BxN), threshold)
      keep_BxN = np.asarray(keep_BxN)
      stage = StageDir(run.layout.rest_step(start.digest, g, i))
      write_jsonl_atomic(stage.file("provenance.jsonl"), [
          {"prompt": p, "response": t, "reward": float(rewards_BxN[b, j]),
           "normalised_reward": float(normalised_BxN[b, j]), "threshold": threshold,
           "kept": bool(keep_BxN[b, j])}
          for b, (p, row) in enumerate(zip(prompts, texts)) for j, t in enumerate(row)])
      examples = [(prompt_ids[b], np.asarray(response_vocab.encode(texts[b][j]), np.int32),
                   normalised_BxN[b, j] if settings.reward_weighted else 1.0)
                  for b, j in zip(*np.nonzero(keep_BxN))]
      kept = len(examples)
      if not kept:
        log.warning("%s %s: no sample reached the threshold %.2f; the policy is unchanged",
                    name, label, threshold)
        steps.append({**steps[-1], "label": label, "kept": 0, "threshold": threshold})
        rows_by_step[label] = rows_by_step[steps[-2]["label"]]
        continue
      identity = {"previous": previous, "threshold": threshold, "kept": kept,
                  "examples": short_digest([[e[0].tolist(), e[1].tolist(), float(e[2])]
                                            for e in examples], 16),
                  "steps": settings.steps_per_improve}
      stage.record.check_identity(identity)
      previous = short_digest(identity, 16)
      metrics = _improve_step(stage, examples, current, run=run, mesh=mesh,
                              sft_settings=sft_settings, settings=settings, seed=run.seed + g,
                              make_optimizer=make_optimizer, measure=measure, desc=label,
                              rows_by_step=rows_by_step, label=label)
      steps.append({"label": label, "kept": kept, "threshold": threshold, **metrics})
      log.info("%s %s: threshold %.2f kept %d of %d samples; %s", name, label, threshold, kept,
               int(valid_BxN.sum()), brief(metrics))
  return finish_improvement(name, root, steps, rows_by_step, reward_model, model=current,
                            trained_on=f"{reward_model.name} rewards",
                            identity={"kind": "rest", "upstream": previous,
                                      "policy": policy.identity})


def finish_improvement(name: str, root: StageDir, steps: list, rows_by_step: dict,
                       reward_model: StageResult, *, model, trained_on: str, identity: dict,
                       **more) -> StageResult:
  """A policy-improvement stage's end: its measures over all steps written under ``root``,
  and its result (the last step's measures, every step's, ``more``)."""
  write_measures(root, steps, rows_by_step,
                 title=f"{name}: held-out samples before and after ({reward_model.name})")
  final = {**steps[-1], "steps": steps, **more, "trained_on": trained_on,
           "directory": root.path}
  return StageResult(name, final, None, model, identity)


def _improve_step(stage: StageDir, examples, current: Policy, *, run: RunContext, mesh,
                  sft_settings: PolicySft, settings: Rest, seed: int, make_optimizer, measure,
                  desc: str, rows_by_step: dict, label: str) -> dict:
  """Fine-tunes ``current`` in place on ``examples`` by SFT (resuming), or restores a finished
  step."""
  vocab = run.vocabulary
  stream = SequenceBatches(examples, seed=seed, rows=sft_settings.rows,
                           row_len=sft_settings.row_len,
                           max_sequences_per_row=sft_settings.max_sequences_per_row,
                           max_response_len=sft_settings.max_response_len, eos_id=vocab.eos_id,
                           pad_id=vocab.pad_id)
  train = lambda **kw: train_policy(model=current.model, train_batches=stream, **kw)
  return finetune_and_measure(stage, current, run=run, mesh=mesh,
                              num_steps=settings.steps_per_improve,
                              learning_rate=settings.learning_rate, make_optimizer=make_optimizer,
                              train=train, measure=lambda: measure(current), desc=desc,
                              rows_by_step=rows_by_step, label=label)


def finetune_and_measure(stage: StageDir, current: Policy, *, run: RunContext, mesh,
                         num_steps: int, learning_rate: float, make_optimizer,
                         train: Callable, measure: Callable, desc: str, rows_by_step: dict,
                         label: str) -> dict:
  """One fine-tuning step of a policy-improvement stage: ``train(optimizer=, num_steps=,
  writer=, checkpoints=, log_every=, mesh=, progress=, desc=)`` fine-tunes ``current`` in
  place in ``stage`` (resuming from its checkpoints), then ``measure()`` measures it on the
  held-out prompts; a finished step is restored and its measures read back."""
  checkpoints = stage.checkpoints(run.save_every, keep=run.keep_checkpoints)
  key = {"step": num_steps, "eval_seed": run.seed + EVAL_SEED}
  samples_path = stage.file("eval_samples.jsonl")
  cached = stage.reuse(key, checkpoints=checkpoints, model=current.model,
                       finished=checkpoints.latest_step() == num_steps,
                       files=("eval_samples.jsonl",))
  if cached is not None:
    rows_by_step[label] = [json.loads(line) for line in open(samples_path)]
    return cached
  optimizer = make_optimizer(current.model, total_steps=num_steps, learning_rate=learning_rate)
  run.partitioning.place(optimizer, mesh)   # the policy's weights were placed by policy_sft
  writer = stage.metrics_writer()
  try:
    train(optimizer=optimizer, num_steps=num_steps, writer=writer, checkpoints=checkpoints,
          log_every=run.log_every, mesh=mesh, progress=run.progress, desc=desc)
  finally:
    writer.close()
    checkpoints.close()
  metrics, rows = measure()
  write_jsonl_atomic(samples_path, rows)
  rows_by_step[label] = rows
  stage.save_result(key, metrics)
  return metrics


def brief(m: dict) -> str:
  keys = ("gold_reward", "proxy_reward_normalised", "kl_from_sft")
  return ", ".join(f"{k} {m[k]:.3f}" for k in keys if k in m)


def dpo(*, data: PreferenceData, run: RunContext, settings: Dpo, policy: StageResult,
        pairs: Sequence, pairs_name: str, reward_model: StageResult,
        make_optimizer: Optional[Callable], name: str = "dpo") -> StageResult:
  """DPO of the SFT ``policy`` (also the frozen reference) on tokenized ``pairs``, in
  ``model_dir/dpo/<pairs_name>-<digest>/``; the reference log-likelihoods are computed once
  and kept there. Returns the trained policy and its measures (before and after)."""
  if make_optimizer is None:
    raise ConfigError("the dpo stage trains the policy and needs PolicyRecipe.improve_optimizer "
                      "(or PolicyRecipe.make_optimizer)")
  if not pairs:
    raise ConfigError(f"the dpo stage has no {pairs_name} pairs to train on")
  vocab, mesh = run.vocabulary, run.partitioning.mesh()
  identity = {"settings": compat.improvement_record(settings), "policy": policy.identity,
              "pairs": pairs_digest(pairs), "seed": run.seed}
  stage = StageDir(run.layout.dpo(pairs_name, short_digest(identity, 8)))
  stage.record.check_identity(identity)
  trained = fresh_policy(policy.model)
  scale = reward_scale(reward_model)
  measure = lambda p: measure_on_heldout(data, run, policy=p, reference=policy.model,
                                         reward_model=reward_model, scale=scale,
                                         settings=settings)
  shape = dict(pairs_per_batch=settings.pairs_per_batch, row_len=settings.row_len,
               max_response_len=settings.max_response_len, eos_id=vocab.eos_id,
               pad_id=vocab.pad_id)
  checkpoints = stage.checkpoints(run.save_every, keep=run.keep_checkpoints)
  key = {"step": settings.num_steps, "eval_seed": run.seed + EVAL_SEED}
  cached = stage.reuse(key, checkpoints=checkpoints, model=trained.model,
                       finished=checkpoints.latest_step() == settings.num_steps)
  if cached is not None:
    log.info("%s: finished; reusing it", name)
    return StageResult(name, cached, None, trained, {"kind": "dpo", **identity})
  before, rows_before = measure(policy.model)
  reference = _cached_reference(stage, policy.model.model, pairs, shape, mesh)
  heldout = data.tokenized["heldout"][:256]
  eval_batches = pack_pairs(heldout, range(len(heldout)), **shape,
                            reference=reference_logprobs(policy.model.model, heldout, mesh=mesh,
                                                         **shape))
  optimizer = make_optimizer(trained.model, total_steps=settings.num_steps,
                             learning_rate=settings.learning_rate)
  run.partitioning.place(optimizer, mesh)   # the policy's weights were placed by policy_sft
  writer = stage.metrics_writer()
  log.info("%s: %d %s pairs, beta %g, %d steps", name, len(pairs), pairs_name, settings.beta,
           settings.num_steps)
  try:
    result = train_dpo(model=trained.model, optimizer=optimizer,
                       train_batches=DpoBatches(pairs, reference, shape, seed=run.seed),
                       num_steps=settings.num_steps, beta=settings.beta, writer=writer,
                       checkpoints=checkpoints, eval_batches=eval_batches,
                       eval_every=run.eval_every, log_every=run.log_every, mesh=mesh,
                       progress=run.progress, desc=name)
  finally:
    writer.close()
    checkpoints.close()
  after, rows_after = measure(trained)
  metrics = {**after, **{f"heldout_pairs_{k}": v for k, v in result.eval.metrics.items()},
             "trained_on": f"{len(pairs)} {pairs_name} pairs",
             "steps": [{"label": "start", **before}, {"label": "dpo", **after}],
             "directory": stage.path}
  write_measures(stage, metrics["steps"], {"start": rows_before, "dpo": rows_after},
                  title=f"{name}: held-out samples before and after")
  stage.save_result(key, metrics)
  return StageResult(name, metrics, result, trained, {"kind": "dpo", **identity})


def _cached_reference(stage: StageDir, model, pairs, shape: dict, mesh):
  """The reference's log-likelihoods of every pair, computed once per stage directory."""
  path = stage.file("reference_logprobs.npz")
  if os.path.exists(path):
    with np.load(path) as f:
      return f["chosen"], f["rejected"]
  chosen, rejected = reference_logprobs(model, pairs, mesh=mesh, **shape)
  write_npz_atomic(path, chosen=chosen, rejected=rejected)
  return chosen, rejected
