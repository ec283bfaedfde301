"""RewardBench 2 and RM-Bench files, scored as their leaderboards score them
(``rm.leaderboard_rules``), with every completion's reward kept so the figures can be recomputed
without the model.

Row formats (jsonl(.gz), a JSON array file, parquet or a ``datasets`` directory):

* ``rewardbench2`` (allenai/reward-bench-2): ``prompt``, ``chosen`` (a list), ``rejected`` (a
  list), ``subset`` (Factuality, Precise IF, Math, Safety, Focus, Ties), ``id`` (for Ties
  ``ref:N`` or ``tied:N``), and ``num_correct`` where present (it must equal the number of
  chosen completions);
* ``rmbench`` (THU-KEG/RM-Bench): ``prompt``, ``chosen`` and ``rejected`` (three each: concise,
  detailed plain, detailed markdown), ``domain`` (chat, math, code, safety-refuse,
  safety-response), ``id``;
* ``pairs``: the preference pairs every other reader takes (``westofn.eval_sets``).

The format is recognised from the first row (``chosen`` a list of strings: ``rmbench`` if the
row has ``domain``, else ``rewardbench2``) or named. Errors name the file, row and field.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from rm.data import PreferencePair, row_prompt
from rm.leaderboard_rules import (best_of_n_credit, rmbench_accuracies, rmbench_matrix,
                                  ties_prompt_stats, ties_score)
from rm.row_sources import DataError, RowError, iter_rows

FORMATS = ("rewardbench2", "rmbench", "pairs")
RB2_SECTIONS = ("Factuality", "Precise IF", "Math", "Safety", "Focus", "Ties")
RMBENCH_DOMAINS = ("chat", "math", "code", "safety")


@dataclasses.dataclass(frozen=True)
class CompletionsRow:
  """One prompt and its completions, the correct (chosen) ones first."""

  id: str
  prompt: str
  completions: tuple
  num_correct: int
  group: str        # RewardBench 2's subset, RM-Bench's domain
  where: str = ""


def is_completion_list(value) -> bool:
  return isinstance(value, list) and bool(value) and all(isinstance(x, str) for x in value)


def detect_format(path: str) -> str:
  """``rewardbench2``, ``rmbench`` or ``pairs``, from the file's first row."""
  for where, row in iter_rows(path):
    if isinstance(row, RowError):
      raise DataError(f"{where}: {row.field}: {row.message}")
    if isinstance(row, dict) and is_completion_list(row.get("chosen")):
      return "rmbench" if "domain" in row else "rewardbench2"
    return "pairs"
  raise DataError(f"{path}: contains no rows")


def _texts(row: dict, field: str, where: str) -> tuple:
  value = row.get(field)
  if not is_completion_list(value) or not all(v.strip() for v in value):
    raise DataError(f"{where}: {field}: must be a non-empty list of non-empty strings, got "
                    f"{value!r}"[:300])
  return tuple(value)


def _text_field(row: dict, field: str, where: str) -> str:
  value = row.get(field)
  if not isinstance(value, str) or not value.strip():
    raise DataError(f"{where}: {field}: must be a non-empty string, got {value!r}"[:300])
  return value


def _rewardbench2_row(row: dict, where: str) -> CompletionsRow:
  prompt = row_prompt(where, row)
  chosen, rejected = _texts(row, "chosen", where), _texts(row, "rejected", where)
  subset = _text_field(row, "subset", where)
  if not isinstance(row.get("id"), (str, int)) or isinstance(row.get("id"), bool):
    raise DataError(f"{where}: id: missing or not a string")
  row_id = str(row["id"])
  if subset.lower() == "ties":
    kind, _, number = row_id.partition(":")
    if kind not in ("ref", "tied") or not number.strip().isdigit():
      raise DataError(f"{where}: id: a Ties row's id is 'ref:N' or 'tied:N', got {row_id!r}")
  num_correct = row.get("num_correct")
  if num_correct is not None and (isinstance(num_correct, bool) or num_correct != len(chosen)):
    raise DataError(f"{where}: num_correct: is {num_correct!r} but the row has {len(chosen)} "
                    "chosen completions")
  return CompletionsRow(row_id, prompt, chosen + rejected, len(chosen), subset, where)


def _rmbench_row(row: dict, where: str) -> CompletionsRow:
  prompt = row_prompt(where, row)
  chosen, rejected = _texts(row, "chosen", where), _texts(row, "rejected", where)
  if len(chosen) != len(rejected) or len(chosen) < 2:
    raise DataError(f"{where}: rejected: RM-Bench rows hold as many rejected as chosen "
                    f"responses (one per style, at least 2), got {len(chosen)} chosen and "
                    f"{len(rejected)} rejected")
  domain = _text_field(row, "domain", where)
  group = next((d for d in RMBENCH_DOMAINS if domain.startswith(d)), None)
  if group is None:
    raise DataError(f"{where}: domain: {domain!r} is not one of RM-Bench's domains "
                    f"({', '.join(RMBENCH_DOMAINS)}, safety-refuse, safety-response)")
  return CompletionsRow(str(row.get("id", where)), prompt, chosen + rejected, len(chosen),
                        group, where)


