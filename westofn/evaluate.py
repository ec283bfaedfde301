r"""Evaluates trained reward models of a run on preference files, without retraining:
``python -m westofn.evaluate --model_dir=DIR --data=FILE[,FILE...]``.

Each ``--data`` entry is ``NAME=PATH`` or ``PATH`` (named after the file), a jsonl(.gz), JSON
array, parquet file, ``datasets`` directory or glob, validated like training files. Its format
is recognised from its rows or named with ``--format``:

* ``pairs``: preference pairs, scored by RewardBench's rules (a tie is wrong; rows with a
  ``subset`` field are scored per subset and per RewardBench section);
* ``rewardbench2``: RewardBench 2's rows (a prompt, lists of chosen and rejected completions,
  a subset), every completion scored on its own and the six sections computed as its
  leaderboard computes them (``rm.leaderboard_rules``);
* ``rmbench``: RM-Bench's rows (three chosen and three rejected responses in three styles, a
  domain): the hard / normal / easy accuracies per domain, as its leaderboard.

Every reward-model stage of the run is evaluated unless ``--stage`` names some (``base_rm``,
``human_100``, ``west_of_n/<settings>/round1/student``, ...). The tables are printed and
written, with every figure, to ``--output`` (default ``MODEL_DIR/evaluate.json``); every
completion's reward goes beside it (``evaluate.completions.jsonl``), and
``python -m westofn.evaluate --rescore=FILE`` recomputes every figure from that file alone,
without a model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from typing import Optional, Sequence

import numpy as np

from policies.core.atomic import write_jsonl_atomic, write_text_atomic
from rm.data import PreferencePair, expand_paths
from rm.leaderboard_rules import REWARDBENCH_COUNT_OVERRIDES, REWARDBENCH_SECTIONS
from westofn import leaderboards
from westofn.model_dir import ModelDir
from westofn.cli.common import configure_logging, parse_columns, parser, run_cli
from westofn.eval_sets import (EvalSet, format_eval_sets, read_eval_sets, rewards_on_set,
                               score_pairs)
from westofn.restore import load_run, restore_reward_model, reward_model_stages
from westofn.samples import score_texts
from westofn.settings import ScoringRows

log = logging.getLogger("westofn")


def _named_paths(entries: Sequence[str]) -> dict:
  named = {}
  for entry in entries:
    name, sep, path = entry.partition("=")
    if not sep:
      path = entry
      name = re.sub(r"(\.jsonl|\.json|\.parquet|\.pq)?(\.gz)?$", "",
                    os.path.basename(os.path.normpath(entry)))
    named[name] = path
  return named


def _scorer(rm, run):
  """``score_texts(prompts, texts)`` with the run's batching: ``rewards[i][j]``."""
  return lambda prompts, texts: score_texts(rm.model, run.vocabulary, prompts, texts,
                                            **ScoringRows.for_batching(run.batching).kwargs())


def completions_path(output: str) -> str:
  """Where every completion's reward goes, beside the figures' json."""
  return os.path.splitext(output)[0] + ".completions.jsonl"


def evaluate(*, model_dir: str, data: Sequence[str], stages: Optional[Sequence[str]] = None,
             columns: Optional[dict] = None, on_error: str = "raise",
             output: Optional[str] = None, fmt: Optional[str] = None) -> dict:
  """``{stage: {set: figures}}``; prints the tables and writes the json and the completions."""
  run = load_run(model_dir)
  source = run.data
  named = _named_paths(data)
  formats = {name: fmt or leaderboards.detect_format(expand_paths(path)[0])
             for name, path in named.items()}
  pair_sets = read_eval_sets({n: p for n, p in named.items() if formats[n] == "pairs"},
                             vocabulary=run.vocabulary, on_error=on_error,
                             columns=columns if columns is not None else source.columns,
                             rating_margins=source.rating_margins)
  completion_sets = {n: [r for path in expand_paths(p)
                         for r in leaderboards.read_completions_rows(path, formats[n])]
                     for n, p in named.items() if formats[n] != "pairs"}
  names = list(stages) if stages else sorted(reward_model_stages(model_dir))
  results, records = {}, []
  for name in names:
    rm = restore_reward_model(run, name)
    results[rm.name] = {}
    for set_name, s in pair_sets.items():
      rewards = rewards_on_set(rm.model, s, batching=run.batching, vocabulary=run.vocabulary,
                               pairwise=rm.pairwise)
      results[rm.name][set_name] = score_pairs(s, **rewards, sections=source.eval_sections,
                                               count_overrides=source.eval_count_overrides)
      records += leaderboards.pair_records(rm.name, set_name, s.pairs, rewards.get("chosen"),
                                           rewards.get("rejected"), rewards.get("prob_chosen"))
    for set_name, rows in completion_sets.items():
      if rm.pairwise:
        log.warning("%s is a pairwise model: it gives no reward of one completion, so it is "
                    "not scored on %s", rm.name, set_name)
        continue
      rewards = leaderboards.score_rows(_scorer(rm, run), rows)
      results[rm.name][set_name] = leaderboards.figures(formats[set_name], rows, rewards)
      records += leaderboards.completion_records(rm.name, set_name, formats[set_name], rows,
                                                 rewards)
  output = output or ModelDir(model_dir).evaluate_output
  write_jsonl_atomic(completions_path(output), records)
  _write_and_print(results, formats, output, {"model_dir": model_dir, "data": named,
                                              "formats": formats})
  print(f"written: {output}, {completions_path(output)}")
  return results


