"""rm/losses.py: the Bradley-Terry and margin losses, their gradients and pair accuracy against
numpy, and wrong shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rm.losses import margins_from_ratings, pair_accuracy, pairwise_loss


def np_loss(c, r, m=None, w=None, center=0.0, t=None):
  d = c - r - (0 if m is None else m)
  t = 1.0 if t is None else t   # the cross-entropy against the target probability t
  per = (t * np.log1p(np.exp(-d)) + (1 - t) * np.log1p(np.exp(d)) + center * (c + r) ** 2)
  if w is None:
    return per.mean()
  return (per * w).sum() / w.sum()


RNG = np.random.default_rng(0)
C, R = RNG.normal(size=16).astype(np.float32), RNG.normal(size=16).astype(np.float32)
M = RNG.uniform(0, 2, size=16).astype(np.float32)
W = (RNG.uniform(size=16) > 0.3).astype(np.float32)
T = RNG.uniform(0.5, 1.0, size=16).astype(np.float32)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("kwargs", [{}, {"m": M}, {"w": W}, {"m": M, "w": W, "center": 0.1},
                                    {"t": T}, {"t": T, "m": M, "w": W}])
def test_pairwise_loss_matches_numpy(use_jit, kwargs):
  def f(c, r):
    return pairwise_loss(c, r, margin_B=kwargs.get("m"), weights_B=kwargs.get("w"),
                         label_B=kwargs.get("t"), centering_coef=kwargs.get("center", 0.0))
  fn = jax.jit(f) if use_jit else f
  got = float(fn(jnp.asarray(C), jnp.asarray(R)))
  assert got == pytest.approx(np_loss(C, R, kwargs.get("m"), kwargs.get("w"),
                                      kwargs.get("center", 0.0), kwargs.get("t")), rel=1e-5)


@pytest.mark.parametrize("use_jit", [False, True])
def test_soft_labels(use_jit):
  """A label of 1 is the hard loss exactly (every human pair); the soft loss is smallest
  where the model's σ(r+ − r−) equals the label (its gradient vanishes there); its gradient
  is σ(d) − t, against numpy."""
  f = jax.jit(pairwise_loss) if use_jit else pairwise_loss
  c, r = jnp.asarray(C), jnp.asarray(R)
  assert float(f(c, r, label_B=jnp.ones(16))) == float(f(c, r))
  grad = jax.grad(lambda c: pairwise_loss(c, r, label_B=jnp.asarray(T)))
  if use_jit:
    grad = jax.jit(grad)
  sig = 1.0 / (1.0 + np.exp(-(C - R)))
  np.testing.assert_allclose(grad(c), (sig - T) / 16, rtol=1e-5, atol=1e-7)
  at_target = np.log(T / (1 - T)).astype(np.float32)   # d with σ(d) = t
  np.testing.assert_allclose(grad(jnp.asarray(at_target + R)), 0.0, atol=1e-6)
  assert float(f(jnp.asarray(at_target + R), r, label_B=jnp.asarray(T))) < float(
      f(jnp.asarray(at_target + R + 0.5), r, label_B=jnp.asarray(T)))


@pytest.mark.parametrize("use_jit", [False, True])
def test_gradients_match_numpy(use_jit):
  # d/dc of -log σ(c − r − m) is −σ(−(c − r − m)); weights renormalise.
  grad = jax.grad(lambda c, r: pairwise_loss(c, r, margin_B=M, weights_B=W), argnums=(0, 1))
  if use_jit:
    grad = jax.jit(grad)
  gc, gr = grad(jnp.asarray(C), jnp.asarray(R))
  s = 1.0 / (1.0 + np.exp(C - R - M))
  expect = -s * W / W.sum()
  np.testing.assert_allclose(gc, expect, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(gr, -expect, rtol=1e-5, atol=1e-7)


def test_margin_loss_is_larger_than_bt_for_positive_margins():
  assert float(pairwise_loss(C, R, margin_B=M)) > float(pairwise_loss(C, R))


@pytest.mark.parametrize("use_jit", [False, True])
def test_margin_of_shape_Bx1_raises_instead_of_broadcasting(use_jit):
  f = lambda c, r, m: pairwise_loss(c, r, margin_B=m)
  if use_jit:
    f = jax.jit(f)
  with pytest.raises(ValueError, match="margin_B has shape"):
    f(jnp.asarray(C), jnp.asarray(R), jnp.asarray(M)[:, None])


def test_other_wrong_shapes_raise():
  with pytest.raises(ValueError, match="rejected_B"):
    pairwise_loss(jnp.asarray(C), jnp.asarray(R[:8]))
  with pytest.raises(ValueError, match="vector"):
    pairwise_loss(jnp.asarray(C)[:, None], jnp.asarray(R)[:, None])
  with pytest.raises(ValueError, match="weights_B"):
    pairwise_loss(jnp.asarray(C), jnp.asarray(R), weights_B=jnp.ones((16, 1)))
  with pytest.raises(ValueError, match="label_B has shape"):
    jax.jit(lambda c, r, t: pairwise_loss(c, r, label_B=t))(jnp.asarray(C), jnp.asarray(R),
                                                            jnp.ones((16, 1)))


def test_pair_accuracy_counts_ties_half_and_respects_weights():
  c = jnp.array([1.0, 0.0, 2.0, 5.0])
  r = jnp.array([0.0, 1.0, 2.0, 9.0])
  assert float(pair_accuracy(c, r)) == pytest.approx((1 + 0 + 0.5 + 0) / 4)
  assert float(pair_accuracy(c, r, jnp.array([1.0, 1.0, 1.0, 0.0]))) == pytest.approx(0.5)


def test_rating_table():
  table = {"significantly better": 1.0, "negligibly better": 0.0}
  assert margins_from_ratings(["significantly better", "negligibly better"], table) == [1.0, 0.0]
  with pytest.raises(KeyError, match="unsure"):
    margins_from_ratings(["unsure"], table)
  assert margins_from_ratings(["unsure"], table, default=0.5) == [0.5]


def test_gold_verdicts_per_pair_match_numpy_for_pointwise_and_pairwise_models():
  import types
  from rm.pairwise import PairwiseEval
  from westofn.stages.reward_model import gold_metrics, gold_verdicts
  rng = np.random.default_rng(0)
  chosen, rejected = rng.normal(size=50), rng.normal(size=50)
  rejected[:5] = chosen[:5]                              # the model's ties: half right
  gold_c, gold_r = rng.normal(size=50), rng.normal(size=50)
  gold_r[45:] = gold_c[45:]                              # gold ties: no gold order, dropped
  sign = np.sign(gold_c - gold_r)
  delta = (chosen - rejected) * sign
  expected = np.where(delta > 0, 1.0, np.where(delta == 0, 0.5, 0.0))[sign != 0]
  pointwise = types.SimpleNamespace(chosen=chosen, rejected=rejected)
  got = gold_verdicts(pointwise, (gold_c, gold_r))
  np.testing.assert_array_equal(got, expected)
  assert got.shape == (45,) and got[:5].tolist() == [0.5] * 5
  assert gold_metrics(pointwise, (gold_c, gold_r)) == {"gold_accuracy": expected.mean(),
                                                       "gold_pairs": 45}
  # a pairwise model: P(chosen ≻ rejected) against an even chance
  prob = 1 / (1 + np.exp(-(chosen - rejected)))
  pairwise = gold_verdicts(PairwiseEval(metrics={}, prob_chosen=prob), (gold_c, gold_r))
  np.testing.assert_array_equal(pairwise, expected)
  with pytest.raises(ValueError, match="shape"):
    gold_verdicts(pointwise, (gold_c[:10], gold_r[:10]))
