"""West-of-N's default, settled by one confirmation on fresh data (issue #50).

    python -m experiments.west_of_n_confirmation [--tasks letters,sorting]
        [--seeds 100,101,102,103,104] --root DIR
        [--out experiments/results/west_of_n_confirmation.md] [--report_only]

Every option before this one was chosen on the same held-out pairs and seeds. This run has
data no run has seen: both embedded tasks generated with data seed 20261206 and split with
their own salt, and reward-model seeds 100-104. The protocol is ``west_of_n_better_base.py``'s
(every RM trained by the demo's rule: 10 passes, learning rate 1e-3, the parameters' moving
average, the checkpoint of best validation loss; one SFT policy per task; each option one
West-of-N round from RM(human 50%) on the unlabeled prompts).

The candidates, fixed before the first run (none is added after):

* ``default``: today's default, soft labels, 16 samples per prompt, 1:1, one judge;
* ``ens5_x4_pairs``: an ensemble of 5 base RMs judging, soft labels, 8 samples per prompt (the
  what-pays protocol's N), 4:1, and the unlabeled part's own pairs judged
  (``WestOfNStudent.unlabeled_pairs``);
* ``ens5_x4``: the same without those pairs;
* ``ens3_x4_pairs`` and ``ens3_x4``: both with an ensemble of 3, where cost matters.

References: RM(human 50%) (the base), RM(human 100%), and the ensembles of 3 and of 5 base RMs
used as the reward model (serving K RMs, no student).

Statistics: every Δ by a bootstrap over held-out prompts (a prompt brings all its pairs) and
seeds (``westofn.stats.cluster_bootstrap``, 2,000 resamples); a p below what they resolve is
shown as "< 1/B"; Holm over the five options against RM(human 50%).

Cost, counted in units that do not depend on which option ran first (the policy's samples and
the ensemble's members are shared between options within a run): RMs at inference, RMs
trained (the student and the ensemble's other members), RM scorings (samples scored by each
judge member, and each unlabeled pair's two responses), samples drawn; and the seconds a unit
took in this run, to price them.

The rule (stated in issue #50 before the run): the default is the cheapest option whose
student, on both tasks, gains over RM(human 50%) with a Holm-adjusted p < 0.05 (its lower 95%
bound above 0) and a mean gain of at least 2 points, and is not more than 1 point below
RM(human 100%) (one-sided 95%: the lower end of the two-sided 90% interval of its difference
from RM(human 100%) above -1 point). Cheapest: fewest RMs at inference, then fewest RMs
trained, then fewest RM scorings, then fewest samples. If none qualifies, today's default
stays and the report says which option came closest and by how much (the largest of its
shortfalls, in points, smallest first). Separately, distilling against serving the ensemble:
each ensemble option's student against its judge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import numpy as np

from experiments import protocol, stats
from experiments import west_of_n_better_base as better_base
from experiments import west_of_n_what_pays as what_pays

DATA_SEED = 20261206
PAIRS = {"unlabeled_pairs": True}
ENS5 = what_pays.OPTIONS["won_ens5_soft_x4"][1]   # ensemble of 5, soft labels
OPTIONS = {   # name: (label, WestOfN options, synthetic pairs per human pair)
    "default": ("today's default: soft labels, 16 samples, 1:1, one judge",
                what_pays.OPTIONS["won_soft_n16"][1], 1),
    "ens5_x4_pairs": ("ensemble of 5, soft, 8 samples, 4:1, + unlabeled pairs judged",
                      {**ENS5, **PAIRS}, 4),
    "ens5_x4": ("ensemble of 5, soft, 8 samples, 4:1", ENS5, 4),
    "ens3_x4_pairs": ("ensemble of 3, soft, 8 samples, 4:1, + unlabeled pairs judged",
                      {**ENS5, "ensemble": 3, **PAIRS}, 4),
    "ens3_x4": ("ensemble of 3, soft, 8 samples, 4:1", {**ENS5, "ensemble": 3}, 4),
}
JUDGES = {"judge_ens3": 3, "judge_ens5": 5}   # the ensembles themselves, as the RM
GAIN_POINTS, MARGIN_POINTS = 2.0, 1.0
RESAMPLES = 2000


def cost_units(name: str, *, num_prompts: int, unlabeled_pairs: int, human_pairs: int) -> dict:
  """An option's cost in units that do not depend on what ran before it."""
  _, options, ratio = OPTIONS[name]
  k, n = options.get("ensemble", 1), options.get("num_samples", 8)
  repeats = what_pays.prompt_repeats(ratio, human_pairs, num_prompts,
                                     1.0 - options.get("disagreement_quantile", 0.0))
  samples = num_prompts * n * repeats if ratio > 0 else 0
  return {"inference_rms": 1, "rms_trained": k, "samples": samples,
          "rm_scorings": k * samples + (2 * k * unlabeled_pairs if options.get(
              "unlabeled_pairs") else 0)}


