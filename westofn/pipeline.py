"""The pipeline's data and settings: where the pairs come from, how they are split and
batched, and the policy's SFT settings (gin binds these by name). The stages that use
them are in ``westofn.stages``; nothing here parses flags or touches gin."""

from __future__ import annotations

import dataclasses
import logging
from typing import Mapping, Optional, Sequence

import numpy as np

from rm import tasks
from rm.data import prompt_bucket, read_preference_files, split_by_prompt
from rm.eval_scores import REWARDBENCH_COUNT_OVERRIDES, REWARDBENCH_SECTIONS
from westofn import gold_tasks
from westofn.errors import ConfigError, require_room

log = logging.getLogger("westofn")


@dataclasses.dataclass(frozen=True)
class DataSource:
  """Where the preference pairs come from and how they are split by prompt.

  ``paths=None`` uses an embedded task with a gold reward (generated, nothing to
  download): ``task='letters'`` (the default task) or ``'sorting'``. A ``'validation'``
  part in ``split`` is human-labelled data the RMs are selected on (``train.selection``).

  ``columns`` maps the pipeline's field names to the files' own (``{'prompt': 'question',
  'chosen': 'answer_a'}``). ``eval_paths`` names extra evaluation sets (``{'name': path or
  glob}``), read like the training files and scored after every RM stage by RewardBench's
  rules; rows with a ``subset`` field are also scored per subset and per section of
  ``eval_sections`` (RewardBench's, weighted by example count with
  ``eval_count_overrides``).
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
  task: str = "letters"
  task_name: str = "westofn_preferences"
  columns: Optional[Mapping[str, str]] = None
  eval_paths: Optional[Mapping[str, object]] = None
  eval_sections: Optional[Mapping[str, Sequence[str]]] = dataclasses.field(
      default_factory=lambda: dict(REWARDBENCH_SECTIONS))
  eval_count_overrides: Optional[Mapping[str, int]] = dataclasses.field(
      default_factory=lambda: dict(REWARDBENCH_COUNT_OVERRIDES))


@dataclasses.dataclass(frozen=True)
class Batching:
  rows: int = 8
  row_len: int = 256
  pairs_per_row: int = 8
  max_response_len: int = 64
  eval_rows: Optional[int] = None  # defaults to ``rows``

  def __post_init__(self):
    # A pair's responses shrink to half the row if they must (rm.packing.truncate_pair).
    require_room("Batching", row_len=self.row_len, max_response_len=self.max_response_len,
                 min_row_len=5, what="a prompt token and two responses of a token and EOS")


@dataclasses.dataclass
class PreferenceData:
  raw: dict        # split name → list[PreferencePair]
  tokenized: dict  # split name → list[TokenizedPair]
  vocabulary: object
  description: str
  is_default_task: bool  # an embedded task: any response has a gold reward
  gold_task: object = None  # that task's module (gold_reward, behaviour_response), if any
  eval_sets: dict = dataclasses.field(default_factory=dict)  # name → evaluation.EvalSet

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
    from westofn.evaluation import read_eval_sets
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

  def __post_init__(self):
    require_room("PolicySft", row_len=self.row_len, max_response_len=self.max_response_len,
                 min_row_len=self.max_response_len + 1,
                 what=f"a prompt token and a response of max_response_len={self.max_response_len}")
