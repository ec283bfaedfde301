"""policies/transformer.py's layer scan (``TransformerConfig.scan_layers``): the same numbers
as the Python loop over blocks, forward, backward and decoding, and no backward pass
through frozen blocks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from policies.attention import RotaryAngles
from policies.trainable import Trainable
from policies.transformer import Decoder, TransformerConfig, causal_mask, stack_blocks
from rm.model import make_reward_model
from rm.packing import pack_pairs
from rm.tasks import TokenizedPair
from rm.training import make_optimizer

CFG = TransformerConfig(vocab_size=64, d_model=32, num_layers=4, num_heads=4, num_kv_heads=2,
                        ffn_dim=48, qkv_bias=True, lora_rank=2, scan_layers=False)


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  ints = lambda n: rng.integers(3, 64, n).astype(np.int32)
  pairs = [TokenizedPair(ints(rng.integers(4, 12)), ints(rng.integers(2, 9)),
                         ints(rng.integers(2, 9))) for _ in range(6)]
  (b,) = pack_pairs(pairs, rows=2, row_len=96, pairs_per_row=4, max_response_len=12, eos_id=1)
  return {k: jnp.asarray(v) for k, v in b.arrays().items() if k != "index"}


def _twins(cfg=CFG, seed=0):
  """The same parameters under the loop and under the scan (LoRA's B made non-zero, so
  the adapters count)."""
  loop = make_reward_model(cfg, seed=seed)
  for path, v in nnx.to_flat_state(nnx.state(loop, nnx.Param)):
    if path[-1] == "b":
      v.set_value(jnp.full(v.shape, 0.05, jnp.float32))
  scan = make_reward_model(dataclasses.replace(cfg, scan_layers=True), seed=seed + 1)
  nnx.update(scan, nnx.state(loop, nnx.Param))
  return loop, scan


@pytest.mark.parametrize("remat", [False, True])
def test_scanned_rewards_and_gradients_equal_the_loop(remat):
  cfg = dataclasses.replace(CFG, remat=remat)
  loop, scan = _twins(cfg)
  batch = _batch()

  @nnx.jit
  def rewards_and_grads(model):
    loss = lambda m: jnp.sum(jnp.stack(m(batch)) ** 2)
    return model(batch), nnx.grad(loss)(model)

  (lc, lr), lg = rewards_and_grads(loop)
  (sc, sr), sg = rewards_and_grads(scan)
  np.testing.assert_allclose(sc, lc, atol=2e-5)
  np.testing.assert_allclose(sr, lr, atol=2e-5)
  flat = lambda g: dict(jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(g))[0])
  lflat, sflat = flat(lg), flat(sg)
  assert lflat.keys() == sflat.keys()
  for k in lflat:
    np.testing.assert_allclose(sflat[k], lflat[k], atol=5e-5, err_msg=str(k))


@pytest.mark.slow
def test_scanned_decoding_equals_the_loop():
  """Prefill, then decoding steps over a shared prompt cache, as the sampler runs them."""
  loop_rm, scan_rm = _twins()
  loop, scan = loop_rm.backbone, scan_rm.backbone
  rng = np.random.default_rng(3)
  prompts = jnp.asarray(rng.integers(3, 64, (2, 6)), jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(6), (2, 6))
  mask = causal_mask(jnp.ones((2, 6), bool))
  n, new = 3, 4
  outs = []
  for model in (loop, scan):
    h, prefix = model.decode(prompts, pos, mask, model.init_cache(2, 6), 0)
    caches = model.init_cache(2 * n, new)
    logits = [model.logits(h)]
    for t in range(new):
      tok = jnp.full((2 * n, 1), 5 + t, jnp.int32)
      m = jnp.broadcast_to(jnp.arange(new) <= t, (2 * n, 1, new))
      angles = model.rotary_table(6 + new)
      step_angles = RotaryAngles(*(a[6 + t][None, None] * jnp.ones((2 * n, 1, 1, 1))
                                   for a in angles))
      h, caches = model.decode(tok, step_angles, m, caches, t,
                               prefix=(prefix, jnp.ones((2, 6), bool)))
      logits.append(model.logits(h))
    outs.append(logits)
  for a, b in zip(*outs):
    np.testing.assert_allclose(b, a, atol=2e-5)
  # the scan's caches are stacked on a layer axis; the loop's are one array per layer
  assert scan.init_cache(2, 6)[0].shape == (4, 2, 2, 8, 6)
  assert len(loop.init_cache(2, 6)[0]) == 4


def _scan_lengths(jaxpr) -> list:
  out = []
  for e in jaxpr.eqns:
    if e.primitive.name == "scan":
      out.append(e.params["length"])
      out += _scan_lengths(e.params["jaxpr"].jaxpr)
    for v in e.params.values():
      if hasattr(v, "jaxpr") and e.primitive.name != "scan":
        out += _scan_lengths(v.jaxpr if hasattr(v.jaxpr, "eqns") else v.jaxpr.jaxpr)
  return out


def test_frozen_blocks_are_scanned_apart_and_get_no_backward_pass():
  cfg = dataclasses.replace(CFG, num_layers=6, lora_rank=0, scan_layers=True)
  batch = _batch()

  def grad_jaxpr(frozen):
    model = make_reward_model(cfg, seed=0)
    opt = make_optimizer(model, trainable=Trainable(frozen_layers=frozen))
    graphdef, state = nnx.split(model)
    wrt = opt.wrt

    def loss(state):
      m = nnx.merge(graphdef, state)
      return nnx.value_and_grad(lambda m: jnp.sum(jnp.stack(m(batch)) ** 2),
                                argnums=nnx.DiffState(0, wrt))(m)[1]
    return model, jax.make_jaxpr(loss)(state).jaxpr

  model, jaxpr = grad_jaxpr(frozen=3)
  assert model.backbone.scan_cuts == (3,)
  # forward: blocks 0-2 (frozen) and 3-4 scanned apart (block 5 reads the rewards); the
  # backward (a transposed scan) covers the 2 trained blocks only, never the 3 frozen ones
  lengths = _scan_lengths(jaxpr)
  assert lengths.count(3) == 1, lengths
  assert lengths.count(2) >= 2, lengths
  _, all_trained = grad_jaxpr(frozen=0)
  assert _scan_lengths(all_trained).count(5) >= 2   # forward and backward over 5 blocks


def test_stack_blocks_refuses_blocks_of_different_structure():
  a = Decoder(dataclasses.replace(CFG, num_layers=1, scan_layers=True), rngs=nnx.Rngs(0))
  b = Decoder(dataclasses.replace(CFG, num_layers=1, qkv_bias=False, scan_layers=True),
              rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="one structure"):
    stack_blocks([a.blocks[0], b.blocks[0]])
  graphdef, stacked = stack_blocks([a.blocks[0], a.blocks[0]])
  assert jax.tree.leaves(stacked)[0].shape[0] == 2


def test_scan_layers_default_follows_the_backend():
  assert TransformerConfig(vocab_size=8).scans_layers == (jax.default_backend() != "cpu")
  assert TransformerConfig(vocab_size=8, scan_layers=True).scans_layers
