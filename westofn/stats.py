"""Statistics for claims over seeds: t intervals, a paired bootstrap over seeds and held-out
pairs (``cluster_bootstrap``: over seeds and prompts, the independent units when a prompt has
several pairs), Holm's correction when several options are tried, and where an accuracy lands on
a learning curve. Pure numpy; shapes are checked."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats


def _array(name: str, x, ndim: int) -> np.ndarray:
  a = np.asarray(x, np.float64)
  if a.ndim != ndim:
    raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
  if a.size == 0:
    raise ValueError(f"{name} is empty")
  return a


def mean_ci(values_S, confidence: float = 0.95) -> tuple[float, float]:
  """Mean and half-width of its Student-t confidence interval over seeds (0 for one seed)."""
  v = _array("values_S", values_S, 1)
  if len(v) < 2:
    return float(v.mean()), 0.0
  t = scipy_stats.t.ppf(0.5 + confidence / 2, len(v) - 1)
  return float(v.mean()), float(t * v.std(ddof=1) / np.sqrt(len(v)))


def paired_bootstrap(correct_a_SxP, correct_b_SxP, *, num_resamples: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> dict:
  """Is A more often right than B on the same held-out pairs, across training seeds?

  ``correct_*_SxP[s, p]``: 1 if model A (B) of seed ``s`` ranks held-out pair ``p``
  right (0.5 for a tie). Seed ``s`` of A and of B are paired (e.g. a student and the
  base RM it was trained from), and so are the pairs. Each resample draws seeds and
  pairs with replacement, so the interval holds both sources of noise: which models
  training happened to give, and which pairs the held-out set happened to hold.

  Entries may be NaN (a pair not counted for that side, e.g. a pseudo-label that a
  filter dropped); each side's mean leaves them out, so A and B may then cover different
  subsets of the same pairs.

  Returns ``{"diff", "low", "high", "p"}``: the mean difference A − B, its percentile
  interval, and a two-sided p-value (twice the share of resamples on the other side of
  zero, at most 1).
  """
  a, b = _paired(correct_a_SxP, correct_b_SxP, num_resamples)
  num_seeds, num_pairs = a.shape
  rng = np.random.default_rng(seed)
  seed_means = np.empty(num_resamples)
  for i in range(num_resamples):
    ix = np.ix_(rng.integers(0, num_seeds, num_seeds), rng.integers(0, num_pairs, num_pairs))
    seed_means[i] = np.nanmean(a[ix]) - np.nanmean(b[ix])
  return _interval_and_p(a, b, seed_means, confidence)


def _paired(correct_a_SxP, correct_b_SxP, num_resamples: int) -> tuple:
  a = _array("correct_a_SxP", correct_a_SxP, 2)
  b = _array("correct_b_SxP", correct_b_SxP, 2)
  if a.shape != b.shape:
    raise ValueError(f"correct_a_SxP {a.shape} and correct_b_SxP {b.shape} differ in shape")
  if num_resamples < 1:
    raise ValueError("num_resamples must be >= 1")
  return a, b


def _interval_and_p(a, b, diffs_B, confidence: float) -> dict:
  """The mean difference A − B, the percentile interval of its resamples ``diffs_B`` and a
  two-sided p: twice the share of resamples on the other side of zero, at most 1."""
  alpha = (1 - confidence) / 2
  low, high = np.nanquantile(diffs_B, [alpha, 1 - alpha])
  diff = float(np.nanmean(a) - np.nanmean(b))
  other_side = np.mean(diffs_B <= 0) if diff > 0 else np.mean(diffs_B >= 0)
  return {"diff": diff, "low": float(low), "high": float(high),
          "p": float(min(1.0, 2 * other_side))}


def cluster_bootstrap(correct_a_SxP, correct_b_SxP, clusters_P, *, num_resamples: int = 2000,
                      seed: int = 0, confidence: float = 0.95) -> dict:
  """Is A more often right than B, with prompts (clusters of pairs) and seeds as the units?

  Pairs of one prompt are not independent (they share the prompt, often a response): a
  bootstrap that draws single pairs counts each prompt's pairs as separate evidence and gives
  too narrow an interval. Each resample here draws the ``S`` seeds with replacement and the
  distinct prompts of ``clusters_P`` (any hashable labels, one a pair) with replacement; a
  drawn prompt brings all its pairs. ``correct_*_SxP`` are as in ``paired_bootstrap`` (1, 0.5
  or 0; NaN where a side does not count a pair); seed ``s`` of A and of B are paired.

  Returns ``{"diff", "low", "high", "p", "num_resamples", "num_clusters", "p_text"}``: the
  mean difference A − B over all counted cells, its percentile interval, a two-sided p (twice
  the share of resamples on the other side of zero, at most 1) and that p as text. When no
  resample crosses zero the p is below what ``num_resamples`` draws can resolve: ``p`` is 0
  and ``p_text`` says ``"< 1/B"``.
  """
  a, b = _paired(correct_a_SxP, correct_b_SxP, num_resamples)
  labels = np.asarray(clusters_P)
  if labels.shape != (a.shape[1],):
    raise ValueError(f"clusters_P has shape {labels.shape}, expected ({a.shape[1]},): one "
                     "cluster label a pair")
  _, cluster_P = np.unique(labels, return_inverse=True)
  num_seeds, num_clusters = a.shape[0], int(cluster_P.max()) + 1

  def sums_and_counts(x_SxP):   # per seed and cluster: [S, C] sums and counted cells
    counted = ~np.isnan(x_SxP)
    sums = [np.bincount(cluster_P, np.where(c, x, 0.0), num_clusters)
            for x, c in zip(x_SxP, counted)]
    counts = [np.bincount(cluster_P, c.astype(np.float64), num_clusters) for c in counted]
    return np.stack(sums), np.stack(counts)

  rng = np.random.default_rng(seed)
  seeds_BxS = rng.integers(0, num_seeds, (num_resamples, num_seeds))
  clusters_BxC = rng.integers(0, num_clusters, (num_resamples, num_clusters))
  # How often each seed and cluster is drawn: a resample's mean is a weighted mean of cells.
  seed_w_BxS = np.stack([np.bincount(r, minlength=num_seeds) for r in seeds_BxS]).astype(float)
  cluster_w_BxC = np.stack([np.bincount(r, minlength=num_clusters)
                            for r in clusters_BxC]).astype(float)

  def resampled_means(x_SxP):
    sums, counts = sums_and_counts(x_SxP)
    total = np.einsum("bs,sc,bc->b", seed_w_BxS, sums, cluster_w_BxC)
    n = np.einsum("bs,sc,bc->b", seed_w_BxS, counts, cluster_w_BxC)
    with np.errstate(invalid="ignore", divide="ignore"):
      return total / n

  result = _interval_and_p(a, b, resampled_means(a) - resampled_means(b), confidence)
  return {**result, "num_resamples": num_resamples, "num_clusters": num_clusters,
          "p_text": format_p(result["p"], num_resamples)}


def format_p(p: float, num_resamples: int, multiplier: int = 1) -> str:
  """A bootstrap p as text: ``"< 1/B"`` (B the number of resamples, times ``multiplier`` for
  a Holm-adjusted p of a family of that many tests) when no resample crossed zero, since
  a p of 0 only says the truth lies below what B draws resolve."""
  if p == 0:
    return f"< {multiplier}/{num_resamples}" if multiplier > 1 else f"< 1/{num_resamples}"
  return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def holm(p_values_K) -> np.ndarray:
  """Holm–Bonferroni adjusted p-values for K tests of one family (e.g. K options, each
  against the same baseline): reject test k at level α when its adjusted p is below α,
  and the chance of any false claim in the family stays below α."""
  p = _array("p_values_K", p_values_K, 1)
  if np.any((p < 0) | (p > 1)):
    raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
  order = np.argsort(p, kind="stable")
  scaled = (len(p) - np.arange(len(p))) * p[order]
  adjusted = np.empty_like(p)
  adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
  return adjusted


def pair_equivalents(accuracy: float, sizes: Sequence[float], accuracies: Sequence[float]) -> float:
  """How many human pairs an RM of ``accuracy`` is worth on a learning curve.

  The curve (``sizes``, ``accuracies``) is interpolated linearly in log(size). Beyond
  its ends the answer is clipped to the nearest end and flagged by the caller.
  Accuracies are made non-decreasing first (a running maximum), so noise on the curve
  cannot give two answers.
  """
  n = _array("sizes", sizes, 1)
  acc = _array("accuracies", accuracies, 1)
  if n.shape != acc.shape:
    raise ValueError(f"sizes {n.shape} and accuracies {acc.shape} differ in shape")
  if np.any(np.diff(n) <= 0):
    raise ValueError("sizes must be increasing")
  acc = np.maximum.accumulate(acc)
  if accuracy <= acc[0]:
    return float(n[0])
  if accuracy >= acc[-1]:
    return float(n[-1])
  i = int(np.searchsorted(acc, accuracy, side="right"))
  lo, hi = acc[i - 1], acc[i]
  t = 0.0 if hi == lo else (accuracy - lo) / (hi - lo)
  return float(np.exp(np.log(n[i - 1]) + t * (np.log(n[i]) - np.log(n[i - 1]))))
