"""Policy improvement with a reward model: ReST's filters (Gulcehre et al. 2023), best-of-N
rejection sampling (Llama 2) and the DPO loss (Rafailov et al. 2023), as pure functions.

Rewards are put on a [0, 1] scale before ReST's thresholds apply: ``Φ((r − μ) / σ)``, with
μ and σ the reward model's mean and standard deviation over its held-out responses. A
threshold of 0.7 then keeps samples the RM scores above about 70% of held-out responses,
whatever the RM's own reward scale (a Bradley–Terry RM's rewards have no fixed offset or unit).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def _check_matrix(name: str, x, shape=None):
  if x.ndim != 2:
    raise ValueError(f"{name} must be [prompts, samples], got shape {tuple(x.shape)}")
  if shape is not None and tuple(x.shape) != tuple(shape):
    raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)}")


def normalize_rewards(rewards, *, mean: float, std: float):
  """Rewards on the [0, 1] scale of ReST's thresholds: ``Φ((r − mean) / std)``."""
  if not std > 0:
    raise ValueError(f"the reward scale must be positive, got std={std}")
  return jax.scipy.stats.norm.cdf((jnp.asarray(rewards, jnp.float32) - mean) / std)


def threshold_keep(scores_BxN, valid_BxN, threshold: float):
  """ReST's Improve filter: the valid samples whose normalised reward is >= ``threshold``."""
  _check_matrix("scores_BxN", scores_BxN)
  _check_matrix("valid_BxN", valid_BxN, scores_BxN.shape)
  return valid_BxN.astype(bool) & (scores_BxN >= threshold)


def best_of_n_keep(rewards_BxN, valid_BxN):
  """Rejection sampling: the one best valid sample of each prompt (none if it has none)."""
  _check_matrix("rewards_BxN", rewards_BxN)
  _check_matrix("valid_BxN", valid_BxN, rewards_BxN.shape)
  valid = valid_BxN.astype(bool)
  masked = jnp.where(valid, rewards_BxN, -jnp.inf)
  best = jnp.argmax(masked, axis=1)
  one_hot = jnp.arange(rewards_BxN.shape[1])[None, :] == best[:, None]
  return one_hot & valid.any(axis=1, keepdims=True) & valid


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, ...]:
  """ReST's schedule: one threshold per Improve step, in [0, 1), never falling."""
  t = tuple(float(x) for x in thresholds)
  if not t:
    raise ValueError("give at least one improve threshold")
  if any(not 0.0 <= x < 1.0 for x in t):
    raise ValueError(f"improve thresholds are on the normalised [0, 1) scale, got {list(t)}")
  if any(b < a for a, b in zip(t, t[1:])):
    raise ValueError(f"improve thresholds must not fall from one step to the next, got {list(t)}")
  return t


def dpo_loss(policy_chosen_B, policy_rejected_B, reference_chosen_B, reference_rejected_B, *,
             beta: float, weights_B=None):
  """Mean DPO loss ``−log σ(β·[(π+ − ref+) − (π− − ref−)])`` over pairs with weight > 0.

  Inputs are sequence log-likelihoods (sums over response tokens) under the policy and the
  frozen reference. Returns ``(loss, implied_reward_accuracy)``: the share of pairs whose
  implied reward ``β·(π − ref)`` is higher for the chosen response.
  """
  if policy_chosen_B.ndim != 1:
    raise ValueError(f"log-likelihoods must be a vector [B], got shape "
                     f"{tuple(policy_chosen_B.shape)}")
  for name, x in (("policy_rejected_B", policy_rejected_B),
                  ("reference_chosen_B", reference_chosen_B),
                  ("reference_rejected_B", reference_rejected_B), ("weights_B", weights_B)):
    if x is not None and tuple(x.shape) != tuple(policy_chosen_B.shape):
      raise ValueError(f"{name} has shape {tuple(x.shape)}, expected "
                       f"{tuple(policy_chosen_B.shape)} (no broadcasting)")
  f32 = lambda x: x.astype(jnp.float32)
  chosen = f32(policy_chosen_B) - f32(reference_chosen_B)
  rejected = f32(policy_rejected_B) - f32(reference_rejected_B)
  logits = beta * (chosen - rejected)
  per_pair = -jax.nn.log_sigmoid(logits)
  w = jnp.ones_like(per_pair) if weights_B is None else f32(weights_B)
  denom = jnp.maximum(jnp.sum(w), 1e-9)
  return jnp.sum(per_pair * w) / denom, jnp.sum((logits > 0) * w) / denom


def kl_estimate(policy_logprobs_BxT, reference_logprobs_BxT, mask_BxT):
  """Per-sample Monte Carlo estimate of KL(policy ‖ reference) on the policy's own samples:
  ``Σ_t log π(y_t) − log ref(y_t)`` over each sample's tokens."""
  _check_matrix("policy_logprobs_BxT", policy_logprobs_BxT)
  _check_matrix("reference_logprobs_BxT", reference_logprobs_BxT, policy_logprobs_BxT.shape)
  _check_matrix("mask_BxT", mask_BxT, policy_logprobs_BxT.shape)
  diff = (jnp.asarray(policy_logprobs_BxT, jnp.float32)
          - jnp.asarray(reference_logprobs_BxT, jnp.float32))
  return jnp.sum(jnp.where(mask_BxT.astype(bool), diff, 0.0), axis=1)
