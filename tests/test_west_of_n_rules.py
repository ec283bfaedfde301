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
