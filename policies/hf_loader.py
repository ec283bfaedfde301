"""Loads Hugging Face Llama-family checkpoints (``config.json`` + ``*.safetensors``):
Llama, SmolLM (a Llama) and Qwen2 (Llama plus query/key/value biases).

The weights map by name onto ``policies.transformer.Decoder``. HF stores linear
weights as ``[out, in]``; ours are ``[in, ...out]`` with heads as their own
axis. Hugging Face Llama already uses the half-split rotary layout our
``rope`` uses, so no Q/K permutation is needed here (GGUF files do need one,
see ``gguf_loader``, which maps its tensors to these names and reuses
``decoder_from_hf_tensors``).
"""

from __future__ import annotations

import glob
import json
import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

from policies.transformer import Decoder, TransformerConfig

SUPPORTED = ("LlamaForCausalLM", "Qwen2ForCausalLM")
# Reward models as transformers, TRL and OpenRLHF save them: the decoder + a ``score``
# head (``[num_labels, hidden]``, no bias) read at the last non-padding token.
REWARD_MODELS = ("LlamaForSequenceClassification", "Qwen2ForSequenceClassification")


class CheckpointError(ValueError):
  pass


def read_hf_config(path: str) -> dict:
  cfg_path = os.path.join(path, "config.json")
  try:
    return json.load(open(cfg_path))
  except (OSError, json.JSONDecodeError) as e:
    raise CheckpointError(f"{cfg_path}: cannot be read: {e}") from None


def is_reward_model(path: str) -> bool:
  """Whether ``path`` holds a sequence-classification RM (a ``score`` head) rather than an LM."""
  return any(a in REWARD_MODELS for a in read_hf_config(path).get("architectures") or [])


def config_from_hf(path: str, **overrides) -> TransformerConfig:
  """Our config from ``path/config.json``; ``overrides`` set compute options (dtype, remat)."""
  cfg_path = os.path.join(path, "config.json")
  hf = read_hf_config(path)
  archs = hf.get("architectures") or []
  if not any(a in SUPPORTED + REWARD_MODELS for a in archs):
    raise CheckpointError(f"{cfg_path}: architectures {archs} not supported; "
                          f"supported: {list(SUPPORTED + REWARD_MODELS)}")
  labels = len(hf["id2label"]) if hf.get("id2label") else hf.get("num_labels", 1)
  if any(a in REWARD_MODELS for a in archs) and labels != 1:
    raise CheckpointError(f"{cfg_path}: num_labels: a reward model has one output (a scalar "
                          f"reward), this one has {labels}")
  rope = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling")
  if (scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default")) or (
      rope.get("rope_type", "default") != "default"):
    raise CheckpointError(f"{cfg_path}: rope scaling {scaling or rope} is not supported yet")
  for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "vocab_size"):
    if field not in hf:
      raise CheckpointError(f"{cfg_path}: {field}: missing")
  qwen2 = any(a.startswith("Qwen2") for a in archs)
  if not qwen2 and (hf.get("attention_bias") or hf.get("mlp_bias")):
    raise CheckpointError(f"{cfg_path}: attention_bias/mlp_bias: Llama output/MLP biases are "
                          "not supported")
  if qwen2 and hf.get("use_sliding_window"):
    raise CheckpointError(f"{cfg_path}: use_sliding_window: sliding-window attention is not "
                          "supported")
  return TransformerConfig(
      vocab_size=hf["vocab_size"], d_model=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
      num_heads=hf["num_attention_heads"],
      num_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
      ffn_dim=hf["intermediate_size"], head_dim=hf.get("head_dim"),
      rope_base=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)), qkv_bias=qwen2, **overrides)


def read_safetensors(path: str) -> dict:
  from safetensors.numpy import load_file
  files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
  if not files:
    raise CheckpointError(f"{path}: no *.safetensors files")
  tensors = {}
  for f in files:
    tensors.update(load_file(f))
  return tensors


