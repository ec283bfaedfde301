"""The West-of-N stage: rounds of synthetic pairs from the policy and the current teacher,
each followed by a student RM trained on human ∪ synthetic pairs."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, Optional, Sequence

import numpy as np

from policies.core.atomic import write_jsonl_atomic
from policies.core.stage_dir import StageDir, pairs_digest, short_digest
from rm import tasks
from rm.data import read_prompt_file
from westofn import west_of_n as won_lib
from westofn.ai_feedback import build_lm_judge
from westofn.errors import ConfigError
from westofn.judges import make_judge
from westofn.pipeline import PreferenceData
from westofn.settings import RewardModelRecipe
from westofn.stages.common import RunContext, StageResult
from westofn.stages.reward_model import evaluation_parts, reward_model_stage
from westofn.settings import DataSource, LMJudgeSettings, WestOfN


REPEAT_SEED_STRIDE = 1_000_003


@dataclasses.dataclass
class WestOfNResult:
  students: list          # one StageResult per round
  round_counts: list      # what each round's filters kept
  judge_members: list = dataclasses.field(default_factory=list)  # the ensemble's extra RMs
  synthetic: list = dataclasses.field(default_factory=list)  # each round's kept pairs, tokenized
  policies: list = dataclasses.field(default_factory=list)   # the improved policies (iterative)
  round_dirs: list = dataclasses.field(default_factory=list)  # each round's candidates.jsonl etc.


def unlabeled_prompts(data: PreferenceData, source: DataSource,
                      max_prompts: Optional[int]) -> list[str]:
  """West-of-N's prompts: a user's file, or the prompts of the 'unlabeled' part."""
  if source.unlabeled_prompts:
    return read_prompt_file(source.unlabeled_prompts)[:max_prompts]
  if "unlabeled" in data.raw:
    return sorted({p.prompt for p in data.raw["unlabeled"]})[:max_prompts]
  raise ConfigError("the west_of_n stage needs unlabeled prompts: an 'unlabeled' part in "
                    "DataSource.split, e.g. {'train': 0.4, 'unlabeled': 0.4, 'heldout': 0.2}, "
                    "or a file in DataSource.unlabeled_prompts")


def west_of_n(*, data: PreferenceData, source: DataSource, run: RunContext,
              recipe: RewardModelRecipe, settings: WestOfN, base: StageResult,
              policy: StageResult, judge: Optional[StageResult] = None,
              human: Optional[Sequence] = None, tag: str = "",
              improve: Optional[Callable] = None) -> WestOfNResult:
  """``settings.rounds`` rounds; the student of round k is the teacher of round k+1.

  Students train on ``human`` (default: the 'train' part, the base RM's data) plus the
  synthetic pairs. Each setting gets its own directory (``west_of_n/<digest of the
  settings and tag>/round<k>``), so ablations share one ``model_dir`` (base RM, policy
  and references trained once) without one student resuming another's checkpoints;
  ``tag`` tells apart runs of the same settings from another base RM.

  With ``settings.sampling.policy='improved'``, ``improve(policy=, student=, round_index=)``
  returns the policy improved with round k's student, which round k+1 samples from.
  """
  sampling, judging, student_data = settings.sampling, settings.judge, settings.student
  if judging.needs_preference_model and judge is None:
    raise ConfigError("selection='tournament' needs the pairwise judge")
  if sampling.policy == "improved" and improve is None:
    raise ConfigError("WestOfNSampling.policy='improved' needs the rest stage's settings "
                      "(train.rest)")
  if student_data.unlabeled_pairs and not data.raw.get("unlabeled"):
    raise ConfigError("WestOfNStudent.unlabeled_pairs labels the 'unlabeled' part's pairs, and "
                      "this data has none: add an 'unlabeled' part to DataSource.split, e.g. "
                      "{'train': 0.4, 'unlabeled': 0.4, 'heldout': 0.2}, or set "
                      "WestOfNStudent.unlabeled_pairs=False")
  prompts = unlabeled_prompts(data, source, sampling.max_prompts)
  if not prompts:
    raise ConfigError(f"the west_of_n stage has 0 unlabeled prompts (WestOfNSampling."
                      f"max_prompts={sampling.max_prompts}): raise WestOfNSampling.max_prompts "
                      "or the 'unlabeled' part of DataSource.split")
  prompts_digest = hashlib.sha256("\0".join(prompts).encode("utf-8")).hexdigest()[:16]
  human = data.tokenized["train"] if human is None else list(human)
  record = won_lib.settings_record(settings)
  # The digest of the settings alone names the default variant, as before tags existed.
  variant = short_digest(record if not tag else {"settings": record, "tag": tag}, 8)
  members = ensemble_members(human=human, run=run, recipe=recipe, data=data,
                             count=judging.ensemble - 1,
                             bootstrap=judging.members == "bootstrap")
  teacher, students, counts, synthetic_rounds, improved, round_dirs = base, [], [], [], [], []
  for k in range(1, settings.rounds + 1):
    round_seed = run.seed + k
    fingerprint = {"settings": record, "round": k, "seed": run.seed,
                   "teacher": teacher.name, "teacher_accuracy": teacher.metrics["accuracy"],
                   "judge_accuracy": judge.metrics["accuracy"] if judge else None,
                   "prompts": prompts_digest}
    if sampling.policy == "improved":
      fingerprint["policy"] = policy.identity
    judges = [teacher] + (members if k == 1 else [])
    if len(judges) > 1:
      fingerprint["ensemble_accuracies"] = [m.metrics["accuracy"] for m in judges[1:]]
    round_judge = make_judge(
        settings=judging, vocabulary=run.vocabulary, reward_models=[j.model for j in judges],
        preference_model=judge.model if judge else None,
        make_lm_judge=lambda: build_lm_judge(judging.lm or LMJudgeSettings()))
    # Named by what the samples depend on: variants that differ only in selection,
    # filters or mixing judge the same candidates, sampled once.
    sampler = policy.model   # its top_k and prompt length apply to the rounds too
    samples_key = {"policy": policy.identity, "prompts": prompts_digest, "seed": round_seed,
                "top_k": sampler.top_k, "max_prompt_len": sampler.max_prompt_len,
                   **{f: getattr(sampling, f) for f in ("num_samples", "max_new_tokens",
                                                        "temperature", "top_p")}}
    samples_path = run.layout.west_of_n_samples(short_digest(samples_key, 12))
    # Each further pass over the prompts samples with its own seed (batches are seeded
    # seed + their first prompt's index, so strides this wide never meet).
    repeat_samples = []
    for j in range(1, sampling.prompt_repeats):
      pass_sampling = {**samples_key, "seed": round_seed + REPEAT_SEED_STRIDE * j}
      repeat_samples.append((pass_sampling["seed"],
                             run.layout.west_of_n_samples(short_digest(pass_sampling, 12))))
    round_dirs.append(run.layout.west_of_n_round(variant, k))
    # With no synthetic pair in the mix (synthetic_per_human=0: the judged unlabeled pairs
    # alone), the policy is neither sampled nor judged.
    rnd = None
    if student_data.synthetic_per_human > 0:
      with run.metered(f"west_of_n{'_' + tag if tag else ''} round {k}: sample, judge, "
                       "filter"):
        rnd = won_lib.run_round(
            round_dir=round_dirs[-1], policy=policy.model, judge=round_judge,
            vocabulary=run.vocabulary, prompts=prompts, settings=settings, round_index=k,
            seed=round_seed, fingerprint=fingerprint, samples_path=samples_path,
            repeat_samples=repeat_samples,
            gold_reward=data.gold_task.gold_reward if data.gold_task is not None else None)
    judged, judged_counts = [], {}
    if student_data.unlabeled_pairs:
      with run.metered(f"west_of_n{'_' + tag if tag else ''} round {k}: judge unlabeled pairs"):
        judged, rows, judged_counts = won_lib.judge_response_pairs(
            judge=round_judge,   # the RM judge: unlabeled_pairs needs kind='rm', best_worst
            pairs=data.raw["unlabeled"], soft_labels=student_data.soft_labels, round_index=k)
        write_jsonl_atomic(StageDir(round_dirs[-1]).file("unlabeled_pairs.jsonl"), rows)
    counts.append({**(rnd.counts if rnd else {}), **judged_counts})
    if rnd is not None and not rnd.pairs:
      raise ConfigError(
          f"west_of_n round {k} kept no synthetic pair from {len(prompts)} prompts "
          f"({rnd.counts['fewer_than_2_distinct']} with fewer than 2 distinct samples, "
          f"{rnd.counts['pass_confidence']} passed the confidence filter, "
          f"{rnd.counts['pass_likelihood']} the likelihood filter, "
          # rounds recorded before the disagreement filter existed passed every usable pair
          f"{rnd.counts.get('pass_disagreement', rnd.counts['usable'])} the disagreement "
          "filter): give it more prompts "
          "(WestOfNSampling.max_prompts, the 'unlabeled' part of DataSource.split), more varied "
          "samples (WestOfNSampling.num_samples, temperature, max_new_tokens) or looser filters "
          "(WestOfNFilters)")
    synthetic = []
    if rnd is not None:
      task = tasks.register_preference_task(f"{source.task_name}_west_of_n_round{k}",
                                            {"train": rnd.pairs}, run.vocabulary)
      synthetic = tasks.tokenized_pairs(task, "train")
    mix = won_lib.mix_pairs(human, synthetic, student_data.synthetic_per_human, round_seed)
    n_synthetic = len(mix) - len(human)
    if judged:
      mix += tasks.tokenized_pairs(tasks.register_preference_task(
          f"{source.task_name}_west_of_n_round{k}_unlabeled", {"train": judged},
          run.vocabulary), "train")
    student = reward_model_stage(
        name=f"west_of_n{'_' + tag if tag else ''}_round{k}",
        stage_dir=run.layout.west_of_n_student(variant, k),
        train_pairs=mix, run=run, recipe=recipe, **evaluation_parts(data),
        start=teacher if student_data.start == "teacher" else None)
    student.metrics["trained_on"] = (f"human {len(human)} + synthetic {n_synthetic}"
                                     + (f" + judged unlabeled {len(judged)}" if judged else ""))
    students.append(student)
    synthetic_rounds.append(synthetic)
    teacher = student
    if sampling.policy == "improved" and k < settings.rounds:
      policy = improve(policy=policy, student=student, round_index=k)
      improved.append(policy)
  return WestOfNResult(students, counts, members, synthetic_rounds, improved, round_dirs)


def ensemble_members(*, human: Sequence, run: RunContext, recipe: RewardModelRecipe,
                     data: PreferenceData, count: int, bootstrap: bool = False) -> list:
  """``count`` more base RMs for an ensemble judge: the base RM's recipe and human pairs,
  other seeds (initialisation and data order); with ``bootstrap``, each on its own resample
  of the pairs (``bootstrap_resample``). Named by the pairs each trains on, so that a judge
  for another base RM (another human subset) does not resume these."""
  members = []
  for m in range(1, count + 1):
    member_run = dataclasses.replace(run, seed=run.seed + 1000 * m)
    pairs = bootstrap_resample(human, seed=member_run.seed) if bootstrap else human
    member = reward_model_stage(
        name=f"judge_member{m}",
        stage_dir=run.layout.judge_member(short_digest(pairs_digest(pairs), 12), m),
        train_pairs=pairs, run=member_run, recipe=recipe, **evaluation_parts(data))
    member.metrics["trained_on"] = (f"human {len(human)}{', resampled' if bootstrap else ''} "
                                    f"(seed {member_run.seed})")
    members.append(member)
  return members


def bootstrap_resample(pairs: Sequence, *, seed: int) -> list:
  """As many pairs as ``pairs``, drawn with replacement (about 63% of them distinct)."""
  if not pairs:
    raise ValueError("cannot resample an empty list of pairs")
  picks = np.random.default_rng(seed).integers(0, len(pairs), len(pairs))
  return [pairs[i] for i in picks]
