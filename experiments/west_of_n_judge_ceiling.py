"""How good can a West-of-N judge built from the same human pairs get, and its students?

    python -m experiments.west_of_n_judge_ceiling [--tasks letters,sorting] [--seeds 0,1,2,3,4]
        [--root DIR] [--out experiments/results/west_of_n_judge_ceiling.md] [--report_only]

Issue #27's goal asks a student for ≥ 2 points over RM(human 50%) on both gold tasks and
RM(human 100%)'s level on sorting. ``west_of_n_better_base.py`` found that a student gets about
as good as its judge (the ensemble of 5 base RMs), so a student can meet the goal only if some
judge does. This measures the most that judges made of the same human pairs reach, with no
training beyond ``west_of_n_better_base.py``'s (give its ``--root`` and the RMs are read back,
not trained again): per task, on the held-out pairs,

* RM(human 50%), the ensemble of 5 base RMs (the base and the 4 judge members of one seed),
  its student (soft labels, 4:1; the option that came closest) and RM(human 100%): each seed
  its own model, as in that benchmark;
* the ensemble of all 25 base RMs of the 5 seeds' judges: more same-data members than any
  option trains (an ensemble's gain levels off as members are added);
* the ensemble of the 5 seeds' students: what distilling K = 5 students into one (the issue's
  last unmeasured option) would start from; a student distilled from it lands near it.

An ensemble's reward is its members' mean reward, as the judge's is. A single ensemble (25
base RMs, 5 students) is compared with RM(human 50%) and RM(human 100%) by the paired bootstrap
with its verdicts repeated for every seed of the other side, so the interval holds the other
side's training noise and the held-out pairs' noise.

The question is fixed before the run: does any same-data judge reach RM(human 100%) on
sorting? If none does, no student of such a judge meets the sorting part of the goal.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from experiments import west_of_n_better_base as better_base
from experiments import protocol, stats
from experiments import west_of_n_what_pays as what_pays

OPTION = "won_ens5_soft_x4"


def margins(evaluation) -> list:
  """Held-out reward margins (chosen − rejected), rounded: an ensemble's margin is its
  members' mean margin."""
  return np.round(np.asarray(evaluation.chosen, np.float64)
                  - np.asarray(evaluation.rejected, np.float64), 5).tolist()


def run_task(task: str, seeds: list[int], root: str, num_pairs: int, out_path: str,
             quick: bool = False) -> None:
  """Per seed: the held-out margins of the base RM, its 4 judge members, the student of
  ``OPTION`` and RM(human 100%), trained by ``west_of_n_better_base``'s protocol (read back
  from ``root`` where that benchmark trained them)."""
  from policies.core.atomic import write_text_atomic
  t0 = time.time()
  vocab, data, recipe, source, policy, num_prompts = better_base.demo_protocol(task, root,
                                                                          num_pairs, quick)
  gold_chosen, gold_rejected = data.gold("heldout")
  results = {"task": task, "description": data.description,
             "gold": [np.asarray(gold_chosen).tolist(), np.asarray(gold_rejected).tolist()],
             "seeds": {}, "minutes": 0.0}
  if os.path.exists(out_path):
    results = json.load(open(out_path))
  elapsed = results["minutes"]
  _, options, ratio = better_base.OPTIONS[OPTION]
  for seed in seeds:
    if str(seed) in results["seeds"]:
      continue
    run, rms = better_base.seed_references(seed, task=task, root=root, vocab=vocab, data=data,
                                           recipe=recipe)
    result = what_pays.west_of_n_student(
        options=options, ratio=ratio, rms=rms, data=data, source=source, run=run,
        recipe=recipe, policy=policy, num_prompts=num_prompts)
    results["seeds"][str(seed)] = {
        "base": margins(rms["human_50"].train.eval),
        "members": [margins(m.train.eval) for m in result.judge_members[:4]],
        "student": margins(result.students[0].train.eval),
        "human_100": margins(rms["human_100"].train.eval)}
    results["minutes"] = elapsed + (time.time() - t0) / 60
    write_text_atomic(out_path, json.dumps(results))   # after every seed: resumable
    print(f"[{task}] seed {seed} done at {(time.time() - t0) / 60:.1f} min", flush=True)


