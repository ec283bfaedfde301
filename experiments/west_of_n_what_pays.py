"""What makes West-of-N pay: soft labels, ensemble judges and the amount of synthetic data.

    python -m experiments.west_of_n_what_pays [--tasks letters,sorting] [--seeds 0,1,2,3,4]
        [--root DIR] [--out experiments/results/west_of_n_what_pays.md] [--report_only]

``west_of_n_beyond.py`` found the paper's student within noise of its base RM although its
pseudo-labels beat the human labels, while a student judged by an ensemble of 3 base RMs came
close to that ensemble on letters. A student can only learn what its judge knows: this
benchmark measures the ways to hand it more of that (``WestOfN`` settings, tested in
``tests/``):

- ``ensemble=K``: a better judge (K base RMs on the same human pairs, other seeds);
- ``soft_labels=True``: the judge's P(best ≻ worst) as the Bradley–Terry target (distillation)
  instead of a hard 1;
- ``start='teacher'``: the student continues from the base RM instead of a new
  initialisation;
- more synthetic pairs per human pair (1, 2, 4): the unlabeled prompts sampled again
  (``prompt_repeats``; letters has ~2,750 distinct prompts, nearly all in the labelled and
  held-out parts, so both tasks get their extra pairs this one way);
- added after the 5-seed run of the options above: ``disagreement_quantile=0.25``, the
  ensemble's disagreement (std of its members' r_best − r_worst, or that std over the mean
  margin: ``disagreement_measure='relative'``) as a filter; where the
  candidates come from (``num_samples=16``, ``temperature=0.7``); and claim 4 as a curve,
  the soft-label student from base RMs trained on 12.5% and 25% of the human data.

Same protocol, data, policy and RM recipe as the claims benchmark (its ``_components``; every
RM trains 10 passes over its own data and keeps its best checkpoint on the validation part).
Every student is compared with RM(human 50%) and with the paper's West-of-N, paired over seeds
and held-out pairs, with Holm's correction over the options.

The rule that picks the default, fixed before the final run: the option whose *smaller* mean
gain over RM(human 50%) of the two tasks, in gold accuracy on the **validation** part (never
the held-out part), is largest; a tie within 0.5 points goes to the cheaper option (fewer
judges, then fewer synthetic pairs, then fewer samples per prompt, then without the judged
unlabeled pairs of ``west_of_n_better_base.py``, then the one listed first).
The held-out table then says whether it meets the goal (≥ 2 points over RM(human 50%) on both
tasks, Holm-adjusted p < 0.05, and RM(human 100%)'s level on sorting). Each task runs in its
own process; everything resumes from ``--root``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time

import numpy as np

from experiments import protocol, stats

# name: (row label, WestOfN options beside num_samples=8, max_new_tokens=24,
#        synthetic pairs per human pair, judges)
OPTIONS = {
    "won": ("West-of-N as in the paper (base RM judges, hard labels), 1:1", {}, 1),
    "won_x4": ("the paper's, 4 synthetic pairs per human pair", {}, 4),
    "won_soft": ("soft labels, 1:1", {"soft_labels": True}, 1),
    # Added for the 5-seed run (after the 3-seed one): the single judge's soft-label curve,
    # and the student continuing from the base RM instead of starting anew.
    "won_soft_x4": ("soft labels, 4:1", {"soft_labels": True}, 4),
    "won_soft_teacher": ("soft labels, 1:1, the student continues from the base RM",
                         {"soft_labels": True, "start": "teacher"}, 1),
    "won_ens3": ("ensemble judge of 3, 1:1", {"ensemble": 3}, 1),
    "won_ens5": ("ensemble judge of 5, 1:1", {"ensemble": 5}, 1),
    "won_ens5_soft": ("ensemble of 5, soft labels, 1:1",
                      {"ensemble": 5, "soft_labels": True}, 1),
    "won_ens5_x4": ("ensemble of 5, 4:1", {"ensemble": 5}, 4),
    "won_ens5_soft_x2": ("ensemble of 5, soft labels, 2:1",
                         {"ensemble": 5, "soft_labels": True}, 2),
    "won_ens5_soft_x4": ("ensemble of 5, soft labels, 4:1",
                         {"ensemble": 5, "soft_labels": True}, 4),
    # Added after the 5-seed run, the remaining measurements: the ensemble's
    # disagreement as a filter, and where candidates come from (N and temperature).
    "won_ens5_soft_x4_agree": ("ensemble of 5, soft labels, 4:1, the quarter of the pairs its "
                               "members disagree on most dropped",
                               {"ensemble": 5, "soft_labels": True,
                                "disagreement_quantile": 0.25}, 4),
    # Added after seed 0 of the run above showed the std tracking the margin (r = 0.64 on
    # sorting; the dropped quarter's pseudo-labels were the more accurate): the scale-free
    # measure, std over the mean margin.
    "won_ens5_soft_x4_agree_rel": ("ensemble of 5, soft labels, 4:1, the quarter of the pairs "
                                   "with the highest relative disagreement dropped",
                                   {"ensemble": 5, "soft_labels": True,
                                    "disagreement_quantile": 0.25,
                                    "disagreement_measure": "relative"}, 4),
    "won_soft_n16": ("soft labels, 1:1, 16 samples per prompt",
                     {"soft_labels": True, "num_samples": 16}, 1),
    "won_soft_t07": ("soft labels, 1:1, samples at temperature 0.7",
                     {"soft_labels": True, "temperature": 0.7}, 1),
}
# Claim 4 as a curve: the soft-label student (1:1, N=8) from base RMs trained on less
# human data (a share of the 'train' part, the base RM's 1612 or so pairs), each student on
# its base's human pairs: (base RM, share of 'train', student).
CLAIM4 = (("human_12", 0.25, "won_soft_from_12"), ("human_25", 0.5, "won_soft_from_25"),
          ("human_50", 1.0, "won_soft"))
# The data-scale curve: synthetic pairs per human pair, for the paper's student, the
# soft-label one and the ensemble-of-5 soft-label one.
CURVES = {"the paper's": ("won", "won_x4"),
          "soft labels": ("won_soft", "won_soft_x4"),
          "ensemble of 5, soft labels": ("won_ens5_soft", "won_ens5_soft_x2", "won_ens5_soft_x4")}
TIE = 0.005   # the rule's tie: half a point of validation gold accuracy


def prompt_repeats(ratio: int, human: int, prompts: int, kept_share: float = 1.0) -> int:
  """Passes over the unlabeled prompts for ``ratio`` synthetic pairs per human pair (a few
  prompts give no pair: fewer than 2 distinct samples; a filter keeps ``kept_share``)."""
  return max(1, math.ceil(ratio * human / (0.9 * kept_share * prompts)))


def _validation_gold(model, data, recipe, vocab) -> list:
  """Per validation pair (gold ties dropped): does ``model`` order it as the gold reward?"""
  from rm.pairwise import pair_batches
  from rm.training import evaluate_reward_model
  from westofn.stages.reward_model import gold_verdicts
  batches = pair_batches(data.tokenized["validation"], recipe.batching, vocab, seed=0,
                         shuffle=False).one_pass()
  ev = evaluate_reward_model(model=model, batches=batches)
  return gold_verdicts(ev, data.gold("validation")).tolist()


def mean_gold_gap(gold_chosen, gold_rejected) -> float:
  """Mean |gold reward(chosen) − gold reward(rejected)|: how close the pairs are."""
  return float(np.mean(np.abs(np.asarray(gold_chosen) - np.asarray(gold_rejected))))


def disagreement_diagnostics(candidates: list) -> dict:
  """What a disagreement filter dropped, from a round's candidates (an ensemble judge): the
  correlation of the members' std with the mean margin r_best − r_worst, and the pseudo-label
  gold accuracy of the kept and of the dropped pairs (gold ties left out)."""
  from westofn.west_of_n import pseudo_label_accuracy
  rows = [c for c in candidates if "disagreement" in c]
  std = np.array([c["disagreement"] for c in rows])
  margin = np.array([max(c["base_scores"]) - min(c["base_scores"]) for c in rows])
  g_best, g_worst = (np.array([c[k] for c in rows]) for k in ("gold_chosen", "gold_rejected"))
  kept = np.array([c["passed"]["disagreement"] for c in rows])
  return {"corr_std_margin": float(np.corrcoef(std, margin)[0, 1]),
          "kept_accuracy": pseudo_label_accuracy(g_best, g_worst, kept)[0],
          "dropped_accuracy": pseudo_label_accuracy(g_best, g_worst, ~kept)[0]}


def west_of_n_student(*, options: dict, ratio: int, rms: dict, data, source, run, recipe,
                      policy, num_prompts: int, base: str = "human_50", share: float = 1.0,
                      tag: str = ""):
  """One option's West-of-N round from ``rms[base]``: N=8, max 24 new tokens and the paper's
  hard labels unless ``options`` say otherwise; ``ratio`` synthetic pairs per human pair from
  the unlabeled prompts sampled again; the base's human pairs (a ``share`` of 'train')."""
  from westofn import stages
  from westofn.settings import WestOfN
  pairs = protocol.subset(data, "train", share) if share < 1 else None
  n_human = len(pairs) if pairs is not None else len(data.tokenized["train"])
  kept = 1.0 - options.get("disagreement_quantile", 0.0)
  settings = WestOfN.build(max_new_tokens=24, batch_prompts=32,
                           synthetic_per_human=float(ratio),
                           prompt_repeats=prompt_repeats(ratio, n_human, num_prompts, kept),
                           **{"num_samples": 8, "soft_labels": False, **options})
  return stages.west_of_n(settings=settings, base=rms[base], data=data, source=source,
                          run=run, recipe=recipe, policy=policy, human=pairs, tag=tag)


