"""HIR's and C-RLFT's pure parts (policies/conditioning.py, policies/hindsight.py) against numpy
references, with jit and without, and with wrong shapes; the hindsight batch's K
log-likelihoods of a response against the policy's own teacher-forced scores."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from policies.conditioning import (ConditionedPolicy, class_weights, condition_prompt,
                                   hindsight_contrastive_loss, outcome_bins)
from policies.hindsight import HindsightBatches, hindsight_loss, relabel, response_logp
from policies.sampling import score_tokens
from policies.transformer import Decoder, TransformerConfig
from flax import nnx

JIT = [False, True]


def maybe_jit(f, use_jit, **static):
  f = functools.partial(f, **static)
  return jax.jit(f) if use_jit else f


@pytest.mark.parametrize("use_jit", JIT)
def test_outcome_bins_match_numpy(use_jit):
  rng = np.random.default_rng(0)
  scores = rng.uniform(size=(5, 7)).astype(np.float32)
  scores[0, 0], scores[0, 1], scores[0, 2] = 0.0, 1.0, 0.5   # the edges
  valid = rng.uniform(size=(5, 7)) > 0.2
  got = maybe_jit(outcome_bins, use_jit, num_bins=4)(jnp.asarray(scores), jnp.asarray(valid))
  want = np.where(valid, np.minimum(np.floor(scores * 4), 3), -1)
  np.testing.assert_array_equal(np.asarray(got), want)
  assert np.asarray(got)[0, :3].tolist() == [0 if valid[0, 0] else -1,
                                             3 if valid[0, 1] else -1, 2 if valid[0, 2] else -1]


def test_outcome_bins_check_shapes_and_bins():
  with pytest.raises(ValueError, match="prompts, samples"):
    outcome_bins(jnp.zeros(3), jnp.ones(3, bool), 4)
  with pytest.raises(ValueError, match="expected"):
    outcome_bins(jnp.zeros((2, 3)), jnp.ones((2, 4), bool), 4)
  with pytest.raises(ValueError, match="num_bins"):
    outcome_bins(jnp.zeros((2, 3)), jnp.ones((2, 3), bool), 1)


@pytest.mark.parametrize("use_jit", JIT)
def test_class_weights_match_numpy(use_jit):
  reward = np.array([0.2, 0.9, 0.6, 0.4], np.float32)
  count = np.array([10, 3, 0, 5])
  got = np.asarray(maybe_jit(class_weights, use_jit, beta=0.1)(jnp.asarray(reward),
                                                               jnp.asarray(count)))
  best = reward[count > 0].max()
  want = np.where(count > 0, np.exp((reward - best) / 0.1), 0.0)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got[1] == 1.0 and got[2] == 0.0   # the best class weighs 1, an empty one 0
  # OpenChat's 1 : 0.1 for a class β·ln 10 below the best
  tenth = class_weights(jnp.array([1.0, 1.0 - 0.1 * np.log(10)]), jnp.array([1, 1]), beta=0.1)
  np.testing.assert_allclose(np.asarray(tenth), [1.0, 0.1], rtol=1e-5)


def test_class_weights_check_shapes_and_beta():
  with pytest.raises(ValueError, match="vector"):
    class_weights(jnp.zeros((2, 2)), jnp.ones((2, 2)), beta=1.0)
  with pytest.raises(ValueError, match="count_C"):
    class_weights(jnp.zeros(3), jnp.ones(2), beta=1.0)
  with pytest.raises(ValueError, match="beta"):
    class_weights(jnp.zeros(3), jnp.ones(3), beta=0.0)


def np_contrastive(logp, target, weights=None):
  shifted = logp - logp.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  per = -log_probs[np.arange(len(target)), target]
  w = np.ones(len(target)) if weights is None else weights
  return float((per * w).sum() / w.sum())


@pytest.mark.parametrize("use_jit", JIT)
def test_contrastive_loss_matches_numpy(use_jit):
  rng = np.random.default_rng(1)
  logp = rng.normal(-20, 5, size=(6, 4)).astype(np.float32)
  target = rng.integers(0, 4, 6)
  weights = np.array([1, 1, 0, 1, 0.5, 1], np.float32)
  f = maybe_jit(hindsight_contrastive_loss, use_jit)
  assert float(f(jnp.asarray(logp), jnp.asarray(target))) == pytest.approx(
      np_contrastive(logp, target), rel=1e-5)
  assert float(f(jnp.asarray(logp), jnp.asarray(target), jnp.asarray(weights))) == pytest.approx(
      np_contrastive(logp, target, weights), rel=1e-5)
  # the loss falls as the response's own instruction explains it better than the others
  sharper = logp.copy()
  sharper[np.arange(6), target] += 5.0
  assert float(f(jnp.asarray(sharper), jnp.asarray(target))) < float(
      f(jnp.asarray(logp), jnp.asarray(target)))


def test_contrastive_loss_checks_shapes():
  with pytest.raises(ValueError, match="responses, instructions"):
    hindsight_contrastive_loss(jnp.zeros(4), jnp.zeros(4, jnp.int32))
  with pytest.raises(ValueError, match="target_B"):
    hindsight_contrastive_loss(jnp.zeros((4, 3)), jnp.zeros((4, 1), jnp.int32))
  with pytest.raises(ValueError, match="weights_B"):
    hindsight_contrastive_loss(jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32), jnp.ones(3))


def test_hindsight_batch_scores_each_response_under_each_instruction():
  cfg = TransformerConfig(vocab_size=40, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                          ffn_dim=64)
  model = Decoder(cfg, rngs=nnx.Rngs(params=0))
  rng = np.random.default_rng(2)
  instructions = [rng.integers(3, 40, n) for n in (3, 4, 3)]   # K = 3, of unequal lengths
  prompts = [rng.integers(3, 40, n) for n in (5, 7)]
  responses = [[rng.integers(3, 40, n) for n in (4, 6)], [rng.integers(3, 40, 5)]]
  examples = []
  for p, rs, outcomes in zip(prompts, responses, ([2, 0], [1])):
    examples += relabel([np.concatenate([i, p]) for i in instructions], rs, outcomes)
  assert [e.target for e in examples] == [2, 0, 1]
  stream = HindsightBatches(examples, batch=4, row_len=32, max_response_len=16, eos_id=1)
  (batch,) = stream.epoch(0)   # 3 examples in a batch of 4: one slot of weight 0
  arrays = {k: jnp.asarray(v) for k, v in batch.arrays().items()}
  logp_BxK, tokens_BxK = (np.asarray(x) for x in response_logp(model, arrays))
  order = np.random.default_rng(0).permutation(3)   # the epoch's shuffle
  for slot, e in enumerate(examples[i] for i in order):
    resp = np.append(e.response, 1).astype(np.int32)
    want = score_tokens(model, list(e.prompts_K), [resp] * 3)
    np.testing.assert_allclose(logp_BxK[slot], [w.sum() for w in want], rtol=2e-5, atol=2e-4)
    assert tokens_BxK[slot].tolist() == [len(resp)] * 3
    assert int(batch.arrays()["target"][slot]) == e.target
  assert batch.arrays()["example_weight"].tolist() == [1, 1, 1, 0]
  loss, (sft, contrastive) = hindsight_loss(model, arrays, contrastive_coef=0.5)
  assert np.isfinite(float(loss)) and float(loss) == pytest.approx(float(sft)
                                                                   + 0.5 * float(contrastive))
  targets = np.array([examples[i].target for i in order])
  assert float(contrastive) == pytest.approx(np_contrastive(logp_BxK[:3], targets), rel=1e-4)
  own = logp_BxK[np.arange(3), targets]
  assert float(sft) == pytest.approx(-own.sum() / tokens_BxK[np.arange(3), targets].sum(),
                                     rel=1e-4)


def test_conditioned_policy_conditions_what_it_samples_and_scores():
  seen = {}

  class Recorder:
    model = "m"

    def sample(self, prompts, n, **kw):
      seen["sample"] = (list(prompts), n, kw)
      return [["s"] * n for _ in prompts]

    def score_samples(self, prompts, samples):
      seen["score"] = list(prompts)
      return samples

  policy = ConditionedPolicy(Recorder(), "outcome 4 of 4")
  policy.sample(["Q: a\nA:"], 2, seed=3)
  policy.score_samples(["Q: b\nA:"], [["s"]])
  assert seen["sample"] == (["[outcome 4 of 4]\nQ: a\nA:"], 2, {"seed": 3})
  assert seen["score"] == [condition_prompt("Q: b\nA:", "outcome 4 of 4")]
  assert policy.model == "m"
