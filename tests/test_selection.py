import jax
import jax.numpy as jnp
import numpy as np
import pytest

from westofn.selection import (best_and_random, best_and_worst, distinct_samples, likelihood_keep,
                               pad_ragged, pair_confidence, quantile_keep)

R = np.array([[0.1, 2.0, -1.0, 0.5], [3.0, 3.0, 0.0, 9.0], [1.0, 0.0, 0.0, 0.0]], np.float32)
V = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0]], bool)


@pytest.mark.parametrize("use_jit", [False, True])
def test_best_and_worst_on_hand_made_scores(use_jit):
  f = jax.jit(best_and_worst) if use_jit else best_and_worst
  best, worst, usable = f(jnp.asarray(R), jnp.asarray(V))
  assert best.tolist()[:2] == [1, 0] and worst.tolist()[:2] == [2, 2]  # 9.0 is not valid
  assert usable.tolist() == [True, True, False]  # a prompt with one sample makes no pair


def test_best_and_random_never_picks_best_and_stays_valid():
  best, other, usable = best_and_random(jnp.asarray(R), jnp.asarray(V), jax.random.key(0))
  for _ in range(5):
    best, other, usable = best_and_random(jnp.asarray(R), jnp.asarray(V),
                                          jax.random.key(np.random.randint(1e6)))
    assert other[0] != best[0] and V[0, int(other[0])]
    assert other[1] != best[1] and V[1, int(other[1])]


@pytest.mark.parametrize("use_jit", [False, True])
def test_confidence_and_quantile_filter_match_numpy(use_jit):
  rb, rw = np.array([2.0, 0.5, 3.0, 1.0]), np.array([0.0, 0.4, -1.0, 0.9])
  conf_fn = jax.jit(pair_confidence) if use_jit else pair_confidence
  conf = np.asarray(conf_fn(jnp.asarray(rb), jnp.asarray(rw)))
  np.testing.assert_allclose(conf, 1 / (1 + np.exp(-(rb - rw))), rtol=1e-6)
  usable = np.array([True, True, True, False])
  keep_fn = jax.jit(quantile_keep, static_argnums=2) if use_jit else quantile_keep
  keep = np.asarray(keep_fn(jnp.asarray(conf), jnp.asarray(usable), 0.5))
  cut = np.quantile(conf[usable], 0.5)
  assert keep.tolist() == list((conf >= cut) & usable)
  assert np.asarray(quantile_keep(jnp.asarray(conf), jnp.asarray(usable), 0.0)).tolist() == \
      usable.tolist()


def test_likelihood_filter_quantile_and_threshold():
  lb = jnp.array([-0.5, -2.0, -0.1, -0.3])
  lw = jnp.array([-0.6, -0.2, -3.0, -0.4])
  usable = jnp.array([True, True, True, True])
  assert likelihood_keep(lb, lw, usable, threshold=-1.0).tolist() == [True, False, False, True]
  values = np.concatenate([lb, lw])
  cut = np.quantile(values, 0.25)
  want = ((np.asarray(lb) >= cut) & (np.asarray(lw) >= cut)).tolist()
  assert likelihood_keep(lb, lw, usable, quantile=0.25).tolist() == want


def test_wrong_shapes_raise():
  with pytest.raises(ValueError, match="valid_BxN has shape"):
    best_and_worst(jnp.asarray(R), jnp.asarray(V[:, :3]))
  with pytest.raises(ValueError, match="2 dimensions"):
    best_and_worst(jnp.asarray(R[0]), jnp.asarray(V[0]))
  with pytest.raises(ValueError, match="reward_b_B must have 1 dimensions"):
    pair_confidence(jnp.ones(4), jnp.ones((4, 1)))
  with pytest.raises(ValueError, match="quantile must be"):
    quantile_keep(jnp.ones(3), jnp.ones(3, bool), 1.0)
  with pytest.raises(ValueError, match="usable_B has shape"):
    likelihood_keep(jnp.ones(3), jnp.ones(3), jnp.ones(2, bool))


def test_duplicates_removed_and_ragged_padding():
  assert distinct_samples([" aa", "aa", "b", " b ", "c"]) == [0, 2, 4]
  values, valid = pad_ragged([[1.0, 2.0], [3.0]])
  assert values.tolist() == [[1.0, 2.0], [3.0, 0.0]] and valid.tolist() == [[1, 1], [1, 0]]