COST_KEYS = ("inference_rms", "rms_trained", "rm_scorings", "samples")   # cheapest first


def heldout_prompt_labels(data) -> list:
  """Per held-out pair with a gold order (the pairs ``gold_correct`` counts): its prompt's
  digest, the cluster the bootstrap draws."""
  gold_chosen, gold_rejected = data.gold("heldout")
  return [hashlib.sha256(p.prompt.encode()).hexdigest()[:16]
          for p, c, r in zip(data.raw["heldout"], gold_chosen, gold_rejected) if c != r]


def run_task(task: str, seeds: list[int], root: str, num_pairs: int, out_path: str,
             quick: bool = False) -> None:
  """Every option's student, the references and the judges for each seed of ``task``;
  the results are written after each seed (a killed run resumes from the seeds done)."""
  from policies.core.atomic import write_text_atomic
  from westofn.costs import StageCosts
  t0 = time.time()
  vocab, data, recipe, source, policy, num_prompts = better_base.demo_protocol(
      task, root, num_pairs, quick, data_seed=DATA_SEED)
  results = {"task": task, "description": data.description, "data_seed": DATA_SEED,
             "unlabeled_prompts": num_prompts, "num_pairs": num_pairs,
             "heldout_prompts": heldout_prompt_labels(data), "seeds": {}, "minutes": 0.0,
             "cost_units": {n: cost_units(n, num_prompts=num_prompts,
                                          unlabeled_pairs=len(data.raw["unlabeled"]),
                                          human_pairs=len(data.tokenized["train"]))
                            for n in OPTIONS}}
  if os.path.exists(out_path):
    results = {**results, **{k: v for k, v in json.load(open(out_path)).items()
                             if k in ("seeds", "minutes")}}
  elapsed = results["minutes"]
  for seed in seeds:
    if str(seed) in results["seeds"]:
      continue
    run, rms = better_base.seed_references(seed, task=task, root=root, vocab=vocab,
                                           data=data, recipe=recipe)
    run = dataclasses.replace(run, costs=StageCosts())   # each option's rounds, metered
    done = {"counts": {}, "wall_s": {}, "rms": {}, "stage_costs": {}}
    members = []
    for name, (_, options, ratio) in OPTIONS.items():
      start, booked = time.time(), len(run.costs.stages)
      result = what_pays.west_of_n_student(
          options=options, ratio=ratio, rms=rms, data=data, source=source, run=run,
          recipe=recipe, policy=policy, num_prompts=num_prompts)
      rms[name], done["counts"][name] = result.students[0], result.round_counts[0]
      done["wall_s"][name] = time.time() - start
      done["stage_costs"][name] = {s: c.wall_s for s, c in run.costs.stages[booked:]}
      members = max(members, result.judge_members, key=len)
    evals = {n: r.train.eval for n, r in rms.items()}
    for judge, k in JUDGES.items():
      evals[judge] = protocol.ensemble_evaluation([rms["human_50"]] + members[:k - 1])
    done["rms"] = {n: what_pays.rm_record(ev, rms.get(n), data=data, recipe=recipe,
                                          vocab=vocab, judge_size=JUDGES.get(n, 0))
                   for n, ev in evals.items()}
    results["seeds"][str(seed)] = done
    results["minutes"] = elapsed + (time.time() - t0) / 60
    write_text_atomic(out_path, json.dumps(results))
    print(f"[{task}] seed {seed} done at {(time.time() - t0) / 60:.1f} min", flush=True)


