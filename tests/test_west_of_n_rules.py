"""The rule that picks West-of-N's default and the goal's verdict
(experiments/west_of_n_what_pays.py's ``choose_default`` and ``goal_table``), on results made
up so that every gain is known: the smaller gain of the two tasks decides, a tie within half a
point goes to the cheaper option, and the goal needs ≥ 2 points on both tasks, Holm p < 0.05
and RM(human 100%)'s level on sorting."""

import numpy as np
import pytest

from experiments import west_of_n_what_pays as what_pays

PAIRS, SEEDS = 1000, 3


def correct(share: float) -> list:
  """A seed's per-pair verdicts: the first ``share`` of the pairs right (so a larger share is
  right on every pair a smaller one is, and the bootstrap sees no resample against it)."""
  return (np.arange(PAIRS) < round(share * PAIRS)).astype(float).tolist()


def task(name: str, gold: dict, validation: dict) -> dict:
  rms = {n: {"gold_correct": correct(gold[n]), "validation_gold_correct": correct(validation[n])}
         for n in gold}
  return {"task": name, "seeds": {str(s): {"rms": rms} for s in range(SEEDS)}}


def results(gains_letters: dict, gains_sorting: dict, *, human_100_sorting: float = 0.78):
  """Two tasks whose RM(human 50%) is right on 70% of the pairs; each option's gold and
  validation accuracy are that plus its gain."""
  out = []
  for name, gains, h100 in (("letters", gains_letters, 0.76), ("sorting", gains_sorting,
                                                              human_100_sorting)):
    acc = {"human_50": 0.70, "judge_ens5": 0.79, "human_100": h100,
           **{n: 0.70 + g for n, g in gains.items()}}
    out.append(task(name, acc, acc))
  return out


def test_the_smaller_gain_decides_and_a_tie_goes_to_the_cheaper_option():
  names = ("won", "won_soft", "won_ens5_soft_x4")
  # won_soft's smaller gain is 0.030, the ensemble's 0.033: within the half-point tie, so
  # the one judge and one synthetic pair per human pair win
  res = results({"won": 0.01, "won_soft": 0.05, "won_ens5_soft_x4": 0.06},
                {"won": 0.02, "won_soft": 0.03, "won_ens5_soft_x4": 0.033})
  choice, worst = what_pays.choose_default(res, names)
  assert choice == "won_soft"
  assert worst == pytest.approx({"won": 0.01, "won_soft": 0.03, "won_ens5_soft_x4": 0.033})
  # beyond the tie, the larger smaller-gain wins whatever it costs
  res = results({"won": 0.01, "won_soft": 0.05, "won_ens5_soft_x4": 0.06},
                {"won": 0.02, "won_soft": 0.03, "won_ens5_soft_x4": 0.04})
  assert what_pays.choose_default(res, names)[0] == "won_ens5_soft_x4"


def verdicts(res, names) -> dict:
  table = what_pays.goal_table(res, names)
  labels = {name: label for label, name in what_pays._rows()}
  return {n: next(line for line in table if line.startswith(f"| {labels[n]} |"))
          .rstrip(" |").rsplit("| ", 1)[-1] for n in names}


def test_the_goal_needs_two_points_on_both_tasks_and_human_100_on_sorting():
  names = ("won", "won_soft", "won_ens5_soft_x4")
  # won: +1 point everywhere, significant but below 2; won_soft: +5 / +9, sorting at 79%,
  # above RM(human 100%)'s 78%; the ensemble: +5 on letters, +3 on sorting (73% < 78%)
  res = results({"won": 0.01, "won_soft": 0.05, "won_ens5_soft_x4": 0.05},
                {"won": 0.01, "won_soft": 0.09, "won_ens5_soft_x4": 0.03})
  assert verdicts(res, names) == {"won": "no", "won_soft": "yes", "won_ens5_soft_x4": "no"}
  # with RM(human 100%) at 70% on sorting, the ensemble's +3 meets the goal too, and won's
  # +1 (71%) still does not: it is short of 2 points, significant as it is
  res = results({"won": 0.01, "won_soft": 0.05, "won_ens5_soft_x4": 0.05},
                {"won": 0.01, "won_soft": 0.09, "won_ens5_soft_x4": 0.03},
                human_100_sorting=0.70)
  assert verdicts(res, names) == {"won": "no", "won_soft": "yes", "won_ens5_soft_x4": "yes"}


