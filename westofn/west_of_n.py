"""West-of-N synthetic preference pairs (Pace et al. 2024) from a policy and a base RM."""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Sequence

import jax.numpy as jnp
import numpy as np

from policies.policy import Policy
from policies.core.atomic import write_jsonl_atomic
from policies.core.stage_dir import StageDir
from rm.data import PreferencePair, read_preference_file
from westofn import compat, plots, selection
from westofn.judges import Judge, RewardModelJudge
from westofn.samples import pad_ragged, reuse_or_sample
from westofn.settings import WestOfN, WestOfNSampling

log = logging.getLogger("westofn")


def settings_record(settings: WestOfN) -> dict:
  """The settings as a record for digests and fingerprints. Options added later are left
  out at the value runs had before they existed (whatever today's default), so that those
  runs keep their names."""
  record = compat.west_of_n_record(settings)
  del record["sample_batch_prompts"]   # how many prompts a sampling call takes: speed only
  return record


def _kept_pair(row: dict, source: str) -> PreferencePair:
  """A judged candidate row as the pair a student trains on (its label 1 unless soft)."""
  return PreferencePair(row["prompt"], row["chosen"], row["rejected"], 0.0, source,
                        row.get("gold_chosen"), row.get("gold_rejected"),
                        label=row.get("label", 1.0))


@dataclasses.dataclass
class RoundResult:
  pairs: list          # kept synthetic PreferencePairs
  counts: dict         # how many prompts / pairs each step kept


def sample_candidates(*, policy, prompts: Sequence[str], settings: WestOfNSampling, seed: int,
                      samples_path: Optional[str] = None) -> list:
  """``settings.num_samples`` policy samples per prompt, with the round's sampling settings.

  With ``samples_path`` (a file named by everything the samples depend on: policy,
  prompts, sampling settings, seed) they are written there once and read back by every
  later round or West-of-N variant that asks for the same samples, so ablations over
  selection and filters judge the same candidates and do not sample again. The file is
  in ``FileBackedPolicy``'s format.
  """
  if isinstance(policy, Policy):  # sample with this round's settings (a file has its own)
    policy = dataclasses.replace(policy, max_new_tokens=settings.max_new_tokens,
                                 temperature=settings.temperature, top_p=settings.top_p)
  return reuse_or_sample(policy, prompts, settings.num_samples, seed=seed,
                         samples_path=samples_path, batch_size=settings.batch_prompts)


def pseudo_label_correct(gold_best_B, gold_worst_B, kept_B) -> np.ndarray:
  """Per synthetic pair: 1.0 if its 'best' response really has the higher gold reward,
  0.0 if not, NaN where the pair was not kept or its gold rewards tie."""
  best, worst, kept = (np.asarray(x) for x in (gold_best_B, gold_worst_B, kept_B))
  for name, x in (("gold_worst_B", worst), ("kept_B", kept)):
    if x.shape != best.shape:
      raise ValueError(f"{name} has shape {x.shape}, expected {best.shape}")
  if best.ndim != 1:
    raise ValueError(f"gold_best_B must be a vector, got shape {best.shape}")
  counted = kept.astype(bool) & (best != worst)
  return np.where(counted, (best > worst).astype(np.float64), np.nan)


def pseudo_label_accuracy(gold_best_B, gold_worst_B, kept_B) -> tuple[float, int]:
  """Gold accuracy of synthetic pairs: the share of kept pairs (gold ties dropped) whose
  'best' response really has the higher gold reward. Returns (accuracy, pairs counted);
  NaN when no kept pair has distinct gold rewards."""
  correct = pseudo_label_correct(gold_best_B, gold_worst_B, kept_B)
  n = int(np.sum(~np.isnan(correct)))
  return (float(np.nanmean(correct)) if n else float("nan")), n