def compare(res, a: str, b: str, confidence: float = 0.95) -> dict:
  """A − B in points by the prompt-and-seed bootstrap."""
  from westofn.stats import cluster_bootstrap
  r = cluster_bootstrap(stats.matrix(res, a, "gold_correct"), stats.matrix(res, b, "gold_correct"),
                        res["heldout_prompts"], num_resamples=RESAMPLES, seed=0,
                        confidence=confidence)
  return {**r, **{k: 100 * r[k] for k in ("diff", "low", "high")}}


def cell(r: dict) -> str:
  return f"{r['diff']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}] p {r['p_text']}"


def verdicts(res) -> dict:
  """Per option: its Δ over the base, the Holm-adjusted p over the options, its difference
  from RM(human 100%) at 90% (two-sided; its lower end is the one-sided 95% bound), and
  whether it meets each part of the rule on this task."""
  from westofn.stats import holm
  gains = {n: compare(res, n, "human_50") for n in OPTIONS}
  adjusted = dict(zip(OPTIONS, holm([gains[n]["p"] for n in OPTIONS])))
  out = {}
  for n in OPTIONS:
    vs_full = compare(res, n, "human_100", confidence=0.90)
    g = gains[n]
    out[n] = {"gain": g, "adjusted_p": adjusted[n], "vs_human_100": vs_full,
              "significant": adjusted[n] < 0.05 and g["diff"] > 0,
              "large": g["diff"] >= GAIN_POINTS, "near_full": vs_full["low"] > -MARGIN_POINTS,
              # how far each part of the rule is from being met, in points (0: met; for
              # significance, how far the unadjusted lower bound is below 0)
              "shortfall": max(0.0 if adjusted[n] < 0.05 and g["diff"] > 0
                               else max(0.0, -g["low"]),
                               max(0.0, GAIN_POINTS - g["diff"]),
                               max(0.0, -MARGIN_POINTS - vs_full["low"]))}
  return out


def choose(results: list, per_task: list = None) -> tuple[str, dict, bool]:
  """``(option, its worst shortfall per option, qualified)`` by the rule in the docstring;
  ``per_task``: each task's ``verdicts``, where the caller has them already."""
  per_task = per_task or [verdicts(res) for res in results]
  qualifies = [n for n in OPTIONS
               if all(v[n]["significant"] and v[n]["large"] and v[n]["near_full"]
                      for v in per_task)]
  shortfall = {n: max(v[n]["shortfall"] for v in per_task) for n in OPTIONS}
  units = results[0]["cost_units"]
  cheapest = lambda names: min(names, key=lambda n: tuple(units[n][k] for k in COST_KEYS))
  if qualifies:
    return cheapest(qualifies), shortfall, True
  return "default", shortfall, False


