"""Pointwise Bradley–Terry reward model: decoder backbone + scalar head."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from policies.transformer import Decoder, TransformerConfig, annotated_param
from rm.packing import pair_attention_mask


def scalar_head(d_model: int, rngs: nnx.Rngs):
  """(w, b) of a new scalar head on a d_model-wide hidden state."""
  w = annotated_param(
      jax.random.normal(rngs.params(), (d_model,), jnp.float32) * d_model ** -0.5, ("embed",))
  return w, annotated_param(jnp.zeros((), jnp.float32), ())


class RewardModel(nnx.Module):
  """r(x, y) = w · h_last + b, with h_last the backbone's state at the last real token.

  The token to read is always given by index (``ends``), so the reward of a
  pair cannot depend on padding, padding side, or what else shares its batch.
  """

  def __init__(self, backbone: Decoder, *, rngs: nnx.Rngs):
    self.backbone = backbone
    self.head_w, self.head_b = scalar_head(backbone.cfg.d_model, rngs)

  def rewards_at(self, tokens_RxL, positions_RxL, mask_RxLxL, ends_RxPxK):
    """Rewards read at the token indices ``ends`` (any trailing shape), float32."""
    r, p, k = ends_RxPxK.shape
    picked = self.backbone(tokens_RxL, positions_RxL, mask_RxLxL,
                           read_index_BxQ=ends_RxPxK.reshape(r, p * k)).astype(jnp.float32)
    rewards = picked @ self.head_w[...] + self.head_b[...]
    return rewards.reshape(r, p, k)

  def __call__(self, batch: dict):
    """(chosen_rewards_RxP, rejected_rewards_RxP) for a packed pair batch (as a dict)."""
    mask = pair_attention_mask(batch["group"], batch["segment"])
    rewards = self.rewards_at(batch["tokens"], batch["positions"], mask, batch["ends"])
    return rewards[..., 0], rewards[..., 1]


def make_reward_model(cfg: TransformerConfig, *, seed: int) -> RewardModel:
  rngs = nnx.Rngs(params=seed)
  return RewardModel(Decoder(cfg, rngs=rngs), rngs=rngs)
