"""Preference-pair files: reading, validation and the split by prompt.

Files are jsonl (one object a line, optionally gzip-compressed), parquet, or a directory
written by ``datasets`` (``rm.row_sources``). Three row layouts:

* explicit: ``{"prompt": str, "chosen": str, "rejected": str, "margin"?: number,
  "rating"?: str, "subset"?: str, "gold_chosen"?: number, "gold_rejected"?: number,
  "label"?: number}`` (``label``: a soft label, P(chosen ≻ rejected) in [0, 1]; default 1)
* Anthropic HH: ``{"chosen": transcript, "rejected": transcript}``; the prompt
  is the shared prefix up to and including the last ``"\\n\\nAssistant:"``.
* conversations: ``chosen`` / ``rejected`` as lists of ``{"role", "content"}``
  messages (``rm.conversations``), as TRL and OpenRLHF read them.

``columns`` maps these field names to a file's own (``{"prompt": "question"}``).
Every problem is reported as ``file:line: field: what is wrong`` (``file: row N``
for the table formats), naming the file's own column. With ``on_error="skip"`` bad
rows are counted by reason instead of raising, but an unreadable or empty file
always raises.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import hashlib
import math
import os
from typing import Iterable, Mapping, Optional, Sequence

from rm.conversations import is_conversation, messages, parse_conversation_row, to_transcript
# DataError is re-exported: callers catch it from here.
from rm.row_sources import DataError  # noqa: F401
from rm.row_sources import PARQUET_SUFFIXES, RowError, is_datasets_directory, iter_rows

ASSISTANT_TURN = "\n\nAssistant:"


@dataclasses.dataclass(frozen=True)
class PreferencePair:
  prompt: str
  chosen: str
  rejected: str
  margin: float = 0.0
  # "path:line" of the row, for error messages and provenance.
  source: str = ""
  # Gold rewards of both responses, where a task knows them (the embedded tasks; a user's
  # rows with ``gold_chosen``/``gold_rejected``): held-out accuracy against the truth.
  gold_chosen: Optional[float] = None
  gold_rejected: Optional[float] = None
  # The row's ``subset`` (e.g. a RewardBench subset), for per-subset evaluation.
  subset: Optional[str] = None
  # P(chosen ≻ rejected): 1 for a human label; a judge's probability for a soft
  # (distilled) West-of-N label.
  label: float = 1.0


@dataclasses.dataclass
class ReadStats:
  rows: int = 0
  kept: int = 0
  skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def summary(self) -> str:
    if not self.skipped:
      return f"{self.kept} pairs from {self.rows} rows"
    reasons = ", ".join(f"{n} {why}" for why, n in self.skipped.most_common())
    return f"{self.kept} pairs from {self.rows} rows; skipped {sum(self.skipped.values())}: {reasons}"


def split_hh_transcript(text: str) -> tuple[str, str]:
  """Splits an HH transcript into (prompt ending in 'Assistant:', final response)."""
  idx = text.rfind(ASSISTANT_TURN)
  if idx < 0:
    raise ValueError(f"no {ASSISTANT_TURN!r} turn in the transcript")
  cut = idx + len(ASSISTANT_TURN)
  return text[:cut], text[cut:]


def _required_text(row: Mapping, field: str) -> str:
  if field not in row:
    raise RowError(field, "missing field", "missing field")
  value = row[field]
  if not isinstance(value, str):
    raise RowError(field, f"must be a string, got {type(value).__name__}", "non-string field")
  if not value.strip():
    raise RowError(field, "is empty", "empty field")
  return value


def _finite_number(row: Mapping, field: str, reason: str) -> float:
  v = row[field]
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
    raise RowError(field, f"must be a finite number, got {v!r}", reason)
  return float(v)


def _parse_gold(row: Mapping) -> tuple[Optional[float], Optional[float]]:
  fields = [f for f in ("gold_chosen", "gold_rejected") if row.get(f) is not None]
  if not fields:
    return None, None
  if len(fields) == 1:
    missing = ({"gold_chosen", "gold_rejected"} - set(fields)).pop()
    raise RowError(missing, f"is missing while {fields[0]} is given (give both or neither)",
                   "bad gold reward")
  return (_finite_number(row, "gold_chosen", "bad gold reward"),
          _finite_number(row, "gold_rejected", "bad gold reward"))


def _parse_row(row, rating_margins: Optional[Mapping[str, float]]) -> tuple[str, str, str, float]:
  if not isinstance(row, dict):
    raise RowError("<row>", f"must be a JSON object, got {type(row).__name__}", "not an object")
  if is_conversation(row.get("chosen")) or is_conversation(row.get("prompt")):
    prompt, chosen, rejected = parse_conversation_row(row)
  elif "prompt" in row and row["prompt"] is not None:
    prompt = _required_text(row, "prompt")
    chosen = _required_text(row, "chosen")
    rejected = _required_text(row, "rejected")
  else:
    chosen_full = _required_text(row, "chosen")
    rejected_full = _required_text(row, "rejected")
    try:
      prompt, chosen = split_hh_transcript(chosen_full)
    except ValueError as e:
      raise RowError("chosen", str(e), "no assistant turn") from None
    try:
      prompt_r, rejected = split_hh_transcript(rejected_full)
    except ValueError as e:
      raise RowError("rejected", str(e), "no assistant turn") from None
    if prompt != prompt_r:
      raise RowError("rejected", "its dialogue before the last assistant turn differs from "
                     "chosen's, so the pair has no shared prompt", "prompts differ")
    for field, text in (("chosen", chosen), ("rejected", rejected)):
      if not text.strip():
        raise RowError(field, "final assistant response is empty", "empty field")
  if chosen == rejected:
    raise RowError("rejected", "is identical to chosen", "chosen == rejected")
  margin = 0.0
  if "margin" in row and row["margin"] is not None:
    margin = _finite_number(row, "margin", "bad margin")
  elif "rating" in row and rating_margins is not None:
    r = row["rating"]
    if r not in rating_margins:
      raise RowError("rating", f"{r!r} is not in the rating→margin table {sorted(rating_margins)}",
                     "unknown rating")
    margin = float(rating_margins[r])
  return prompt, chosen, rejected, margin


def parse_pair_row(row) -> tuple[str, str, str]:
  """``(prompt, chosen, rejected)`` of a row in any form the trainer reads (prompt /
  chosen / rejected, HH transcripts, chat messages); ``RowError`` naming the field."""
  return _parse_row(row, None)[:3]


def _parse_label(row: Mapping) -> float:
  if row.get("label") is None:
    return 1.0
  label = _finite_number(row, "label", "bad label")
  if not 0.0 <= label <= 1.0:
    raise RowError("label", f"must be a probability in [0, 1] (P(chosen ≻ rejected)), got "
                   f"{label!r}", "bad label")
  return label


def _parse_subset(row: Mapping) -> Optional[str]:
  subset = row.get("subset")
  if subset is not None and (not isinstance(subset, str) or not subset.strip()):
    raise RowError("subset", f"must be a non-empty string, got {subset!r}", "bad subset")
  return subset


def _renamed(row, columns: Mapping[str, str]):
  """The row under the pipeline's field names (``columns``: ours → the file's). A mapped
  column the row lacks stays missing, and its error names the file's column."""
  if not columns or not isinstance(row, dict):
    return row
  out = {k: v for k, v in row.items() if k not in columns.values()}
  out.update({ours: row[theirs] for ours, theirs in columns.items() if theirs in row})
  return out