def report_task(res, v: dict) -> str:
  """One task's table; ``v``: its ``verdicts``."""
  from westofn.stats import format_p
  seeds = sorted(res["seeds"], key=int)
  g = lambda n: stats.matrix(res, n, "gold_correct")
  first = res["seeds"][seeds[0]]["rms"]
  rows = ([("RM(human 50%) (base)", "human_50")]
          + [(f"+ {label}", n) for n, (label, _, _) in OPTIONS.items()]
          + [(f"ensemble of {k} base RMs (served, no student)", j) for j, k in JUDGES.items()]
          + [("RM(human 100%)", "human_100")])
  lines = [f"### Task `{res['task']}` ({len(seeds)} seeds: {', '.join(seeds)}; "
           f"{res['minutes']:.1f} min)", "",
           f"Data: {res['description']} (data seed {res['data_seed']}); "
           f"{res['unlabeled_prompts']} unlabeled prompts; "
           f"{len(set(res['heldout_prompts']))} held-out prompts.", "",
           "| model | trained on | gold accuracy % | Δ vs RM(human 50%), points [95%], p | "
           "Holm p | Δ vs RM(human 100%) [90%] | RMs at inference | RMs trained | "
           "RM scorings | samples | wall s (this run) |", "|" + "---|" * 11]
  for label, n in rows:
    units = res["cost_units"].get(n)
    if n in OPTIONS:
      wall = np.mean([res["seeds"][s]["wall_s"][n] for s in seeds])
      cost = (f"{units['inference_rms']} | {units['rms_trained']} | {units['rm_scorings']} | "
              f"{units['samples']} | {wall:.0f}")
      extra = (f"{cell(v[n]['gain'])} | "
               f"{format_p(v[n]['adjusted_p'], RESAMPLES, multiplier=len(OPTIONS))} | "
               f"{cell(v[n]['vs_human_100'])}")
    else:
      inference = JUDGES.get(n, 1)
      cost = f"{inference} | — | — | — | —"
      extra = ("—" if n == "human_50" else cell(compare(res, n, "human_50"))) + " | — | " + (
          "—" if n == "human_100" else cell(compare(res, n, "human_100", 0.90)))
    lines.append(f"| {label} | {first[n]['trained_on']} | {stats.fmt_ci(g(n).mean(1))} | "
                 f"{extra} | {cost} |")
  lines += ["", "Gold accuracy: mean ± the 95% t interval over seeds. Δ: bootstrap over "
            f"held-out prompts and seeds ({RESAMPLES} resamples), two-sided p; Holm over the "
            f"{len(OPTIONS)} options. Wall s: the option's mean seconds in this run, where "
            "options share samples and ensemble members (the units are what an option costs "
            "alone).", ""]
  return "\n".join(lines)


def report(results: list) -> str:
  # each task's bootstraps once: the tables and the rule read the same verdicts
  per_task = [verdicts(res) for res in results]
  text = [report_task(res, v) for res, v in zip(results, per_task)]
  if len(results) < 2:
    return "\n".join(text + ["The rule needs both tasks.", ""])
  chosen, shortfall, qualified = choose(results, per_task)
  text += ["### The rule", "",
           "| option | " + " | ".join(
               f"{r['task']}: gain ≥ {GAIN_POINTS:g}, Holm p < 0.05, within {MARGIN_POINTS:g} of "
               "RM(human 100%)" for r in results) + " | worst shortfall, points |",
           "|---|" + "---|" * (len(results) + 1)]
  mark = lambda x: "yes" if x else "no"
  for n, (label, _, _) in OPTIONS.items():
    parts = [f"{mark(v[n]['large'])}, {mark(v[n]['significant'])}, {mark(v[n]['near_full'])}"
             for v in per_task]
    text.append(f"| {label} | " + " | ".join(parts) + f" | {shortfall[n]:.2f} |")
  closest = min(OPTIONS, key=lambda n: shortfall[n])
  text += ["", (f"**{chosen}** ({OPTIONS[chosen][0]}) qualifies and is the cheapest that does: "
                "it becomes the default." if qualified else
                f"No option qualifies: today's default stays. Closest: **{closest}** "
                f"({OPTIONS[closest][0]}), {shortfall[closest]:.2f} points short."), ""]
  text += ["### Distil or serve the ensemble", "",
           "Each ensemble option's student against the ensemble it learned from, served as the "
           "RM (Δ in points, bootstrap over prompts and seeds).", "",
           "| option | " + " | ".join(r["task"] for r in results) + " |",
           "|---|" + "---|" * len(results)]
  for n, (label, options, _) in OPTIONS.items():
    k = options.get("ensemble", 1)
    if k > 1:
      text.append(f"| {label} | " + " | ".join(cell(compare(r, n, f"judge_ens{k}"))
                                               for r in results) + " |")
  return "\n".join(text + [""])


def main():
  protocol.cli(doc=__doc__, script=__file__, run_task=run_task,
               result_file="{task}_confirmation.json",
               title="# West-of-N's default: the confirmation on fresh data",
               report_task=None, report=report, root_prefix="won_confirmation_",
               default_seeds="100,101,102,103,104")


if __name__ == "__main__":
  main()
