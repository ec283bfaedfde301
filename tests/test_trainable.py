"""Frozen lower layers and LoRA adapters: what trains, what stays, what is saved."""

import jax
import numpy as np
import pytest
from flax import nnx

from policies.core.checkpoints import Checkpoints
from policies.core.metrics_writer import NullWriter
from policies.trainable import Trainable
from policies.transformer import LoRAParam, TransformerConfig
from rm.model import make_reward_model
from rm.packing import PairBatches
from rm.tasks import TokenizedPair
from rm.training import evaluate_reward_model, make_optimizer, train_reward_model

CFG = TransformerConfig(vocab_size=40, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                        ffn_dim=64)


def _pairs(n, seed):
  # Chosen responses hold more of token 7 than rejected ones: learnable, known answer.
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    prompt = rng.integers(3, 40, 6)
    chosen, rejected = rng.integers(3, 40, 8), rng.integers(3, 40, 8)
    chosen[rng.random(8) < 0.5] = 7
    rejected[rejected == 7] = 8
    out.append(TokenizedPair(prompt, chosen, rejected))
  return out


def _stream(pairs, seed=0):
  return PairBatches(pairs, rows=4, row_len=96, pairs_per_row=4, max_response_len=12, eos_id=1,
                     pad_id=0, seed=seed, shuffle=True)


def flat_params(model):
  return {"/".join(map(str, k)): np.asarray(v[...])
          for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _train(model, trainable, steps=60, checkpoints=None):
  opt = make_optimizer(model, learning_rate=1e-2, total_steps=steps, warmup_steps=5,
                       trainable=trainable)
  return train_reward_model(model=model, optimizer=opt, train_batches=_stream(_pairs(256, 0)),
                            num_steps=steps, writer=NullWriter(), checkpoints=checkpoints,
                            log_every=1000, progress=False)


def test_lora_starts_as_the_base_model_and_only_adapters_and_head_train(tmp_path):
  base = make_reward_model(CFG, seed=0)
  adapted = make_reward_model(CFG.__class__(**{**CFG.__dict__, "lora_rank": 4}), seed=1)
  nnx.update(adapted, nnx.state(base, nnx.Not(LoRAParam)))   # same pretrained weights
  heldout = list(_stream(_pairs(64, 1)).one_pass())
  before = evaluate_reward_model(model=base, batches=heldout)
  same = evaluate_reward_model(model=adapted, batches=heldout)
  np.testing.assert_allclose(same.chosen, before.chosen, atol=1e-5)

  start = flat_params(adapted)
  _train(adapted, Trainable(lora_only=True), checkpoints=Checkpoints(str(tmp_path / "c")))
  end = flat_params(adapted)
  changed = {k for k in start if not np.array_equal(start[k], end[k])}
  lora = {k for k in start if k.endswith(("/a", "/b")) and "lora" in k}
  assert lora and {k for k in lora if k.endswith("/b")} <= changed
  assert "head_w" in changed
  assert changed <= lora | {"head_w", "head_b"}, changed - lora
  after = evaluate_reward_model(model=adapted, batches=heldout).metrics
  assert after["accuracy"] > 0.8 and after["loss"] < before.metrics["loss"], after

  # The adapters and the head are in the checkpoint: a fresh model restores them exactly.
  fresh = make_reward_model(CFG.__class__(**{**CFG.__dict__, "lora_rank": 4}), seed=2)
  Checkpoints(str(tmp_path / "c")).restore(fresh)
  jax.tree.map(np.testing.assert_array_equal, flat_params(fresh), end)


def test_frozen_layers_keep_embedding_and_lower_blocks():
  model = make_reward_model(CFG, seed=0)
  start = flat_params(model)
  _train(model, Trainable(frozen_layers=1), steps=20)
  end = flat_params(model)
  changed = {k for k in start if not np.array_equal(start[k], end[k])}
  assert not any(k.startswith(("backbone/embedding", "backbone/blocks/0/")) for k in changed)
  assert any(k.startswith("backbone/blocks/1/") for k in changed) and "head_w" in changed


def test_trainable_rejects_impossible_settings():
  model = make_reward_model(CFG, seed=0)
  with pytest.raises(ValueError, match="lora_rank"):
    make_optimizer(model, trainable=Trainable(lora_only=True))
  with pytest.raises(ValueError, match="has 2 blocks"):
    make_optimizer(model, trainable=Trainable(frozen_layers=3))
  assert "parameters train" in Trainable(frozen_layers=1).describe(model)
