"""Decoder-only transformer shared by the policy LM and the reward-model backbone.

Llama-style: RMSNorm, rotary position embeddings, SwiGLU MLP, grouped-query
attention. Every parameter carries logical axis names (``vocab``, ``embed``,
``q_heads``, ``kv_heads``, ``head_dim``, ``mlp``) so the same module runs on a CPU
or on a device mesh; ``sharding.py`` maps the names to mesh axes.

Attention takes an explicit boolean mask and explicit positions instead of
assuming one causal sequence per row. That is what lets a reward-model row hold
``[prompt | chosen | rejected]`` (prompt computed once, rejected positions
restarting after the prompt) and several such pairs side by side without padding.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from policies.attention import (RotaryAngles, attention_core, block_causal_attention,
                                rotary_angles, rope, shared_prefix_attention)
from policies.core.matmul import dense, mixed_matmul_bt

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(name_or_dtype) -> jnp.dtype:
  if isinstance(name_or_dtype, str):
    if name_or_dtype not in _DTYPES:
      raise ValueError(f"unknown dtype {name_or_dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name_or_dtype]
  return jnp.dtype(name_or_dtype)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Sizes of the decoder. ``head_dim`` defaults to ``d_model // num_heads``."""

  vocab_size: int
  d_model: int = 128
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  ffn_dim: int = 384
  head_dim: Optional[int] = None
  rope_base: float = 10000.0
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  # Compute dtype; parameters stay float32 (master weights) whatever this is.
  dtype: str = "float32"
  # Operand dtype of the dense layers' matmuls (None: ``dtype``). 'bfloat16' with
  # float32 ``dtype`` is mixed precision (PyTorch's bf16 autocast): bf16 operands,
  # float32 accumulation and results, float32 everywhere else; the matmuls run ~2x
  # faster on AVX512-BF16 CPUs.
  matmul_dtype: Optional[str] = None
  # Operand dtype of attention's two dots (scores, weighted values), each accumulated in
  # float32 (None: ``dtype``). 'bfloat16' with float32 ``dtype`` runs attention as PyTorch's
  # bf16 autocast does; a served RM uses it with ``matmul_dtype`` (``westofn.serve
  # --matmul_dtype``): at SmolLM2's size float32 attention dots were a sixth of a scoring call.
  attention_dtype: Optional[str] = None
  # Recompute each block's activations in the backward pass (saves memory).
  remat: bool = False
  # What a rematerialised block keeps from its forward pass: a ``jax.checkpoint_policies``
  # name, e.g. 'dots_with_no_batch_dims_saveable' (the matmul outputs: less recompute, more
  # memory); None keeps nothing but the block's input.
  remat_policy: Optional[str] = None
  # Query block size of block-causal attention (0 = one dense block).
  attention_block: int = 64
  # Run the blocks as one ``lax.scan`` over their parameters stacked on a layer axis (as
  # MaxText's scan_layers): XLA compiles one block instead of ``num_layers`` copies. The
  # parameters stay stored per block (checkpoints, loaders, export and sharding rules see
  # the same tree); the stack is built inside the compiled program. None: scan on GPUs and
  # TPUs, loop on CPUs, where XLA already compiles identical layers' kernels once (a 30-layer
  # RM step compiled as fast either way) and a scanned step ran 40% slower and decoding 30%
  # slower (README.md, "Compile once, then compute").
  scan_layers: Optional[bool] = None
  # Biases on the query/key/value projections (Qwen2); Llama has none.
  qkv_bias: bool = False
  # LoRA adapters of this rank on every projection (0 = none); the update is scaled
  # by lora_alpha / lora_rank, and the adapters start at zero (B = 0).
  lora_rank: int = 0
  lora_alpha: float = 16.0

  def __post_init__(self):
    if self.num_heads % self.num_kv_heads:
      raise ValueError(
          f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
    if self.head_dim is None and self.d_model % self.num_heads:
      raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
    as_dtype(self.dtype)
    for field in ("matmul_dtype", "attention_dtype"):
      low = getattr(self, field)
      if (low is not None and as_dtype(low) != as_dtype(self.dtype)
          and as_dtype(self.dtype) != jnp.float32):
        raise ValueError(f"{field}={low!r} needs dtype='float32' (mixed precision), not "
                         f"{self.dtype!r}")
    if self.remat_policy is not None:
      if not self.remat:
        raise ValueError(f"remat_policy={self.remat_policy!r} needs remat=True")
      if not callable(getattr(jax.checkpoint_policies, self.remat_policy, None)):
        raise ValueError(f"remat_policy={self.remat_policy!r} is not a jax.checkpoint_policies "
                         "name (e.g. 'nothing_saveable', 'dots_with_no_batch_dims_saveable')")

  @property
  def resolved_head_dim(self) -> int:
    return self.head_dim or self.d_model // self.num_heads

  @property
  def scans_layers(self) -> bool:
    """``scan_layers``, with None resolved for the default backend."""
    if self.scan_layers is not None:
      return self.scan_layers
    return jax.default_backend() != "cpu"


def annotated_param(value, axes) -> nnx.Param:
  """A parameter tagged with logical axis names; placement happens later, on a mesh."""
  return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


class LoRAParam(nnx.Param):
  """Low-rank adapter weights: with LoRA on, these and the reward head are what trains."""


def _param(rngs: nnx.Rngs, shape, axes, in_axis=0):
  """A float32 parameter with fan-in scaled truncated-normal init."""
  init = nnx.initializers.variance_scaling(
      1.0, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=-1)
  return annotated_param(init(rngs.params(), shape, jnp.float32), axes)


class RMSNorm(nnx.Module):

  def __init__(self, dim: int, eps: float):
    self.eps = eps
    self.scale = annotated_param(jnp.ones((dim,), jnp.float32), ("embed",))

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * self.scale[...]).astype(x.dtype)


