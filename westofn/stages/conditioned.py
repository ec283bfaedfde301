"""Policy improvement by conditioning: HIR (hindsight instruction relabeling) and C-RLFT
(class-conditioned RL fine-tuning), beside ReST and DPO. Each starts from the SFT policy,
measures it and the improved policy (asked for the best outcome or class) on held-out prompts
as ReST does, and resumes after a kill: every round's samples, relabeled data and checkpoints
are kept under its own directory, named by what it depends on."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from typing import Callable, Optional

import jax.numpy as jnp
import numpy as np

from policies.conditioning import (ConditionedPolicy, class_weights, condition_prompt,
                                   outcome_bins)
from policies.core.atomic import write_jsonl_atomic, write_text_atomic
from policies.core.stage_dir import StageDir, short_digest
from policies.hindsight import HindsightBatches, relabel, train_hindsight
from policies.sft import SequenceBatches, train_policy
from rm import tasks
from westofn.errors import ConfigError
from westofn.pipeline import PreferenceData
from westofn.samples import reuse_or_sample
from westofn.settings import CRlft, Hir, PolicySft
from westofn.stages.common import RunContext, StageResult
from westofn.stages.policy_improvement import (brief, finetune_and_measure,
                                               finish_improvement, grow_prompts, scored_samples,
                                               start_improvement)

log = logging.getLogger("westofn")
SOURCES = ("human chosen", "human rejected", "policy sample")


def outcome_instruction(k: int, num_bins: int) -> str:
  """HIR's instruction for outcome bin ``k`` (0 the worst)."""
  return f"outcome {k + 1} of {num_bins}"


def quality_class(k: int, num_bins: int) -> str:
  """C-RLFT's class of reward bin ``k`` (0 the lowest)."""
  return f"quality {k + 1} of {num_bins}"


def hir(*, data: PreferenceData, run: RunContext, settings: Hir, policy: StageResult,
        reward_model: StageResult, make_optimizer: Optional[Callable],
        name: str = "hir") -> StageResult:
  """HIR of ``policy`` (the SFT policy) with ``reward_model``'s binned reward as the outcome.
  Writes under ``model_dir/hir/<digest of everything upstream>/``, per round, the samples,
  ``provenance.jsonl`` (prompt, response, reward, normalised reward, outcome) and the
  checkpoints; over all rounds ``measures.jsonl``, ``improvement.png`` and
  ``before_after.md``. Returns the improved policy asked for the best outcome."""
  start = start_improvement(data=data, run=run, settings=settings,
                            record=dataclasses.asdict(settings), policy=policy, reference=policy,
                            reward_model=reward_model, make_optimizer=make_optimizer, name=name,
                            directory=run.layout.hir)
  current, measure, steps, rows_by_step = (start.current, start.measure, start.steps,
                                           start.rows_by_step)
  vocab, mesh, scale = run.vocabulary, run.partitioning.mesh(), start.scale
  instructions = [outcome_instruction(k, settings.num_bins) for k in range(settings.num_bins)]
  asked_best = ConditionedPolicy(current, instructions[-1])
  prompts = grow_prompts(data, settings.num_prompts)
  prompt_vocab = tasks.field_vocabulary(vocab, "prompt")
  response_vocab = tasks.field_vocabulary(vocab, "chosen")
  prompt_ids_BxK = [[np.asarray(prompt_vocab.encode(condition_prompt(p, i)), np.int32)
                     for i in instructions] for p in prompts]
  previous = start.digest
  log.info("%s: %d prompts x %d samples, %d rounds, %d outcomes, with %s", name, len(prompts),
           settings.num_samples, settings.rounds, settings.num_bins, reward_model.name)
  for r in range(1, settings.rounds + 1):
    label = f"round {r}"
    stage = StageDir(run.layout.hir_round(start.digest, r))
    # Round 1 samples the SFT policy as it is (it has never seen an instruction); later
    # rounds ask the policy for the best outcome, as it will be asked at inference.
    sampler = current if r == 1 else asked_best
    samples = reuse_or_sample(sampler, prompts, settings.num_samples, seed=run.seed + 100 * r,
                              samples_path=stage.file("samples.jsonl"))
    texts = [[s.text for s in row if s.text.strip()] for row in samples]
    rewards_BxN, valid_BxN, normalised_BxN = scored_samples(reward_model, run, settings,
                                                            prompts, texts, scale)
    outcomes_BxN = np.asarray(outcome_bins(jnp.asarray(normalised_BxN), jnp.asarray(valid_BxN),
                                           settings.num_bins))
    write_jsonl_atomic(stage.file("provenance.jsonl"), [
        {"prompt": p, "response": t, "reward": float(rewards_BxN[b, j]),
         "normalised_reward": float(normalised_BxN[b, j]), "outcome": int(outcomes_BxN[b, j])}
        for b, (p, row) in enumerate(zip(prompts, texts)) for j, t in enumerate(row)])
    examples = [e for b, row in enumerate(texts) for e in relabel(
        prompt_ids_BxK[b], [response_vocab.encode(t) for t in row],
        outcomes_BxN[b, :len(row)])]
    if not examples:
      raise ConfigError(f"{name} {label}: the policy gave no non-empty sample to relabel")
    identity = {"previous": previous, "steps": settings.steps_per_round,
                "examples": short_digest([[e.response.tolist(), e.target] for e in examples],
                                         16)}
    stage.record.check_identity(identity)
    previous = short_digest(identity, 16)
    stream = HindsightBatches(examples, batch=settings.batch, row_len=settings.row_len,
                              max_response_len=settings.max_response_len, eos_id=vocab.eos_id,
                              pad_id=vocab.pad_id, seed=run.seed + r)
    train = lambda **kw: train_hindsight(model=current.model, train_batches=stream,
                                         contrastive_coef=settings.contrastive_coef, **kw)
    metrics = finetune_and_measure(
        stage, current, run=run, mesh=mesh, num_steps=settings.steps_per_round,
        learning_rate=settings.learning_rate, make_optimizer=make_optimizer, train=train,
        measure=lambda: measure(asked_best), desc=f"{name} {label}", rows_by_step=rows_by_step,
        label=label)
    reached = Counter(e.target for e in examples)
    steps.append({"label": label, "kept": len(examples),
                  "outcomes": [reached.get(k, 0) for k in range(settings.num_bins)], **metrics})
    log.info("%s %s: %d samples relabeled (outcomes %s); %s", name, label, len(examples),
             steps[-1]["outcomes"], brief(metrics))
  return finish_improvement(name, start.root, steps, rows_by_step, reward_model,
                            model=asked_best, trained_on=f"{reward_model.name} outcomes",
                            identity={"kind": "hir", "upstream": previous,
                                      "policy": policy.identity})


