"""Writes a reward model as a Hugging Face ``LlamaForSequenceClassification`` (or
``Qwen2ForSequenceClassification``) directory with ``num_labels=1``: the convention that
transformers, TRL, OpenRLHF and vLLM load a reward model by.

The inverse of ``hf_loader``: our ``[in, *out]`` weights become HF's ``[out, in]``,
LoRA adapters are merged into the weights they adapt, and the scalar head becomes
``score.weight`` (HF's head has no bias; a Bradley–Terry head's bias gets no gradient, so
it is 0 unless set by hand, and a non-zero one is refused rather than dropped).

transformers reads a sequence-classification model at the last token that is not the
pad token; our RM reads at the EOS that ends each response. The export therefore sets a
``pad_token_id`` different from EOS, so that ``prompt + response + EOS`` right-padded with
it gives the reward westofn gives.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from policies.core.atomic import write_text_atomic


class ExportError(ValueError):
  pass


def _merged(w, lora, in_dims: int = 1) -> np.ndarray:
  """``w`` (``[in..., out...]``) with its LoRA update ``A @ B * alpha / rank`` added."""
  w = np.asarray(w[...], np.float32)
  if lora is None:
    return w
  fan_in = int(np.prod(w.shape[:in_dims]))
  delta = (np.asarray(lora.a[...], np.float32) @ np.asarray(lora.b[...], np.float32)) * lora.scale
  return (w.reshape(fan_in, -1) + delta).reshape(w.shape)


def decoder_to_hf_tensors(decoder) -> dict:
  """HF-named ``[out, in]`` float32 tensors of a ``Decoder`` (LoRA merged), without a head."""
  cfg = decoder.cfg
  d, h, k, hd = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
  out = {"model.embed_tokens.weight": np.asarray(decoder.embedding[...], np.float32),
         "model.norm.weight": np.asarray(decoder.final_norm.scale[...], np.float32)}
  for i, block in enumerate(decoder.blocks):
    p, attn, mlp = f"model.layers.{i}.", block.attn, block.mlp
    out[p + "input_layernorm.weight"] = np.asarray(block.attn_norm.scale[...], np.float32)
    out[p + "post_attention_layernorm.weight"] = np.asarray(block.mlp_norm.scale[...], np.float32)
    out[p + "self_attn.q_proj.weight"] = _merged(attn.wq, attn.lora_q).reshape(d, h * hd).T
    out[p + "self_attn.k_proj.weight"] = _merged(attn.wk, attn.lora_k).reshape(d, k * hd).T
    out[p + "self_attn.v_proj.weight"] = _merged(attn.wv, attn.lora_v).reshape(d, k * hd).T
    out[p + "self_attn.o_proj.weight"] = _merged(attn.wo, attn.lora_o, 2).reshape(h * hd, d).T
    if cfg.qkv_bias:
      out[p + "self_attn.q_proj.bias"] = np.asarray(attn.bq[...], np.float32).reshape(h * hd)
      out[p + "self_attn.k_proj.bias"] = np.asarray(attn.bk[...], np.float32).reshape(k * hd)
      out[p + "self_attn.v_proj.bias"] = np.asarray(attn.bv[...], np.float32).reshape(k * hd)
    out[p + "mlp.gate_proj.weight"] = _merged(mlp.w_gate, mlp.lora_gate).T
    out[p + "mlp.up_proj.weight"] = _merged(mlp.w_up, mlp.lora_up).T
    out[p + "mlp.down_proj.weight"] = _merged(mlp.w_down, mlp.lora_down).T
  return {name: np.ascontiguousarray(t) for name, t in out.items()}


def pad_token_for_export(eos_id: int, pad_id: int) -> int:
  """A pad id that is not EOS (transformers reads at the last non-pad token: the EOS)."""
  if pad_id != eos_id:
    return pad_id
  return 0 if eos_id != 0 else 1


def hf_reward_config(cfg, *, eos_id: int, pad_id: int, bos_id: Optional[int],
                     max_positions: int = 8192) -> dict:
  qwen2 = cfg.qkv_bias
  config = {
      "architectures": ["Qwen2ForSequenceClassification" if qwen2 else
                        "LlamaForSequenceClassification"],
      "model_type": "qwen2" if qwen2 else "llama",
      "hidden_size": cfg.d_model, "intermediate_size": cfg.ffn_dim,
      "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
      "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.resolved_head_dim,
      "hidden_act": "silu", "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_base,
      "rope_scaling": None, "vocab_size": cfg.vocab_size, "tie_word_embeddings": False,
      "max_position_embeddings": max_positions, "torch_dtype": "float32",
      "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0},
      "eos_token_id": eos_id, "pad_token_id": pad_id, "bos_token_id": bos_id,
  }
  if qwen2:
    config.update(use_sliding_window=False, sliding_window=None,
                  max_window_layers=cfg.num_layers)
  else:
    config.update(attention_bias=False, mlp_bias=False)
  return config


def _write_tokenizer(vocabulary, out_dir: str, pad_id: int) -> list[str]:
  """``tokenizer.json`` + ``tokenizer_config.json`` (+ chat template) of a BPE vocabulary;
  nothing for vocabularies transformers has no tokenizer for (e.g. seqio's bytes)."""
  tokenizer = getattr(vocabulary, "_tokenizer", None)
  if tokenizer is None:
    return []
  tokenizer.save(os.path.join(out_dir, "tokenizer.json"))
  token = lambda i: None if i is None else tokenizer.id_to_token(int(i))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": token(vocabulary.eos_id),
            "pad_token": token(pad_id), "bos_token": token(vocabulary.bos_id),
            "unk_token": token(vocabulary.unk_id), "padding_side": "right",
            "add_bos_token": False, "clean_up_tokenization_spaces": False,
            "model_max_length": 8192}
  written = ["tokenizer.json", "tokenizer_config.json"]
  if getattr(vocabulary, "chat_template", None):
    config["chat_template"] = vocabulary.chat_template
    write_text_atomic(os.path.join(out_dir, "chat_template.jinja"), vocabulary.chat_template)
    written.append("chat_template.jinja")
  write_text_atomic(os.path.join(out_dir, "tokenizer_config.json"), json.dumps(config, indent=2))
  return written


