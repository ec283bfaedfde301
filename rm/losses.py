"""Pairwise reward-model losses: pure functions over arrays.

Shapes are checked eagerly (also under jit, where shapes are static) because the
classic silent bug here is a per-pair margin of shape [B, 1] broadcast against
rewards of shape [B] into a [B, B] matrix.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def _check_same_shape(name: str, x, ref_shape):
  if x is not None and tuple(x.shape) != tuple(ref_shape):
    raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(ref_shape)} "
                     "(the same as the rewards; no broadcasting)")


def pairwise_loss(chosen_B, rejected_B, *, margin_B=None, weights_B=None, label_B=None,
                  centering_coef: float = 0.0):
  """Mean of ``-log σ(r+ − r− − m)`` over pairs with weight > 0.

  m = 0 is Bradley–Terry; a per-pair m is the Llama-2 margin loss. ``label_B`` (soft
  labels, distillation) is each pair's target probability t that chosen ≻ rejected: the
  loss is the cross-entropy ``−t·log σ(d) − (1 − t)·log σ(−d)`` with d = r+ − r− − m,
  written ``−log σ(d) + (1 − t)·d`` (the same number, and exactly the hard loss at t = 1,
  the label of every human pair). The optional
  centering term ``centering_coef · mean((r+ + r−)²)`` keeps rewards near zero
  mean (the BT loss is invariant to a shared offset). ``weights_B`` (0 or 1 for
  padding slots, or any non-negative weights) sets each pair's share of the mean.
  """
  if chosen_B.ndim != 1:
    raise ValueError(f"rewards must be a vector [B], got shape {tuple(chosen_B.shape)}")
  _check_same_shape("rejected_B", rejected_B, chosen_B.shape)
  _check_same_shape("margin_B", margin_B, chosen_B.shape)
  _check_same_shape("weights_B", weights_B, chosen_B.shape)
  _check_same_shape("label_B", label_B, chosen_B.shape)
  chosen = chosen_B.astype(jnp.float32)
  rejected = rejected_B.astype(jnp.float32)
  delta = chosen - rejected
  if margin_B is not None:
    delta = delta - margin_B.astype(jnp.float32)
  per_pair = -jax.nn.log_sigmoid(delta)
  if label_B is not None:
    per_pair = per_pair + (1.0 - label_B.astype(jnp.float32)) * delta
  if centering_coef:
    per_pair = per_pair + centering_coef * jnp.square(chosen + rejected)
  if weights_B is None:
    return jnp.mean(per_pair)
  w = weights_B.astype(jnp.float32)
  return jnp.sum(per_pair * w) / jnp.maximum(jnp.sum(w), 1e-9)


def pair_accuracy(chosen_B, rejected_B, weights_B=None):
  """Fraction of pairs with r+ > r− (a tie counts one half)."""
  _check_same_shape("rejected_B", rejected_B, chosen_B.shape)
  _check_same_shape("weights_B", weights_B, chosen_B.shape)
  correct = jnp.where(chosen_B > rejected_B, 1.0, jnp.where(chosen_B == rejected_B, 0.5, 0.0))
  if weights_B is None:
    return jnp.mean(correct)
  w = weights_B.astype(jnp.float32)
  return jnp.sum(correct * w) / jnp.maximum(jnp.sum(w), 1e-9)


def gold_correct(chosen_B, rejected_B, gold_chosen_B, gold_rejected_B):
  """Per pair: does the RM order the two responses as the gold reward does?

  Returns (``correct_B``: 1, 0.5 for a reward tie, 0; ``counted_B``: False where the gold
  rewards tie, since such a pair has no gold order). Independent of the pair's label.
  """
  if chosen_B.ndim != 1:
    raise ValueError(f"rewards must be a vector [B], got shape {tuple(chosen_B.shape)}")
  for name, x in (("rejected_B", rejected_B), ("gold_chosen_B", gold_chosen_B),
                  ("gold_rejected_B", gold_rejected_B)):
    if x is None:
      raise ValueError(f"{name} is required")
    _check_same_shape(name, x, chosen_B.shape)
  gold_sign = jnp.sign(gold_chosen_B - gold_rejected_B)
  delta = (chosen_B - rejected_B) * gold_sign
  correct = jnp.where(delta > 0, 1.0, jnp.where(delta == 0, 0.5, 0.0))
  return correct, gold_sign != 0


def gold_accuracy(chosen_B, rejected_B, gold_chosen_B, gold_rejected_B):
  """Share of pairs (gold ties dropped) the RM orders as the gold reward does; NaN if
  every pair is a gold tie."""
  correct, counted = gold_correct(chosen_B, rejected_B, gold_chosen_B, gold_rejected_B)
  n = jnp.sum(counted)
  return jnp.where(n > 0, jnp.sum(jnp.where(counted, correct, 0.0)) / jnp.maximum(n, 1), jnp.nan)


def margins_from_ratings(ratings, table: dict, *, default: Optional[float] = None):
  """Maps per-pair rating labels to Llama-2 margins through ``table``.

  Llama 2 uses a discrete table (e.g. "significantly better" → 1.0,
  "negligibly better" → 0.0). An unknown rating raises unless ``default`` is set.
  """
  out = []
  for i, r in enumerate(ratings):
    if r in table:
      out.append(float(table[r]))
    elif default is not None:
      out.append(float(default))
    else:
      raise KeyError(f"rating {r!r} at index {i} is not in the margin table {sorted(table)}")
  return out
