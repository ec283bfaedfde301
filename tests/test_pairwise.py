"""Pairwise preference model and the knockout tournament of West-of-N selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from policies.core.metrics_writer import NullWriter
from policies.transformer import Decoder, TransformerConfig
from rm.pairwise import (PairwiseBatches, PairwisePreferenceModel, compare_responses,
                         continuous_positions, evaluate_pairwise, preference_model_loss,
                         train_pairwise_model)
from rm.tasks import TokenizedPair
from rm.training import make_optimizer
from westofn.selection import knockout

CFG = TransformerConfig(vocab_size=40, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                        ffn_dim=64)
SHAPE = dict(rows=4, row_len=96, pairs_per_row=3, max_response_len=12, eos_id=1)


def score_compare(scores):
  return lambda m: 1.0 / (1.0 + np.exp(-(scores[m[:, 0], m[:, 1]] - scores[m[:, 0], m[:, 2]])))


@pytest.mark.parametrize("n", [2, 5, 8])
def test_knockout_finds_best_and_worst_with_n_minus_1_comparisons(n):
  scores = np.random.default_rng(n).normal(size=(6, n))
  best, used = knockout([n] * 6, score_compare(scores), find="best")
  worst, used_w = knockout([n] * 6, score_compare(scores), find="worst")
  np.testing.assert_array_equal(best, scores.argmax(1))
  np.testing.assert_array_equal(worst, scores.argmin(1))
  assert used == used_w == 6 * (n - 1)


def test_knockout_handles_ragged_prompts_and_rejects_bad_input():
  scores = np.array([[0.0, 3.0, 1.0], [5.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
  best, used = knockout([3, 1, 0], score_compare(scores))
  np.testing.assert_array_equal(best, [1, 0, -1])
  assert used == 2
  with pytest.raises(ValueError, match="find"):
    knockout([2], score_compare(scores), find="median")
  with pytest.raises(ValueError, match="compare returned shape"):
    knockout([2], lambda m: np.zeros(3))


def test_continuous_positions_restart_per_group():
  group = np.array([[1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
  want = np.array([[0, 1, 2, 0, 1, 0, 1], [0, 1, 2, 3, 4, 5, 6]])
  np.testing.assert_array_equal(np.asarray(continuous_positions(jnp.asarray(group))), want)


def test_preference_model_loss_matches_numpy_with_and_without_jit():
  rng = np.random.default_rng(0)
  ab, ba = rng.normal(size=5).astype(np.float32), rng.normal(size=5).astype(np.float32)
  w, y = np.array([1, 1, 0, 1, 1], np.float32), np.ones(5, np.float32)
  bce = lambda z, t: np.log1p(np.exp(-z)) * t + np.log1p(np.exp(z)) * (1 - t)
  want = np.sum((bce(ab, y) + bce(ba, 1 - y)) * w) / w.sum() / 2
  for fn in (preference_model_loss, jax.jit(preference_model_loss)):
    np.testing.assert_allclose(float(fn(ab, ba, y, w)), want, rtol=1e-5)
  with pytest.raises(ValueError, match="logit_ba_B"):
    preference_model_loss(jnp.zeros(5), jnp.zeros((5, 1)), jnp.ones(5), jnp.ones(5))


def _response(rng, sevens):
  s = rng.integers(8, 40, 8)
  s[:sevens] = 7
  return rng.permutation(s)


def _pairs(n, seed):
  """The response with more copies of token 7 is chosen: a known, graded answer."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    lo, hi = np.sort(rng.choice(9, 2, replace=False))
    out.append(TokenizedPair(rng.integers(3, 40, 6), _response(rng, hi), _response(rng, lo)))
  return out


def _model(seed=0):
  return PairwisePreferenceModel(Decoder(CFG, rngs=nnx.Rngs(seed)), rngs=nnx.Rngs(seed))


@pytest.mark.slow
def test_pairwise_model_sees_both_responses_and_is_order_consistent():
  model = _model()
  pairs = _pairs(12, 3)
  prompts = [p.prompt for p in pairs]
  p_ab = compare_responses(model, prompts, [p.chosen for p in pairs],
                           [p.rejected for p in pairs], **SHAPE)
  p_ba = compare_responses(model, prompts, [p.rejected for p in pairs],
                           [p.chosen for p in pairs], **SHAPE)
  np.testing.assert_allclose(p_ab + p_ba, 1.0, atol=1e-6)
  # The logit is read at B's end, yet depends on A: the model compares.
  batch = PairwiseBatches(pairs[:1], shuffle=False, **SHAPE).one_pass()[0].arrays()
  changed = dict(batch)
  changed["ab_tokens"] = batch["ab_tokens"].copy()
  changed["ab_tokens"][0, 7] = 30 if batch["ab_tokens"][0, 7] != 30 else 31  # a token of A
  before = float(model.logits(batch["ab_tokens"], batch["ab_group"], batch["ab_ends"])[0, 0])
  after = float(model.logits(changed["ab_tokens"], batch["ab_group"], batch["ab_ends"])[0, 0])
  assert before != after


def test_pairwise_model_learns_and_its_tournament_picks_the_gold_best():
  model = _model()
  steps = 120
  opt = make_optimizer(model, learning_rate=1e-2, total_steps=steps, warmup_steps=5)
  heldout = PairwiseBatches(_pairs(96, 1), shuffle=False, **SHAPE).one_pass()
  before = evaluate_pairwise(model=model, batches=heldout).metrics
  result = train_pairwise_model(model=model, optimizer=opt,
                                train_batches=PairwiseBatches(_pairs(256, 0), **SHAPE),
                                num_steps=steps, writer=NullWriter(), eval_batches=heldout,
                                log_every=1000, progress=False)
  after = result.eval.metrics
  assert after["accuracy"] > 0.85 and after["loss"] < before["loss"], (before, after)

  # 20 prompts x 6 samples with 0, 2, ..., 10 copies of token 7 (8 at most fit): the best
  # has the most.
  rng = np.random.default_rng(5)
  prompts, samples = [], []
  for _ in range(20):
    prompts.append(rng.integers(3, 40, 6))
    samples.append([_response(rng, 2 * k) for k in rng.permutation(6)])
  sevens = np.array([[np.sum(s == 7) for s in row] for row in samples])

  def compare(m):
    return compare_responses(model, [prompts[b] for b in m[:, 0]],
                             [samples[b][i] for b, i in m[:, :2]],
                             [samples[b][j] for b, j in m[:, ::2]], **SHAPE)

  best, _ = knockout([6] * 20, compare, find="best")
  worst, _ = knockout([6] * 20, compare, find="worst")
  picked_best = sevens[np.arange(20), best]
  picked_worst = sevens[np.arange(20), worst]
  assert np.mean(picked_best) > 6.5 and np.mean(picked_worst) < 1.0, (picked_best, picked_worst)