def generate_synthetic_pairs(*, judge: Judge, policy, vocabulary, prompts: Sequence[str],
                             settings: WestOfN, round_index: int, seed: int,
                             samples_path: Optional[str] = None, gold_reward=None,
                             repeat_samples: Sequence[tuple[int, Optional[str]]] = ()
                             ) -> tuple[RoundResult, list]:
  """One round: N samples per prompt → the judge's verdicts (``westofn.judges``: reward
  models, an ensemble, a pairwise or an LM tournament) → best/worst → filters.
  ``samples_path``: see ``sample_candidates``. With ``gold_reward(prompt, response)`` (a gold
  task), every candidate pair records both gold rewards and the counts give the
  pseudo-labels' gold accuracy and the kept pairs' mean gold gap. Returns the kept pairs
  with counts, and one provenance row per candidate pair. ``repeat_samples``: (seed,
  samples_path) of each further pass over the prompts (``settings.sampling.prompt_repeats``), whose
  candidates are judged as more prompts.
  """
  samples = sample_candidates(policy=policy, prompts=prompts, settings=settings.sampling,
                              seed=seed, samples_path=samples_path)
  for repeat_seed, repeat_path in repeat_samples:
    samples = samples + sample_candidates(policy=policy, prompts=prompts,
                                          settings=settings.sampling, seed=repeat_seed,
                                          samples_path=repeat_path)
  prompts = list(prompts) * (1 + len(repeat_samples))
  texts, lls = [], []
  for row in samples:
    keep = selection.distinct_samples([s.text for s in row])
    keep = [i for i in keep if row[i].text.strip()]
    texts.append([row[i].text for i in keep])
    lls.append([row[i].mean_logprob for i in keep])
  ll_BxN, valid_BxN = pad_ragged(lls)
  rows_idx = np.arange(len(prompts))
  verdicts = judge.verdicts(prompts=prompts, texts=texts, valid_BxN=valid_BxN,
                            settings=settings.judge, seed=seed)
  best, worst, usable, conf = (verdicts.best_B, verdicts.worst_B, verdicts.usable_B,
                               verdicts.confidence_B)
  r_KxBxN = verdicts.rewards_KxBxN
  rewards = ([None] * len(prompts) if r_KxBxN is None   # a tournament scores no candidate
             else [r[:len(t)] for r, t in zip(verdicts.rewards_BxN, texts)])
  # a tournament has no members to disagree
  no_spread = np.zeros(len(prompts), np.float32)
  disagreement = no_spread if verdicts.disagreement_B is None else verdicts.disagreement_B
  relative = (no_spread if verdicts.relative_disagreement_B is None
              else verdicts.relative_disagreement_B)
  conf_cut = float(selection.quantile_threshold(conf, jnp.asarray(usable),
                                                settings.filters.confidence_quantile))
  pass_conf = usable & (np.asarray(conf) >= conf_cut)
  ll_best, ll_worst = ll_BxN[rows_idx, best], ll_BxN[rows_idx, worst]
  ll_cut = float(selection.likelihood_cut(
      jnp.asarray(ll_best), jnp.asarray(ll_worst), jnp.asarray(usable),
      quantile=settings.filters.likelihood_quantile,
      threshold=settings.filters.likelihood_threshold))
  pass_ll = usable & (ll_best >= ll_cut) & (ll_worst >= ll_cut)
  filtered_by = relative if settings.filters.disagreement_measure == "relative" else disagreement
  agree_cut = float(selection.disagreement_threshold(
      jnp.asarray(filtered_by), jnp.asarray(usable), settings.filters.disagreement_quantile))
  pass_agree = usable & (filtered_by <= agree_cut)
  kept = usable & pass_conf & pass_ll & pass_agree
  conf = np.asarray(conf)
  pairs, provenance = [], []
  for i, prompt in enumerate(prompts):
    if not usable[i]:
      continue
    row = {"prompt": prompt, "chosen": texts[i][best[i]], "rejected": texts[i][worst[i]],
           "prompt_id": i, "round": round_index, "n": settings.sampling.num_samples,
           "distinct_samples": len(texts[i]),
           "selection": verdicts.selection,
           "base_scores": (None if rewards[i] is None else [float(x) for x in rewards[i]]),
           **({"member_scores": [[float(x) for x in m[i, :len(texts[i])]] for m in r_KxBxN]}
              if rewards[i] is not None and len(r_KxBxN) > 1 else {}),
           "confidence": float(conf[i]),
           **({"disagreement": float(disagreement[i]),
               "relative_disagreement": float(relative[i])} if r_KxBxN is not None
              and len(r_KxBxN) > 1 else {}),
           **({"label": float(np.clip(conf[i], 0.0, 1.0))} if settings.student.soft_labels
              else {}),
           "loglik_chosen": float(ll_best[i]),
           "loglik_rejected": float(ll_worst[i]),
           "passed": {"confidence": bool(pass_conf[i]), "likelihood": bool(pass_ll[i]),
                      "disagreement": bool(pass_agree[i])},
           "kept": bool(kept[i])}
    if gold_reward is not None:
      row.update(gold_chosen=gold_reward(prompt, row["chosen"]),
                 gold_rejected=gold_reward(prompt, row["rejected"]))
    provenance.append(row)
    if kept[i]:
      pairs.append(_kept_pair(row, f"west_of_n:round{round_index}:prompt{i}"))
  counts = {"prompts": len(prompts),
            "fewer_than_2_distinct": int(np.sum(valid_BxN.sum(1) < 2)),
            "usable": int(usable.sum()),
            "pass_confidence": int((usable & pass_conf).sum()),
            "pass_likelihood": int((usable & pass_ll).sum()),
            "pass_disagreement": int(pass_agree.sum()), "kept": int(kept.sum()),
            "pairwise_comparisons": verdicts.comparisons,
            # None: that filter was off (JSON has no -inf)
            "confidence_threshold": conf_cut if np.isfinite(conf_cut) else None,
            "likelihood_threshold": ll_cut if np.isfinite(ll_cut) else None,
            "disagreement_threshold": agree_cut if np.isfinite(agree_cut) else None}
  if gold_reward is not None and provenance:
    g_best, g_worst = (np.array([r[k] for r in provenance]) for k in ("gold_chosen",
                                                                     "gold_rejected"))
    kept_mask = np.asarray([r["kept"] for r in provenance], bool)
    for key, mask in (("pseudo_label_gold_accuracy", kept_mask),
                      ("pseudo_label_gold_accuracy_unfiltered", np.ones(len(provenance), bool))):
      counts[key] = pseudo_label_accuracy(g_best, g_worst, mask)[0]
    # How far apart the kept pairs are in gold reward: near-boundary pairs are closer.
    counts["kept_gold_gap"] = (float(np.mean(np.abs(g_best - g_worst)[kept_mask]))
                               if kept_mask.any() else None)
  return RoundResult(pairs, counts), provenance