def export_reward_model(reward_model, vocabulary, out_dir: str, *,
                        dtype: str = "float32") -> dict:
  """Writes ``out_dir`` (``config.json``, ``model.safetensors``, tokenizer files where the
  vocabulary has them); returns the config written."""
  from safetensors.numpy import save_file
  bias = float(np.asarray(reward_model.head_b[...]))
  if bias != 0.0:
    raise ExportError(f"the reward head has a bias ({bias:g}), which a Hugging Face score head "
                      "cannot hold; pairwise training never changes it, so it was set by hand")
  if dtype not in ("float32", "bfloat16", "float16"):
    raise ExportError(f"dtype must be float32, bfloat16 or float16, not {dtype!r}")
  cfg = reward_model.backbone.cfg
  tensors = decoder_to_hf_tensors(reward_model.backbone)
  tensors["score.weight"] = np.asarray(reward_model.head_w[...], np.float32)[None, :]
  if dtype != "float32":
    import ml_dtypes
    target = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float16
    tensors = {k: v.astype(target) for k, v in tensors.items()}
  os.makedirs(out_dir, exist_ok=True)
  pad_id = pad_token_for_export(vocabulary.eos_id, vocabulary.pad_id)
  config = hf_reward_config(cfg, eos_id=vocabulary.eos_id, pad_id=pad_id,
                            bos_id=vocabulary.bos_id)
  config["torch_dtype"] = dtype
  tmp = os.path.join(out_dir, "model.safetensors.tmp")
  save_file(tensors, tmp, metadata={"format": "pt"})
  os.replace(tmp, os.path.join(out_dir, "model.safetensors"))
  _write_tokenizer(vocabulary, out_dir, pad_id)
  write_text_atomic(os.path.join(out_dir, "config.json"), json.dumps(config, indent=2))
  return config
