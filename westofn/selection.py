"""West-of-N selection and filters: pure functions over arrays (jit-able, shape-checked).

For each prompt, N responses scored by the base reward model: the best (argmax)
and the worst (argmin) form a synthetic preference pair (Pace et al. 2024). Pairs
are kept when the base model is confident, ``P(best ≻ worst) = σ(r_best −
r_worst)`` at or above a quantile over the round, and when both responses are
in the policy's distribution (per-token mean log-likelihood at or above a
quantile, or an absolute threshold). Beyond the paper: the rejected response may be the
sample at a given rank instead of the worst (near-boundary pairs), and the judge may be an
ensemble of reward models (mean reward, mean probability as the confidence), whose members'
disagreement on a pair can filter it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _check(name, x, ndim, shape=None):
  if x.ndim != ndim:
    raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
  if shape is not None and tuple(x.shape) != tuple(shape):
    raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)}")


def best_and_worst(rewards_BxN, valid_BxN):
  """Indices of the highest- and lowest-reward valid sample of each prompt.

  Rows need at least two valid samples to form a pair; ``usable_B`` says which do.
  Returns (best_B, worst_B, usable_B).
  """
  _check("rewards_BxN", rewards_BxN, 2)
  _check("valid_BxN", valid_BxN, 2, rewards_BxN.shape)
  r = rewards_BxN.astype(jnp.float32)
  best = jnp.argmax(jnp.where(valid_BxN, r, -jnp.inf), axis=1)
  worst = jnp.argmin(jnp.where(valid_BxN, r, jnp.inf), axis=1)
  usable = (jnp.sum(valid_BxN, axis=1) >= 2) & (best != worst)
  return best, worst, usable


def best_and_random(rewards_BxN, valid_BxN, key):
  """Baseline from the paper: the best sample against a random other valid sample."""
  best, _, usable = best_and_worst(rewards_BxN, valid_BxN)
  n = rewards_BxN.shape[1]
  others = valid_BxN & (jnp.arange(n)[None, :] != best[:, None])
  logits = jnp.where(others, 0.0, -jnp.inf)
  other = jax.random.categorical(key, logits, axis=1)
  return best, other, usable


def best_and_ranked(rewards_BxN, valid_BxN, rank: int):
  """The best sample against the one at ``rank`` in the judge's order (1 is the best, 2 the
  runner-up), or against the worst where a prompt has fewer than ``rank`` valid samples.

  Near-boundary pairs: closer in reward than best vs worst, so harder for the student and,
  by the paper's own argument, less often right. Returns (best_B, rejected_B, usable_B).
  """
  _check("rewards_BxN", rewards_BxN, 2)
  _check("valid_BxN", valid_BxN, 2, rewards_BxN.shape)
  if rank < 2:
    raise ValueError(f"rank must be >= 2 (1 is the best sample itself), got {rank}")
  r = jnp.where(valid_BxN, rewards_BxN.astype(jnp.float32), -jnp.inf)
  order_BxN = jnp.argsort(-r, axis=1, stable=True)   # invalid samples sort last
  num_valid = jnp.sum(valid_BxN, axis=1)
  position = jnp.clip(jnp.minimum(rank, num_valid) - 1, 0)
  best = order_BxN[:, 0]
  rejected = jnp.take_along_axis(order_BxN, position[:, None], axis=1)[:, 0]
  usable = (num_valid >= 2) & (best != rejected)
  return best, rejected, usable


def ensemble_rewards(rewards_KxBxN):
  """An ensemble judge's reward per sample: the mean of its K members' rewards. Each member's
  arbitrary offset is the same for every sample, so it does not move a prompt's order."""
  _check("rewards_KxBxN", rewards_KxBxN, 3)
  return jnp.mean(rewards_KxBxN.astype(jnp.float32), axis=0)


def ensemble_confidence(rewards_KxBxN, first_B, second_B):
  """P(first ≻ second) under an ensemble judge: the mean of its members' Bradley–Terry
  probabilities, so a pair the members disagree on gets a low confidence."""
  return jnp.mean(jax.nn.sigmoid(_member_margins(rewards_KxBxN, first_B, second_B)), axis=0)


def ensemble_disagreement(rewards_KxBxN, first_B, second_B):
  """How much an ensemble judge's members disagree on a pair: the standard deviation over
  members of their margins r(first) − r(second) (0 for one member). The mean probability
  (``ensemble_confidence``) mixes this with the margin's size; this isolates it."""
  return jnp.std(_member_margins(rewards_KxBxN, first_B, second_B), axis=0)


def _member_margins(rewards_KxBxN, first_B, second_B):
  """[K, B] each member's r(first) − r(second)."""
  _check("rewards_KxBxN", rewards_KxBxN, 3)
  _check("first_B", first_B, 1, rewards_KxBxN.shape[1:2])
  _check("second_B", second_B, 1, rewards_KxBxN.shape[1:2])
  r = rewards_KxBxN.astype(jnp.float32)
  take = lambda idx: jnp.take_along_axis(r, idx[None, :, None], axis=2)[..., 0]
  return take(first_B) - take(second_B)


def relative_disagreement(rewards_KxBxN, first_B, second_B, eps: float = 1e-6):
  """The members' disagreement on a pair relative to the margin they agree on: the std of
  their margins over the magnitude of the mean margin (the inverse of a t-like
  signal-to-noise ratio). The plain std grows with the margin, so a filter on it drops the
  clearest pairs; this one is scale-free."""
  margin_KxB = _member_margins(rewards_KxBxN, first_B, second_B)
  return jnp.std(margin_KxB, axis=0) / jnp.maximum(jnp.abs(jnp.mean(margin_KxB, axis=0)), eps)


