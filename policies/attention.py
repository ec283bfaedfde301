"""Softmax attention kernels and rotary position embeddings of the decoder.

Keys are laid out ``[B, K, D, S]`` (sequence last) and values ``[B, K, S, D]``,
which is also the KV cache's layout; query heads sharing a key/value head are
folded into the query axis, so grouped-query attention is a batched matmul per
KV head. Masks are explicit booleans, never inferred from padding.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class RotaryAngles(NamedTuple):
  """``sin`` and ``cos`` of the rotary angles, ``[B, L, 1, head_dim / 2]`` each."""
  sin: jax.Array
  cos: jax.Array


def rotary_angles(positions_BxL, head_dim: int, base: float) -> RotaryAngles:
  half = head_dim // 2
  freqs = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles = positions_BxL.astype(jnp.float32)[..., None] * freqs  # [B, L, half]
  return RotaryAngles(jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :])


def rope(x_BxLxHxD, angles: RotaryAngles):
  """Rotary embedding in the half-split layout (as Hugging Face Llama)."""
  half = x_BxLxHxD.shape[-1] // 2
  sin, cos = angles
  x1 = x_BxLxHxD[..., :half].astype(jnp.float32)
  x2 = x_BxLxHxD[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxLxHxD.dtype)


def _group_queries(q_BxLxHxD, kv_heads: int):
  """Scaled queries as ``[B, K, G·L, D]``: the G query heads of a KV head in one block."""
  b, l, h, d = q_BxLxHxD.shape
  q = (q_BxLxHxD * d ** -0.5).reshape(b, l, kv_heads, h // kv_heads, d)
  return q.transpose(0, 2, 3, 1, 4).reshape(b, kv_heads, h // kv_heads * l, d)


def _ungroup(out_BxKxGxLxD):
  """``[B, K, G, L, D]`` back to ``[B, L, H, D]``."""
  b, k, g, l, d = out_BxKxGxLxD.shape
  return out_BxKxGxLxD.transpose(0, 3, 1, 2, 4).reshape(b, l, k * g, d)


def attention_core(q_BxLxHxD, k, v, mask_BxLxS, operand_dtype=None):
  """Softmax attention over keys ``[B, K, D, S]`` and values ``[B, K, S, D]`` (the KV
  cache's layout, so decoding never transposes the cache; keys with the sequence
  last make XLA's CPU dot for one decoding query 2.3x faster). The query heads of
  one key/value head are folded into the query axis, so grouped-query attention
  is a plain batched matmul per KV head (no copies of K and V).

  ``operand_dtype`` (e.g. bfloat16 for float32 ``q``, ``k``, ``v``): the two dots take
  operands rounded to it and accumulate in float32, as PyTorch's bf16 autocast runs
  attention; the softmax stays float32 and the output keeps ``q``'s dtype."""
  b, l, h, d = q_BxLxHxD.shape
  kv_heads = k.shape[1]
  groups = h // kv_heads
  dt = q_BxLxHxD.dtype
  low = dt if operand_dtype is None else jnp.dtype(operand_dtype)
  q = _group_queries(q_BxLxHxD, kv_heads).astype(low)
  scores = jnp.einsum("bkqd,bkds->bkqs", q, k.astype(low),
                      preferred_element_type=None if low == dt else jnp.float32)
  scores = scores.astype(jnp.float32).reshape(b, kv_heads, groups, l, -1)
  scores = jnp.where(mask_BxLxS[:, None, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(low).reshape(b, kv_heads, groups * l, -1)
  out = jnp.einsum("bkqs,bksd->bkqd", probs, v.astype(low),
                   preferred_element_type=None if low == dt else jnp.float32)
  return _ungroup(out.astype(dt).reshape(b, kv_heads, groups, l, d))


def shared_prefix_attention(q_BxLxHxD, k, v, mask_BxLxS, prefix):
  """Attention of ``N`` samples per prompt over [shared prompt | own tokens].

  ``q``, ``k``, ``v`` and the mask belong to the ``B = B0·N`` samples (the ``N``
  samples of a prompt adjacent); ``prefix = (k_pre, v_pre, valid_B0xP)`` is the
  prompts' cache, stored once per prompt. The ``N`` samples' queries of a prompt
  are stacked into one matmul against that prompt's keys, so the prompt cache is
  read once per step instead of ``N`` times (decoding is bound by reading the cache),
  and the two parts share one softmax normaliser. The prompt cache may be stored in a
  lower precision than ``q`` (bfloat16 under mixed precision): its two dots then take
  operands in the cache's dtype and accumulate in float32, so the cache is never
  converted back, which would cost a pass over it every step.
  """
  k_pre, v_pre, prefix_valid = prefix
  b, l, h, d = q_BxLxHxD.shape
  b0, kv_heads, p = k_pre.shape[0], k_pre.shape[1], k_pre.shape[3]
  if b % b0:
    raise ValueError(f"{b} queries are not a multiple of {b0} prefixes")
  n, groups = b // b0, h // kv_heads
  neg = jnp.finfo(jnp.float32).min
  q = _group_queries(q_BxLxHxD, kv_heads)
  own = jnp.einsum("bkqd,bkds->bkqs", q, k).astype(jnp.float32)
  own = jnp.where(mask_BxLxS.reshape(b, 1, 1, l, -1),
                  own.reshape(b, kv_heads, groups, l, -1), neg)
  # [B0, K, N·G·L, D]: every sample of a prompt in one query block.
  q_pre = q.reshape(b0, n, kv_heads, groups * l, d).transpose(0, 2, 1, 3, 4)
  low = k_pre.dtype
  shared = jnp.einsum("bkqd,bkds->bkqs",
                      q_pre.reshape(b0, kv_heads, n * groups * l, d).astype(low), k_pre,
                      preferred_element_type=jnp.float32)
  shared = jnp.where(prefix_valid[:, None, None, :], shared, neg)
  shared = shared.reshape(b0, kv_heads, n, groups, l, p)
  top = jnp.maximum(own.max(-1), shared.max(-1).transpose(0, 2, 1, 3, 4).reshape(
      b, kv_heads, groups, l))
  e_own = jnp.exp(own - top[..., None])
  e_shared = jnp.exp(shared - top.reshape(b0, n, kv_heads, groups, l).transpose(
      0, 2, 1, 3, 4)[..., None])
  denom = e_own.sum(-1) + e_shared.sum(-1).transpose(0, 2, 1, 3, 4).reshape(
      b, kv_heads, groups, l)
  dt = q.dtype
  out = jnp.einsum("bkqs,bksd->bkqd", e_own.astype(dt).reshape(b, kv_heads, groups * l, -1), v)
  out_shared = jnp.einsum("bkqs,bksd->bkqd",
                          e_shared.astype(low).reshape(b0, kv_heads, n * groups * l, p), v_pre,
                          preferred_element_type=jnp.float32).astype(dt)
  out = out + out_shared.reshape(b0, kv_heads, n, groups * l, d).transpose(
      0, 2, 1, 3, 4).reshape(b, kv_heads, groups * l, d)
  return _ungroup(out.reshape(b, kv_heads, groups, l, d) / denom[..., None].astype(dt))


def block_causal_attention(q, k, v, mask, block: int, operand_dtype=None):
  """Same result as ``attention_core`` for a causal mask, skipping blocks above the diagonal.

  Query block i only multiplies against keys ``[0, (i+1)·block)``: every mask
  this project builds is causal (no token sees a later one), so the skipped
  scores would all be masked. On a CPU this halves attention's cost.
  """
  l = q.shape[1]
  outs = []
  for start in range(0, l, block):
    end = min(start + block, l)
    outs.append(attention_core(q[:, start:end], k[..., :end], v[:, :, :end],
                                mask[:, start:end, :end], operand_dtype))
  return jnp.concatenate(outs, axis=1)
