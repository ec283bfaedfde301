"""Named evaluation sets: preference files besides the run's held-out split (out-of-domain
sets, RewardBench-style subsets), each read and validated like the training files and
scored by RewardBench's rules (``rm.leaderboard_rules``): a tie is wrong, subsets are means of
their rows, sections weigh their subsets by example count, the overall score is the plain
mean of the sections.

Used after every RM stage of ``westofn.train`` (``DataSource.eval_paths``; extra
columns of the report) and by ``python -m westofn.evaluate``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Mapping, Optional, Sequence

import numpy as np

from policies.core.atomic import write_text_atomic
from policies.core.stage_dir import pairs_digest
from rm import tasks
from rm.data import read_preference_files
from rm.leaderboard_rules import section_scores, strictly_correct, subset_accuracies
from rm.losses import gold_correct
from rm.pairwise import evaluate_pairwise, pair_batches
from rm.training import evaluate_reward_model
from westofn.errors import ConfigError


@dataclasses.dataclass
class EvalSet:
  name: str
  pairs: list        # rm.data.PreferencePair, in file order
  tokenized: list    # rm.tasks.TokenizedPair, the same order

  @property
  def digest(self) -> str:
    return pairs_digest(self.tokenized)


def read_eval_sets(paths: Mapping[str, object], *, vocabulary, on_error: str = "raise",
                   columns: Optional[Mapping[str, str]] = None,
                   rating_margins: Optional[Mapping[str, float]] = None,
                   task_name: str = "westofn_eval_sets") -> dict:
  """``{name: EvalSet}`` from ``{name: path, glob or list of them}``, tokenized via seqio."""
  if not isinstance(paths, Mapping):
    raise ConfigError(f"eval_paths must map names to files, e.g. {{'hh': 'data/hh.jsonl'}}, "
                      f"got {paths!r}")
  raw = {name: read_preference_files(p, on_error=on_error, columns=columns,
                                     rating_margins=rating_margins)[0]
         for name, p in paths.items()}
  if not raw:
    return {}
  task = tasks.register_preference_task(task_name, raw, vocabulary)
  return {name: EvalSet(name, pairs, tasks.tokenized_pairs(task, name))
          for name, pairs in raw.items()}


def _mean_and_se(x: np.ndarray) -> tuple[float, float]:
  return float(x.mean()), float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan


def score_pairs(eval_set: EvalSet, *, chosen: Optional[np.ndarray] = None,
                rejected: Optional[np.ndarray] = None, prob_chosen: Optional[np.ndarray] = None,
                sections: Optional[Mapping[str, Sequence[str]]] = None,
                count_overrides: Optional[Mapping[str, int]] = None) -> dict:
  """The set's metrics from per-pair rewards (a pointwise RM) or P(chosen ≻ rejected) (a
  pairwise model): accuracy ± s.e. (a tie is wrong), mean margin, gold accuracy where
  every row carries gold rewards, and per subset / section where rows carry ``subset``."""
  if prob_chosen is not None:
    chosen, rejected = np.asarray(prob_chosen, np.float64), np.full(len(prob_chosen), 0.5)
  correct = np.asarray(strictly_correct(chosen, rejected), np.float64)
  accuracy, se = _mean_and_se(correct)
  metrics = {"accuracy": accuracy, "accuracy_se": se, "num_pairs": int(len(correct))}
  if prob_chosen is None:
    metrics["margin_mean"] = float(np.mean(np.asarray(chosen) - np.asarray(rejected)))
  if all(p.gold_chosen is not None for p in eval_set.pairs):
    gold_c = np.array([p.gold_chosen for p in eval_set.pairs])
    gold_r = np.array([p.gold_rejected for p in eval_set.pairs])
    ok, counted = map(np.asarray, gold_correct(np.asarray(chosen), np.asarray(rejected),
                                               gold_c, gold_r))
    metrics["gold_accuracy"] = (float(ok[counted].astype(np.float64).mean()) if counted.any()
                                else math.nan)
    metrics["gold_pairs"] = int(counted.sum())
  if any(p.subset is not None for p in eval_set.pairs):
    names = sorted({p.subset or "(none)" for p in eval_set.pairs})
    ids = np.array([names.index(p.subset or "(none)") for p in eval_set.pairs], np.int32)
    acc, count = map(np.asarray, subset_accuracies(correct.astype(np.float32), ids, len(names)))
    metrics["subsets"] = {n: {"accuracy": float(a), "count": int(c)}
                          for n, a, c in zip(names, acc, count)}
    if sections:
      metrics.update(section_scores({n: v["accuracy"] for n, v in metrics["subsets"].items()},
                                    {n: v["count"] for n, v in metrics["subsets"].items()},
                                    sections, count_overrides))
  return metrics


def rewards_on_set(model, eval_set: EvalSet, *, batching, vocabulary, pairwise: bool) -> dict:
  """Per pair, in file order: ``{"chosen", "rejected"}`` rewards (a pointwise RM) or
  ``{"prob_chosen"}`` (a pairwise model)."""
  batches = pair_batches(eval_set.tokenized, batching, vocabulary, seed=0, shuffle=False,
                         rows=batching.eval_rows, pairwise=pairwise).one_pass()
  if pairwise:
    return {"prob_chosen": evaluate_pairwise(model=model, batches=batches).prob_chosen}
  ev = evaluate_reward_model(model=model, batches=batches)
  return {"chosen": ev.chosen, "rejected": ev.rejected}


def evaluate_on_set(model, eval_set: EvalSet, *, batching, vocabulary, pairwise: bool,
                    sections=None, count_overrides=None) -> dict:
  return score_pairs(eval_set, **rewards_on_set(model, eval_set, batching=batching,
                                                vocabulary=vocabulary, pairwise=pairwise),
                     sections=sections, count_overrides=count_overrides)


def evaluate_sets_cached(model, eval_sets: Mapping[str, EvalSet], *, cache_path: str,
                         model_key: str, batching, vocabulary, pairwise: bool, sections=None,
                         count_overrides=None) -> dict:
  """``{set name: metrics}``; each set's metrics are kept in ``cache_path`` under the model's
  key and the set's digest, so a re-run (which restores finished stages) does not
  evaluate again."""
  cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
  rules = hashlib.sha256(json.dumps([sections, count_overrides], sort_keys=True,
                                    default=list).encode()).hexdigest()[:12]
  out, changed = {}, False
  for name, eval_set in eval_sets.items():
    key = f"{model_key}|{eval_set.digest}|{rules}"
    if cache.get(name, {}).get("key") != key:
      metrics = evaluate_on_set(model, eval_set, batching=batching, vocabulary=vocabulary,
                                pairwise=pairwise, sections=sections,
                                count_overrides=count_overrides)
      cache[name] = {"key": key, "metrics": metrics}
      changed = True
    out[name] = cache[name]["metrics"]
  if changed:
    os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
    write_text_atomic(cache_path, json.dumps(cache, indent=2, sort_keys=True))
  return out


def format_eval_cell(m: dict) -> str:
  text = f"{m['accuracy']:.4f} ± {m['accuracy_se']:.4f}"
  if "gold_accuracy" in m:
    text += f" (gold {m['gold_accuracy']:.4f})"
  return text


def format_eval_sets(results: Mapping[str, Mapping[str, dict]]) -> str:
  """Markdown: one row per model, one column per set (accuracy ± s.e., gold accuracy where
  known, mean margin), then each set's subsets and sections where its rows have them."""
  if not results:
    return ""
  sets = list(next(iter(results.values())))
  cols = ["model"] + [f"{s}: accuracy ± s.e." for s in sets] + [f"{s}: mean margin" for s in sets]
  lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
  for model, per_set in results.items():
    margins = [f"{per_set[s]['margin_mean']:+.3f}" if "margin_mean" in per_set[s] else "—"
               for s in sets]
    lines.append("| " + " | ".join([model] + [format_eval_cell(per_set[s]) for s in sets]
                                   + margins) + " |")
  for s in sets:
    subsets = sorted({n for per_set in results.values() for n in per_set[s].get("subsets", {})})
    if not subsets:
      continue
    sections = list(next(iter(results.values()))[s].get("sections", {}))
    counts = {n: v["count"] for per_set in results.values()
              for n, v in per_set[s].get("subsets", {}).items()}
    head = (["model"] + [f"{n} (n={counts[n]})" for n in subsets] + sections
            + (["overall"] if sections else []))
    lines += ["", f"{s}, by subset (accuracy; a tie is wrong)"
              + (" and RewardBench section (subsets weighted by example count; overall: mean "
                 "of the sections)" if sections else "") + ":", "",
              "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for model, per_set in results.items():
      m = per_set[s]
      cells = [f"{m['subsets'][n]['accuracy']:.4f}" if n in m.get("subsets", {}) else "—"
               for n in subsets]
      cells += [f"{m['sections'][sec]:.4f}" for sec in sections]
      if sections:
        cells.append(f"{m['overall']:.4f}")
      lines.append("| " + " | ".join([model] + cells) + " |")
  return "\n".join(lines) + "\n"