def read_preference_file(path: str, *, on_error: str = "raise",
                         rating_margins: Optional[Mapping[str, float]] = None,
                         max_pairs: Optional[int] = None,
                         columns: Optional[Mapping[str, str]] = None
                         ) -> tuple[list[PreferencePair], ReadStats]:
  """Reads and validates one file of preference pairs (jsonl[.gz], parquet or a
  ``datasets`` directory); ``columns`` maps the pipeline's field names to the file's."""
  if on_error not in ("raise", "skip"):
    raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
  column_of = dict(columns or {})
  pairs: list[PreferencePair] = []
  stats = ReadStats()
  for where, row in iter_rows(path):
    if max_pairs is not None and len(pairs) >= max_pairs:
      break
    stats.rows += 1
    try:
      if isinstance(row, RowError):
        raise row
      row = _renamed(row, column_of)
      prompt, chosen, rejected, margin = _parse_row(row, rating_margins)
      gold_chosen, gold_rejected = _parse_gold(row)
      subset = _parse_subset(row)
      label = _parse_label(row)
    except RowError as e:
      if on_error == "raise":
        head, _, rest = e.field.partition("[")
        field = column_of.get(head, head) + (f"[{rest}" if rest else "")
        raise DataError(f"{where}: {field}: {e.message}") from None
      stats.skipped[e.reason] += 1
      continue
    pairs.append(PreferencePair(prompt, chosen, rejected, margin, where, gold_chosen,
                                gold_rejected, subset, label))
  stats.kept = len(pairs)
  if not pairs:
    raise DataError(f"{path}: contains no valid preference pairs ({stats.summary()})")
  return pairs, stats