def rm_record(evaluation, rm, *, data, recipe, vocab, judge_size: int = 0) -> dict:
  """What the report reads of one RM (``rm``) or judge (``rm=None``, ``judge_size`` members):
  per held-out pair (gold ties dropped) whether it is ordered as the gold reward, the same on
  the validation part (not for a judge: its members' mean verdict is not its own), what it
  trained on and its kept step."""
  from westofn.stages.reward_model import gold_verdicts
  return {"gold_correct": gold_verdicts(evaluation, data.gold("heldout")).tolist(),
          "validation_gold_correct": (_validation_gold(rm.model, data, recipe, vocab)
                                      if rm is not None else None),
          "trained_on": rm.metrics["trained_on"] if rm else f"{judge_size} base RMs",
          "best_step": rm.metrics.get("best_step") if rm else None}


def run_task(task: str, seeds: list[int], root: str, num_pairs: int, out_path: str,
             quick: bool = False) -> None:
  from policies.core.atomic import write_text_atomic
  from westofn import stages
  from westofn.stages.reward_model import evaluation_parts
  from westofn.stages.west_of_n import unlabeled_prompts
  t0 = time.time()
  vocab, data, recipes, policy = protocol.components(task, root, num_pairs, quick)
  recipe = recipes["new"]
  source = protocol.source(task, num_pairs)
  g_chosen, g_rejected = data.gold("heldout")
  num_prompts = len(unlabeled_prompts(data, source, None))
  results = {"task": task, "description": data.description, "unlabeled_prompts": num_prompts,
             "num_pairs": num_pairs, "heldout_gold_gap": mean_gold_gap(g_chosen, g_rejected),
             "seeds": {}}
  earlier_minutes = 0.0
  if os.path.exists(out_path):   # seeds of an earlier run (interrupted, or with fewer options)
    earlier = json.load(open(out_path))
    results["seeds"], earlier_minutes = earlier["seeds"], earlier.get("minutes", 0.0)
  for seed in seeds:
    run = stages.RunContext(model_dir=os.path.join(root, task, f"seed{seed}"), vocabulary=vocab,
                            seed=seed, eval_every=50, save_every=500, progress=False)
    rms = {"human_50": stages.base_rm(data=data, run=run, recipe=recipe),
           "human_100": stages.human_100(data=data, run=run, recipe=recipe)}
    for base, share, _ in CLAIM4[:-1]:
      rms[base] = stages.reward_model_stage(
          name=base, stage_dir=os.path.join(run.model_dir, base),
          train_pairs=protocol.subset(data, "train", share), run=run, recipe=recipe,
          **evaluation_parts(data))
      rms[base].metrics["trained_on"] = f"human {len(protocol.subset(data, 'train', share))}"
    counts, members = {}, []
    student = functools.partial(west_of_n_student, rms=rms, data=data, source=source, run=run,
                                recipe=recipe, policy=policy, num_prompts=num_prompts)

    diagnostics = {}
    for name, (_, options, ratio) in OPTIONS.items():
      result = student(options=options, ratio=ratio)
      rms[name], counts[name] = result.students[0], result.round_counts[0]
      if options.get("disagreement_quantile"):
        path = os.path.join(result.round_dirs[0], "candidates.jsonl")
        diagnostics[name] = disagreement_diagnostics([json.loads(l) for l in open(path)])
      if len(result.judge_members) > len(members):
        members = result.judge_members
    for base, share, name in CLAIM4[:-1]:
      result = student(options=OPTIONS["won_soft"][1], ratio=1, base=base, share=share,
                       tag=f"from_{base}")
      rms[name], counts[name] = result.students[0], result.round_counts[0]
    per_seed = {"rms": {}, "counts": counts, "disagreement": diagnostics}
    evals = {n: r.train.eval for n, r in rms.items()}
    # The ensemble judges themselves (their mean reward), for what distilling them keeps.
    judges = {"judge_ens3": [rms["human_50"]] + members[:2],
              "judge_ens5": [rms["human_50"]] + members[:4]}
    for name, group in judges.items():
      evals[name] = protocol.ensemble_evaluation(group)
    for name, ev in evals.items():
      per_seed["rms"][name] = rm_record(ev, rms.get(name), data=data, recipe=recipe,
                                        vocab=vocab, judge_size=len(judges.get(name, ())))
    results["seeds"][str(seed)] = per_seed
    results["minutes"] = earlier_minutes + (time.time() - t0) / 60   # over all the runs
    write_text_atomic(out_path, json.dumps(results))   # after every seed: resumable, reportable
    print(f"[{task}] seed {seed} done at {(time.time() - t0) / 60:.1f} min", flush=True)


