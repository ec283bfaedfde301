"""How much the West-of-N demo's reward models vary between seeds under several training
rules: a fixed 400 steps, and the protocol's validation selection with its variants.

    python -m experiments.west_of_n_demo_spread [--seeds 0,1,2] [--rules fixed_400,...] \
        [--root DIR] [--out FILE] [--students] [--report_only]

The demo's first run is what a user judges West-of-N by. ``gin/west_of_n_demo.gin`` trained
every RM a fixed 400 steps at learning rate 2e-3 and kept the last checkpoint; the protocol's
rule (``gin/selection.gin``: a validation part carved from the labelled data, the checkpoint
with the best validation loss, 10 passes over each RM's own data) was measured as its
replacement. Every rule names its learning rate, so its runs do not follow the demo's. For
each rule, task and seed this runs the demo's ``base_rm`` (RM(human 50%)) and ``human_100``
stages with ``python -m westofn.train`` (the command a user runs), and reports the gold
accuracy per seed, its spread (max − min) and whether RM(human 100%) ever falls below
RM(human 50%). The goal (#27): spread ≤ 4 points on both tasks and RM(human 100%) never
below. Runs resume from ``--root``.

More validation-selection rules were added after the first run: 20 passes and the parameters'
moving average (``Selection.average_decay``), then both together once those two had run on
seeds 0–2. The rule that picks the demo's, fixed before the added rules' results: a rule
qualifies if it meets the goal on seeds 0, 1, 2 and again on fresh seeds 3, 4, 5; of the
validation-selection rules that qualify, the demo takes the one with the higher mean
RM(human 50%) gold accuracy over both tasks and all six seeds; if none does, the demo keeps
its fixed 400 steps. ``--rules`` runs some of them (names in RULES); a rule's runs stop once
it fails, so the report shows the seed groups each one ran.

None of those qualified: on letters some seeds of every rule learn a worse function (seed 5 of
the fixed steps at 76.1 stays at 75.7 with 800 steps, its training accuracy passing its
held-out accuracy). A pilot of the fixed steps at half the learning rate (1e-3, 800 steps, not
a rule here) on letters seeds 3, 4, 5 and 0 gave 81.7, 83.9, 83.4, 84.4. So two more rules
train at learning rate 1e-3 (10 passes, without and with the moving average), stated before
they ran; the same rule picks among them. Since the pilot saw seeds 3–5, their fresh second
group is seeds 6, 7, 8 (``SEED_GROUPS_OF``). The rule at 1e-3 without the average failed on
sorting's first group (RM(human 100%) below RM(human 50%) on seed 1); the one with it is the
demo's since (``--report_only`` states the pick). ``--students`` runs the whole demo under a
rule, and the report adds its West-of-N student against RM(human 50%).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from typing import Optional

import numpy as np

from experiments import protocol

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each rule: its directory name, what it is, and its arguments over gin/west_of_n_demo.gin
# (which trains by selection_10_average_lr1e3 since this benchmark picked it; by fixed_400
# before).
_OLD_LEARNING_RATE = "--gin.rm.training.make_optimizer.learning_rate=2e-3"   # the demo's, before
_SPLIT_WITH_VALIDATION = ("--gin.westofn.settings.DataSource.split={'train': 0.35, "
                          "'validation': 0.05, 'unlabeled': 0.4, 'heldout': 0.2}")
RULES = {
    "fixed_400": ("fixed 400 steps, last checkpoint (the demo's rule before #27)", [
        _OLD_LEARNING_RATE, "--gin.RewardModelRecipe.selection=None",
        "--gin.RewardModelRecipe.epochs=None",
        "--gin.RewardModelRecipe.min_steps=0", "--gin.RewardModelRecipe.num_steps=400",
        "--gin.RunSettings.eval_every=100",
        "--gin.westofn.settings.DataSource.split={'train': 0.4, 'unlabeled': 0.4, "
        "'heldout': 0.2}"]),
    "selection_10": ("validation selection, 10 passes (gin/selection.gin)", [
        _OLD_LEARNING_RATE, "--gin_file=gin/selection.gin", "--gin.Selection.average_decay=0.0",
        _SPLIT_WITH_VALIDATION]),
    "selection_20": ("validation selection, 20 passes", [
        _OLD_LEARNING_RATE, "--gin_file=gin/selection.gin", "--gin.RewardModelRecipe.epochs=20",
        "--gin.Selection.average_decay=0.0", _SPLIT_WITH_VALIDATION]),
    "selection_10_average": ("validation selection, 10 passes, parameter average (decay 0.99)", [
        _OLD_LEARNING_RATE, "--gin_file=gin/selection.gin", "--gin.Selection.average_decay=0.99",
        _SPLIT_WITH_VALIDATION]),
    "selection_20_average": ("validation selection, 20 passes, parameter average (decay 0.99)", [
        _OLD_LEARNING_RATE, "--gin_file=gin/selection.gin", "--gin.RewardModelRecipe.epochs=20",
        "--gin.Selection.average_decay=0.99", _SPLIT_WITH_VALIDATION]),
    "selection_10_lr1e3": ("validation selection, 10 passes, learning rate 1e-3", [
        "--gin_file=gin/selection.gin", "--gin.Selection.average_decay=0.0",
        "--gin.rm.training.make_optimizer.learning_rate=1e-3", _SPLIT_WITH_VALIDATION]),
    "selection_10_average_lr1e3": (
        "validation selection, 10 passes, parameter average (decay 0.99), learning rate 1e-3", [
            "--gin_file=gin/selection.gin", "--gin.Selection.average_decay=0.99",
            "--gin.rm.training.make_optimizer.learning_rate=1e-3", _SPLIT_WITH_VALIDATION]),
}
TASKS = ("letters", "sorting")
# A rule's two seed groups: the first run's, and fresh seeds to confirm it on.
SEED_GROUPS = ((0, 1, 2), (3, 4, 5))
# Rules whose second group is other seeds: a pilot had already seen seeds 3-5 (docstring).
SEED_GROUPS_OF = {"selection_10_lr1e3": ((0, 1, 2), (6, 7, 8)),
                  "selection_10_average_lr1e3": ((0, 1, 2), (6, 7, 8))}

SPREAD_GOAL = 4.0
STAGES = ("base_rm", "human_100")
# With --students: the whole demo, so that its West-of-N student is measured under the rule.
STUDENT_STAGES = ("base_rm", "policy_sft", "west_of_n", "human_100")


def seed_groups(rule: str) -> tuple:
  return SEED_GROUPS_OF.get(rule, SEED_GROUPS)


def run_dir(root: str, rule: str, task: str, seed: int) -> str:
  return os.path.join(root, rule, task, f"seed{seed}")


def run_one(model_dir: str, bindings: list, task: str, seed: int,
            stages: tuple = STAGES) -> dict:
  """The demo's two reference RMs for one rule, task and seed (trained unless done), and its
  West-of-N student if ``stages`` name it (the reference RMs are then reused)."""
  args = [sys.executable, "-m", "westofn.train", "--gin_file=gin/west_of_n_demo.gin",
          f"--gin.MODEL_DIR='{model_dir}'", f"--gin.train.stages={list(stages)!r}",
          f"--gin.RunSettings.seed={seed}", f"--gin.westofn.settings.DataSource.task='{task}'"]
  args += list(bindings)
  subprocess.run(args, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
  return read_one(model_dir)


def read_one(model_dir: str) -> Optional[dict]:
  """Both RMs' held-out gold accuracy (%) and selected steps, or None if not both trained."""
  out = {}
  for stage in STAGES:
    path = os.path.join(model_dir, stage, "stage.json")
    if not os.path.exists(path):
      return None
    record = json.load(open(path))
    metrics = record.get("metrics") or {}
    if "gold_accuracy" not in metrics:   # still training
      return None
    out[stage] = {"gold_accuracy": 100 * metrics["gold_accuracy"],
                  "best_step": metrics.get("best_step"), "stopped_at": metrics.get("stopped_at"),
                  "gold_pairs": metrics.get("gold_pairs"),
                  "train_pairs": (record.get("identity") or {}).get("train_pairs")}
  return out