def disagreement_threshold(disagreement_B, usable_B, quantile: float):
  """The disagreement above which pairs are dropped: the (1 − ``quantile``) quantile of the
  usable pairs' disagreements (+inf for ``quantile=0``: nothing is cut)."""
  _check("disagreement_B", disagreement_B, 1)
  _check("usable_B", usable_B, 1, disagreement_B.shape)
  # the confidence filter's cut from the other side: the top share goes instead of the bottom
  return -quantile_threshold(-disagreement_B.astype(jnp.float32), usable_B, quantile)


def disagreement_keep(disagreement_B, usable_B, quantile: float):
  """Drops the ``quantile`` share of usable pairs whose judges disagree most (see
  ``disagreement_threshold``); ``quantile=0`` keeps every usable pair."""
  return usable_B & (disagreement_B <= disagreement_threshold(disagreement_B, usable_B,
                                                              quantile))


def pair_confidence(reward_a_B, reward_b_B):
  """P(a ≻ b) under a Bradley–Terry reward model."""
  _check("reward_a_B", reward_a_B, 1)
  _check("reward_b_B", reward_b_B, 1, reward_a_B.shape)
  return jax.nn.sigmoid(reward_a_B.astype(jnp.float32) - reward_b_B.astype(jnp.float32))


def quantile_threshold(values_B, usable_B, quantile: float):
  """The ``quantile`` of the usable values (−inf for ``quantile=0``: nothing is cut)."""
  _check("values_B", values_B, 1)
  _check("usable_B", usable_B, 1, values_B.shape)
  if not 0.0 <= quantile < 1.0:
    raise ValueError(f"quantile must be in [0, 1), got {quantile}")
  if quantile == 0.0:
    return jnp.float32(-jnp.inf)
  return jnp.nanquantile(jnp.where(usable_B, values_B.astype(jnp.float32), jnp.nan), quantile)


def quantile_keep(values_B, usable_B, quantile: float):
  """Keeps usable entries whose value is at or above the ``quantile`` of usable values.

  ``quantile=0`` keeps every usable entry.
  """
  return usable_B & (values_B >= quantile_threshold(values_B, usable_B, quantile))


def likelihood_keep(ll_best_B, ll_worst_B, usable_B, *, quantile: float = 0.0,
                    threshold: Optional[float] = None):
  """Both responses in-distribution: per-token mean log-likelihoods at or above a
  quantile of all usable responses' values, or an absolute ``threshold``."""
  cut = likelihood_cut(ll_best_B, ll_worst_B, usable_B, quantile=quantile, threshold=threshold)
  return usable_B & (ll_best_B >= cut) & (ll_worst_B >= cut)


def likelihood_cut(ll_best_B, ll_worst_B, usable_B, *, quantile: float = 0.0,
                   threshold: Optional[float] = None):
  """The log-likelihood both responses of a kept pair must reach (see ``likelihood_keep``)."""
  _check("ll_best_B", ll_best_B, 1)
  _check("ll_worst_B", ll_worst_B, 1, ll_best_B.shape)
  _check("usable_B", usable_B, 1, ll_best_B.shape)
  if threshold is not None:
    return jnp.float32(threshold)
  return quantile_threshold(jnp.concatenate([ll_best_B, ll_worst_B]),
                            jnp.concatenate([usable_B, usable_B]), quantile)


def distinct_samples(texts: Sequence[str]) -> list[int]:
  """Indices of the first occurrence of each distinct response (whitespace-trimmed)."""
  seen, keep = set(), []
  for i, t in enumerate(texts):
    key = t.strip()
    if key not in seen:
      seen.add(key)
      keep.append(i)
  return keep


def knockout(num_valid: Sequence[int], compare, *, find: str = "best") -> tuple[np.ndarray, int]:
  """Single-elimination tournament among the samples of every prompt at once.

  ``compare(matches)`` gets an ``[M, 3]`` int array of (prompt, i, j) and returns P(i ≻ j)
  for each match; it is called once per bracket round for all prompts together, so a
  prompt with N samples costs N − 1 comparisons in ⌈log2 N⌉ batched calls. ``find="best"``
  advances winners, ``"worst"`` advances losers; an odd one out gets a bye. Returns
  (index of the last one standing per prompt, -1 for prompts without samples; number of
  comparisons made).
  """
  if find not in ("best", "worst"):
    raise ValueError(f"find must be 'best' or 'worst', got {find!r}")
  alive = [list(range(int(n))) for n in num_valid]
  total = 0
  while any(len(a) > 1 for a in alive):
    matches = np.asarray([(b, a[k], a[k + 1]) for b, a in enumerate(alive)
                          for k in range(0, len(a) - 1, 2)], np.int64).reshape(-1, 3)
    p_first = np.asarray(compare(matches), np.float64)
    if p_first.shape != (len(matches),):
      raise ValueError(f"compare returned shape {p_first.shape} for {len(matches)} matches")
    total += len(matches)
    first_wins = p_first >= 0.5
    advance = first_wins if find == "best" else ~first_wins
    survivors = [[] for _ in alive]
    for (b, i, j), keep_first in zip(matches, advance):
      survivors[b].append(int(i) if keep_first else int(j))
    for b, a in enumerate(alive):
      if len(a) % 2 == 1:
        survivors[b].append(a[-1])   # the bye
      elif len(a) == 0:
        survivors[b] = []
    alive = survivors
  return np.asarray([a[0] if a else -1 for a in alive], np.int64), total
