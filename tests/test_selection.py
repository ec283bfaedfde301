"""westofn/selection.py: best/worst, ranked and random picks, ensemble rewards, confidence and
disagreement, the confidence, likelihood and disagreement filters against numpy, wrong shapes,
duplicates and ragged padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from westofn.samples import pad_ragged
from westofn.selection import (best_and_random, best_and_ranked, best_and_worst, disagreement_keep,
                               disagreement_threshold, distinct_samples, ensemble_confidence,
                               ensemble_disagreement, ensemble_rewards, likelihood_keep,
                               pair_confidence, quantile_keep, relative_disagreement)

R = np.array([[0.1, 2.0, -1.0, 0.5], [3.0, 3.0, 0.0, 9.0], [1.0, 0.0, 0.0, 0.0]], np.float32)
V = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0]], bool)


@pytest.mark.parametrize("use_jit", [False, True])
def test_best_and_worst_on_hand_made_scores(use_jit):
  f = jax.jit(best_and_worst) if use_jit else best_and_worst
  best, worst, usable = f(jnp.asarray(R), jnp.asarray(V))
  assert best.tolist()[:2] == [1, 0] and worst.tolist()[:2] == [2, 2]  # 9.0 is not valid
  assert usable.tolist() == [True, True, False]  # a prompt with one sample makes no pair


def np_best_and_ranked(r, v, rank):
  best, rejected, usable = [], [], []
  for row, valid in zip(r, v):
    idx = [i for i in np.argsort(-row, kind="stable") if valid[i]]
    best.append(idx[0])
    rejected.append(idx[min(rank, len(idx)) - 1])
    usable.append(len(idx) >= 2)
  return best, rejected, usable


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("rank", [2, 3, 4])
def test_best_and_ranked_matches_numpy(use_jit, rank):
  rng = np.random.default_rng(rank)
  r = rng.normal(size=(12, 6)).astype(np.float32)
  v = rng.uniform(size=(12, 6)) > 0.3
  v[0], v[1] = True, [True] + [False] * 5   # all valid; one sample only
  f = jax.jit(best_and_ranked, static_argnums=2) if use_jit else best_and_ranked
  got = [np.asarray(x).tolist() for x in f(jnp.asarray(r), jnp.asarray(v), rank)]
  want = np_best_and_ranked(r, v, rank)
  assert got[0] == want[0] and got[2] == want[2]
  assert [g for g, u in zip(got[1], want[2]) if u] == [w for w, u in zip(want[1], want[2]) if u]
  # on the hand-made scores: the runner-up, and the worst where fewer samples than the rank
  best, rejected, _ = best_and_ranked(jnp.asarray(R), jnp.asarray(V), 2)
  assert best.tolist()[:2] == [1, 0] and rejected.tolist()[:2] == [3, 1]
  assert best_and_ranked(jnp.asarray(R), jnp.asarray(V), 4)[1].tolist()[:2] == [2, 2]


@pytest.mark.parametrize("use_jit", [False, True])
def test_ensemble_rewards_and_confidence_match_numpy(use_jit):
  rng = np.random.default_rng(1)
  r = rng.normal(size=(3, 5, 4)).astype(np.float32)
  first, second = rng.integers(0, 4, 5), rng.integers(0, 4, 5)
  mean_fn = jax.jit(ensemble_rewards) if use_jit else ensemble_rewards
  conf_fn = jax.jit(ensemble_confidence) if use_jit else ensemble_confidence
  np.testing.assert_allclose(np.asarray(mean_fn(jnp.asarray(r))), r.mean(0), rtol=1e-6)
  rows = np.arange(5)
  want = np.mean(1 / (1 + np.exp(-(r[:, rows, first] - r[:, rows, second]))), axis=0)
  got = np.asarray(conf_fn(jnp.asarray(r), jnp.asarray(first), jnp.asarray(second)))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # one member: the plain Bradley–Terry confidence
  one = np.asarray(ensemble_confidence(jnp.asarray(r[:1]), jnp.asarray(first),
                                       jnp.asarray(second)))
  np.testing.assert_allclose(one, np.asarray(pair_confidence(
      jnp.asarray(r[0, rows, first]), jnp.asarray(r[0, rows, second]))), rtol=1e-6)
  # members that disagree make a pair less certain than the surest member
  split = np.array([[[4.0, 0.0]], [[0.0, 4.0]]], np.float32)
  assert float(ensemble_confidence(jnp.asarray(split), jnp.zeros(1, int), jnp.ones(1, int))[0]) \
      == pytest.approx(0.5)


@pytest.mark.parametrize("use_jit", [False, True])
def test_ensemble_disagreement_and_its_filter_match_numpy(use_jit):
  rng = np.random.default_rng(3)
  r = rng.normal(size=(5, 40, 6)).astype(np.float32)
  first, second = rng.integers(0, 6, 40), rng.integers(0, 6, 40)
  usable = rng.uniform(size=40) > 0.2
  rows = np.arange(40)
  want = np.std(r[:, rows, first] - r[:, rows, second], axis=0)
  dis_fn = jax.jit(ensemble_disagreement) if use_jit else ensemble_disagreement
  got = np.asarray(dis_fn(jnp.asarray(r), jnp.asarray(first), jnp.asarray(second)))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  keep_fn = jax.jit(disagreement_keep, static_argnums=2) if use_jit else disagreement_keep
  for q in (0.25, 0.5):
    keep = np.asarray(keep_fn(jnp.asarray(got), jnp.asarray(usable), q))
    cut = np.quantile(got[usable], 1 - q)
    assert keep.tolist() == list((got <= cut) & usable)
    # the share dropped is the quantile's, among usable pairs only
    assert abs((usable.sum() - keep.sum()) / usable.sum() - q) < 0.05
    assert float(disagreement_threshold(jnp.asarray(got), jnp.asarray(usable), q)) == \
        pytest.approx(cut, rel=1e-5)
  assert np.asarray(disagreement_keep(jnp.asarray(got), jnp.asarray(usable), 0.0)).tolist() == \
      usable.tolist()
  margins = r[:, rows, first] - r[:, rows, second]
  rel_fn = jax.jit(relative_disagreement) if use_jit else relative_disagreement
  rel = np.asarray(rel_fn(jnp.asarray(r), jnp.asarray(first), jnp.asarray(second)))
  np.testing.assert_allclose(rel, margins.std(0) / np.maximum(np.abs(margins.mean(0)), 1e-6),
                             rtol=1e-4)
  # scale-free: members whose rewards are all doubled disagree as much, relatively
  np.testing.assert_allclose(np.asarray(relative_disagreement(
      jnp.asarray(2 * r), jnp.asarray(first), jnp.asarray(second))), rel, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(ensemble_disagreement(
      jnp.asarray(2 * r), jnp.asarray(first), jnp.asarray(second))), 2 * want, rtol=1e-4)
  # members who agree on the margin disagree by 0, whatever their offsets; one member too
  shifted = np.stack([r[0], r[0] + 3.0])
  assert np.asarray(ensemble_disagreement(jnp.asarray(shifted), jnp.asarray(first),
                                          jnp.asarray(second))).max() < 1e-5
  assert np.asarray(ensemble_disagreement(jnp.asarray(r[:1]), jnp.asarray(first),
                                          jnp.asarray(second))).max() == 0.0


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
  with pytest.raises(ValueError, match="valid_BxN has shape"):
    best_and_ranked(jnp.asarray(R), jnp.asarray(V[:2]), 2)
  with pytest.raises(ValueError, match="rank must be >= 2"):
    best_and_ranked(jnp.asarray(R), jnp.asarray(V), 1)
  with pytest.raises(ValueError, match="rewards_KxBxN must have 3 dimensions"):
    ensemble_rewards(jnp.ones((4, 3)))
  with pytest.raises(ValueError, match="second_B has shape"):
    ensemble_confidence(jnp.ones((2, 4, 3)), jnp.zeros(4, int), jnp.zeros(3, int))
  with pytest.raises(ValueError, match="first_B has shape"):
    ensemble_disagreement(jnp.ones((2, 4, 3)), jnp.zeros(3, int), jnp.zeros(4, int))
  with pytest.raises(ValueError, match="rewards_KxBxN must have 3 dimensions"):
    ensemble_disagreement(jnp.ones((4, 3)), jnp.zeros(4, int), jnp.zeros(4, int))
  with pytest.raises(ValueError, match="second_B has shape"):
    relative_disagreement(jnp.ones((2, 4, 3)), jnp.zeros(4, int), jnp.zeros(3, int))
  with pytest.raises(ValueError, match="usable_B has shape"):
    disagreement_keep(jnp.ones(3), jnp.ones(4, bool), 0.5)
  with pytest.raises(ValueError, match="disagreement_B must have 1 dimensions"):
    disagreement_keep(jnp.ones((3, 1)), jnp.ones(3, bool), 0.5)
  with pytest.raises(ValueError, match="quantile must be"):
    disagreement_keep(jnp.ones(3), jnp.ones(3, bool), 1.0)


def test_duplicates_removed_and_ragged_padding():
  assert distinct_samples([" aa", "aa", "b", " b ", "c"]) == [0, 2, 4]
  values, valid = pad_ragged([[1.0, 2.0], [3.0]])
  assert values.tolist() == [[1.0, 2.0], [3.0, 0.0]] and valid.tolist() == [[1, 1], [1, 0]]