class LoRA(nnx.Module):
  """``delta(x) = (x @ A) @ B · alpha / rank`` for a weight ``[in, *out]``; B starts at 0
  so a freshly adapted model computes exactly what the pretrained one did."""

  def __init__(self, w_shape, cfg: TransformerConfig, rngs: nnx.Rngs, in_dims: int = 1):
    fan_in = int(np.prod(w_shape[:in_dims]))
    fan_out = int(np.prod(w_shape[in_dims:]))
    r = cfg.lora_rank
    self.a = LoRAParam(jax.random.normal(rngs.params(), (fan_in, r), jnp.float32)
                       * fan_in ** -0.5, out_sharding=(None, None), eager_sharding=False)
    self.b = LoRAParam(jnp.zeros((r, fan_out), jnp.float32), out_sharding=(None, None),
                       eager_sharding=False)
    self.out_shape = tuple(w_shape[in_dims:])
    self.scale = cfg.lora_alpha / r

  def __call__(self, x_flat, dt):
    lead = x_flat.shape[:-1]
    y = (x_flat.reshape(-1, x_flat.shape[-1]) @ self.a[...].astype(dt)) @ self.b[...].astype(dt)
    return (y * self.scale).astype(dt).reshape(lead + self.out_shape)


def _maybe_lora(cfg: TransformerConfig, w: nnx.Param, rngs: nnx.Rngs, in_dims: int = 1):
  if not cfg.lora_rank:
    return None
  return LoRA(w.shape, cfg, rngs, in_dims)


def project(x, w, cfg: TransformerConfig, lora: Optional[LoRA] = None):
  """``dense`` (2-D weights: ``[in, *out]`` is flattened) plus the LoRA update when
  the layer has one."""
  dt = x.dtype
  y = dense(x, w.reshape(w.shape[0], -1), dt,
            as_dtype(cfg.matmul_dtype) if cfg.matmul_dtype else None)
  y = y.reshape(x.shape[:-1] + w.shape[1:])
  return y if lora is None else y + lora(x, dt)