def label_response_pairs(rewards_KxBx2):
  """Each response pair ordered by a judge of K reward models (K = 1: one RM): ``(first_B,
  label_B, usable_B)``, the index (0 or 1) of the response the members' mean reward prefers,
  the members' mean P(first ≻ other) (``ensemble_confidence``: a soft label, ≥ 0.5), and
  whether the judge tells the two apart (equal mean rewards do not)."""
  selection._check("rewards_KxBx2", rewards_KxBx2, 3)
  if rewards_KxBx2.shape[2] != 2:
    raise ValueError(f"rewards_KxBx2 must hold 2 responses a pair, got shape "
                     f"{tuple(rewards_KxBx2.shape)}")
  valid = jnp.ones(rewards_KxBx2.shape[1:], bool)
  first, other, usable = selection.best_and_worst(selection.ensemble_rewards(rewards_KxBx2),
                                                  valid)
  return first, selection.ensemble_confidence(rewards_KxBx2, first, other), usable


def judge_response_pairs(*, judge: RewardModelJudge, pairs: Sequence[PreferencePair],
                         soft_labels: bool, round_index: int) -> tuple[list, list, dict]:
  """``WestOfNStudent.unlabeled_pairs``: the 'unlabeled' part's own response pairs, each labelled by
  the round's judge (reward models: one, or an ensemble) as West-of-N labels its
  samples: the preferred response first, the judge's P(first ≻ other) as the label with
  ``soft_labels`` (else 1). A pair's human label is never read; its gold rewards, where a
  task knows them, are kept to measure the judge's labels. Pairs of one text twice, and pairs
  the judge cannot tell apart (equal rewards), are dropped. Returns ``(pairs, provenance
  rows, counts)``."""
  texts = [[p.chosen, p.rejected] for p in pairs]
  r_KxBx2 = judge.rewards(prompts=[p.prompt for p in pairs], texts=texts)
  first, label, usable = (np.asarray(x) for x in label_response_pairs(jnp.asarray(r_KxBx2)))
  kept, rows = [], []
  for i, p in enumerate(pairs):
    if not usable[i] or p.chosen == p.rejected:
      continue
    golds = (p.gold_chosen, p.gold_rejected)
    f, o = int(first[i]), 1 - int(first[i])
    row = {"prompt": p.prompt, "chosen": texts[i][f], "rejected": texts[i][o],
           "source": p.source, "round": round_index,
           "member_scores": [[float(x) for x in m[i]] for m in r_KxBx2],
           "confidence": float(label[i]),
           **({"label": float(np.clip(label[i], 0.0, 1.0))} if soft_labels else {}),
           **({"gold_chosen": golds[f], "gold_rejected": golds[o]}
              if None not in golds else {})}
    rows.append(row)
    kept.append(_kept_pair(row, f"west_of_n:round{round_index}:{p.source}"))
  counts = {"unlabeled_pairs": len(pairs), "unlabeled_pairs_kept": len(kept)}
  if rows and all("gold_chosen" in r for r in rows):
    g_first, g_other = (np.array([r[k] for r in rows]) for k in ("gold_chosen",
                                                                "gold_rejected"))
    counts["unlabeled_pairs_gold_accuracy"] = pseudo_label_accuracy(
        g_first, g_other, np.ones(len(rows), bool))[0]
  return kept, rows, counts


