"""Policy improvement's pure functions (ReST filters, DPO loss, KL) against numpy references,
with jit and without, and wrong shapes; DPO batches and sequence log-likelihoods against the
sampler's own scoring."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from policies import objectives
from policies.dpo import DpoBatches, pack_pairs, reference_logprobs
from policies.sampling import score_tokens
from policies.transformer import Decoder, TransformerConfig

RNG = np.random.default_rng(0)
R = RNG.normal(size=(5, 6)).astype(np.float32)
VALID = RNG.uniform(size=(5, 6)) > 0.3
VALID[3] = False   # a prompt with no valid sample


@pytest.mark.parametrize("use_jit", [False, True])
def test_normalize_rewards_is_the_normal_cdf(use_jit):
  fn = (jax.jit(lambda r: objectives.normalize_rewards(r, mean=0.3, std=2.0)) if use_jit
        else lambda r: objectives.normalize_rewards(r, mean=0.3, std=2.0))
  want = np.vectorize(lambda x: 0.5 * (1 + math.erf((x - 0.3) / 2.0 / math.sqrt(2))))(R)
  np.testing.assert_allclose(fn(jnp.asarray(R)), want, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="positive"):
    objectives.normalize_rewards(R, mean=0.0, std=0.0)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.9])
def test_threshold_keep_matches_numpy(use_jit, threshold):
  scores = 1 / (1 + np.exp(-R))
  fn = objectives.threshold_keep
  if use_jit:
    fn = jax.jit(fn)
  got = np.asarray(fn(jnp.asarray(scores), jnp.asarray(VALID), threshold))
  np.testing.assert_array_equal(got, VALID & (scores >= threshold))
  assert not got[3].any()


@pytest.mark.parametrize("use_jit", [False, True])
def test_best_of_n_keep_matches_numpy(use_jit):
  fn = jax.jit(objectives.best_of_n_keep) if use_jit else objectives.best_of_n_keep
  got = np.asarray(fn(jnp.asarray(R), jnp.asarray(VALID)))
  want = np.zeros_like(VALID)
  for b in range(len(R)):
    if VALID[b].any():
      want[b, np.argmax(np.where(VALID[b], R[b], -np.inf))] = True
  np.testing.assert_array_equal(got, want)
  assert got.sum(1).tolist() == [int(v.any()) for v in VALID]


@pytest.mark.parametrize("fn", [objectives.threshold_keep, objectives.best_of_n_keep])
def test_filters_reject_wrong_shapes(fn):
  args = (0.5,) if fn is objectives.threshold_keep else ()
  with pytest.raises(ValueError, match=r"\[prompts, samples\]"):
    fn(jnp.zeros(6), jnp.ones(6, bool), *args)
  with pytest.raises(ValueError, match="expected"):
    fn(jnp.zeros((5, 6)), jnp.ones((5, 5), bool), *args)


def test_threshold_schedule_is_checked():
  assert objectives.check_thresholds([0, 0.7, 0.8, 0.9]) == (0.0, 0.7, 0.8, 0.9)
  for bad, match in (([], "at least one"), ([0.5, 0.4], "must not fall"),
                     ([0.2, 1.0], r"\[0, 1\)"), ([-0.1], r"\[0, 1\)")):
    with pytest.raises(ValueError, match=match):
      objectives.check_thresholds(bad)


def np_dpo(pc, pr, rc, rr, beta, w=None):
  logits = beta * ((pc - rc) - (pr - rr))
  per = np.log1p(np.exp(-logits))
  w = np.ones_like(per) if w is None else w
  return (per * w).sum() / w.sum(), ((logits > 0) * w).sum() / w.sum()


LP = RNG.normal(-20, 5, size=(4, 12)).astype(np.float32)
W = (RNG.uniform(size=12) > 0.25).astype(np.float32)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("weights", [None, W])
@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_dpo_loss_matches_numpy(use_jit, weights, beta):
  def f(pc, pr, rc, rr):
    return objectives.dpo_loss(pc, pr, rc, rr, beta=beta,
                            weights_B=None if weights is None else jnp.asarray(weights))
  fn = jax.jit(f) if use_jit else f
  loss, acc = fn(*map(jnp.asarray, LP))
  want_loss, want_acc = np_dpo(*LP, beta, weights)
  assert float(loss) == pytest.approx(want_loss, rel=1e-5)
  assert float(acc) == pytest.approx(want_acc, rel=1e-6)


@pytest.mark.parametrize("use_jit", [False, True])
def test_dpo_gradient_matches_numpy(use_jit):
  # d/dπ+ of −log σ(β·Δ) is −β·σ(−β·Δ); π− gets the opposite; weights renormalise.
  beta = 0.3
  grad = jax.grad(lambda pc, pr: objectives.dpo_loss(pc, pr, jnp.asarray(LP[2]), jnp.asarray(LP[3]),
                                                  beta=beta, weights_B=jnp.asarray(W))[0],
                  argnums=(0, 1))
  if use_jit:
    grad = jax.jit(grad)
  gc, gr = grad(jnp.asarray(LP[0]), jnp.asarray(LP[1]))
  delta = (LP[0] - LP[2]) - (LP[1] - LP[3])
  want = -beta / (1 + np.exp(beta * delta)) * W / W.sum()
  np.testing.assert_allclose(gc, want, rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(gr, -want, rtol=1e-4, atol=1e-7)


def test_dpo_loss_rejects_wrong_shapes():
  v = jnp.zeros(4)
  with pytest.raises(ValueError, match=r"vector \[B\]"):
    objectives.dpo_loss(jnp.zeros((4, 1)), v, v, v, beta=0.1)
  with pytest.raises(ValueError, match="reference_rejected_B has shape"):
    objectives.dpo_loss(v, v, v, jnp.zeros((4, 1)), beta=0.1)
  with pytest.raises(ValueError, match="weights_B"):
    jax.jit(lambda a: objectives.dpo_loss(a, a, a, a, beta=0.1, weights_B=jnp.ones(3)))(v)


@pytest.mark.parametrize("use_jit", [False, True])
def test_kl_estimate_matches_numpy(use_jit):
  p, q = RNG.normal(size=(3, 7)), RNG.normal(size=(3, 7))
  mask = RNG.uniform(size=(3, 7)) > 0.4
  fn = jax.jit(objectives.kl_estimate) if use_jit else objectives.kl_estimate
  np.testing.assert_allclose(fn(jnp.asarray(p), jnp.asarray(q), jnp.asarray(mask)),
                             ((p - q) * mask).sum(1), rtol=1e-5)
  with pytest.raises(ValueError, match="expected"):
    objectives.kl_estimate(jnp.zeros((3, 7)), jnp.zeros((3, 6)), jnp.ones((3, 7)))


class Pair:
  def __init__(self, prompt, chosen, rejected):
    self.prompt, self.chosen, self.rejected, self.margin = prompt, chosen, rejected, 0.0


EOS = 1
CFG = TransformerConfig(vocab_size=40, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                        ffn_dim=64)


def make_pairs(n, seed=0):
  rng = np.random.default_rng(seed)
  tok = lambda lo, hi: rng.integers(3, 40, rng.integers(lo, hi)).astype(np.int32)
  return [Pair(tok(2, 9), tok(1, 6), tok(1, 6)) for _ in range(n)]


def test_dpo_batches_put_chosen_then_rejected_and_pad_the_last_batch():
  pairs = make_pairs(5)
  batches = pack_pairs(pairs, range(5), pairs_per_batch=4, row_len=16, max_response_len=8,
                       eos_id=EOS)
  assert [b.num_pairs for b in batches] == [4, 1]
  last = batches[1].arrays()
  assert last["tokens"].shape == (8, 16)
  np.testing.assert_array_equal(last["pair_weights"], [1, 0, 0, 0])
  # row 0: pair 4's chosen; row 4: its rejected; weights cover the response and its EOS
  p = pairs[4]
  assert last["weights"][0].sum() == len(p.chosen) + 1
  assert last["weights"][4].sum() == len(p.rejected) + 1
  np.testing.assert_array_equal(last["tokens"][4, :len(p.prompt)], p.prompt)
  assert last["weights"][1:4].sum() == 0 and last["weights"][5:].sum() == 0
  # the stream uses whole batches only and is reproducible
  stream = DpoBatches(make_pairs(10), (np.zeros(10), np.zeros(10)),
                      dict(pairs_per_batch=4, row_len=16, max_response_len=8, eos_id=EOS), seed=3)
  assert [b.num_pairs for b in stream.epoch(0)] == [4, 4]
  np.testing.assert_array_equal(stream.epoch(1)[0].index, stream.epoch(1)[0].index)


def test_sequence_logprobs_equal_teacher_forced_scoring():
  """A pair's DPO log-likelihood is the sum of what the sampler's scorer gives each token."""
  model = Decoder(CFG, rngs=nnx.Rngs(0))
  pairs = make_pairs(6, seed=1)
  chosen, rejected = reference_logprobs(model, pairs, pairs_per_batch=4, row_len=16,
                                        max_response_len=8, eos_id=EOS)
  for side, got in (("chosen", chosen), ("rejected", rejected)):
    resp = [np.append(getattr(p, side), EOS).astype(np.int32) for p in pairs]
    want = [s.sum() for s in score_tokens(model, [p.prompt for p in pairs], resp)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_score_samples_gives_the_samplers_own_logprobs():
  """The KL's reference side scores sampled token ids; scored by the sampling model itself
  they are the sampler's log-probabilities, EOS included."""
  from policies.policy import Policy
  from rm.tasks import byte_vocabulary
  vocab = byte_vocabulary()
  model = Decoder(TransformerConfig(vocab_size=vocab.vocab_size, d_model=32, num_layers=2,
                                    num_heads=4, num_kv_heads=2, ffn_dim=64), rngs=nnx.Rngs(1))
  policy = Policy(model, vocab, max_new_tokens=6)
  prompts = ["Q: a?\nA:", "Q: longer prompt?\nA:"]
  samples = policy.sample(prompts, 3, seed=0)
  scored = policy.score_samples(prompts, samples)
  for row, ref in zip(samples, scored):
    for s, r in zip(row, ref):
      np.testing.assert_allclose(r, s.token_logprobs, rtol=1e-4, atol=1e-4)