def _write_and_print(results: dict, formats: dict, output: str, header: dict) -> None:
  write_text_atomic(output, json.dumps({**header, "results": {
      model: {s: leaderboards.json_figures(f) for s, f in per_set.items()}
      for model, per_set in results.items()}}, indent=2))
  pairs = {m: {s: f for s, f in per_set.items() if formats[s] == "pairs"}
           for m, per_set in results.items()}
  if any(pairs.values()):
    print(format_eval_sets({m: v for m, v in pairs.items() if v}))
  for set_name, fmt in formats.items():
    scored = {m: per_set[set_name] for m, per_set in results.items() if set_name in per_set}
    if fmt != "pairs" and scored:
      title = {"rewardbench2": "RewardBench 2", "rmbench": "RM-Bench"}[fmt]
      print(f"{set_name} ({title}, as its leaderboard scores it):\n")
      print(leaderboards.format_table(fmt, scored))


def rescore(*, path: str, output: Optional[str] = None) -> dict:
  """Every figure again, from a completions file alone (no model, no data files)."""
  results, formats = {}, {}
  for (model, set_name), (fmt, recs) in leaderboards.read_records(path).items():
    formats[set_name] = fmt
    if fmt == "pairs":
      results.setdefault(model, {})[set_name] = _rescore_pairs(recs)
    else:
      rows, rewards = leaderboards.rows_from_records(recs)
      results.setdefault(model, {})[set_name] = leaderboards.figures(fmt, rows, rewards)
  output = output or os.path.splitext(path)[0] + ".rescored.json"
  _write_and_print(results, formats, output, {"rescored_from": path, "formats": formats})
  print(f"written: {output}")
  return results


def _rescore_pairs(recs: Sequence[dict]) -> dict:
  """A pairs set's figures from its records (gold rewards and subsets travel with them)."""
  by_row: dict = {}
  for r in recs:
    by_row.setdefault(int(r["row"]), {})[int(r["completion"])] = r
  pairs, kw = [], {}
  if all("prob_chosen" in row[0] for row in by_row.values()):
    kw["prob_chosen"] = np.asarray([by_row[i][0]["prob_chosen"] for i in sorted(by_row)])
  else:
    kw["chosen"] = np.asarray([by_row[i][0]["reward"] for i in sorted(by_row)])
    kw["rejected"] = np.asarray([by_row[i][1]["reward"] for i in sorted(by_row)])
  for i in sorted(by_row):
    c, r = by_row[i][0], by_row[i].get(1, {})
    pairs.append(PreferencePair("", "", "", source=str(c["id"]), gold_chosen=c.get("gold"),
                                gold_rejected=r.get("gold"), subset=c.get("group")))
  return score_pairs(EvalSet("rescored", pairs, []), **kw, sections=REWARDBENCH_SECTIONS,
                     count_overrides=REWARDBENCH_COUNT_OVERRIDES)


def main(argv: Sequence[str]) -> dict:
  if any(a.startswith("--rescore") for a in argv):
    p = argparse.ArgumentParser(prog="python -m westofn.evaluate --rescore", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rescore", required=True, help="an evaluate completions file")
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    configure_logging()
    return rescore(path=args.rescore, output=args.output)
  p = parser("westofn.evaluate", __doc__)
  p.add_argument("--data", required=True, action="append",
                 help="NAME=PATH or PATH, comma-separated or repeated")
  p.add_argument("--format", default="auto", choices=("auto",) + leaderboards.FORMATS,
                 help="the rows' format (default: recognised from the rows)")
  p.add_argument("--stage", default=None, help="stage names, comma-separated (default: all)")
  p.add_argument("--columns", default=None, help="FIELD:COLUMN,... (default: the run's)")
  p.add_argument("--on_error", default="raise", choices=("raise", "skip"))
  p.add_argument("--output", default=None)
  args = p.parse_args(argv)
  configure_logging()
  return evaluate(model_dir=args.model_dir,
                  data=[d for entry in args.data for d in entry.split(",") if d],
                  stages=args.stage.split(",") if args.stage else None,
                  columns=parse_columns(args.columns), on_error=args.on_error,
                  output=args.output, fmt=None if args.format == "auto" else args.format)


if __name__ == "__main__":
  run_cli(main)