def _rows():
  return ([("RM(human 12.5%)", "human_12"), ("RM(human 25%)", "human_25"),
           ("RM(human 50%) (base)", "human_50"),
           ("ensemble of 3 base RMs (a judge, not one RM)", "judge_ens3"),
           ("ensemble of 5 base RMs (a judge, not one RM)", "judge_ens5")] +
          [("+ " + label, name) for name, (label, _, _) in OPTIONS.items()] +
          [("RM(human 100%)", "human_100")])


def _validation_gain(res, name) -> float:
  """Mean validation gold accuracy of ``name`` minus RM(human 50%)'s (the rule's measure)."""
  v = lambda n: stats.matrix(res, n, "validation_gold_correct").mean()
  return float(v(name) - v("human_50"))


def choose_default(results: list, names=tuple(OPTIONS), options=OPTIONS) -> tuple[str, dict]:
  """The rule stated in the docstring, over the tasks' results and the options ``names``
  (described in ``options``); judging the unlabeled part's pairs too costs a little more."""
  worst = {name: min(_validation_gain(res, name) for res in results) for name in names}
  cost = lambda n: (options[n][1].get("ensemble", 1), options[n][2],
                    options[n][1].get("num_samples", 8),
                    options[n][1].get("unlabeled_pairs", False))
  best = max(worst.values())
  tied = [n for n in names if worst[n] >= best - TIE]
  return min(tied, key=cost), worst   # min keeps the first listed of equal cost