def run_round(*, round_dir: str, judge: Judge, policy, vocabulary, prompts: Sequence[str],
              settings: WestOfN, round_index: int, seed: int, fingerprint: dict,
              samples_path: Optional[str] = None, gold_reward=None,
              repeat_samples: Sequence[tuple[int, Optional[str]]] = ()) -> RoundResult:
  """A round that writes its pairs atomically and is skipped when its output exists for
  the same settings (``fingerprint``): its ``StageDir`` records the counts under the
  fingerprint as a stage records its metrics under its evaluation key.
  ``samples_path``: see ``sample_candidates``. An LM judge loads only if the round runs
  (a reused round loads no LM)."""
  stage = StageDir(round_dir)
  compat.adopt_round_json(stage)
  counts = stage.reuse(fingerprint, files=("synthetic_pairs.jsonl",))
  if counts is not None:
    pairs_path = stage.file("synthetic_pairs.jsonl")
    pairs, _ = read_preference_file(pairs_path) if counts["kept"] else ([], None)
    log.info("west_of_n round %d: reusing %d pairs from %s", round_index, len(pairs),
             pairs_path)
    return RoundResult(pairs, counts)
  result, provenance = generate_synthetic_pairs(
      judge=judge, policy=policy, vocabulary=vocabulary, prompts=prompts, settings=settings,
      round_index=round_index, seed=seed, samples_path=samples_path, gold_reward=gold_reward,
      repeat_samples=repeat_samples)
  write_jsonl_atomic(stage.file("candidates.jsonl"), provenance)
  if provenance:
    plots.plot_filters(provenance, result.counts, stage.file("filters.png"))
  write_jsonl_atomic(stage.file("synthetic_pairs.jsonl"), [r for r in provenance if r["kept"]])
  stage.save_result(fingerprint, result.counts)
  log.info("west_of_n round %d: %s", round_index, result.counts)
  return result


def mix_pairs(human: Sequence, synthetic: Sequence, synthetic_per_human: float, seed: int) -> list:
  """Human pairs plus up to ``synthetic_per_human`` synthetic pairs per human pair."""
  if synthetic_per_human < 0:
    raise ValueError("synthetic_per_human must be >= 0")
  cap = int(round(synthetic_per_human * len(human)))
  order = np.random.default_rng(seed).permutation(len(synthetic))[:cap]
  return list(human) + [synthetic[i] for i in sorted(order)]