def confirmation_results(acc_by_task: dict, prompts_per_task: int = 200) -> list:
  """The confirmation's results for made-up accuracies: ``PAIRS`` held-out pairs on
  ``prompts_per_task`` prompts (5 pairs each), every seed alike."""
  from experiments import west_of_n_confirmation as confirmation
  units = {n: confirmation.cost_units(n, num_prompts=500, unlabeled_pairs=2000,
                                      human_pairs=1600) for n in confirmation.OPTIONS}
  labels = [f"prompt{i // (PAIRS // prompts_per_task)}" for i in range(PAIRS)]
  return [{"task": name, "heldout_prompts": labels, "cost_units": units, "minutes": 1.0,
           "description": "made up", "data_seed": 1, "unlabeled_prompts": 500,
           "seeds": {str(s): {"rms": {n: {"gold_correct": correct(a), "trained_on": "pairs"}
                                      for n, a in acc.items()},
                              "wall_s": {n: 1.0 for n in confirmation.OPTIONS}}
                     for s in range(SEEDS)}}
          for name, acc in acc_by_task.items()]


def test_the_confirmation_picks_the_cheapest_option_that_meets_every_part_of_the_rule():
  """Base 70%, RM(human 100%) 78%: the ensembles of 5 and of 3 both gain 8 points, level
  with RM(human 100%); the ensemble of 3 trains fewer RMs, and without the unlabeled
  pairs it scores fewer responses: it wins. The default gains 1 point (short of 2); the
  others gain 4 points but stay 4 below RM(human 100%)."""
  from experiments import west_of_n_confirmation as confirmation
  acc = {"human_50": 0.70, "human_100": 0.78, "judge_ens3": 0.78, "judge_ens5": 0.79,
         "default": 0.71, "ens5_x4_pairs": 0.74,
         "ens5_x4": 0.78, "ens3_x4_pairs": 0.74, "ens3_x4": 0.78}
  res = confirmation_results({"letters": acc, "sorting": acc})
  units = res[0]["cost_units"]
  assert units["ens3_x4"]["rms_trained"] == 3 < units["ens5_x4"]["rms_trained"] == 5
  assert units["ens3_x4"]["rm_scorings"] < units["ens3_x4_pairs"]["rm_scorings"]
  # the default's one synthetic pair per human pair takes 4 passes over the 500 prompts
  assert units["default"]["samples"] == 500 * 16 * 4 and units["default"]["rms_trained"] == 1
  chosen, shortfall, qualified = confirmation.choose(res)
  assert (chosen, qualified) == ("ens3_x4", True)
  assert shortfall["ens3_x4"] == shortfall["ens5_x4"] == 0.0
  # 4 points below RM(human 100%): at least 3 past the 1-point margin (more by the interval's
  # width); the default, 7 below, further still
  assert 3.0 < shortfall["ens5_x4_pairs"] < shortfall["default"]
  # one task where the ensemble of 3 falls 2.5 points short of RM(human 100%): the ensemble
  # of 5 is then the cheapest that qualifies
  worse = {**acc, "ens3_x4": 0.755}
  assert confirmation.choose(confirmation_results({"letters": acc, "sorting": worse}))[0] \
      == "ens5_x4"


def test_when_no_option_qualifies_the_default_stays_and_the_closest_is_named():
  from experiments import west_of_n_confirmation as confirmation
  acc = {"human_50": 0.70, "human_100": 0.80, "judge_ens3": 0.78, "judge_ens5": 0.79,
         "default": 0.705, "ens5_x4_pairs": 0.76,
         "ens5_x4": 0.75, "ens3_x4_pairs": 0.74, "ens3_x4": 0.73}
  res = confirmation_results({"letters": acc, "sorting": acc})
  chosen, shortfall, qualified = confirmation.choose(res)
  assert (chosen, qualified) == ("default", False)
  assert min(shortfall, key=shortfall.get) == "ens5_x4_pairs"   # 4 below RM(100%): 3 short
  text = confirmation.report(res)
  assert "No option qualifies: today's default stays. Closest: **ens5_x4_pairs**" in text