def report_task(res) -> str:
  from westofn.stats import pair_equivalents
  seeds = sorted(res["seeds"])
  g = lambda name: stats.matrix(res, name, "gold_correct")
  first = res["seeds"][seeds[0]]
  gap_heldout = res["heldout_gold_gap"]
  lines = [f"### Task `{res['task']}` ({len(seeds)} seeds: {', '.join(seeds)}; "
           f"{res['minutes']:.1f} min, summed over the runs that resumed it)", "",
           f"Data: {res['description']}; {res['unlabeled_prompts']} distinct unlabeled prompts. "
           f"The held-out pairs' mean gold gap: {gap_heldout:.2f} (the kept synthetic pairs': "
           "last column).",
           "", "| model | trained on | gold accuracy % | Δ vs RM(human 50%) [95% CI], p | "
           "Δ vs West-of-N (paper) | validation Δ vs base | pseudo-label gold acc. % | "
           "gold gap of kept pairs |", "|---|---|---|---|---|---|---|---|"]
  verdicts = []
  for label, name in _rows():
    vs_base = "—" if name == "human_50" else stats.compare(g(name), g("human_50"))
    vs_won = stats.compare(g(name), g("won")) if name in OPTIONS and name != "won" else None
    val = (f"{100 * _validation_gain(res, name):+.2f}"
           if first["rms"][name]["validation_gold_correct"] is not None
           and name != "human_50" else "—")
    pl, gap = stats.round_columns(res, name)
    lines.append(f"| {label} | {first['rms'][name]['trained_on']} | "
                 f"{stats.fmt_ci(g(name).mean(1))} | "
                 f"{vs_base if vs_base == '—' else vs_base[1]} | "
                 f"{vs_won[1] if vs_won else '—'} | {val} | {pl} | {gap} |")
    if name in OPTIONS:
      verdicts.append((label, vs_base, vs_won))
  lines += ["", "Mean ± half-width of the 95% t interval over seeds; Δ: paired bootstrap over "
            "seeds and held-out pairs (2,000 resamples), two-sided p. Validation Δ: mean gold "
            "accuracy on the validation part minus RM(human 50%)'s (what the rule reads). Gold "
            "gap: mean |gold reward(chosen) − gold reward(rejected)| of the kept synthetic "
            "pairs.", ""]
  lines += stats.holm_verdict_lines(verdicts)
  # Synthetic pairs placed on the human-data learning curve.
  names = ["human_12", "human_25", "human_50", "human_100"]
  n_pairs = [int(first["rms"][n]["trained_on"].split()[1]) for n in names]
  curve = [float(g(n).mean()) for n in names]
  lines += ["", "Learning curve (gold accuracy, mean over seeds): " +
            ", ".join(f"{n} human pairs {100 * a:.2f}%" for n, a in zip(n_pairs, curve)) +
            ". The students on it (human pairs worth as much, by interpolation; the base RM "
            f"has {n_pairs[2]}):", ""]
  for curve_name, members in CURVES.items():
    points = []
    for name in members:
      acc = float(g(name).mean())
      points.append(f"{OPTIONS[name][2]}:1 → {100 * acc:.2f}% "
                    f"(≈ {pair_equivalents(acc, n_pairs, curve):.0f} human pairs)")
    lines.append(f"- {curve_name}: " + "; ".join(points))
  return "\n".join(lines) + "\n" + disagreement_table(res) + claim4_curve(res)


