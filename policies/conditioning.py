"""Conditioning a policy on an outcome or a data class: the pure parts of HIR and C-RLFT.

* **HIR**, hindsight instruction relabeling (Zhang et al. 2023): a sample is relabeled with
  the instruction it turned out to fulfil, here the bin of its normalised RM reward
  (``outcome_bins``), and the policy learns each response under its relabeled instruction
  (SFT) and *against* the other instructions (``hindsight_contrastive_loss``: the response's
  likelihood under its own instruction, softmax over all instructions). At inference it is
  asked for the best outcome.
* **C-RLFT**, class-conditioned RL fine-tuning (OpenChat, Wang et al. 2023): every response
  carries a coarse class (its source, or its reward bin) whose reward sets its weight in a
  weighted SFT loss (``class_weights``: the KL-regularised optimum in closed form,
  ``exp((r_c − max r) / β)``); the policy is conditioned on its class and asked for the best.

Conditions are text on the prompt (``condition_prompt``), so that every vocabulary and chat
template carries them and the pipeline's files stay plain text. Shapes are checked eagerly,
as in ``policies.objectives``.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp

from policies.objectives import _check_matrix


def condition_prompt(prompt: str, condition: str) -> str:
  """The prompt as the conditioned policy reads it: the condition on a line of its own first
  (under a chat template, a user turn before the conversation)."""
  return f"[{condition}]\n{prompt}"


def outcome_bins(normalised_BxN, valid_BxN, num_bins: int):
  """Each sample's outcome: the bin of its normalised reward (on [0, 1]) among ``num_bins``
  equal bins, 0 the worst, ``num_bins − 1`` the best; −1 for an invalid sample."""
  _check_matrix("normalised_BxN", normalised_BxN)
  _check_matrix("valid_BxN", valid_BxN, normalised_BxN.shape)
  if num_bins < 2:
    raise ValueError(f"num_bins must be >= 2, got {num_bins}")
  bins = jnp.clip(jnp.floor(normalised_BxN * num_bins), 0, num_bins - 1).astype(jnp.int32)
  return jnp.where(valid_BxN.astype(bool), bins, -1)


def class_weights(class_reward_C, count_C, *, beta: float):
  """C-RLFT's weight of each class: ``exp((r_c − max r) / β)`` over the classes that have
  examples (the best class weighs 1; a class ``β·ln 10`` below it, 0.1, OpenChat's weight
  of its weaker source), 0 for an empty class. β → ∞ weighs every class alike (plain
  conditioned SFT); β → 0 keeps only the best class."""
  if class_reward_C.ndim != 1:
    raise ValueError(f"class_reward_C must be a vector [C], got shape "
                     f"{tuple(class_reward_C.shape)}")
  if tuple(count_C.shape) != tuple(class_reward_C.shape):
    raise ValueError(f"count_C has shape {tuple(count_C.shape)}, expected "
                     f"{tuple(class_reward_C.shape)}")
  if not beta > 0:
    raise ValueError(f"beta must be positive, got {beta}")
  present = count_C > 0
  reward = jnp.asarray(class_reward_C, jnp.float32)
  best = jnp.max(jnp.where(present, reward, -jnp.inf))
  return jnp.where(present, jnp.exp((reward - best) / beta), 0.0)


def hindsight_contrastive_loss(logp_BxK, target_B, weights_B=None):
  """HIR's contrastive term: each response's log-likelihood under each of K instructions
  (``logp_BxK``); the loss is the cross-entropy of choosing its relabeled instruction
  (``target_B``) among the K, averaged over responses with weight > 0."""
  if logp_BxK.ndim != 2:
    raise ValueError(f"logp_BxK must be [responses, instructions], got shape "
                     f"{tuple(logp_BxK.shape)}")
  if tuple(target_B.shape) != (logp_BxK.shape[0],):
    raise ValueError(f"target_B has shape {tuple(target_B.shape)}, expected "
                     f"({logp_BxK.shape[0]},)")
  if weights_B is not None and tuple(weights_B.shape) != (logp_BxK.shape[0],):
    raise ValueError(f"weights_B has shape {tuple(weights_B.shape)}, expected "
                     f"({logp_BxK.shape[0]},)")
  log_probs = jax.nn.log_softmax(logp_BxK.astype(jnp.float32), axis=-1)
  per_response = -jnp.take_along_axis(log_probs, target_B[:, None].astype(jnp.int32),
                                      axis=-1)[:, 0]
  if weights_B is None:
    return jnp.mean(per_response)
  w = weights_B.astype(jnp.float32)
  return jnp.sum(per_response * w) / jnp.maximum(jnp.sum(w), 1e-9)


@dataclasses.dataclass(frozen=True)
class ConditionedPolicy:
  """A policy asked under a condition: samples and scores with ``condition_prompt`` applied,
  so that measures (rewards, gold rewards, KL from the unconditioned reference) read the
  prompts as they are."""

  policy: object
  condition: str

  def _prompts(self, prompts: Sequence[str]) -> list[str]:
    return [condition_prompt(p, self.condition) for p in prompts]

  def sample(self, prompts: Sequence[str], num_samples: int, **kw):
    return self.policy.sample(self._prompts(prompts), num_samples, **kw)

  def sample_batches(self, prompts: Sequence[str], num_samples: int, **kw):
    return self.policy.sample_batches(self._prompts(prompts), num_samples, **kw)

  def score_samples(self, prompts: Sequence[str], samples):
    return self.policy.score_samples(self._prompts(prompts), samples)

  @property
  def model(self):
    return self.policy.model