def read_score_head(path: str) -> np.ndarray:
  """The ``[hidden]`` weights of a sequence-classification RM's ``score`` head."""
  from safetensors import safe_open
  for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
    with safe_open(f, framework="numpy") as st:
      if "score.weight" in st.keys():
        w = np.asarray(st.get_tensor("score.weight"), np.float32)
        if w.ndim != 2 or w.shape[0] != 1:
          raise CheckpointError(f"{f}: score.weight has shape {w.shape}; a reward model's is "
                                "[1, hidden]")
        return w[0]
  raise CheckpointError(f"{path}: no score.weight tensor, though config.json names a "
                        "sequence-classification model")


def load_hf_llama(path: str, **overrides) -> Decoder:
  """A ``Decoder`` holding the checkpoint's weights (float32 master copies)."""
  return decoder_from_hf_tensors(config_from_hf(path, **overrides), read_safetensors(path), path)


def decoder_from_hf_tensors(cfg: TransformerConfig, tensors: dict, source: str,
                            seed: int = 0) -> Decoder:
  """Copies HF-named ``[out, in]`` tensors into a new ``Decoder``; every tensor must map.

  ``seed`` initialises what the checkpoint does not hold (LoRA adapters).
  """
  used = set()

  def get(name):
    if name not in tensors:
      raise CheckpointError(f"{source}: tensor {name!r} is missing")
    used.add(name)
    return np.asarray(tensors[name], np.float32)

  d, h, k, hd = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
  model = Decoder(cfg, rngs=nnx.Rngs(seed))
  model.embedding[...] = jnp.asarray(get("model.embed_tokens.weight"))
  for i, block in enumerate(model.blocks):
    p = f"model.layers.{i}."
    block.attn_norm.scale[...] = jnp.asarray(get(p + "input_layernorm.weight"))
    block.mlp_norm.scale[...] = jnp.asarray(get(p + "post_attention_layernorm.weight"))
    block.attn.wq[...] = jnp.asarray(get(p + "self_attn.q_proj.weight").T.reshape(d, h, hd))
    block.attn.wk[...] = jnp.asarray(get(p + "self_attn.k_proj.weight").T.reshape(d, k, hd))
    block.attn.wv[...] = jnp.asarray(get(p + "self_attn.v_proj.weight").T.reshape(d, k, hd))
    block.attn.wo[...] = jnp.asarray(get(p + "self_attn.o_proj.weight").T.reshape(h, hd, d))
    if cfg.qkv_bias:
      block.attn.bq[...] = jnp.asarray(get(p + "self_attn.q_proj.bias").reshape(h, hd))
      block.attn.bk[...] = jnp.asarray(get(p + "self_attn.k_proj.bias").reshape(k, hd))
      block.attn.bv[...] = jnp.asarray(get(p + "self_attn.v_proj.bias").reshape(k, hd))
    block.mlp.w_gate[...] = jnp.asarray(get(p + "mlp.gate_proj.weight").T)
    block.mlp.w_up[...] = jnp.asarray(get(p + "mlp.up_proj.weight").T)
    block.mlp.w_down[...] = jnp.asarray(get(p + "mlp.down_proj.weight").T)
  model.final_norm.scale[...] = jnp.asarray(get("model.norm.weight"))
  # A sequence-classification RM has a score head instead of an LM head (rm.model reads it).
  reward_model = "score.weight" in tensors
  used.add("score.weight")
  if not cfg.tie_embeddings and not reward_model:
    model.lm_head[...] = jnp.asarray(get("lm_head.weight").T)
  else:
    used.add("lm_head.weight")
  unused = sorted(set(tensors) - used - {n for n in tensors if n.endswith("rotary_emb.inv_freq")})
  if unused:
    raise CheckpointError(f"{source}: tensors not mapped onto the model: {unused[:5]}")
  return model