def disagreement_table(res) -> str:
  """Per disagreement filter (means over seeds): how its measure's std relates to the margin,
  and how accurate the pseudo-labels it kept and dropped are."""
  seeds = sorted(res["seeds"])
  names = [n for n in OPTIONS if OPTIONS[n][1].get("disagreement_quantile")]
  lines = ["", "What the disagreement filters drop (each option's candidate pairs; mean ± 95% "
           "interval over seeds): the correlation of the members' std of r_best − r_worst with "
           "the mean margin, and the pseudo-label gold accuracy of the pairs kept and dropped.",
           "", "| option | corr(std, margin) | kept: pseudo-label gold acc. % | dropped: "
           "pseudo-label gold acc. % |", "|---|---|---|---|"]
  for name in names:
    d = [res["seeds"][s]["disagreement"][name] for s in seeds]
    lines.append(f"| {OPTIONS[name][0]} | "
                 f"{stats.fmt_ci([x['corr_std_margin'] for x in d], 1.0)} | "
                 f"{stats.fmt_ci([x['kept_accuracy'] for x in d])} | "
                 f"{stats.fmt_ci([x['dropped_accuracy'] for x in d])} |")
  return "\n".join(lines) + "\n"


def claim4_curve(res) -> str:
  """The paper's claim 4 (the gain grows with the base RM's quality) as a curve: the
  soft-label student's gain over its own base RM, for bases trained on less human data."""
  from westofn.stats import holm
  g = lambda name: stats.matrix(res, name, "gold_correct")
  first = res["seeds"][sorted(res["seeds"])[0]]["rms"]
  gains = {base: stats.compare(g(student), g(base)) for base, _, student in CLAIM4}
  adjusted = dict(zip(gains, holm([r["p"] for r, _ in gains.values()])))
  lines = ["", "Claim 4 as a curve: the soft-label student (1:1) from base RMs trained on "
           "less human data, each student on its base's human pairs plus as many synthetic "
           "pairs (the same unlabeled prompts and policy).", "",
           "| base RM | its human pairs | base gold accuracy % | student gold accuracy % | "
           "gain [95% CI], p | verdict [Holm p over the 3 gains] |", "|---|---|---|---|---|---|"]
  for base, share, student in CLAIM4:
    result, text = gains[base]
    lines.append(f"| RM(human {50 * share:g}%) | {first[base]['trained_on'].split()[1]} | "
                 f"{stats.fmt_ci(g(base).mean(1))} | {stats.fmt_ci(g(student).mean(1))} | "
                 f"{text} | "
                 f"{stats.holm_verdict(result, adjusted[base], 'the three bases', num_tests=3)} |")
  gain = lambda base, student: g(student) - g(base)
  top = gain(*CLAIM4[-1][::2])
  for base, share, student in CLAIM4[:-1]:
    result, text = stats.compare(top, gain(base, student))
    lines.append(f"\nGain from the 50% base − gain from the {50 * share:g}% base: {text} "
                 f"— {stats.verdict(result)}.")
  return "\n".join(lines) + "\n"


