"""Pipeline stages of ``westofn.train``: data, base reward model, report.

Each stage is a keyword-only function that receives built components and
returns its result; ``westofn.train`` wires them from gin. Nothing here parses
flags or touches gin.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
from flax import nnx

from policies.checkpoints import Checkpoints
from policies.metrics_writer import MetricsWriter
from policies.policy import Policy, sample_file_rows
from policies.pretrained import PretrainedLM
from policies.sft import SequenceBatches, evaluate_policy, pack_sequences, train_policy
from policies.sharding import make_mesh, shard_module
from policies.transformer import Decoder, TransformerConfig, count_params
from rm import tasks
from rm.data import (PreferencePair, prompt_bucket, read_preference_files, split_by_prompt,
                     write_jsonl_atomic, write_text_atomic)
from rm.model import RewardModel, make_reward_model
from rm.packing import PairBatches
from rm.pairwise import PairwiseBatches, PairwiseEval, PairwisePreferenceModel, train_pairwise_model
from rm.training import EvalResult, LossConfig, TrainResult, train_reward_model
from westofn import default_task
from westofn.stage_record import StageRecord, model_identity, pairs_digest

log = logging.getLogger("westofn")


@dataclasses.dataclass(frozen=True)
class DataSource:
  """Where the preference pairs come from and how they are split by prompt.

  ``paths=None`` uses the embedded default task (generated, nothing to download).
  """

  paths: Optional[Sequence[str] | str] = None
  split: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: {"train": 0.8, "heldout": 0.2})
  split_salt: str = "westofn"
  on_error: str = "raise"
  rating_margins: Optional[Mapping[str, float]] = None
  max_pairs: Optional[int] = None
  # Caps on the size of split parts (e.g. {'heldout': 500}): a deterministic subset by
  # prompt hash, so capped runs are comparable and cheap on a CPU.
  max_per_part: Optional[Mapping[str, int]] = None
  # West-of-N's unlabeled prompts from a file (jsonl, a "prompt" per line) instead of the
  # prompts of the 'unlabeled' part.
  unlabeled_prompts: Optional[str] = None
  default_num_pairs: int = 6000
  default_seed: int = 0
  default_beta: float = 2.0
  task_name: str = "westofn_preferences"


@dataclasses.dataclass(frozen=True)
class Batching:
  rows: int = 8
  row_len: int = 256
  pairs_per_row: int = 8
  max_response_len: int = 64
  eval_rows: Optional[int] = None  # defaults to ``rows``


@dataclasses.dataclass
class PreferenceData:
  raw: dict        # split name → list[PreferencePair]
  tokenized: dict  # split name → list[TokenizedPair]
  vocabulary: object
  description: str
  is_default_task: bool  # the embedded task: its responses have a gold reward


def load_preference_data(*, source: DataSource, vocabulary) -> PreferenceData:
  """Reads (or generates), validates, splits by prompt and tokenizes via seqio."""
  if source.paths is None:
    pairs = default_task.make_default_pairs(source.default_num_pairs, seed=source.default_seed,
                                            beta=source.default_beta)
    description = (f"embedded default task: {len(pairs)} pairs, labels agree with the gold "
                   f"reward on {default_task.gold_agreement(pairs):.1%}")
  else:
    pairs, stats = read_preference_files(source.paths, on_error=source.on_error,
                                         rating_margins=source.rating_margins)
    description = f"{source.paths}: {stats.summary()}"
  if source.max_pairs is not None:
    pairs = pairs[:source.max_pairs]
  parts = split_by_prompt(pairs, source.split, salt=source.split_salt)
  for part, cap in (source.max_per_part or {}).items():
    if part not in parts:
      raise ValueError(f"DataSource.max_per_part names {part!r}, not a part of {list(parts)}")
    order = sorted(range(len(parts[part])),
                   key=lambda i: prompt_bucket(parts[part][i].prompt, source.split_salt + "/cap"))
    parts[part] = [parts[part][i] for i in sorted(order[:cap])]
  task = tasks.register_preference_task(source.task_name, parts, vocabulary)
  tokenized = {name: tasks.tokenized_pairs(task, name) for name in parts}
  sizes = ", ".join(f"{k} {len(v)}" for k, v in parts.items())
  return PreferenceData(parts, tokenized, vocabulary, f"{description}; split by prompt: {sizes}",
                        is_default_task=source.paths is None)


def pair_batches(pairs, batching: Batching, vocabulary, *, seed: int, shuffle: bool,
                 rows: Optional[int] = None, pairwise: bool = False):
  """``PairBatches`` (pointwise RM) or ``PairwiseBatches`` (both orders of each pair)."""
  cls = PairwiseBatches if pairwise else PairBatches
  return cls(pairs, rows=rows or batching.rows, row_len=batching.row_len,
             pairs_per_row=batching.pairs_per_row, max_response_len=batching.max_response_len,
             eos_id=vocabulary.eos_id, pad_id=vocabulary.pad_id, seed=seed, shuffle=shuffle)


@dataclasses.dataclass
class StageResult:
  name: str
  metrics: dict
  train: Optional[TrainResult] = None
  model: object = None     # the trained model, for the stages that build on it
  identity: Optional[dict] = None  # what the model is (its stage's identity and step)


def run_reward_model_stage(*, name: str, stage_dir: str, train_pairs, eval_pairs, vocabulary,
                           model_config: Callable[..., TransformerConfig],
                           make_optimizer: Callable, batching: Batching, num_steps: int,
                           loss: LossConfig, seed: int, log_every: int, eval_every: int,
                           save_every: int, progress: bool = True,
                           backbone: Optional[PretrainedLM] = None,
                           pairwise: bool = False) -> StageResult:
  """Trains one reward model in ``stage_dir`` (resuming) and evaluates it on ``eval_pairs``.

  With ``backbone`` the RM starts from that pretrained LM (a new scalar head on its
  final hidden state, as InstructGPT and Llama 2 do); otherwise from scratch with
  ``model_config``. ``pairwise=True`` trains a pairwise preference model
  (``rm.pairwise``) on the same pairs, in both orders, instead of a pointwise RM.
  """
  os.makedirs(stage_dir, exist_ok=True)
  model_cls = PairwisePreferenceModel if pairwise else RewardModel
  if backbone is not None:
    model = model_cls(backbone.load(seed=seed), rngs=nnx.Rngs(params=seed))
    if model.backbone.cfg.vocab_size < vocabulary.vocab_size:
      raise ValueError(f"the vocabulary has {vocabulary.vocab_size} tokens but the pretrained "
                       f"model {backbone.describe()} only {model.backbone.cfg.vocab_size}")
  elif pairwise:
    rngs = nnx.Rngs(params=seed)
    model = model_cls(Decoder(model_config(vocab_size=vocabulary.vocab_size), rngs=rngs),
                      rngs=rngs)
  else:
    model = make_reward_model(model_config(vocab_size=vocabulary.vocab_size), seed=seed)
  mesh = make_mesh()
  shard_module(model, mesh)
  log.info("%s: %s parameters, %d train pairs, %d held-out pairs, %d steps on %d device(s)",
           name, f"{count_params(model):,}", len(train_pairs), len(eval_pairs), num_steps,
           mesh.size)
  record = StageRecord(stage_dir)
  record.check_identity({
      "kind": "pairwise" if pairwise else "pointwise", "seed": seed,
      "train_pairs": pairs_digest(train_pairs), "model": model_identity(model.backbone.cfg),
      "backbone": backbone.describe() if backbone is not None else None,
      "batching": dataclasses.asdict(batching),
      "loss": None if pairwise else dataclasses.asdict(loss)})
  eval_cls = PairwiseEval if pairwise else EvalResult
  eval_key = lambda step: {"step": step, "eval_pairs": pairs_digest(eval_pairs)}
  checkpoints = Checkpoints(os.path.join(stage_dir, "checkpoints"), save_every=save_every)
  done = checkpoints.latest_step()
  cached = record.cached_eval(eval_key(done), eval_cls) if done == num_steps else None
  if cached is not None:
    checkpoints.restore(model)
    checkpoints.close()
    log.info("%s: finished (step %d) with held-out accuracy %.4f; reusing it", name, done,
             cached.metrics["accuracy"])
    return StageResult(name, dict(cached.metrics), TrainResult(done, cached, []), model)
  optimizer = make_optimizer(model, total_steps=num_steps)
  log.info("%s: %s", name, optimizer.wrt.describe(model) if hasattr(optimizer.wrt, "describe")
           else "all parameters train")
  train_stream = pair_batches(train_pairs, batching, vocabulary, seed=seed, shuffle=True,
                              pairwise=pairwise)
  eval_batches = pair_batches(eval_pairs, batching, vocabulary, seed=0, shuffle=False,
                              rows=batching.eval_rows, pairwise=pairwise).one_pass()
  writer = MetricsWriter(stage_dir)
  try:
    common = dict(model=model, optimizer=optimizer, train_batches=train_stream,
                  num_steps=num_steps, writer=writer, checkpoints=checkpoints,
                  eval_batches=eval_batches, eval_every=eval_every, log_every=log_every,
                  mesh=mesh, progress=progress, desc=name)
    result = (train_pairwise_model(**common) if pairwise else
              train_reward_model(loss=loss, **common))
  finally:
    writer.close()
    checkpoints.close()
  metrics = dict(result.eval.metrics)
  write_text_atomic(os.path.join(stage_dir, "eval.json"), json.dumps(metrics, indent=2))
  record.save_eval(eval_key(result.step), result.eval)
  return StageResult(name, metrics, result, model)


def format_report(results: Sequence[StageResult], data_description: str) -> str:
  lines = [f"data: {data_description}", "",
           "| model | trained on | held-out accuracy | chosen mean | rejected mean | mean margin "
           "| held-out pairs |",
           "|---|---|---|---|---|---|---|"]
  num = lambda m, k: f"{m[k]:+.3f}" if k in m else "—"   # a pairwise model has no rewards
  for r in results:
    m = r.metrics
    lines.append(f"| {r.name} | {m.get('trained_on', '')} | {m['accuracy']:.4f} | "
                 f"{num(m, 'chosen_mean')} | {num(m, 'rejected_mean')} | "
                 f"{num(m, 'margin_mean')} | {m['num_pairs']} |")
  return "\n".join(lines) + "\n"


def format_round_counts(rounds: Sequence[dict]) -> str:
  keys = ("prompts", "fewer_than_2_distinct", "usable", "pass_confidence", "pass_likelihood",
          "kept", "confidence_threshold", "likelihood_threshold")

  def cell(value):
    return "off" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)

  lines = ["", "| West-of-N round | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
  for i, c in enumerate(rounds, start=1):
    lines.append(f"| {i} | " + " | ".join(cell(c.get(k)) for k in keys) + " |")
  return "\n".join(lines) + "\n"


def format_best_of_n(gold: dict, n: int) -> str:
  lines = ["", f"Gold reward of the best-of-{n} policy sample picked by each RM (held-out "
           "prompts; 'random' takes the first sample, 'oracle' the truly best):", "",
           "| picker | mean gold reward |", "|---|---|"]
  lines += [f"| {k} | {v:+.3f} |" for k, v in gold.items()]
  return "\n".join(lines) + "\n"


def gold_accuracy_ceiling(pairs: Sequence[PreferencePair]) -> Optional[float]:
  """For the default task: how often held-out labels agree with the gold reward."""
  try:
    return default_task.gold_agreement(list(pairs))
  except ValueError:
    return None


def summarize_lengths(tokenized) -> str:
  lens = np.array([len(p.prompt) + len(p.chosen) + len(p.rejected) for p in tokenized])
  return f"tokens per pair: median {np.median(lens):.0f}, p90 {np.percentile(lens, 90):.0f}"


@dataclasses.dataclass(frozen=True)
class PolicySft:
  """SFT of the policy LM on chosen responses, then samples on held-out prompts."""

  num_steps: int = 600
  rows: int = 8
  row_len: int = 256
  max_sequences_per_row: int = 16
  max_response_len: int = 32
  num_samples: int = 4
  num_prompts: int = 64
  max_new_tokens: int = 32
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  max_eval_examples: int = 1024  # held-out perplexity on at most this many chosen responses


def run_policy_stage(*, stage_dir: str, data: PreferenceData, model_config: Callable,
                     make_optimizer: Callable, settings: PolicySft, seed: int, log_every: int,
                     eval_every: int, save_every: int, progress: bool = True,
                     pretrained: Optional[PretrainedLM] = None) -> StageResult:
  """SFT on chosen responses (resuming), held-out perplexity, and sampled responses.

  With ``pretrained`` the policy starts from that LM; ``settings.num_steps = 0`` then
  uses it as it is (no SFT), as West-of-N with an off-the-shelf chat model does.
  """
  os.makedirs(stage_dir, exist_ok=True)
  vocab = data.vocabulary
  if pretrained is not None:
    model = pretrained.load(seed=seed)
  else:
    model = Decoder(model_config(vocab_size=vocab.vocab_size), rngs=nnx.Rngs(params=seed))
  mesh = make_mesh()
  shard_module(model, mesh)
  examples = lambda split: [(p.prompt, p.chosen) for p in data.tokenized[split]]
  shape = dict(rows=settings.rows, row_len=settings.row_len,
               max_sequences_per_row=settings.max_sequences_per_row,
               max_response_len=settings.max_response_len, eos_id=vocab.eos_id,
               pad_id=vocab.pad_id)
  log.info("policy_sft: %s parameters, %d SFT examples, %d steps", f"{count_params(model):,}",
           len(data.tokenized["train"]), settings.num_steps)
  record = StageRecord(stage_dir)
  identity = {
      "kind": "policy", "seed": seed, "sft_pairs": pairs_digest(data.tokenized["train"]),
      "model": model_identity(model.cfg),
      "pretrained": pretrained.describe() if pretrained is not None else None,
      "packing": {k: v for k, v in shape.items() if k not in ("eos_id", "pad_id")}}
  record.check_identity(identity)
  identity = {**identity, "step": settings.num_steps}
  sampling = {k: v for k, v in dataclasses.asdict(settings).items() if k != "num_steps"}
  eval_key = lambda step: {"step": step, "sampling": sampling,
                           "heldout": pairs_digest(data.tokenized["heldout"])}
  samples_path = os.path.join(stage_dir, "samples.jsonl")
  checkpoints = (Checkpoints(os.path.join(stage_dir, "checkpoints"), save_every=save_every)
                 if settings.num_steps > 0 else None)
  done = checkpoints.latest_step() if checkpoints is not None else 0
  cached = record.cached_metrics(eval_key(done)) if done == settings.num_steps else None
  if cached is not None and os.path.exists(samples_path):
    if checkpoints is not None:
      checkpoints.restore(model)
      checkpoints.close()
    log.info("policy_sft: finished (step %d); reusing it and its samples", done)
    return StageResult("policy_sft", cached, None, _policy(model, vocab, settings), identity)
  stream = SequenceBatches(examples("train"), seed=seed, **shape)
  eval_batches = pack_sequences(examples("heldout")[:settings.max_eval_examples], **shape)
  if settings.num_steps > 0:
    optimizer = make_optimizer(model, total_steps=settings.num_steps)
    writer = MetricsWriter(stage_dir)
    try:
      evaluation = train_policy(
          model=model, optimizer=optimizer, train_batches=stream, num_steps=settings.num_steps,
          writer=writer, checkpoints=checkpoints, eval_batches=eval_batches,
          eval_every=eval_every, log_every=log_every, mesh=mesh, progress=progress,
          desc="policy_sft").eval
    finally:
      writer.close()
      checkpoints.close()
  else:
    evaluation = evaluate_policy(model=model, batches=eval_batches, mesh=mesh)
  metrics = {f"heldout_{k}": v for k, v in evaluation.metrics.items()}
  policy = _policy(model, vocab, settings)
  prompts = sorted({p.prompt for p in data.raw["heldout"]})[:settings.num_prompts]
  samples = policy.sample(prompts, settings.num_samples, seed=seed)
  write_jsonl_atomic(samples_path, sample_file_rows(prompts, samples))
  flat = [s for ss in samples for s in ss]
  metrics["samples_ended_with_eos"] = float(np.mean([s.stopped_at_eos for s in flat]))
  metrics["samples_mean_logprob"] = float(np.mean([s.mean_logprob for s in flat]))
  if data.is_default_task:
    rng = np.random.default_rng(seed)
    metrics["gold_reward_policy"] = float(np.mean(
        [default_task.gold_reward(p, s.text) for p, ss in zip(prompts, samples) for s in ss]))
    metrics["gold_reward_behaviour"] = float(np.mean(
        [default_task.gold_reward(p, default_task.behaviour_response(rng, p))
         for p in prompts for _ in range(settings.num_samples)]))
  write_text_atomic(os.path.join(stage_dir, "eval.json"), json.dumps(metrics, indent=2))
  record.save_metrics(eval_key(settings.num_steps), metrics)
  examples_text = [f"{p!r} -> {[s.text for s in ss]}" for p, ss in zip(prompts[:5], samples)]
  log.info("policy samples:\n  %s", "\n  ".join(examples_text))
  return StageResult("policy_sft", metrics, None, policy, identity)


def _policy(model: Decoder, vocabulary, settings: PolicySft) -> Policy:
  return Policy(model, vocabulary, max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)


def format_policy_report(result: StageResult) -> str:
  m = result.metrics
  lines = ["", "| policy | held-out perplexity | samples ending in EOS | mean log-prob / token |"
           + (" gold reward: policy | gold reward: behaviour data |" if "gold_reward_policy" in m
              else ""),
           "|---|---|---|---|" + ("---|---|" if "gold_reward_policy" in m else "")]
  line = (f"| policy_sft | {m['heldout_perplexity']:.3f} | {m['samples_ended_with_eos']:.1%} | "
          f"{m['samples_mean_logprob']:.3f} |")
  if "gold_reward_policy" in m:
    line += f" {m['gold_reward_policy']:+.3f} | {m['gold_reward_behaviour']:+.3f} |"
  lines.append(line)
  return "\n".join(lines) + "\n"
