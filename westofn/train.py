r"""Entry point: ``python -m westofn.train --gin_file=gin/demo.gin --gin.MODEL_DIR=/tmp/demo``.

Flags, t5x style:
  --gin_file=F          a .gin file (repeatable; found relative to --gin_search_paths)
  --gin.NAME=VALUE      one binding, e.g. --gin.train.num_steps=200; a bare string
                        value such as a path is quoted for you
  --gin_search_paths=P  comma-separated directories to look for gin files in
  --gin_bindings=B      a raw gin binding (repeatable)

The operative config (every value the run used) is written to MODEL_DIR/config.gin.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import hashlib
import importlib
import json
import logging
import os
import sys
from typing import Callable, Optional, Sequence

import gin

from policies.pretrained import PretrainedLM
from rm import tasks
from rm.data import read_prompt_file, write_text_atomic
from westofn import default_task, pipeline, plots, west_of_n

log = logging.getLogger("westofn")
STAGES = ("base_rm", "policy_sft", "west_of_n", "human_100")


def train(*, model_dir: str, vocabulary, data: pipeline.DataSource,
          model_config: Optional[Callable] = None, make_optimizer: Callable,
          batching: pipeline.Batching, loss, num_steps: int,
          seed: int = 0, log_every: int = 50, eval_every: int = 0, save_every: int = 200,
          stages: Sequence[str] = ("base_rm",), progress: bool = True,
          policy_model_config: Optional[Callable] = None,
          policy_optimizer: Optional[Callable] = None,
          policy: pipeline.PolicySft = pipeline.PolicySft(),
          won: west_of_n.WestOfN = west_of_n.WestOfN(), best_of_n: int = 16,
          rm_backbone: Optional[PretrainedLM] = None,
          policy_backbone: Optional[PretrainedLM] = None) -> dict:
  """Runs the pipeline's stages in ``model_dir``; each stage resumes from its checkpoints.

  ``rm_backbone`` / ``policy_backbone`` start the reward models / the policy from a
  pretrained LM (e.g. SmolLM2, see gin/smollm2_hh.gin) instead of from scratch; the
  ``vocabulary`` must then be that model's.

  Returns ``{stage name: held-out metrics}``; the report table is written to
  ``model_dir/report.md`` and printed.
  """
  unknown = [s for s in stages if s not in STAGES]
  if unknown:
    raise ValueError(f"unknown stages {unknown}; known: {list(STAGES)}")
  if model_config is None and rm_backbone is None:
    raise ValueError("give train.model_config (a reward model from scratch) or "
                     "train.rm_backbone (one initialised from a pretrained LM)")
  os.makedirs(model_dir, exist_ok=True)
  write_text_atomic(os.path.join(model_dir, "config.gin"), gin.config_str())
  prefs = pipeline.load_preference_data(source=data, vocabulary=vocabulary)
  log.info("%s", prefs.description)
  log.info("%s", pipeline.summarize_lengths(prefs.tokenized["train"]))
  rm_kw = dict(vocabulary=vocabulary, model_config=model_config, make_optimizer=make_optimizer,
               batching=batching, num_steps=num_steps, loss=loss, seed=seed, log_every=log_every,
               eval_every=eval_every, save_every=save_every, progress=progress,
               backbone=rm_backbone)
  heldout = prefs.tokenized["heldout"]
  base = policy_result = judge = None
  rm_results = []
  if "base_rm" in stages:
    base = pipeline.run_reward_model_stage(
        name="base_rm", stage_dir=os.path.join(model_dir, "base_rm"),
        train_pairs=prefs.tokenized["train"], eval_pairs=heldout, **rm_kw)
    base.metrics["trained_on"] = f"human {len(prefs.tokenized['train'])}"
    rm_results.append(base)
  if "policy_sft" in stages:
    if policy_backbone is None and policy_model_config is None:
      raise ValueError("the policy_sft stage needs train.policy_model_config (see "
                       "gin/policy_demo.gin) or train.policy_backbone (gin/smollm2_hh.gin)")
    if policy.num_steps > 0 and policy_optimizer is None:
      raise ValueError("the policy_sft stage trains for PolicySft.num_steps > 0 steps and "
                       "needs train.policy_optimizer")
    policy_result = pipeline.run_policy_stage(
        stage_dir=os.path.join(model_dir, "policy_sft"), data=prefs,
        model_config=policy_model_config, make_optimizer=policy_optimizer, settings=policy,
        seed=seed, log_every=log_every, eval_every=eval_every, save_every=save_every,
        progress=progress, pretrained=policy_backbone)
  round_counts = []
  if "west_of_n" in stages:
    if base is None or policy_result is None:
      raise ValueError("the west_of_n stage needs the base_rm and policy_sft stages")
    if data.unlabeled_prompts:
      prompts = read_prompt_file(data.unlabeled_prompts)[:won.max_prompts]
    elif "unlabeled" in prefs.raw:
      prompts = sorted({p.prompt for p in prefs.raw["unlabeled"]})[:won.max_prompts]
    else:
      raise ValueError("the west_of_n stage needs unlabeled prompts: an 'unlabeled' part in "
                       "DataSource.split, e.g. {'train': 0.4, 'unlabeled': 0.4, 'heldout': 0.2}, "
                       "or a file in DataSource.unlabeled_prompts")
    prompts_digest = hashlib.sha256("\0".join(prompts).encode("utf-8")).hexdigest()[:16]
    teacher = base
    if won.selection == "tournament":
      # The paper's judge: a pairwise preference model on the same human pairs.
      judge = pipeline.run_reward_model_stage(
          name="pairwise_pm", stage_dir=os.path.join(model_dir, "pairwise_pm"),
          train_pairs=prefs.tokenized["train"], eval_pairs=heldout, pairwise=True, **rm_kw)
      judge.metrics["trained_on"] = f"human {len(prefs.tokenized['train'])} (pairwise)"
      rm_results.append(judge)
    # Each West-of-N setting gets its own directory, so ablations can share one MODEL_DIR
    # (base RM, policy and human_100 are then trained once) without one student resuming
    # another's checkpoints.
    variant = _short_digest(dataclasses.asdict(won), 8)
    for k in range(1, won.rounds + 1):
      round_dir = os.path.join(model_dir, "west_of_n", variant, f"round{k}")
      fingerprint = {"settings": dataclasses.asdict(won), "round": k, "seed": seed,
                     "teacher": teacher.name, "teacher_accuracy": teacher.metrics["accuracy"],
                     "judge_accuracy": judge.metrics["accuracy"] if judge else None,
                     "prompts": prompts_digest}
      # Named by what the samples depend on: variants that differ only in selection,
      # filters or mixing judge the same candidates, sampled once.
      sampler = policy_result.model   # its top_k and prompt length apply to the rounds too
      sampling = {"policy": policy_result.identity, "prompts": prompts_digest, "seed": seed + k,
                  "top_k": sampler.top_k, "max_prompt_len": sampler.max_prompt_len,
                  **{f: getattr(won, f) for f in ("num_samples", "max_new_tokens",
                                                  "temperature", "top_p")}}
      sampling_id = _short_digest(sampling, 12)
      rnd = west_of_n.run_round(
          round_dir=round_dir, reward_model=teacher.model, policy=policy_result.model,
          vocabulary=vocabulary, prompts=prompts, settings=won, round_index=k, seed=seed + k,
          fingerprint=fingerprint, preference_model=judge.model if judge else None,
          samples_path=os.path.join(model_dir, "west_of_n_samples", f"{sampling_id}.jsonl"))
      round_counts.append(rnd.counts)
      synthetic = []
      if rnd.pairs:
        task = tasks.register_preference_task(f"{data.task_name}_west_of_n_round{k}",
                                              {"train": rnd.pairs}, vocabulary)
        synthetic = tasks.tokenized_pairs(task, "train")
      mix = west_of_n.mix_pairs(prefs.tokenized["train"], synthetic, won.synthetic_per_human,
                                seed + k)
      student = pipeline.run_reward_model_stage(
          name=f"west_of_n_round{k}", stage_dir=os.path.join(round_dir, "student"),
          train_pairs=mix, eval_pairs=heldout, **rm_kw)
      student.metrics["trained_on"] = (f"human {len(prefs.tokenized['train'])} + synthetic "
                                       f"{len(mix) - len(prefs.tokenized['train'])}")
      rm_results.append(student)
      teacher = student
  if "human_100" in stages:
    if "unlabeled" not in prefs.tokenized:
      raise ValueError("the human_100 stage trains on the 'train' and 'unlabeled' parts")
    both = prefs.tokenized["train"] + prefs.tokenized["unlabeled"]
    full = pipeline.run_reward_model_stage(
        name="human_100", stage_dir=os.path.join(model_dir, "human_100"), train_pairs=both,
        eval_pairs=heldout, **rm_kw)
    full.metrics["trained_on"] = f"human {len(both)} (with the unlabeled part's labels)"
    rm_results.append(full)
  results = rm_results + ([policy_result] if policy_result else [])
  report = pipeline.format_report(rm_results, prefs.description) if rm_results else (
      f"data: {prefs.description}\n")
  if policy_result is not None:
    report += pipeline.format_policy_report(policy_result)
  if round_counts:
    report += pipeline.format_round_counts(round_counts)
  if prefs.is_default_task and rm_results:
    ceiling = pipeline.gold_accuracy_ceiling(prefs.raw["heldout"])
    report += (f"\nLabel ceiling: held-out labels agree with the gold reward on {ceiling:.1%} "
               "of pairs (no model can be expected to beat this); chance is 50%.\n")
    if policy_result is not None and best_of_n > 1:
      gold = west_of_n.best_of_n_gold(
          # pointwise RMs only: best-of-N by a pairwise model would need a tournament per prompt
          reward_models={r.name: r.model for r in rm_results if r is not judge},
          policy=policy_result.model,
          vocabulary=vocabulary, prompts=sorted({p.prompt for p in prefs.raw["heldout"]})[:128],
          n=best_of_n, gold_reward=default_task.gold_reward, seed=seed)
      report += pipeline.format_best_of_n(gold, best_of_n)
      for r in rm_results:
        if r.name in gold:
          r.metrics["best_of_n_gold"] = gold[r.name]
  heldout_rewards = {r.name: (r.train.eval.chosen, r.train.eval.rejected) for r in rm_results
                     if r.train is not None and getattr(r.train.eval, "chosen", None) is not None}
  if heldout_rewards:
    plots.plot_heldout_rewards(heldout_rewards, os.path.join(model_dir, "heldout_rewards.png"))
    report += ("\nPlots: heldout_rewards.png (held-out reward margins per RM)" +
               (", west_of_n/<settings>/round<k>/filters.png (the filters' inputs and "
                "thresholds)" if round_counts else "") + ".\n")
  write_text_atomic(os.path.join(model_dir, "report.md"), report)
  # Operative config: only the values this run actually read.
  write_text_atomic(os.path.join(model_dir, "config.gin"), gin.operative_config_str())
  print(report)
  return {r.name: r.metrics for r in results}


def _short_digest(value, length: int) -> str:
  """A stable name for a JSON-able value (settings), ``length`` hex digits."""
  text = json.dumps(value, sort_keys=True, default=repr)
  return hashlib.sha256(text.encode()).hexdigest()[:length]


def _gin_value(value: str) -> str:
  """Leaves gin syntax alone; quotes a bare string such as ``/tmp/demo``."""
  v = value.strip()
  if v[:1] in "@%'\"[({" or v in ("True", "False", "None"):
    return v
  try:
    ast.literal_eval(v)
    return v
  except (ValueError, SyntaxError):
    return repr(v)


def parse_flags(argv: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
  """Returns (gin files, gin bindings, search paths) from t5x-style flags."""
  parser = argparse.ArgumentParser(prog="python -m westofn.train", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", default=[])
  parser.add_argument("--gin_bindings", action="append", default=[])
  parser.add_argument("--gin_search_paths", default="")
  args, rest = parser.parse_known_args(argv)
  bindings = list(args.gin_bindings)
  for arg in rest:
    if arg.startswith("--gin.") and "=" in arg:
      name, value = arg[len("--gin."):].split("=", 1)
      bindings.append(f"{name} = {_gin_value(value)}")
    else:
      parser.error(f"unrecognised argument {arg!r} (bindings are --gin.NAME=VALUE)")
  paths = [p for p in args.gin_search_paths.split(",") if p]
  return args.gin_file, bindings, paths


def configure_logging() -> None:
  """INFO logs of the pipeline on stderr. ``force``: an import (absl, via TensorFlow)
  has already put a WARNING-level handler on the root logger, which would otherwise
  make ``basicConfig`` a no-op and the run silent."""
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                      datefmt="%H:%M:%S", force=True)
  for noisy in ("absl", "orbax", "jax._src"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  # gin logs every search path it tries before an include resolves.
  gin_noise = ("Path not found:", "system_path_file_exists:")
  for handler in logging.getLogger().handlers:
    handler.addFilter(lambda record: not record.getMessage().startswith(gin_noise))


def main(argv: Optional[Sequence[str]] = None) -> dict:
  configure_logging()
  files, bindings, search_paths = parse_flags(sys.argv[1:] if argv is None else argv)
  if not files:
    raise SystemExit("give at least one --gin_file (e.g. --gin_file=gin/demo.gin)")
  repo_gin = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gin")
  for path in search_paths + [os.getcwd(), repo_gin]:
    gin.add_config_file_search_path(path)
  # Under ``python -m`` this module is __main__; gin files bind the importable
  # ``westofn.train.train`` (``import westofn.train as train_script``), so that
  # is the function made configurable here, before parsing.
  canonical = importlib.import_module("westofn.train")
  configurable_train = gin.configurable(canonical.train)
  gin.parse_config_files_and_bindings(files, bindings, finalize_config=True)
  return configurable_train()


if __name__ == "__main__":
  main()