def _c_rlft_responses(data: PreferenceData, prompts, texts, limit: Optional[int]):
  """(prompts, responses per prompt, sources per prompt): the policy's samples and the human
  chosen and rejected responses of the 'train' part (at most ``limit`` pairs)."""
  by_prompt = {p: ([], []) for p in prompts}
  for p, row in zip(prompts, texts):
    by_prompt[p][0].extend(row)
    by_prompt[p][1].extend([2] * len(row))
  for pair in data.raw["train"][:limit]:
    responses, sources = by_prompt.setdefault(pair.prompt, ([], []))
    responses += [pair.chosen, pair.rejected]
    sources += [0, 1]
  order = sorted(by_prompt)
  return (order, [by_prompt[p][0] for p in order], [by_prompt[p][1] for p in order])


def c_rlft(*, data: PreferenceData, run: RunContext, settings: CRlft, policy: StageResult,
           reward_model: StageResult, sft_settings: PolicySft,
           make_optimizer: Optional[Callable], name: str = "c_rlft") -> StageResult:
  """C-RLFT of ``policy`` (the SFT policy): the human and sampled responses in classes, whose
  rewards (``reward_model``'s mean normalised reward) weigh a class-conditioned SFT. Writes
  under ``model_dir/c_rlft/<digest of everything upstream>/`` the samples,
  ``provenance.jsonl`` (prompt, response, source, reward, class, weight), ``classes.json``,
  the checkpoints and the measures. Returns the policy conditioned on the best class."""
  start = start_improvement(data=data, run=run, settings=settings,
                            record=dataclasses.asdict(settings), policy=policy, reference=policy,
                            reward_model=reward_model, make_optimizer=make_optimizer, name=name,
                            directory=run.layout.c_rlft,
                            sft_shape=dataclasses.asdict(sft_settings))
  stage, current, measure, steps, rows_by_step = (start.root, start.current, start.measure,
                                                  start.steps, start.rows_by_step)
  vocab, mesh, scale = run.vocabulary, run.partitioning.mesh(), start.scale
  grow = grow_prompts(data, settings.num_prompts)
  samples = reuse_or_sample(current, grow, settings.num_samples, seed=run.seed + 100,
                            samples_path=stage.file("samples.jsonl"))
  prompts, texts, sources = _c_rlft_responses(
      data, grow, [[s.text for s in row if s.text.strip()] for row in samples],
      settings.num_prompts)
  rewards_BxN, valid_BxN, normalised_BxN = scored_samples(reward_model, run, settings,
                                                          prompts, texts, scale)
  if settings.classes == "reward_bins":
    names = [quality_class(k, settings.num_bins) for k in range(settings.num_bins)]
    class_BxN = np.asarray(outcome_bins(jnp.asarray(normalised_BxN), jnp.asarray(valid_BxN),
                                        settings.num_bins))
  else:
    names = list(SOURCES)
    class_BxN = np.full(valid_BxN.shape, -1, np.int32)
    for b, row in enumerate(sources):
      class_BxN[b, :len(row)] = row
  counted = class_BxN >= 0
  count_C = np.bincount(class_BxN[counted], minlength=len(names))
  reward_C = (np.bincount(class_BxN[counted], normalised_BxN[counted], minlength=len(names))
              / np.maximum(count_C, 1))
  weight_C = np.asarray(class_weights(jnp.asarray(reward_C), jnp.asarray(count_C),
                                      beta=settings.beta))
  best = int(np.argmax(np.where(count_C > 0, reward_C, -np.inf)))
  classes = [{"class": n, "responses": int(c), "mean_normalised_reward": float(r),
              "weight": float(w)} for n, c, r, w in zip(names, count_C, reward_C, weight_C)]
  write_text_atomic(stage.file("classes.json"), json.dumps(
      {"classes": classes, "inference_class": names[best]}, indent=2))
  write_jsonl_atomic(stage.file("provenance.jsonl"), [
      {"prompt": p, "response": t, "source": SOURCES[sources[b][j]],
       "reward": float(rewards_BxN[b, j]), "normalised_reward": float(normalised_BxN[b, j]),
       "class": names[class_BxN[b, j]], "weight": float(weight_C[class_BxN[b, j]])}
      for b, (p, row) in enumerate(zip(prompts, texts)) for j, t in enumerate(row)])
  prompt_vocab = tasks.field_vocabulary(vocab, "prompt")
  response_vocab = tasks.field_vocabulary(vocab, "chosen")
  # Each example carries its class's weight into the SFT loss (policies.sft.pack_sequences),
  # which averages a batch's tokens by weight, as ReST's reward_weighted does: the weights
  # hold relative to each other within a batch, and batches mix the classes.
  examples = [(np.asarray(prompt_vocab.encode(condition_prompt(p, names[class_BxN[b, j]])),
                          np.int32),
               np.asarray(response_vocab.encode(texts[b][j]), np.int32),
               float(weight_C[class_BxN[b, j]]))
              for b, p in enumerate(prompts) for j in range(len(texts[b]))
              if class_BxN[b, j] >= 0 and weight_C[class_BxN[b, j]] > 0]
  identity = {"steps": settings.num_steps, "classes": classes,
              "examples": short_digest([[e[0].tolist(), e[1].tolist(), e[2]] for e in examples],
                                       16)}
  stage.record.check_identity(identity)
  stream = SequenceBatches(examples, seed=run.seed + 1, rows=sft_settings.rows,
                           row_len=sft_settings.row_len,
                           max_sequences_per_row=sft_settings.max_sequences_per_row,
                           max_response_len=sft_settings.max_response_len, eos_id=vocab.eos_id,
                           pad_id=vocab.pad_id)
  asked_best = ConditionedPolicy(current, names[best])
  train = lambda **kw: train_policy(model=current.model, train_batches=stream, **kw)
  label = f"conditioned on '{names[best]}'"
  log.info("%s: %d responses in %d classes %s; weights %s; inference class %r", name,
           len(examples), len(names), count_C.tolist(), np.round(weight_C, 3).tolist(),
           names[best])
  metrics = finetune_and_measure(
      stage, current, run=run, mesh=mesh, num_steps=settings.num_steps,
      learning_rate=settings.learning_rate, make_optimizer=make_optimizer, train=train,
      measure=lambda: measure(asked_best), desc=name, rows_by_step=rows_by_step, label=label)
  steps.append({"label": label, "kept": len(examples), **metrics})
  log.info("%s: %s", name, brief(metrics))
  return finish_improvement(
      name, stage, steps, rows_by_step, reward_model, model=asked_best, classes=classes,
      trained_on=f"{settings.classes} classes, {reward_model.name} rewards",
      identity={"kind": "c_rlft", "upstream": short_digest(identity, 16),
                "policy": policy.identity})
