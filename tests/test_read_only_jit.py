"""policies/core/read_only_jit.py: a model's state goes into a compiled reading function and
never comes out; the results equal nnx.jit's, models of one structure share a program, and a
function that changes its model raises instead of losing the change."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from policies.core.compile_meter import CompileMeter
from policies.core.read_only_jit import read_only_jit
from policies.transformer import TransformerConfig, segment_mask
from rm.model import make_reward_model

CFG = TransformerConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                        ffn_dim=48)


def _rewards(model, tokens, scale):
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  group = jnp.ones_like(tokens)
  mask = segment_mask(group, jnp.zeros_like(tokens))
  ends = jnp.full((tokens.shape[0], 1, 1), tokens.shape[1] - 1)
  return model.rewards_at(tokens, positions, mask, ends)[..., 0] * scale


def _tokens(seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(1, 64, (3, 12)), jnp.int32)


def test_results_equal_nnx_jit_and_the_model_is_unchanged():
  model = make_reward_model(CFG, seed=0)
  before = jax.tree.map(np.asarray, nnx.state(model))
  read = read_only_jit(_rewards, static_argnames=("scale",))
  reference = nnx.jit(_rewards, static_argnames=("scale",))
  got, want = read(model, _tokens(), scale=2.0), reference(model, _tokens(), scale=2.0)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  assert got.shape == (3, 1)
  with CompileMeter() as meter:   # bound once, the same program
    bound = read.bind(model)(_tokens(), scale=2.0)
  np.testing.assert_array_equal(np.asarray(bound), np.asarray(want))
  assert meter.cost.compiles == 0
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray,
                                                                     nnx.state(model)))


def test_the_program_returns_the_result_only_not_the_state():
  # nnx.jit hands every variable back (XLA copies each parameter to an output per call)
  model = make_reward_model(CFG, seed=0)
  param_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model)))
  read = read_only_jit(_rewards, static_argnames=("scale",))
  ours = read.lower(model, _tokens(), scale=1.0).compile().memory_analysis()
  theirs = nnx.jit(_rewards, static_argnames=("scale",)).lower(
      model, _tokens(), scale=1.0).compile().memory_analysis()
  assert ours.output_size_in_bytes == 3 * 1 * 4          # the [3, 1] float32 rewards
  assert theirs.output_size_in_bytes >= param_bytes


def test_models_of_one_structure_share_the_program():
  read = read_only_jit(_rewards, static_argnames=("scale",))
  a, b = make_reward_model(CFG, seed=0), make_reward_model(CFG, seed=1)
  read(a, _tokens(), scale=1.0).block_until_ready()
  with CompileMeter() as meter:
    rb = read(b, _tokens(), scale=1.0)
  assert meter.cost.compiles == 0
  assert not np.allclose(np.asarray(rb), np.asarray(read(a, _tokens(), scale=1.0)))
  with CompileMeter() as meter:
    read(b, _tokens(), scale=3.0).block_until_ready()     # a static argument: a new program
  assert meter.cost.compiles == 1


def test_a_function_that_changes_its_model_raises():
  def bump(model, x):
    model.head_b[...] = model.head_b[...] + 1.0
    return x * 2

  model = make_reward_model(CFG, seed=0)
  bias = np.asarray(model.head_b[...])
  with pytest.raises(ValueError, match="bump changes its model's variables"):
    read_only_jit(bump)(model, jnp.ones(2))
  np.testing.assert_array_equal(np.asarray(model.head_b[...]), bias)
