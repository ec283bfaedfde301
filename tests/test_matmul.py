"""policies/core's mixed-precision matmul: values and gradients against numpy on bf16-rounded
operands, wrong shapes and dtypes, RMs and decoders in mixed precision."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from policies.core.matmul import dense, mixed_matmul, mixed_matmul_bt
from policies.transformer import TransformerConfig


def _round_bf16(a):
  return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)


def _inputs(lead=(3, 5), i=16, o=24, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=lead + (i,)).astype(np.float32),
          rng.normal(size=(i, o)).astype(np.float32),
          rng.normal(size=lead + (o,)).astype(np.float32))


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("lead", [(3, 5), (7,)])
@pytest.mark.parametrize("transposed", [False, True])
def test_mixed_matmul_and_its_gradients_equal_numpy_on_bf16_rounded_operands(jit, lead,
                                                                               transposed):
  """``mixed_matmul`` (weight ``[in, out]``) and ``mixed_matmul_bt`` (weight ``[out, in]``,
  the tied embedding as output layer), forward and backward."""
  x, w, g = _inputs(lead, i=16, o=24)
  weight = np.ascontiguousarray(w.T) if transposed else w
  matmul = mixed_matmul_bt if transposed else mixed_matmul
  fn = lambda x, w: matmul(x, w, jnp.dtype(jnp.bfloat16))
  loss = lambda x, w: jnp.sum(fn(x, w) * g)
  if jit:
    fn, loss = jax.jit(fn), jax.jit(loss)
  y = fn(x, weight)
  dx, dw = jax.grad(loss, argnums=(0, 1))(x, weight)
  assert y.dtype == dx.dtype == dw.dtype == jnp.float32
  assert y.shape == lead + (24,) and dw.shape == weight.shape
  xr, wr, gr = _round_bf16(x), _round_bf16(w), _round_bf16(g)
  np.testing.assert_allclose(y, xr @ wr, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dx, gr @ wr.T, rtol=1e-5, atol=1e-5)
  dw_ref = xr.reshape(-1, x.shape[-1]).T @ gr.reshape(-1, g.shape[-1])
  np.testing.assert_allclose(dw, dw_ref.T if transposed else dw_ref, rtol=1e-5, atol=1e-5)
  # and it is not the float32 product: the operands really were rounded
  assert np.abs(np.asarray(y) - x.astype(np.float64) @ w).max() > 1e-4
  with pytest.raises(TypeError):
    fn(x, weight[:, :8] if transposed else weight[:8])


def test_dense_in_float32_is_exact_and_mixed_is_close():
  x, w, _ = _inputs()
  exact = x.astype(np.float64) @ w
  np.testing.assert_allclose(dense(x, w, jnp.float32), exact, rtol=1e-5, atol=1e-5)
  mixed = dense(x, w, jnp.float32, jnp.bfloat16)
  assert mixed.dtype == jnp.float32
  np.testing.assert_allclose(mixed, exact, rtol=0, atol=0.1)


def test_wrong_shapes_and_dtypes_raise():
  x, w, _ = _inputs(i=16)
  with pytest.raises(TypeError):
    mixed_matmul(x, w[:8], jnp.dtype(jnp.bfloat16))
  with pytest.raises(ValueError, match="float32 activations"):
    dense(x.astype(jnp.float16), w, jnp.float16, jnp.bfloat16)
  with pytest.raises(ValueError, match="matmul_dtype"):
    TransformerConfig(vocab_size=10, dtype="float16", matmul_dtype="bfloat16")


def test_reward_model_in_mixed_precision_matches_float32_and_trains():
  from flax import nnx
  from rm.losses import pairwise_loss
  from rm.model import make_reward_model
  cfg = TransformerConfig(vocab_size=64, d_model=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, ffn_dim=128)
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(1, 64, (4, 16)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(16), (4, 16))
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((16, 16), bool)), (4, 16, 16))
  ends = jnp.full((4, 1, 1), 15, jnp.int32)
  rewards = {}
  for md in (None, "bfloat16"):
    model = make_reward_model(dataclasses.replace(cfg, matmul_dtype=md), seed=0)
    rewards[md] = np.asarray(model.rewards_at(tokens, positions, mask, ends))
  np.testing.assert_allclose(rewards["bfloat16"], rewards[None], rtol=0.05, atol=0.05)
  assert not np.array_equal(rewards["bfloat16"], rewards[None])

  import optax
  model = make_reward_model(dataclasses.replace(cfg, matmul_dtype="bfloat16"), seed=0)
  opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt):
    def loss_fn(model):
      r = model.rewards_at(tokens, positions, mask, ends)[:, 0, 0]
      return pairwise_loss(r[:2], r[2:])
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss
  losses = [float(step(model, opt)) for _ in range(30)]
  assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("tie", [True, False])
def test_decoder_logits_in_mixed_precision_match_float32(tie):
  from flax import nnx
  from policies.transformer import Decoder
  cfg = TransformerConfig(vocab_size=300, d_model=64, num_layers=1, num_heads=4,
                          num_kv_heads=2, ffn_dim=128, tie_embeddings=tie)
  hidden = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 64)), jnp.float32)
  logits = {md: np.asarray(Decoder(dataclasses.replace(cfg, matmul_dtype=md),
                                   rngs=nnx.Rngs(0)).logits(hidden))
            for md in (None, "bfloat16")}
  assert logits["bfloat16"].shape == (2, 3, 300) and logits["bfloat16"].dtype == np.float32
  np.testing.assert_allclose(logits["bfloat16"], logits[None], rtol=0.02, atol=0.05)
  assert not np.array_equal(logits["bfloat16"], logits[None])


def _attention_numpy(q, k, v, mask, operands=None):
  """Grouped-query softmax attention in numpy: ``q [B, L, H, D]``, ``k [B, K, D, S]``,
  ``v [B, K, S, D]``; with ``operands='bfloat16'`` the dots' operands are rounded to it (the
  scaled queries, the keys, the probabilities and the values), the softmax in float32."""
  rnd = _round_bf16 if operands == "bfloat16" else (lambda a: np.asarray(a, np.float64))
  h, kv = q.shape[2], k.shape[1]
  kv_of = np.arange(h) // (h // kv)
  scores = np.einsum("blhd,bhds->bhls", rnd(q * q.shape[-1] ** -0.5), rnd(k)[:, kv_of])
  scores = np.where(mask[:, None], scores, -np.inf).astype(np.float32)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs = probs / probs.sum(-1, keepdims=True)
  return np.einsum("bhls,bhsd->blhd", rnd(probs), rnd(v)[:, kv_of])


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("block", [0, 4])
def test_attention_with_bf16_operands_equals_numpy_on_rounded_operands(jit, block):
  from policies.attention import attention_core, block_causal_attention
  rng = np.random.default_rng(0)
  b, l, h, kv, d = 2, 10, 4, 2, 16
  q = rng.normal(size=(b, l, h, d)).astype(np.float32)
  k = rng.normal(size=(b, kv, d, l)).astype(np.float32)
  v = rng.normal(size=(b, kv, l, d)).astype(np.float32)
  mask = np.tril(np.ones((l, l), bool))[None] & (rng.random((b, 1, l)) < 0.8)
  mask[:, :, 0] = True   # every query sees a key
  fn = ((lambda *a: block_causal_attention(*a, block, jnp.bfloat16)) if block
        else (lambda *a: attention_core(*a, jnp.bfloat16)))
  fn = jax.jit(fn) if jit else fn
  got = np.asarray(fn(q, k, v, mask))
  assert got.dtype == np.float32 and got.shape == (b, l, h, d)
  want, exact = _attention_numpy(q, k, v, mask, "bfloat16"), _attention_numpy(q, k, v, mask)
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)
  assert np.abs(got - exact).max() > 4 * np.abs(got - want).max()   # the rounding is seen
  # float32 operands: the plain path
  np.testing.assert_allclose(np.asarray(attention_core(q, k, v, mask)), exact, atol=1e-5)
  with pytest.raises(ValueError, match="attention_dtype"):
    TransformerConfig(vocab_size=10, dtype="float16", attention_dtype="bfloat16")
  with pytest.raises(ValueError):   # keys of another head size
    attention_core(q, k[:, :, :8], v, mask, jnp.bfloat16)


def test_dense_weights_stored_in_bf16_give_the_same_rewards():
  """A served RM stores its dense weights in bf16 once instead of rounding them each call."""
  from flax import nnx
  from rm.model import make_reward_model
  from policies.transformer import store_dense_weights_in
  cfg = TransformerConfig(vocab_size=64, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2,
                          ffn_dim=128, matmul_dtype="bfloat16", attention_dtype="bfloat16")
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(1, 64, (4, 16)), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(16), (4, 16))
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((16, 16), bool)), (4, 16, 16))
  ends = jnp.full((4, 1, 1), 15, jnp.int32)
  model = make_reward_model(cfg, seed=0)
  before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
  want = np.asarray(nnx.jit(lambda m: m.rewards_at(tokens, positions, mask, ends))(model))
  store_dense_weights_in(model.backbone, "bfloat16")
  got = np.asarray(nnx.jit(lambda m: m.rewards_at(tokens, positions, mask, ends))(model))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  block = model.backbone.blocks[0]
  assert block.mlp.w_up[...].dtype == jnp.bfloat16 and block.attn.wq[...].dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(block.mlp.w_up[...], np.float64),
                                _round_bf16(before["backbone"]["blocks"][0]["mlp"]["w_up"]))
  assert model.backbone.embedding[...].dtype == jnp.float32
  assert block.attn_norm.scale[...].dtype == jnp.float32
  with pytest.raises(ValueError, match="float32 operands, not bfloat16"):
    store_dense_weights_in(make_reward_model(dataclasses.replace(cfg, matmul_dtype=None),
                                             seed=0).backbone, "bfloat16")