def student_dir(model_dir: str) -> Optional[str]:
  """The stage directory of the demo's West-of-N student in ``model_dir``, if it trained."""
  found = glob.glob(os.path.join(model_dir, "west_of_n", "*", "round1", "student", "eval.npz"))
  if len(found) > 1:
    raise ValueError(f"{model_dir}: {len(found)} West-of-N variants; expected one")
  return os.path.dirname(found[0]) if found else None


def heldout_correct(stage_dir: str, gold: tuple) -> np.ndarray:
  """1/0 (0.5 for a tie) per held-out pair with a gold preference: does the RM of
  ``stage_dir`` (its ``eval.npz``) rank it as the gold reward does?"""
  from westofn.stages.reward_model import gold_verdicts
  with np.load(os.path.join(stage_dir, "eval.npz")) as e:
    return gold_verdicts(types.SimpleNamespace(chosen=e["chosen"], rejected=e["rejected"]),
                         gold)


def heldout_gold(rule: str, task: str) -> tuple:
  """The held-out pairs' gold rewards (chosen, rejected) of the rule's split, in the order
  of the stages' ``eval.npz`` (the pipeline's own data loading)."""
  import ast
  from rm.tasks import byte_vocabulary
  from westofn.pipeline import load_preference_data
  from westofn.settings import DataSource
  binding = next(b for b in RULES[rule][1] if "DataSource.split" in b)
  split = ast.literal_eval(binding.split("=", 1)[1])
  data = load_preference_data(source=DataSource(task=task, split=split, default_num_pairs=6000),
                              vocabulary=byte_vocabulary())
  return data.gold("heldout")


