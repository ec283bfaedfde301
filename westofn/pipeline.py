"""The pipeline's data and settings: where the pairs come from, how they are split and
batched, and the policy's SFT settings (gin binds these by name). The stages that use
them are in ``westofn.stages``; nothing here parses flags or touches gin."""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Sequence

import numpy as np

from rm import tasks
from rm.data import prompt_bucket, read_preference_files, split_by_prompt
from westofn import gold_tasks
from westofn.errors import ConfigError
from westofn.settings import DataSource

log = logging.getLogger("westofn")


@dataclasses.dataclass
class PreferenceData:
  raw: dict        # split name → list[PreferencePair]
  tokenized: dict  # split name → list[TokenizedPair]
  vocabulary: object
  description: str
  is_default_task: bool  # an embedded task: any response has a gold reward
  gold_task: object = None  # that task's module (gold_reward, behaviour_response), if any
  eval_sets: dict = dataclasses.field(default_factory=dict)  # name → eval_sets.EvalSet

  def gold(self, part: str) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The gold rewards (chosen, rejected) of a part's pairs, if every pair carries them."""
    pairs = self.raw.get(part) or []
    if not pairs or any(p.gold_chosen is None for p in pairs):
      return None
    return (np.array([p.gold_chosen for p in pairs], np.float64),
            np.array([p.gold_rejected for p in pairs], np.float64))


def split_parts(pairs: Sequence, source: DataSource) -> dict:
  """The source's parts (split by prompt, then capped by prompt hash) of its pairs: what a
  run trains, selects and evaluates on, rebuilt from the same files and settings."""
  if source.max_pairs is not None:
    pairs = pairs[:source.max_pairs]
  parts = split_by_prompt(pairs, source.split, salt=source.split_salt)
  for part, cap in (source.max_per_part or {}).items():
    if part not in parts:
      raise ConfigError(f"DataSource.max_per_part names {part!r}, not a part of {list(parts)}")
    order = sorted(range(len(parts[part])),
                   key=lambda i: prompt_bucket(parts[part][i].prompt, source.split_salt + "/cap"))
    parts[part] = [parts[part][i] for i in sorted(order[:cap])]
  return parts


def load_preference_data(*, source: DataSource, vocabulary) -> PreferenceData:
  """Reads (or generates), validates, splits by prompt and tokenizes via seqio."""
  gold_task = None
  if source.paths is None:
    gold_task = gold_tasks.get_task(source.task)
    pairs = gold_tasks.make_pairs(gold_task, source.default_num_pairs, seed=source.default_seed,
                                  beta=source.default_beta)
    name = "default task" if source.task == "letters" else f"{source.task} task"
    description = (f"embedded {name}: {len(pairs)} pairs, labels agree with the gold "
                   f"reward on {gold_tasks.label_agreement(pairs):.1%}")
  else:
    pairs, stats = read_preference_files(source.paths, on_error=source.on_error,
                                         rating_margins=source.rating_margins,
                                         columns=source.columns)
    description = f"{source.paths}: {stats.summary()}"
  parts = split_parts(pairs, source)
  empty = [name for name, part in parts.items() if not part]
  if empty:
    sizes = ", ".join(f"{k} {len(v)}" for k, v in parts.items())
    raise ConfigError(f"the split by prompt left {empty} empty ({sizes} pairs from "
                      f"{len(pairs)}): give those parts a larger share in DataSource.split, or "
                      "use data with more distinct prompts")
  task = tasks.register_preference_task(source.task_name, parts, vocabulary)
  tokenized = {name: tasks.tokenized_pairs(task, name) for name in parts}
  sizes = ", ".join(f"{k} {len(v)}" for k, v in parts.items())
  eval_sets = {}
  if source.eval_paths:
    from westofn.eval_sets import read_eval_sets
    eval_sets = read_eval_sets(source.eval_paths, vocabulary=vocabulary, on_error=source.on_error,
                               columns=source.columns, rating_margins=source.rating_margins,
                               task_name=source.task_name + "_eval_sets")
    sizes += "; evaluation sets: " + ", ".join(f"{k} {len(v.pairs)}" for k, v in eval_sets.items())
  return PreferenceData(parts, tokenized, vocabulary, f"{description}; split by prompt: {sizes}",
                        is_default_task=source.paths is None, gold_task=gold_task,
                        eval_sets=eval_sets)


def summarize_lengths(tokenized) -> str:
  lens = np.array([len(p.prompt) + len(p.chosen) + len(p.rejected) for p in tokenized])
  return f"tokens per pair: median {np.median(lens):.0f}, p90 {np.percentile(lens, 90):.0f}"