def read_completions_rows(path: str, fmt: str) -> list[CompletionsRow]:
  """The rows of a ``rewardbench2`` or ``rmbench`` file, validated (``file: row: field:``)."""
  parse = {"rewardbench2": _rewardbench2_row, "rmbench": _rmbench_row}[fmt]
  rows = []
  for where, row in iter_rows(path):
    if isinstance(row, RowError):
      raise DataError(f"{where}: {row.field}: {row.message}")
    if not isinstance(row, dict):
      raise DataError(f"{where}: <row>: must be an object, got {type(row).__name__}")
    rows.append(parse(row, where))
  if not rows:
    raise DataError(f"{path}: contains no rows")
  if fmt == "rmbench" and len({len(r.completions) for r in rows}) > 1:
    bad = next(r for r in rows if len(r.completions) != len(rows[0].completions))
    raise DataError(f"{bad.where}: chosen: every RM-Bench row has the same number of styles "
                    f"({rows[0].num_correct} in the first row)")
  return rows


def score_rows(score_texts, rows: Sequence[CompletionsRow]) -> list[np.ndarray]:
  """Every completion's reward, each scored on its own (``score_texts(prompts, texts)``, the
  prompt computed once a row). Identical completions of a prompt are scored once and share
  the reward, so a tie in the text is a tie in the score."""
  unique = [list(dict.fromkeys(r.completions)) for r in rows]
  rewards = score_texts([r.prompt for r in rows], unique)
  return [np.asarray([rw[u.index(c)] for c in r.completions], np.float64)
          for r, u, rw in zip(rows, unique, rewards)]


def _padded(rewards: Sequence[np.ndarray]):
  width = max(len(r) for r in rewards)
  scores = np.full((len(rewards), width), -np.inf)
  valid = np.zeros((len(rewards), width), bool)
  for i, r in enumerate(rewards):
    scores[i, :len(r)], valid[i, :len(r)] = r, True
  return scores, valid


def rewardbench2_figures(rows: Sequence[CompletionsRow], rewards: Sequence[np.ndarray]) -> dict:
  """``{"sections": {name: score}, "ties": components, "overall", "per_prompt": [credit or
  None]}``; the overall score is the mean of the sections present (``sections_present`` of 6)."""
  per_prompt: list = [None] * len(rows)
  sections = {}
  out: dict = {}
  for name in sorted({r.group for r in rows}):
    idx = [i for i, r in enumerate(rows) if r.group == name]
    scores, valid = _padded([rewards[i] for i in idx])
    if name.lower() == "ties":
      accurate, spread, gap = ties_prompt_stats(
          scores, np.asarray([rows[i].num_correct for i in idx]), valid)
      kinds, ids = zip(*(rows[i].id.split(":") for i in idx))
      out["ties"] = ties_score(kinds, [int(p) for p in ids], accurate, spread, gap)
      sections[name] = out["ties"]["score"]
    else:
      credit = np.asarray(best_of_n_credit(scores, valid), np.float64)
      for i, c in zip(idx, credit):
        per_prompt[i] = float(c)
      sections[name] = float(credit.mean())
  out.update(sections=sections, per_prompt=per_prompt, sections_present=len(sections),
             overall=float(np.mean(list(sections.values()))) if sections else math.nan,
             num_prompts=len(rows))
  return out


def rmbench_figures(rows: Sequence[CompletionsRow], rewards: Sequence[np.ndarray]) -> dict:
  """Per domain the 3 × 3 matrix and its hard / normal / easy accuracies and their mean;
  overall: the mean over domains of each (``compute_accuracy``)."""
  k = rows[0].num_correct
  domains = {}
  for name in RMBENCH_DOMAINS:
    idx = [i for i, r in enumerate(rows) if r.group == name]
    if not idx:
      continue
    r = np.stack([rewards[i] for i in idx])
    matrix = np.asarray(rmbench_matrix(r[:, :k], r[:, k:]), np.float64)
    acc = rmbench_accuracies(matrix)
    domains[name] = {**acc, "score": float(np.mean(list(acc.values()))),
                     "matrix": matrix.tolist(), "num_prompts": len(idx)}
  mean = lambda key: float(np.mean([d[key] for d in domains.values()]))
  return {"domains": domains, "hard": mean("hard"), "normal": mean("normal"),
          "easy": mean("easy"), "overall": mean("score"), "num_prompts": len(rows)}


def figures(fmt: str, rows, rewards) -> dict:
  return {"rewardbench2": rewardbench2_figures, "rmbench": rmbench_figures}[fmt](rows, rewards)


