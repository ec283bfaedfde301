"""The policy stage: SFT of the policy LM on chosen responses, held-out perplexity, and
sampled responses with their log-likelihoods."""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Optional

import numpy as np
from flax import nnx

from policies.core.atomic import write_jsonl_atomic
from policies.core.stage_dir import StageDir, model_identity, pairs_digest
from policies.policy import Policy, sample_file_rows
from policies.pretrained import PretrainedLM
from policies.sft import SequenceBatches, evaluate_policy, pack_sequences, train_policy
from policies.transformer import Decoder, count_params
from westofn import compat
from westofn.errors import ConfigError
from westofn.pipeline import PreferenceData
from westofn.stages.common import RunContext, StageResult
from westofn.settings import PolicySft

log = logging.getLogger("westofn")


def policy_sft(*, data: PreferenceData, run: RunContext, settings: PolicySft,
               model_config: Optional[Callable] = None, make_optimizer: Optional[Callable] = None,
               pretrained: Optional[PretrainedLM] = None) -> StageResult:
  """SFT on chosen responses (resuming), held-out perplexity, and sampled responses.

  With ``pretrained`` the policy starts from that LM; ``settings.num_steps = 0`` then
  uses it as it is (no SFT), as West-of-N with an off-the-shelf chat model does.
  """
  if pretrained is None and model_config is None:
    raise ConfigError("the policy_sft stage needs PolicyRecipe.model_config (see "
                      "gin/policy_demo.gin) or PolicyRecipe.backbone (gin/smollm2_hh.gin)")
  if settings.num_steps > 0 and make_optimizer is None:
    raise ConfigError("the policy_sft stage trains for PolicySft.num_steps > 0 steps and "
                      "needs PolicyRecipe.make_optimizer")
  stage = StageDir(run.layout.stage("policy_sft"))
  vocab, seed = data.vocabulary, run.seed
  if pretrained is not None:
    model = pretrained.load(seed=seed)
  else:
    model = Decoder(model_config(vocab_size=vocab.vocab_size), rngs=nnx.Rngs(params=seed))
  mesh = run.partitioning.mesh()
  run.partitioning.place(model, mesh)
  examples = lambda split: [(p.prompt, p.chosen) for p in data.tokenized[split]]
  shape = dict(rows=settings.rows, row_len=settings.row_len,
               max_sequences_per_row=settings.max_sequences_per_row,
               max_response_len=settings.max_response_len, eos_id=vocab.eos_id,
               pad_id=vocab.pad_id)
  log.info("policy_sft: %s parameters, %d SFT examples, %d steps", f"{count_params(model):,}",
           len(data.tokenized["train"]), settings.num_steps)
  identity = {
      "kind": "policy", "seed": seed, "sft_pairs": pairs_digest(data.tokenized["train"]),
      "model": model_identity(model.cfg),
      "pretrained": pretrained.describe() if pretrained is not None else None,
      "packing": {k: v for k, v in shape.items() if k not in ("eos_id", "pad_id")}}
  optimizer = (make_optimizer(model, total_steps=settings.num_steps)
               if settings.num_steps > 0 else None)
  stage.record.check_identity(
      {**identity, "optimizer": optimizer.record()} if hasattr(optimizer, "record") else identity,
      added_later=compat.POLICY_ADDED_LATER)
  identity = {**identity, "step": settings.num_steps}
  sampling = {k: v for k, v in dataclasses.asdict(settings).items() if k != "num_steps"}
  eval_key = lambda step: {"step": step, "sampling": sampling,
                           "heldout": pairs_digest(data.tokenized["heldout"])}
  checkpoints = (stage.checkpoints(run.save_every, keep=run.keep_checkpoints)
                 if settings.num_steps > 0 else None)
  done = checkpoints.latest_step() if checkpoints is not None else 0
  cached = stage.reuse(eval_key(done), checkpoints=checkpoints, model=model,
                       finished=done == settings.num_steps, files=("samples.jsonl",))
  if cached is not None:
    log.info("policy_sft: finished (step %d); reusing it and its samples", done)
    return StageResult("policy_sft", cached, None, _policy(model, vocab, settings), identity)
  stream = SequenceBatches(examples("train"), seed=seed, **shape)
  eval_batches = pack_sequences(examples("heldout")[:settings.max_eval_examples], **shape)
  if settings.num_steps > 0:
    run.partitioning.place(optimizer, mesh)
    writer = stage.metrics_writer()
    try:
      evaluation = train_policy(
          model=model, optimizer=optimizer, train_batches=stream, num_steps=settings.num_steps,
          writer=writer, checkpoints=checkpoints, eval_batches=eval_batches,
          eval_every=run.eval_every, log_every=run.log_every, mesh=mesh,
          progress=run.progress, desc="policy_sft").eval
    finally:
      writer.close()
      checkpoints.close()
  else:
    evaluation = evaluate_policy(model=model, batches=eval_batches, mesh=mesh)
  metrics = {f"heldout_{k}": v for k, v in evaluation.metrics.items()}
  policy = _policy(model, vocab, settings)
  prompts = sorted({p.prompt for p in data.raw["heldout"]})[:settings.num_prompts]
  samples = policy.sample(prompts, settings.num_samples, seed=seed)
  write_jsonl_atomic(stage.file("samples.jsonl"), sample_file_rows(prompts, samples))
  flat = [s for ss in samples for s in ss]
  metrics["samples_ended_with_eos"] = float(np.mean([s.stopped_at_eos for s in flat]))
  metrics["samples_mean_logprob"] = float(np.mean([s.mean_logprob for s in flat]))
  task = data.gold_task
  if task is not None:
    rng = np.random.default_rng(seed)
    metrics["gold_reward_policy"] = float(np.mean(
        [task.gold_reward(p, s.text) for p, ss in zip(prompts, samples) for s in ss]))
    metrics["gold_reward_behaviour"] = float(np.mean(
        [task.gold_reward(p, task.behaviour_response(rng, p))
         for p in prompts for _ in range(settings.num_samples)]))
  stage.save_result(eval_key(settings.num_steps), metrics)
  examples_text = [f"{p!r} -> {[s.text for s in ss]}" for p, ss in zip(prompts[:5], samples)]
  log.info("policy samples:\n  %s", "\n  ".join(examples_text))
  return StageResult("policy_sft", metrics, None, policy, identity)


def _policy(model: Decoder, vocabulary, settings: PolicySft) -> Policy:
  return Policy(model, vocabulary, max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