def as_angles(positions_BxL, cfg: TransformerConfig) -> RotaryAngles:
  """Rotary angles of ``positions``, or ``positions`` themselves if already angles."""
  if isinstance(positions_BxL, RotaryAngles):
    return positions_BxL
  return rotary_angles(positions_BxL, cfg.resolved_head_dim, cfg.rope_base)


class Attention(nnx.Module):
  """Grouped-query attention over an explicit causal mask, with an optional KV cache."""

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    d, h, k, hd = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
    self.cfg = cfg
    self.wq = _param(rngs, (d, h, hd), ("embed", "q_heads", "head_dim"))
    self.wk = _param(rngs, (d, k, hd), ("embed", "kv_heads", "head_dim"))
    self.wv = _param(rngs, (d, k, hd), ("embed", "kv_heads", "head_dim"))
    # fan-in of the output projection is heads*head_dim: scale over both axes.
    self.wo = _param(rngs, (h, hd, d), ("q_heads", "head_dim", "embed"), in_axis=(0, 1))
    if cfg.qkv_bias:
      self.bq = annotated_param(jnp.zeros((h, hd), jnp.float32), ("q_heads", "head_dim"))
      self.bk = annotated_param(jnp.zeros((k, hd), jnp.float32), ("kv_heads", "head_dim"))
      self.bv = annotated_param(jnp.zeros((k, hd), jnp.float32), ("kv_heads", "head_dim"))
    self.lora_q, self.lora_k, self.lora_v = (_maybe_lora(cfg, w, rngs)
                                             for w in (self.wq, self.wk, self.wv))
    self.lora_o = _maybe_lora(cfg, self.wo, rngs, in_dims=2)

  def _proj(self, x, w, bias_name, lora):
    y = project(x, w[...], self.cfg, lora)
    if self.cfg.qkv_bias:
      y = y + getattr(self, bias_name)[...].astype(x.dtype)
    return y

  def _kv(self, x, positions):
    """Keys ``[B, K, D, L]`` and values ``[B, K, L, D]``."""
    k = rope(self._proj(x, self.wk, "bk", self.lora_k), as_angles(positions, self.cfg))
    v = self._proj(x, self.wv, "bv", self.lora_v)
    return k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)

  def __call__(self, x_BxLxD, positions_BxL, mask_BxLxS, cache=None, context=None,
               prefix=None):
    """Returns (output, new_cache).

    * plain: keys and values are this call's tokens (``S == L``);
    * ``context=(x_BxSxD, positions_BxS)``: queries at ``x`` only, keys and
      values from the context tokens (the reward model's last layer reads just
      the tokens whose reward it needs);
    * ``cache=(k_BxKxDxS, v_BxKxSxD, write_index)``: new keys and values are
      written at ``write_index`` and attention runs over all ``S`` slots;
    * with a cache, ``prefix=(k_B0xKxDxP, v_B0xKxPxD, valid_B0xP)``: keys and values
      of a prompt shared by the ``B / B0`` consecutive rows of ``x`` (N samples of a
      prompt), attended before the cache (see ``attention.shared_prefix_attention``).
    """
    cfg = self.cfg
    dt = x_BxLxD.dtype
    q = rope(self._proj(x_BxLxD, self.wq, "bq", self.lora_q),
             as_angles(positions_BxL, self.cfg))
    k, v = self._kv(*(context if context is not None else (x_BxLxD, positions_BxL)))
    new_cache = None
    if cache is not None:
      k_cache, v_cache, index = cache
      k = jax.lax.dynamic_update_slice_in_dim(k_cache, k.astype(k_cache.dtype), index, axis=3)
      v = jax.lax.dynamic_update_slice_in_dim(v_cache, v.astype(v_cache.dtype), index, axis=2)
      new_cache = (k, v)
    k, v = k.astype(dt), v.astype(dt)
    l, blk = q.shape[1], cfg.attention_block
    low = as_dtype(cfg.attention_dtype) if cfg.attention_dtype else None
    if prefix is not None:
      out = shared_prefix_attention(q, k, v, mask_BxLxS, prefix)
    elif cache is None and context is None and blk and l > blk:
      out = block_causal_attention(q, k, v, mask_BxLxS, blk, low)
    else:
      out = attention_core(q, k, v, mask_BxLxS, low)
    b, l, h, hd = out.shape
    wo = self.wo[...].reshape(h * hd, -1)
    return project(out.reshape(b, l, h * hd), wo, cfg, self.lora_o), new_cache