def verdicts(margins_P, gold) -> np.ndarray:
  """Per held-out pair with a gold preference: 1 if ranked as the gold reward, 0.5 a tie."""
  import types
  from westofn.stages.reward_model import gold_verdicts
  m = np.asarray(margins_P, np.float64)
  return gold_verdicts(types.SimpleNamespace(chosen=m, rejected=np.zeros_like(m)), gold)


def judges(res) -> dict:
  """``{row name: verdicts [S, P]}``: each seed's models, and the single ensembles (one row)."""
  seeds = sorted(res["seeds"], key=int)
  per = [res["seeds"][s] for s in seeds]
  v = lambda m: verdicts(m, res["gold"])
  mean = lambda ms: np.mean(np.asarray(ms, np.float64), 0)
  return {
      "human_50": np.stack([v(p["base"]) for p in per]),
      "judge_5": np.stack([v(mean([p["base"]] + p["members"])) for p in per]),
      "judge_all": v(mean([m for p in per for m in [p["base"]] + p["members"]]))[None],
      "student": np.stack([v(p["student"]) for p in per]),
      "students": v(mean([p["student"] for p in per]))[None],
      "human_100": np.stack([v(p["human_100"]) for p in per])}


def report_task(res) -> str:
  seeds = sorted(res["seeds"], key=int)
  k = len(seeds)
  rows = (("RM(human 50%) (base)", "human_50", "1 per seed"),
          ("ensemble of 5 base RMs (the option's judge)", "judge_5", "5 per seed"),
          (f"ensemble of all {5 * k} base RMs of the {k} seeds' judges", "judge_all",
           f"{5 * k}, one ensemble"),
          ("+ ensemble of 5, soft labels, 4:1 (its student)", "student", "1 per seed"),
          (f"ensemble of the {k} seeds' students", "students", f"{k}, one ensemble"),
          ("RM(human 100%)", "human_100", "1 per seed"))
  v = judges(res)
  tile = lambda x, n: np.repeat(x, n, 0) if len(x) == 1 else x
  cmp = lambda a, b: stats.compare(tile(v[a], len(v[b])), tile(v[b], len(v[a])))[1]
  lines = [f"### Task `{res['task']}` ({k} seeds: {', '.join(seeds)}; {res['minutes']:.1f} min, "
           "the models read back from west_of_n_better_base.py's run)", "",
           f"Data: {res['description']}.", "",
           "| model | members | gold accuracy % | Δ vs RM(human 50%) [95% CI], p | "
           "Δ vs RM(human 100%) [95% CI], p |", "|---|---|---|---|---|"]
  for label, name, members in rows:
    acc = (stats.fmt_ci(v[name].mean(1)) if len(v[name]) > 1
           else f"{100 * v[name].mean():.2f}")
    lines.append(f"| {label} | {members} | {acc} | "
                 f"{cmp(name, 'human_50') if name != 'human_50' else '—'} | "
                 f"{cmp(name, 'human_100') if name != 'human_100' else '—'} |")
  lines += ["", "Mean ± half-width of the 95% t interval over seeds (a single ensemble: its "
            "accuracy); Δ: paired bootstrap over seeds and held-out pairs (2,000 resamples), "
            "a single ensemble's verdicts paired with each seed of the other side.", ""]
  return "\n".join(lines)


def main():
  protocol.cli(doc=__doc__, script=__file__, run_task=run_task,
             result_file="{task}_judge_ceiling.json",
             title="# How far same-data judges reach: West-of-N's judge ceiling",
             report_task=report_task, root_prefix="won_judge_ceiling_")


if __name__ == "__main__":
  main()
