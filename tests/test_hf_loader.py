"""policies/hf_loader.py: a Hugging Face Llama/Qwen2 checkpoint the test writes gives transformers'
logits; bad checkpoints are clear errors."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import torch  # the test extra installs the CPU build
import transformers

from policies.hf_loader import CheckpointError, load_hf_llama
from policies.transformer import causal_mask


@pytest.mark.parametrize("arch,tied", [("llama", True), ("llama", False), ("qwen2", False)])
def test_logits_equal_transformers(tmp_path, arch, tied):
  torch.manual_seed(0)
  config_cls, model_cls = {
      "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
      "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[arch]
  cfg = config_cls(vocab_size=101, hidden_size=64, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=96, rms_norm_eps=1e-5,
                   tie_word_embeddings=tied, max_position_embeddings=128)
  ref = model_cls(cfg).eval()
  if arch == "qwen2":  # Qwen2's q/k/v biases start at zero; make them count
    with torch.no_grad():
      for name, p in ref.named_parameters():
        if name.endswith("proj.bias"):
          p.normal_(0.0, 0.5)
  ref.save_pretrained(tmp_path, safe_serialization=True)
  ours = load_hf_llama(str(tmp_path))
  assert ours.cfg.qkv_bias == (arch == "qwen2")
  tokens = np.random.default_rng(0).integers(0, 101, (2, 17))
  with torch.no_grad():
    want = ref(torch.tensor(tokens)).logits.numpy()
  pos = jnp.broadcast_to(jnp.arange(17), (2, 17))
  got = ours.logits(ours(jnp.asarray(tokens), pos, causal_mask(jnp.ones((2, 17), bool))))
  print(f"{arch}: max |logit difference| = {np.abs(np.asarray(got) - want).max():.1e}")
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-4, rtol=1e-4)


def test_bad_checkpoints_raise_clear_errors(tmp_path):
  with pytest.raises(CheckpointError, match="config.json: cannot be read"):
    load_hf_llama(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
  with pytest.raises(CheckpointError, match="not supported"):
    load_hf_llama(str(tmp_path))
  (tmp_path / "config.json").write_text(json.dumps({
      "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "num_hidden_layers": 1,
      "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 10}))
  with pytest.raises(CheckpointError, match="no \\*.safetensors"):
    load_hf_llama(str(tmp_path))
