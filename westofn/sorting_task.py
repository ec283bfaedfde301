"""The second embedded gold task: sort the letters of the prompt.

A prompt lists 3 to 7 distinct letters out of ``a``–``j``::

    Sort: g c a e
    A:

A response is letters separated by spaces. Its gold reward needs the order of the
whole response, not only counts, so a reward model must learn comparisons between
positions (the letter task's reward is a share and a length)::

    gold(x, y) = coverage · (1 + 2·concordance) − 0.4·extras

``coverage`` is the share of the prompt's letters that appear, ``concordance`` the
share of pairs of those letters (first occurrences) in alphabetical order, and
``extras`` counts tokens that are not prompt letters or repeat one. Responses come
from a behaviour policy that starts from the sorted answer and swaps, shuffles, drops,
inserts and repeats letters at random rates; labels are Bradley–Terry on the gold
reward, as in ``westofn.default_task``.
"""

from __future__ import annotations

import re

import numpy as np

LETTERS = "abcdefghij"
MIN_LETTERS, MAX_LETTERS = 3, 7
_PROMPT_RE = re.compile(r"^Sort: ([a-j](?: [a-j])*)\nA:$")


def make_prompt(letters) -> str:
  return "Sort: " + " ".join(letters) + "\nA:"


def parse_prompt(prompt: str) -> list[str]:
  m = _PROMPT_RE.match(prompt)
  if not m:
    raise ValueError(f"not a sorting-task prompt: {prompt!r}")
  return m.group(1).split(" ")


def gold_reward(prompt: str, response: str) -> float:
  """The task's true reward of ``response`` (tokens are split on whitespace)."""
  wanted = set(parse_prompt(prompt))
  tokens = response.split()
  seen: list[str] = []
  extras = 0
  for t in tokens:
    if t in wanted and t not in seen:
      seen.append(t)
    else:
      extras += 1
  coverage = len(seen) / len(wanted)
  num_pairs = len(seen) * (len(seen) - 1) // 2
  ordered = sum(seen[i] < seen[j] for i in range(len(seen)) for j in range(i + 1, len(seen)))
  concordance = ordered / num_pairs if num_pairs else 0.0
  return coverage * (1.0 + 2.0 * concordance) - 0.4 * extras


def random_prompt(rng: np.random.Generator) -> str:
  m = int(rng.integers(MIN_LETTERS, MAX_LETTERS + 1))
  return make_prompt(rng.permutation(list(LETTERS))[:m])


def behaviour_response(rng: np.random.Generator, prompt: str) -> str:
  """A response of random quality, from the sorted answer with random damage."""
  letters = sorted(parse_prompt(prompt))
  if rng.uniform() < 0.25:
    letters = list(rng.permutation(letters))
  else:
    for _ in range(int(rng.integers(0, len(letters) + 1))):
      i = int(rng.integers(0, len(letters) - 1))
      letters[i], letters[i + 1] = letters[i + 1], letters[i]
  p_drop = rng.uniform(0.0, 0.3)
  letters = [c for c in letters if rng.uniform() >= p_drop] or letters[:1]
  if rng.uniform() < 0.3:
    letters.insert(int(rng.integers(0, len(letters) + 1)), LETTERS[rng.integers(len(LETTERS))])
  if rng.uniform() < 0.15:
    letters.insert(int(rng.integers(0, len(letters) + 1)), letters[rng.integers(len(letters))])
  return " " + " ".join(letters)