def row_prompt(where: str, row) -> str:
  """A row's ``prompt`` field as text (a chat-message list becomes its transcript); a
  ``DataError`` naming ``where`` (file and line) and the field otherwise."""
  if isinstance(row, RowError):
    raise DataError(f"{where}: {row.field}: {row.message}")
  if not isinstance(row, dict):
    raise DataError(f"{where}: <row>: must be an object, got {type(row).__name__}")
  prompt = row.get("prompt")
  if is_conversation(prompt):
    try:
      prompt = to_transcript(messages(prompt, "prompt"))
    except RowError as e:
      raise DataError(f"{where}: {e.field}: {e.message}") from None
  if not isinstance(prompt, str) or not prompt.strip():
    raise DataError(f"{where}: prompt: missing, empty or not a string")
  return prompt


def read_prompt_file(path: str) -> list[str]:
  """Unlabeled prompts for West-of-N: a file (any format ``read_preference_file`` reads)
  with a ``prompt`` field per row (an HH transcript ending in ``"\n\nAssistant:"``, plain
  text, or a list of chat messages). Distinct, in file order."""
  prompts, seen = [], set()
  for where, row in iter_rows(path):
    prompt = row_prompt(where, row)
    if prompt not in seen:
      seen.add(prompt)
      prompts.append(prompt)
  if not prompts:
    raise DataError(f"{path}: contains no prompts")
  return prompts


def expand_paths(paths: Sequence[str] | str) -> list[str]:
  """Files from paths, glob patterns (``data/*.jsonl.gz``) and directories (every
  ``*.jsonl``/``*.jsonl.gz``/``*.parquet`` inside, or a ``datasets`` directory itself),
  in sorted order within each entry."""
  out = []
  for path in [paths] if isinstance(paths, str) else paths:
    if is_datasets_directory(path):
      found = [path]
    elif os.path.isdir(path):
      found = sorted(glob.glob(os.path.join(path, "*.jsonl")) +
                     glob.glob(os.path.join(path, "*.jsonl.gz")) +
                     [f for suffix in PARQUET_SUFFIXES
                      for f in glob.glob(os.path.join(path, "*" + suffix))])
    elif glob.has_magic(path):
      found = sorted(glob.glob(path))
    else:
      found = [path]
    if not found:
      raise FileNotFoundError(f"{path}: no preference files match")
    out.extend(found)
  return out


def read_preference_files(paths: Sequence[str] | str, **kwargs) -> tuple[list[PreferencePair], ReadStats]:
  paths = expand_paths(paths)
  all_pairs, total = [], ReadStats()
  for path in paths:
    pairs, stats = read_preference_file(path, **kwargs)
    all_pairs.extend(pairs)
    total.rows += stats.rows
    total.kept += stats.kept
    total.skipped.update(stats.skipped)
  return all_pairs, total


def prompt_bucket(prompt: str, salt: str = "westofn") -> float:
  """A stable number in [0, 1) from the prompt text alone."""
  digest = hashlib.sha256((salt + "\0" + prompt).encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def split_by_prompt(items: Iterable, fractions: Mapping[str, float], *, salt: str = "westofn",
                    prompt_of=lambda item: item.prompt) -> dict[str, list]:
  """Deterministic split in which every copy of a prompt lands in the same part.

  ``fractions`` maps part names to shares, e.g. ``{"train": 0.8, "heldout":
  0.2}``; shares must sum to 1. Parts take hash ranges in sorted-name order, so
  the split does not depend on dict order (gin writes dicts sorted). Order
  inside a part is kept.
  """
  total = sum(fractions.values())
  if any(f < 0 for f in fractions.values()) or abs(total - 1.0) > 1e-6:
    raise ValueError(f"split fractions must be non-negative and sum to 1, got {dict(fractions)}")
  bounds, acc = [], 0.0
  for name, frac in sorted(fractions.items()):
    acc += frac
    bounds.append((acc, name))
  parts = {name: [] for name in fractions}
  for item in items:
    b = prompt_bucket(prompt_of(item), salt)
    name = next((n for upper, n in bounds if b < upper), bounds[-1][1])
    parts[name].append(item)
  return parts