def completion_records(model: str, set_name: str, fmt: str, rows: Sequence[CompletionsRow],
                       rewards: Sequence[np.ndarray]) -> list[dict]:
  """One record per completion: what ``--rescore`` needs to recompute every figure."""
  return [{"model": model, "set": set_name, "format": fmt, "row": i, "id": r.id,
           "group": r.group, "num_correct": r.num_correct, "completion": j,
           "reward": float(rw[j])}
          for i, (r, rw) in enumerate(zip(rows, rewards)) for j in range(len(r.completions))]


def pair_records(model: str, set_name: str, pairs: Sequence[PreferencePair], chosen, rejected,
                 prob_chosen=None) -> list[dict]:
  """Per-completion records of a pairs set (chosen: completion 0, rejected: 1); a pairwise
  model's P(chosen ≻ rejected) is kept as the chosen completion's ``prob_chosen``."""
  out = []
  for i, p in enumerate(pairs):
    base = {"model": model, "set": set_name, "format": "pairs", "row": i, "id": p.source,
            "group": p.subset, "num_correct": 1}
    if prob_chosen is not None:
      out.append({**base, "completion": 0, "prob_chosen": float(prob_chosen[i])})
      continue
    for j, (reward, gold) in enumerate(((chosen[i], p.gold_chosen),
                                        (rejected[i], p.gold_rejected))):
      out.append({**base, "completion": j, "reward": float(reward),
                  **({"gold": gold} if gold is not None else {})})
  return out


def read_records(path: str) -> dict:
  """``{(model, set): (format, records in row order)}`` from a completions file."""
  grouped: dict = {}
  for where, rec in iter_rows(path):
    if isinstance(rec, RowError):
      raise DataError(f"{where}: {rec.field}: {rec.message}")
    for field in ("model", "set", "format", "row", "completion"):
      if not isinstance(rec, dict) or field not in rec:
        raise DataError(f"{where}: {field}: missing (is this an evaluate completions file?)")
    if rec["format"] not in FORMATS:
      raise DataError(f"{where}: format: {rec['format']!r} is not one of {FORMATS}")
    if "reward" not in rec and "prob_chosen" not in rec:
      raise DataError(f"{where}: reward: missing")
    key = (rec["model"], rec["set"])
    fmt, recs = grouped.setdefault(key, (rec["format"], []))
    if rec["format"] != fmt:
      raise DataError(f"{where}: format: {rec['format']!r}, but earlier rows of {key} are "
                      f"{fmt!r}")
    recs.append(rec)
  if not grouped:
    raise DataError(f"{path}: contains no records")
  return grouped


def rows_from_records(records: Sequence[dict]) -> tuple[list[CompletionsRow], list[np.ndarray]]:
  """The rows (without texts) and rewards a completions file holds for one model and set."""
  by_row: dict = {}
  for rec in records:
    by_row.setdefault(int(rec["row"]), []).append(rec)
  rows, rewards = [], []
  for i in sorted(by_row):
    recs = sorted(by_row[i], key=lambda r: int(r["completion"]))
    first = recs[0]
    rows.append(CompletionsRow(str(first["id"]), "", tuple(range(len(recs))),
                               int(first["num_correct"]), first["group"]))
    rewards.append(np.asarray([r["reward"] for r in recs], np.float64))
  return rows, rewards


def format_table(fmt: str, results: dict) -> str:
  """The leaderboard's layout: one row per model. ``results``: ``{model: figures}``."""
  if fmt == "rewardbench2":
    present = [s for s in RB2_SECTIONS if any(s in f["sections"] for f in results.values())]
    extra = sorted({s for f in results.values() for s in f["sections"]} - set(RB2_SECTIONS))
    cols = ["Model", "Score"] + present + extra
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for model, f in results.items():
      cells = [model, f"{100 * f['overall']:.1f}"]
      cells += [f"{100 * f['sections'][s]:.1f}" if s in f["sections"] else "—"
                for s in present + extra]
      lines.append("| " + " | ".join(cells) + " |")
    n = max(f["sections_present"] for f in results.values())
    if n < len(RB2_SECTIONS):
      lines.append(f"\nScore: the mean of the {n} sections present (the leaderboard's is over "
                   f"all {len(RB2_SECTIONS)}).")
    return "\n".join(lines) + "\n"
  cols = ["Model", "Chat", "Math", "Code", "Safety", "Easy", "Normal", "Hard", "Avg"]
  lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
  for model, f in results.items():
    cells = [model] + [f"{100 * f['domains'][d]['score']:.1f}" if d in f["domains"] else "—"
                       for d in RMBENCH_DOMAINS]
    cells += [f"{100 * f[k]:.1f}" for k in ("easy", "normal", "hard", "overall")]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def json_figures(f: dict) -> dict:
  """Figures without the per-prompt list (kept in the completions file instead)."""
  return {k: v for k, v in f.items() if k != "per_prompt"}