def students(root: str, rule: str) -> list:
  """Per task: the demo's West-of-N student against its RM(human 50%) over the seeds where it
  trained; the held-out pairs and seeds paired (``westofn.stats.paired_bootstrap``)."""
  from westofn import stats
  rows = []
  for task in TASKS:
    seeds = [s for group in seed_groups(rule) for s in group
             if student_dir(run_dir(root, rule, task, s))
             and read_one(run_dir(root, rule, task, s))]
    if not seeds:
      continue
    gold = heldout_gold(rule, task)
    correct = {"base_rm": [], "student": [], "human_100": []}
    for s in seeds:
      d = run_dir(root, rule, task, s)
      for name, stage_dir in (("base_rm", os.path.join(d, "base_rm")),
                              ("student", student_dir(d)),
                              ("human_100", os.path.join(d, "human_100"))):
        c = heldout_correct(stage_dir, gold)
        recorded = json.load(open(os.path.join(stage_dir, "stage.json")))["metrics"]
        if abs(c.mean() - recorded["gold_accuracy"]) > 1e-5:
          raise ValueError(f"{stage_dir}: gold accuracy {c.mean():.5f} recomputed, "
                           f"{recorded['gold_accuracy']:.5f} recorded: not the same data")
        correct[name].append(c)
    arrays = {k: np.stack(v) for k, v in correct.items()}
    test = stats.paired_bootstrap(arrays["student"], arrays["base_rm"])
    rows.append({"task": task, "seeds": seeds,
                 **{k: stats.mean_ci(100 * v.mean(axis=1)) for k, v in arrays.items()},
                 "per_seed": {k: 100 * v.mean(axis=1) for k, v in arrays.items()},
                 "diff": 100 * test["diff"], "low": 100 * test["low"],
                 "high": 100 * test["high"], "p": test["p"]})
  return rows