def goal_table(results: list, names=tuple(OPTIONS), labels: dict = None) -> list[str]:
  """Both tasks side by side, each option's (of ``names``) Holm-adjusted p against RM(human
  50%) and whether it meets the goal: ≥ 2 points on every task, Holm p < 0.05 on each, and
  on sorting at least RM(human 100%)'s mean gold accuracy. ``labels``: each row's label by
  name (default: this benchmark's)."""
  from westofn.stats import holm
  header = "| model | " + " | ".join(f"{r['task']} % | Δ [95% CI], p (Holm p)" for r in results)
  lines = [header + " | meets the goal? |", "|---|" + "---|---|" * len(results) + "---|"]
  cells, meets = {}, {n: True for n in names}
  for res in results:
    g = lambda name: stats.matrix(res, name, "gold_correct")
    cmp = {n: stats.compare(g(n), g("human_50")) for n in [*names, "human_100", "judge_ens5"]}
    adjusted = dict(zip(names, holm([cmp[n][0]["p"] for n in names])))
    for name in ["human_50", "judge_ens5", *names, "human_100"]:
      diff = "—" if name == "human_50" else cmp[name][1] + (
          f" ({adjusted[name]:.3f})" if name in names else "")
      cells.setdefault(name, []).append(f"{stats.fmt_ci(g(name).mean(1))} | {diff}")
    for n in names:
      # stats.compare gives the difference in points: the goal is 2 of them
      meets[n] &= bool(cmp[n][0]["diff"] >= 2.0 and adjusted[n] < 0.05)
      if res["task"] == "sorting":
        meets[n] &= bool(g(n).mean() >= g("human_100").mean())
  labels = labels or {name: label for label, name in _rows()}
  for name in ["human_50", "judge_ens5", *names, "human_100"]:
    verdict = ("yes" if meets[name] else "no") if name in names else ""
    lines.append(f"| {labels[name]} | " + " | ".join(cells[name]) + f" | {verdict} |")
  return lines


def goal_section(results: list, names=tuple(OPTIONS), labels: dict = None) -> list[str]:
  """``goal_table`` under its heading."""
  return ["### Both tasks and the goal", "",
          "Held-out gold accuracy, mean ± 95% interval over seeds; Δ against RM(human 50%) "
          "(paired bootstrap), with its Holm-adjusted p over the options in brackets. The "
          "goal: ≥ 2 points on both tasks with Holm p < 0.05, and RM(human 100%)'s mean on "
          "sorting.", "", *goal_table(results, names, labels), ""]


def report(results: list) -> str:
  """Every task's table, then the rule's choice over all of them and the goal's verdict."""
  text = [report_task(res) for res in results]
  if len(results) > 1:
    text += goal_section(results)
  if all("won" in res["seeds"][s]["rms"] for res in results for s in res["seeds"]):
    chosen, worst = choose_default(results)
    text += ["### The default, by the rule fixed before the run", "",
             "Smaller validation gain of the two tasks, points (the rule's measure): " +
             ", ".join(f"{n} {100 * v:+.2f}" for n, v in sorted(worst.items(),
                                                                   key=lambda x: -x[1])) +
             f". Chosen: **{chosen}** ({OPTIONS[chosen][0]}).", "",
             "| task | chosen − RM(human 50%), held-out [95% CI], p | chosen − RM(human 100%) |",
             "|---|---|---|"]
    for res in results:
      g = lambda name: stats.matrix(res, name, "gold_correct")
      text.append(f"| {res['task']} | {stats.compare(g(chosen), g('human_50'))[1]} | "
                  f"{stats.compare(g(chosen), g('human_100'))[1]} |")
    text.append("")
  return "\n".join(text)


def main():
  protocol.cli(doc=__doc__, script=__file__, run_task=run_task, result_file="{task}_what_pays.json",
             title="# West-of-N that pays: ensemble judges, soft labels, more synthetic data",
             report_task=None, report=report, root_prefix="won_what_pays_")


if __name__ == "__main__":
  main()
