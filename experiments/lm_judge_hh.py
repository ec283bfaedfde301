"""AI feedback on Anthropic HH: SmolLM2-135M-Instruct as an LM judge (``python -m
westofn.label``) against the human labels of held-out HH pairs, with and without
principles, beside a SmolLM2 reward model trained on HH pairs scoring the same pairs:

    python -m experiments.lm_judge_hh --model_dir=DIR [--pairs 150] [--data=../shared/data/hh-rlhf]
        [--out=experiments/results/lm_judge_smollm2_hh.md]

DIR is a westofn.train MODEL_DIR with a SmolLM2 ``base_rm`` stage (``gin/smollm2_hh.gin``,
trained first if absent). The first ``--pairs`` of its held-out pairs are written as
unlabeled pairs (``response_a``/``response_b``, which of the two is the human's chosen one
drawn by a seeded coin) and labelled by the command as a user runs it, once as it comes and
once with ``--principles=gin/principles/helpful_harmless.txt``; the RM scores the same pairs
with ``python -m westofn.score``. Reported per judge: agreement with the human label (the
verdict of both orders averaged) with a 95% bootstrap interval over pairs; agreement of each
order alone; position bias (the share of pairs whose verdict flips when the order flips, and
the share of all verdicts that went to the response shown first); the difference to the RM
with a paired bootstrap over pairs. Chance agreement is 50%.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import numpy as np
from benchmarks import bench_common
from experiments.rm_commands_hh import _heldout, _run, trained_smollm2_rm

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

PRINCIPLES = "gin/principles/helpful_harmless.txt"


def bootstrap_ci(values_P, num_resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
  """95% percentile interval of the mean over pairs."""
  v = np.asarray(values_P, np.float64)
  rng = np.random.default_rng(seed)
  means = v[rng.integers(0, len(v), (num_resamples, len(v)))].mean(1)
  low, high = np.quantile(means, [0.025, 0.975])
  return float(low), float(high)


def write_unlabeled(pairs, path: str, seed: int = 0) -> np.ndarray:
  """The pairs as response_a/response_b rows; returns per pair whether a is the chosen one."""
  a_is_chosen = np.random.default_rng(seed).random(len(pairs)) < 0.5
  with open(path, "w") as f:
    for p, first in zip(pairs, a_is_chosen):
      a, b = (p.chosen, p.rejected) if first else (p.rejected, p.chosen)
      f.write(json.dumps({"prompt": p.prompt, "response_a": a, "response_b": b}) + "\n")
  return a_is_chosen


def judge_metrics(rows, pairs, a_is_chosen) -> dict:
  right = np.asarray([r["chosen"] == p.chosen for r, p in zip(rows, pairs)], np.float64)
  ab = np.asarray([r["judge_logit_ab"] for r in rows])   # > 0: a preferred, a shown first
  ba = np.asarray([r["judge_logit_ba"] for r in rows])   # > 0: b preferred, b shown first
  a_first_right = np.where(a_is_chosen, ab > 0, ab < 0)
  b_first_right = np.where(a_is_chosen, ba < 0, ba > 0)
  return {"right": right, "agreement": right.mean(), "ci": bootstrap_ci(right),
          "a_first": a_first_right.mean(), "b_first": b_first_right.mean(),
          "flips": np.mean([r["position_flip"] for r in rows]),
          "first_wins": (np.sum(ab > 0) + np.sum(ba > 0)) / (2 * len(rows)),
          "confidence": np.mean([r["judge_probability"] for r in rows])}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--data", default="../shared/data/hh-rlhf")
  parser.add_argument("--pairs", type=int, default=150)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  from westofn import stats
  from westofn.restore import load_run
  log = []
  model_dir = trained_smollm2_rm(args.model_dir, args.data, log)
  pairs = _heldout(load_run(model_dir))[:args.pairs]
  judges = {"SmolLM2-135M-Instruct": [],
            "SmolLM2-135M-Instruct + principles": [f"--principles={PRINCIPLES}"]}
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    unlabeled = os.path.join(tmp, "unlabeled.jsonl")
    a_is_chosen = write_unlabeled(pairs, unlabeled)
    for name, extra in judges.items():
      out = os.path.join(tmp, f"labelled{len(results)}.jsonl")
      _run(["westofn.label", f"--input={unlabeled}", f"--output={out}", "--no_progress"]
           + extra, log)
      rows = [json.loads(line) for line in open(out)]
      results[name] = judge_metrics(rows, pairs, a_is_chosen)
    scoring = os.path.join(tmp, "score_in.jsonl")
    with open(scoring, "w") as f:
      for p in pairs:
        f.write(json.dumps({"prompt": p.prompt, "responses": [p.chosen, p.rejected]}) + "\n")
    scored = os.path.join(tmp, "scored.jsonl")
    _run(["westofn.score", f"--model_dir={model_dir}", "--stage=base_rm", f"--input={scoring}",
          f"--output={scored}"], log)
    rewards = np.asarray([json.loads(line)["rewards"] for line in open(scored)])
  rm_right = np.where(rewards[:, 0] == rewards[:, 1], 0.5,
                      (rewards[:, 0] > rewards[:, 1]).astype(np.float64))
  rm_ci = bootstrap_ci(rm_right)
  lines = bench_common.result_header(
      "AI feedback on HH: SmolLM2-135M-Instruct as an LM judge",
      f"python -m experiments.lm_judge_hh --model_dir={args.model_dir} --pairs {args.pairs}")
  lines += [
      f"{len(pairs)} held-out HH pairs (the first of the run's held-out split, HH files mixed); "
      "which response is shown as A is a seeded coin per pair. Judge: `python -m westofn.label` "
      "(log P(A) − log P(B) at the answer position, both orders averaged; default "
      "`JudgePrompt`, SmolLM2's chat template, float32). RM: the run's `base_rm` "
      "(`gin/smollm2_hh.gin`: SmolLM2-135M-Instruct, top 6 of 30 blocks trained on 1,000 HH "
      "pairs) through `python -m westofn.score`. Chance is 50%; intervals are 95% bootstrap "
      "over pairs; Δ vs RM is a paired bootstrap over pairs.", "",
      "| judge | agreement with human labels | A shown first only | B shown first only | "
      "verdict flips with order | verdicts for the first shown | mean confidence | Δ vs RM "
      "[95% CI], p |",
      "|---|---|---|---|---|---|---|---|"]
  for name, m in results.items():
    d = stats.paired_bootstrap(m["right"][None], rm_right[None])
    lines.append(
        f"| {name} | {100 * m['agreement']:.1f}% [{100 * m['ci'][0]:.1f}, "
        f"{100 * m['ci'][1]:.1f}] | {100 * m['a_first']:.1f}% | {100 * m['b_first']:.1f}% | "
        f"{100 * m['flips']:.1f}% | {100 * m['first_wins']:.1f}% | {m['confidence']:.3f} | "
        f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}], "
        f"p={d['p']:.3f} |")
  lines.append(f"| RM (base_rm, 1,000 HH pairs) | {100 * rm_right.mean():.1f}% "
               f"[{100 * rm_ci[0]:.1f}, {100 * rm_ci[1]:.1f}] | | | | | | |")
  lines += ["", "## Commands and wall time", ""]
  lines += [f"- `{cmd}`: {secs:.0f} s" for cmd, secs in log]
  bench_common.print_and_write(lines, args.out)


if __name__ == "__main__":
  main()
