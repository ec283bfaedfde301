"""The embedded default task: a preference problem with a known gold reward.

Each prompt asks for a word of ``k`` letters made mostly of one letter::

    Q: Ada needs 7 letters, mostly 'c'.
    A:

A response is a string of letters. Its gold reward rewards the share of the
requested letter and penalises missing the requested length::

    gold(x, y) = 2·(share of the letter in y) − 0.35·|len(y) − k|

Responses come from a behaviour policy of varied quality, and "human" labels
are drawn from Bradley–Terry on the gold reward, ``P(y1 ≻ y2) = σ(β·Δgold)``,
so labels are noisy the way human labels are, with a known ceiling. A policy
can learn to sample from these prompts, and any response it writes has a gold
reward: that is what West-of-N's downstream measure needs. Everything is
generated from a seed; nothing is downloaded.
"""

from __future__ import annotations

import re
import sys
from typing import Optional

import numpy as np

from rm.data import PreferencePair
from westofn import task_pairs

LETTERS = "abcde"
NAMES = ("Ada", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea",
         "Max", "Nia", "Otto", "Pia", "Quin", "Rosa", "Sam", "Tess", "Uma", "Vic", "Wren", "Xia",
         "Yara", "Zed", "Abe", "Bea", "Cal", "Dot", "Eve", "Finn", "Gia", "Hal", "Ike", "Joy",
         "Kit", "Lou", "Mia", "Ned", "Oli", "Pax", "Rae", "Sol", "Tom", "Una", "Val", "Wes",
         "Zoe", "Ari")
MIN_K, MAX_K = 2, 12
MAX_RESPONSE_LETTERS = 18
_PROMPT_RE = re.compile(r"^Q: (\w+) needs (\d+) letters, mostly '([a-z])'\.\nA:$")


def make_prompt(name: str, k: int, letter: str) -> str:
  return f"Q: {name} needs {k} letters, mostly '{letter}'.\nA:"


def parse_prompt(prompt: str) -> tuple[int, str]:
  m = _PROMPT_RE.match(prompt)
  if not m:
    raise ValueError(f"not a default-task prompt: {prompt!r}")
  return int(m.group(2)), m.group(3)


def gold_reward(prompt: str, response: str) -> float:
  """The task's true reward of ``response`` (leading/trailing spaces ignored)."""
  k, letter = parse_prompt(prompt)
  word = response.strip()
  if not word:
    return -0.35 * k
  share = word.count(letter) / len(word)
  return 2.0 * share - 0.35 * abs(len(word) - k)


def random_prompt(rng: np.random.Generator) -> str:
  return make_prompt(NAMES[rng.integers(len(NAMES))], int(rng.integers(MIN_K, MAX_K + 1)),
                     LETTERS[rng.integers(len(LETTERS))])


def behaviour_response(rng: np.random.Generator, prompt: str) -> str:
  """A response of random quality: share of the letter and length error both vary."""
  k, letter = parse_prompt(prompt)
  p_letter = rng.uniform(0.0, 1.0)
  length = int(np.clip(round(k + rng.normal(0.0, 2.5)), 1, MAX_RESPONSE_LETTERS))
  others = [c for c in LETTERS if c != letter]
  chars = [letter if rng.uniform() < p_letter else others[rng.integers(len(others))]
           for _ in range(length)]
  return " " + "".join(chars)


def make_default_pairs(num_pairs: int = 6000, *, seed: int = 0, beta: float = 2.0,
                       prompts: Optional[list[str]] = None) -> list[PreferencePair]:
  """``num_pairs`` labelled pairs; each is (prompt, two behaviour responses, BT label)."""
  return task_pairs.make_pairs(sys.modules[__name__], num_pairs, seed=seed, beta=beta,
                               prompts=prompts)


def gold_agreement(pairs: list[PreferencePair]) -> float:
  """Share of pairs whose label agrees with the gold reward: the ceiling of label accuracy."""
  agree = [gold_reward(p.prompt, p.chosen) > gold_reward(p.prompt, p.rejected) for p in pairs]
  return float(np.mean(agree))