class MLP(nnx.Module):

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    self.cfg = cfg
    self.w_gate = _param(rngs, (cfg.d_model, cfg.ffn_dim), ("embed", "mlp"))
    self.w_up = _param(rngs, (cfg.d_model, cfg.ffn_dim), ("embed", "mlp"))
    self.w_down = _param(rngs, (cfg.ffn_dim, cfg.d_model), ("mlp", "embed"))
    self.lora_gate, self.lora_up, self.lora_down = (
        _maybe_lora(cfg, w, rngs) for w in (self.w_gate, self.w_up, self.w_down))

  def __call__(self, x):
    cfg = self.cfg
    gate = jax.nn.silu(project(x, self.w_gate[...], cfg, self.lora_gate))
    return project(gate * project(x, self.w_up[...], cfg, self.lora_up), self.w_down[...], cfg,
                   self.lora_down)


class Block(nnx.Module):

  def __init__(self, cfg: TransformerConfig, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
    self.attn = Attention(cfg, rngs)
    self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
    self.mlp = MLP(cfg, rngs)

  def __call__(self, x, positions, mask, cache=None, context=None, prefix=None):
    if context is not None:
      context = (self.attn_norm(context[0]), context[1])
    attn_out, new_cache = self.attn(self.attn_norm(x), positions, mask, cache, context, prefix)
    x = x + attn_out
    return x + self.mlp(self.mlp_norm(x)), new_cache


def _block_no_cache(block: Block, x, positions, mask):
  return block(x, positions, mask)[0]


def _gather_tokens(x_BxL, index_BxQ):
  return jnp.take_along_axis(x_BxL, index_BxQ.reshape(index_BxQ.shape + (1,) * (x_BxL.ndim - 2)),
                             axis=1)


def stack_blocks(blocks: Sequence[Block]):
  """``(graphdef, state)`` of identically built blocks, their parameters stacked on a new
  leading layer axis: what ``lax.scan`` iterates over. Inside a compiled program the stack
  costs one copy of the blocks' parameters (a gradient flows back through it)."""
  graphdefs, states = zip(*(nnx.split(b) for b in blocks))
  if any(g != graphdefs[0] for g in graphdefs[1:]):
    raise ValueError("scan_layers needs blocks of one structure (set scan_layers=False)")
  return graphdefs[0], jax.tree.map(lambda *xs: jnp.stack(xs), *states)


class Decoder(nnx.Module):
  """Token embedding, ``num_layers`` blocks, final norm; ``logits`` applies the LM head."""

  def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embedding = annotated_param(
        cfg.d_model ** -0.5 * jax.random.normal(
            rngs.params(), (cfg.vocab_size, cfg.d_model), jnp.float32), ("vocab", "embed"))
    self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
    if not cfg.tie_embeddings:
      self.lm_head = _param(rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"))
    # Block indices where the layer scan is cut (see ``cut_scan_at``).
    self.scan_cuts: tuple[int, ...] = ()

  def cut_scan_at(self, layer: int) -> None:
    """Scans blocks ``[0, layer)`` apart from the rest. With the blocks below ``layer``
    frozen (``Trainable.frozen_layers``) their scan takes no gradient, so the backward
    pass stops at the lowest trained block, as the Python loop's does; one scan over
    all blocks would carry a gradient through every one of them."""
    if 0 < layer < self.cfg.num_layers:
      self.scan_cuts = tuple(sorted(set(self.scan_cuts) | {layer}))

  def _block_runs(self, end: int):
    """Consecutive runs of blocks ``[0, end)`` that are scanned together."""
    cuts = [0] + [c for c in self.scan_cuts if 0 < c < end] + [end]
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]

  def _run_blocks(self, x, angles, mask, end: int):
    run_block = _block_no_cache
    if self.cfg.remat:
      policy = (getattr(jax.checkpoint_policies, self.cfg.remat_policy)
                if self.cfg.remat_policy else None)
      run_block = nnx.remat(_block_no_cache, policy=policy)
    if not self.cfg.scans_layers:
      for block in self.blocks[:end]:
        x = run_block(block, x, angles, mask)
      return x
    for start, stop in self._block_runs(end):
      graphdef, stacked = stack_blocks(self.blocks[start:stop])

      def body(x, state):
        return run_block(nnx.merge(graphdef, state), x, angles, mask), None

      x, _ = jax.lax.scan(body, x, stacked)
    return x

  def __call__(self, tokens_BxL, positions_BxL, mask_BxLxL, read_index_BxQ=None):
    """Hidden states after the final norm: ``[B, L, d_model]``, or ``[B, Q, d_model]``
    at the tokens ``read_index`` when only those are needed.

    With ``read_index`` the last block runs its queries and MLP at those tokens
    alone (keys and values still come from every token): a reward model reads
    two tokens per pair, so most of the last layer's work would be thrown away.
    """
    x = self.embedding[...].astype(as_dtype(self.cfg.dtype))[tokens_BxL]
    angles = as_angles(positions_BxL, self.cfg)
    num_full = len(self.blocks) - (read_index_BxQ is not None)
    x = self._run_blocks(x, angles, mask_BxLxL, num_full)
    if read_index_BxQ is not None:
      x_q = _gather_tokens(x, read_index_BxQ)
      x, _ = self.blocks[-1](x_q, RotaryAngles(*(_gather_tokens(a, read_index_BxQ)
                                                 for a in angles)),
                             _gather_tokens(mask_BxLxL, read_index_BxQ),
                             context=(x, angles))
    return self.final_norm(x)

  def decode(self, tokens_BxL, positions_BxL, mask_BxLxS, caches, write_index, prefix=None):
    """Forward over new tokens with a KV cache; returns (hidden, caches).

    ``caches`` is ``init_cache``'s ``(k, v)``: every layer's keys ``[B, K, D, S]`` and values
    ``[B, K, S, D]``, stacked on a leading layer axis when the layers are scanned, else
    in a list per layer (each updated in place, token by token). ``positions`` may be given
    as their ``RotaryAngles`` (see ``rotary_table``).

    ``prefix=(prefix_caches, valid_B0xP)``: the caches, as above, of ``B0`` prompts that
    the ``B = B0·N`` rows share (``N`` consecutive rows per prompt); every row attends
    to its prompt's valid slots, then to its own cache under ``mask``.
    """
    x = self.embedding[...].astype(as_dtype(self.cfg.dtype))[tokens_BxL]
    angles = as_angles(positions_BxL, self.cfg)
    prefix_caches, prefix_valid = prefix if prefix is not None else (None, None)

    def layer(block, x, k_cache, v_cache, pre):
      return block(x, angles, mask_BxLxS, (k_cache, v_cache, write_index),
                   prefix=None if pre is None else (*pre, prefix_valid))

    if not self.cfg.scans_layers:
      ks, vs = [], []
      for i, block in enumerate(self.blocks):
        pre = None if prefix_caches is None else (prefix_caches[0][i], prefix_caches[1][i])
        x, (k, v) = layer(block, x, caches[0][i], caches[1][i], pre)
        ks.append(k)
        vs.append(v)
      return self.final_norm(x), (ks, vs)
    graphdef, stacked = stack_blocks(self.blocks)

    def body(x, per_layer):
      state, k_cache, v_cache, pre = per_layer
      return layer(nnx.merge(graphdef, state), x, k_cache, v_cache, pre)

    x, new_caches = jax.lax.scan(body, x, (stacked, *caches, prefix_caches))
    return self.final_norm(x), new_caches

  def rotary_table(self, num_positions: int) -> RotaryAngles:
    """Angles of positions ``0..num_positions-1``, ``[P, 1, head_dim / 2]`` each: a
    decoding loop gathers a step's rows from it, because XLA fuses a per-step
    ``sin`` into every rotation and evaluates it per element of q and k."""
    angles = as_angles(jnp.arange(num_positions)[None], self.cfg)
    return RotaryAngles(angles.sin[0], angles.cos[0])

  def logits(self, hidden_BxLxD):
    dt = hidden_BxLxD.dtype
    low = as_dtype(self.cfg.matmul_dtype) if self.cfg.matmul_dtype else None
    if not self.cfg.tie_embeddings:   # lm_head is [in, out]: a dense layer like the others
      return dense(hidden_BxLxD, self.lm_head[...], dt, low).astype(jnp.float32)
    if low is not None and low != dt:
      return mixed_matmul_bt(hidden_BxLxD, self.embedding[...], low)
    return (hidden_BxLxD @ self.embedding[...].astype(dt).T).astype(jnp.float32)

  def init_cache(self, batch: int, max_len: int, dtype=None):
    cfg = self.cfg
    k_shape = (batch, cfg.num_kv_heads, cfg.resolved_head_dim, max_len)
    v_shape = (batch, cfg.num_kv_heads, max_len, cfg.resolved_head_dim)
    dt = dtype or as_dtype(cfg.dtype)
    if cfg.scans_layers:
      layers = (cfg.num_layers,)
      return jnp.zeros(layers + k_shape, dt), jnp.zeros(layers + v_shape, dt)
    return ([jnp.zeros(k_shape, dt) for _ in range(cfg.num_layers)],
            [jnp.zeros(v_shape, dt) for _ in range(cfg.num_layers)])


def store_dense_weights_in(decoder: Decoder, dtype) -> None:
  """Stores the blocks' dense weights in ``dtype``, their matmuls' operand dtype under mixed
  precision, for inference only (a trained model keeps float32 master weights): a forward
  pass then does not round every weight again on each call, which was an eighth of a
  SmolLM2 scoring call on a CPU. The results are the same; embedding, norms, biases and
  LoRA adapters stay as they are."""
  operands = decoder.cfg.matmul_dtype or decoder.cfg.dtype
  if as_dtype(operands) != as_dtype(dtype):
    raise ValueError(f"the dense layers' matmuls take {operands} operands, not {dtype}")
  for block in decoder.blocks:
    for layer, names in ((block.attn, ("wq", "wk", "wv", "wo")),
                         (block.mlp, ("w_gate", "w_up", "w_down"))):
      for name in names:
        weight = getattr(layer, name)
        weight.set_value(weight[...].astype(as_dtype(dtype)))


PROMPT = 0


def segment_mask(group_BxL, segment_BxL):
  """[B, L, L] bool for packed rows: causal, inside one group (0 = padding), and a
  token sees the prompt (segment 0) and its own segment only.

  A reward-model row ``[prompt | chosen | rejected]`` uses segments 0/1/2 so that
  chosen and rejected never see each other; an SFT row ``[prompt | response]``
  uses 0/1, which is plain causal attention inside each sequence.
  """
  l = group_BxL.shape[-1]
  idx = jnp.arange(l)
  causal = idx[None, :] <= idx[:, None]
  same = (group_BxL[:, :, None] == group_BxL[:, None, :]) & (group_BxL[:, None, :] > 0)
  seg_q, seg_k = segment_BxL[:, :, None], segment_BxL[:, None, :]
  return causal[None] & same & ((seg_k == PROMPT) | (seg_k == seg_q))


def causal_mask(valid_BxL):
  """Plain causal mask for one sequence per row; padding keys are masked out."""
  l = valid_BxL.shape[1]
  causal = jnp.tril(jnp.ones((l, l), dtype=bool))
  return causal[None] & valid_BxL[:, None, :].astype(bool)


def count_params(module: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
