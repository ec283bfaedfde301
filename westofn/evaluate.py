r"""Evaluates trained reward models of a run on preference files, without retraining:
``python -m westofn.evaluate --model_dir=DIR --data=FILE[,FILE...]``.

Each ``--data`` entry is ``NAME=PATH`` or ``PATH`` (named after the file), a jsonl(.gz),
parquet file, ``datasets`` directory or glob, validated like training files. Every
reward-model stage of the run is evaluated unless ``--stage`` names some (``base_rm``,
``human_100``, ``west_of_n/<settings>/round1/student``, ...). Scores follow RewardBench's
rules (a tie is wrong; rows with a ``subset`` field are scored per subset and per
RewardBench section). The table is printed and written, with every figure, to
``--output`` (default ``MODEL_DIR/evaluate.json``).
"""

from __future__ import annotations

import json
import os
import re
from typing import Optional, Sequence

from policies.core.atomic import write_text_atomic
from westofn.cli_common import parse_columns, parser
from westofn.errors import run_cli
from westofn.evaluation import evaluate_on_set, format_eval_sets, read_eval_sets
from westofn.restore import load_run, restore_reward_model, reward_model_stages


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


def evaluate(*, model_dir: str, data: Sequence[str], stages: Optional[Sequence[str]] = None,
             columns: Optional[dict] = None, on_error: str = "raise",
             output: Optional[str] = None) -> dict:
  """``{stage: {set: metrics}}``; prints the table and writes the json."""
  run = load_run(model_dir)
  source = run.data
  sets = read_eval_sets(_named_paths(data), vocabulary=run.vocabulary, on_error=on_error,
                        columns=columns if columns is not None else source.columns,
                        rating_margins=source.rating_margins)
  names = list(stages) if stages else sorted(reward_model_stages(model_dir))
  results = {}
  for name in names:
    rm = restore_reward_model(run, name)
    results[rm.name] = {
        set_name: evaluate_on_set(rm.model, s, batching=run.batching, vocabulary=run.vocabulary,
                                  pairwise=rm.pairwise, sections=source.eval_sections,
                                  count_overrides=source.eval_count_overrides)
        for set_name, s in sets.items()}
  output = output or os.path.join(model_dir, "evaluate.json")
  write_text_atomic(output, json.dumps(
      {"model_dir": model_dir, "data": _named_paths(data), "results": results}, indent=2))
  print(format_eval_sets(results))
  print(f"written: {output}")
  return results


def main(argv: Sequence[str]) -> dict:
  from westofn.train import configure_logging
  p = parser("westofn.evaluate", __doc__)
  p.add_argument("--data", required=True, action="append",
                 help="NAME=PATH or PATH, comma-separated or repeated")
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
                  output=args.output)


if __name__ == "__main__":
  run_cli(main)