def student_report(root: str, rule: str) -> list:
  rows = students(root, rule)
  if not rows:
    return []
  lines = ["", f"## The demo's West-of-N student under the rule: {RULES[rule][0]}", "",
           "The whole demo (`gin/west_of_n_demo.gin`: SFT policy, 16 samples per unlabeled "
           "prompt, soft labels, 1:1) per seed, its RMs trained by the rule; held-out gold "
           "accuracy %, mean ± 95% t interval over seeds; Δ: student − RM(human 50%), paired "
           "bootstrap over seeds and held-out pairs.", "",
           "| task | seeds | RM(human 50%) | West-of-N student | RM(human 100%) | Δ student − "
           "RM(human 50%) [95% CI] | p | student per seed |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    cells = [f"{r[k][0]:.1f} ± {r[k][1]:.1f}" for k in ("base_rm", "student", "human_100")]
    lines.append(f"| {r['task']} | {','.join(map(str, r['seeds']))} | {' | '.join(cells)} | "
                 f"{r['diff']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}] | {r['p']:.3f} | "
                 + ", ".join(f"{a:.1f}" for a in r["per_seed"]["student"]) + " |")
  return lines


def collect(root: str) -> dict:
  """``results[rule][task][seed]`` for every run under ``root`` that trained both RMs."""
  results = {}
  for rule in RULES:
    for task in TASKS:
      for seed in sorted({s for group in seed_groups(rule) for s in group}):
        one = read_one(run_dir(root, rule, task, seed))
        if one is not None:
          results.setdefault(rule, {}).setdefault(task, {})[seed] = one
  return results


def group_verdict(per_seed: dict, group: tuple) -> Optional[dict]:
  """The goal on one task and seed group: RM(human 50%)'s spread and the seeds where
  RM(human 100%) is below it; None unless every seed of the group ran."""
  if not all(s in per_seed for s in group):
    return None
  acc = {st: [per_seed[s][st]["gold_accuracy"] for s in group] for st in STAGES}
  below = [s for s, a, b in zip(group, acc["base_rm"], acc["human_100"]) if b < a]
  spread = max(acc["base_rm"]) - min(acc["base_rm"])
  return {"acc": acc, "below": below, "spread": spread,
          "spread_100": max(acc["human_100"]) - min(acc["human_100"]),
          "meets": spread <= SPREAD_GOAL and not below}


def pick(results: dict) -> tuple[Optional[str], dict]:
  """The rule fixed before the added rules' results (module docstring): the qualifying
  validation-selection rule with the higher mean RM(human 50%); None: keep the fixed steps."""
  means = {}
  for rule in RULES:
    if not rule.startswith("selection") or rule not in results:
      continue
    verdicts = [group_verdict(results[rule].get(task, {}), g) for task in TASKS
                for g in seed_groups(rule)]
    if all(v is not None and v["meets"] for v in verdicts):
      means[rule] = float(np.mean([v["acc"]["base_rm"] for v in verdicts]))
  return (max(means, key=means.get) if means else None), means


def report(results: dict, command: str, minutes: Optional[float], root: str) -> str:
  lines = ["# The West-of-N demo's seed spread under its training rules",
           "", f"`{command}`" + (f": {minutes:.1f} min" if minutes is not None else "")
           + "; the table holds every run under its root.", "",
           protocol.host_header(), "",
           "Held-out gold accuracy % of the demo's RM(human 50%) and RM(human 100%) "
           "(`gin/west_of_n_demo.gin`, 6,000 pairs, stages base_rm and human_100), per seed; "
           f"the goal: RM(human 50%) spread ≤ {SPREAD_GOAL:g} points on both tasks and "
           "RM(human 100%) never below it, on seeds 0–2 and again on fresh seeds "
           "(3–5; 6–8 for the rules at learning rate 1e-3).",
           "", "| rule | task | seeds | RM(human 50%) per seed | spread | RM(human 100%) per seed "
           "| spread | seeds with RM(human 100%) < RM(human 50%) | goal met? |",
           "|---|---|---|---|---|---|---|---|---|"]
  for rule in RULES:
    for task in TASKS:
      for group in seed_groups(rule):
        v = group_verdict(results.get(rule, {}).get(task, {}), group)
        if v is None:
          continue
        cells = [", ".join(f"{a:.1f}" for a in v["acc"]["base_rm"]), f"{v['spread']:.1f}",
                 ", ".join(f"{a:.1f}" for a in v["acc"]["human_100"]), f"{v['spread_100']:.1f}",
                 ", ".join(map(str, v["below"])) or "none", "yes" if v["meets"] else "no"]
        lines.append(f"| {RULES[rule][0]} | {task} | {group[0]}–{group[-1]} | "
                     f"{' | '.join(cells)} |")
  for task in TASKS:
    runs = [one["base_rm"] for rule in results for one in results[rule].get(task, {}).values()]
    by_split = {}
    for one in runs:
      by_split.setdefault(one["train_pairs"], []).append(one)
    gold = sorted({one["gold_pairs"] for one in runs})
    splits = {next(b for b in RULES[r][1] if "DataSource.split" in b) for r in results
              if task in results[r]}
    same = len(by_split) == len(splits)
    lines += ["", f"`{task}`: the {len(runs)} RM(human 50%) runs train on "
              f"{len(by_split)} distinct set(s) of pairs (the stages' digests) for the "
              f"{len(splits)} split(s) the rules use, "
              + ("whatever the seed, so a rule's spread is its training's own (initialisation, "
                 "order)" if same else "so the seeds also draw different data")
              + f"; each is measured on {', '.join(map(str, gold))} held-out gold pairs (one "
              f"s.e. of an accuracy near 80%: {100 * (0.8 * 0.2 / max(gold)) ** 0.5:.1f} "
              "points)."]
  chosen, means = pick(results)
  lines += ["", "The demo's rule, by the rule fixed before the added rules ran (a "
            "validation-selection rule that meets the goal on both seed groups, the higher "
            "mean RM(human 50%) among them): "
            + ("; ".join(f"{RULES[r][0]}: mean {m:.2f}" for r, m in means.items())
               or "none qualifies")
            + f". Chosen: **{RULES[chosen][0] if chosen else 'the fixed 400 steps'}**."]
  for rule in results:
    lines += student_report(root, rule)
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--rules", default=",".join(RULES),
                      help="comma-separated names from RULES (default: all)")
  parser.add_argument("--root", default=None, help="where models go (reused on a re-run)")
  parser.add_argument("--out", default=None, help="also write the report (markdown) here")
  parser.add_argument("--students", action="store_true",
                      help="run the whole demo, so that its West-of-N student is measured too")
  parser.add_argument("--report_only", action="store_true",
                      help="train nothing: rebuild the report from the runs under --root")
  args = parser.parse_args()
  if args.report_only and not args.root:
    parser.error("--report_only reads the runs under --root")
  root = args.root or tempfile.mkdtemp(prefix="won_demo_spread_")
  seeds = [int(s) for s in args.seeds.split(",")]
  unknown = set(args.rules.split(",")) - set(RULES)
  if unknown:
    parser.error(f"unknown rules {sorted(unknown)}; known: {', '.join(RULES)}")
  t0 = time.time()
  for rule in args.rules.split(","):
    if args.report_only:
      break
    for task in TASKS:
      for seed in seeds:
        one = run_one(run_dir(root, rule, task, seed), RULES[rule][1], task, seed,
                      STUDENT_STAGES if args.students else STAGES)
        print(f"{rule} / {task} / seed {seed}: {one}", flush=True)
  command = "python -m experiments.west_of_n_demo_spread " + " ".join(sys.argv[1:])
  text = report(collect(root), command,
                None if args.report_only else (time.time() - t0) / 60, root)
  print(text)
  if args.out:
    from policies.core.atomic import write_text_atomic
    write_text_atomic(args.out, text)


if __name__ == "__main__":
  main()
