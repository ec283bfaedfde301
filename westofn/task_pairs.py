"""What the embedded gold tasks share: labelled pairs of behaviour responses (Bradley–Terry
on the gold reward) and how their labels agree with the gold reward. A task is a module with
``random_prompt(rng)``, ``behaviour_response(rng, prompt)`` and ``gold_reward(prompt, y)``."""

from __future__ import annotations

import types
from typing import Optional, Sequence

import numpy as np

from rm.data import PreferencePair


def make_pairs(task: types.ModuleType, num_pairs: int, *, seed: int = 0, beta: float = 2.0,
               prompts: Optional[Sequence[str]] = None) -> list[PreferencePair]:
  """``num_pairs`` labelled pairs; each is (prompt, two behaviour responses, BT label), with
  the gold rewards of both responses."""
  rng = np.random.default_rng(seed)
  pairs = []
  while len(pairs) < num_pairs:
    prompt = prompts[rng.integers(len(prompts))] if prompts else task.random_prompt(rng)
    a, b = task.behaviour_response(rng, prompt), task.behaviour_response(rng, prompt)
    if a == b:
      continue
    ga, gb = task.gold_reward(prompt, a), task.gold_reward(prompt, b)
    a_wins = rng.uniform() < 1.0 / (1.0 + np.exp(-beta * (ga - gb)))
    chosen, rejected = (a, b) if a_wins else (b, a)
    g_chosen, g_rejected = (ga, gb) if a_wins else (gb, ga)
    pairs.append(PreferencePair(prompt, chosen, rejected, 0.0,
                                f"{task.__name__.rsplit('.', 1)[-1]}:{len(pairs)}",
                                gold_chosen=g_chosen, gold_rejected=g_rejected))
  return pairs


def label_agreement(pairs: Sequence[PreferencePair]) -> float:
  """Share of pairs whose label agrees with the gold reward (a gold tie counts as not
  agreeing): how the data set describes itself."""
  return float(np.mean([p.gold_chosen > p.gold_rejected for p in pairs]))


def label_gold_accuracy(pairs: Sequence[PreferencePair]) -> float:
  """Share of pairs (gold ties dropped) whose label agrees with the gold reward: the
  ceiling of an RM's accuracy against these labels, and the human labels' own gold
  accuracy, against which West-of-N's pseudo-labels are measured."""
  gold = [(p.gold_chosen, p.gold_rejected) for p in pairs
          if p.gold_chosen is not None and p.gold_chosen != p.gold_rejected]
  if not gold:
    raise ValueError("no pair carries distinct gold rewards")
  return float(np.mean([c > r for c, r in gold]))
