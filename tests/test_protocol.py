"""The evaluation protocol: gold accuracy, pseudo-label accuracy, the statistics of claims,
the embedded gold tasks, and gold fields in data files."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as scipy_stats

from rm.data import DataError, read_preference_file
from rm.losses import gold_accuracy, gold_correct
from westofn import default_task, gold_tasks, sorting_task
from westofn.stats import (cluster_bootstrap, format_p, holm, mean_ci, pair_equivalents,
                           paired_bootstrap)
from westofn.west_of_n import pseudo_label_accuracy

RNG = np.random.default_rng(3)
C, R = RNG.normal(size=40).astype(np.float32), RNG.normal(size=40).astype(np.float32)
GC = RNG.integers(0, 3, size=40).astype(np.float32)
GR = RNG.integers(0, 3, size=40).astype(np.float32)   # many gold ties on purpose
R[:3] = C[:3]                                           # and some reward ties


def np_gold_accuracy(c, r, gc, gr):
  keep = gc != gr
  right = np.where((c - r) * np.sign(gc - gr) > 0, 1.0, np.where(c == r, 0.5, 0.0))
  return right[keep].mean()


@pytest.mark.parametrize("use_jit", [False, True])
def test_gold_accuracy_matches_numpy(use_jit):
  fn = jax.jit(gold_accuracy) if use_jit else gold_accuracy
  got = float(fn(*map(jnp.asarray, (C, R, GC, GR))))
  assert got == pytest.approx(np_gold_accuracy(C, R, GC, GR), abs=1e-6)
  correct, counted = gold_correct(*map(jnp.asarray, (C, R, GC, GR)))
  assert np.array_equal(np.asarray(counted), GC != GR)
  # independent of which response the label called chosen: swapping both sides agrees
  assert float(fn(*map(jnp.asarray, (R, C, GR, GC)))) == pytest.approx(got, abs=1e-6)


def test_gold_accuracy_all_ties_is_nan_and_shapes_are_checked():
  assert np.isnan(float(gold_accuracy(jnp.ones(3), jnp.zeros(3), jnp.ones(3), jnp.ones(3))))
  with pytest.raises(ValueError, match="shape"):
    gold_accuracy(jnp.ones(3), jnp.ones(3), jnp.ones((3, 1)), jnp.ones(3))
  with pytest.raises(ValueError, match="vector"):
    gold_accuracy(jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones((3, 2)))


def test_pseudo_label_accuracy_matches_numpy_and_checks_shapes():
  best, worst = RNG.normal(size=30), RNG.normal(size=30)
  worst[:4] = best[:4]
  kept = RNG.uniform(size=30) > 0.4
  acc, n = pseudo_label_accuracy(best, worst, kept)
  mask = kept & (best != worst)
  assert n == mask.sum() and acc == pytest.approx(np.mean(best[mask] > worst[mask]))
  assert np.isnan(pseudo_label_accuracy(best, worst, np.zeros(30, bool))[0])
  with pytest.raises(ValueError, match="shape"):
    pseudo_label_accuracy(best, worst[:5], kept)


def test_mean_ci_is_the_student_t_interval():
  v = np.array([0.70, 0.72, 0.75, 0.69])
  m, h = mean_ci(v)
  assert m == pytest.approx(v.mean())
  assert h == pytest.approx(scipy_stats.t.ppf(0.975, 3) * v.std(ddof=1) / 2)
  assert mean_ci([0.5]) == (0.5, 0.0)
  with pytest.raises(ValueError, match="dimension"):
    mean_ci(np.ones((2, 2)))


def test_paired_bootstrap_finds_a_real_difference_and_not_a_null_one():
  rng = np.random.default_rng(0)
  base = (rng.uniform(size=(3, 2000)) < 0.70).astype(float)
  better = np.where(rng.uniform(size=base.shape) < 0.1, 1.0, base)   # ~+3 points
  r = paired_bootstrap(better, base, num_resamples=500)
  assert r["diff"] == pytest.approx((better - base).mean())
  assert 0 < r["low"] < r["diff"] < r["high"] and r["p"] < 0.01
  null = paired_bootstrap(base, base[:, rng.permutation(2000)], num_resamples=500)
  assert null["low"] < 0 < null["high"] and null["p"] > 0.05
  same = paired_bootstrap(base, base, num_resamples=50)
  assert same["diff"] == 0 and same["p"] == 1.0


def test_paired_bootstrap_leaves_nan_out_of_each_side():
  a = np.array([[1.0, np.nan, 1.0, 0.0]])
  b = np.array([[0.0, 0.0, 0.0, 0.0]])
  assert paired_bootstrap(a, b, num_resamples=20)["diff"] == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match="shape"):
    paired_bootstrap(a, b[:, :3])
  with pytest.raises(ValueError, match="dimension"):
    paired_bootstrap(a[0], b[0])


def np_cluster_bootstrap_diffs(a, b, clusters, *, num_resamples, seed):
  """The cluster bootstrap written out: the same draws (seeds, then prompts), each resample's
  cells listed one by one and averaged."""
  labels = sorted(set(clusters))
  members = {c: [i for i, x in enumerate(clusters) if x == c] for c in labels}
  rng = np.random.default_rng(seed)
  seeds = rng.integers(0, a.shape[0], (num_resamples, a.shape[0]))
  picks = rng.integers(0, len(labels), (num_resamples, len(labels)))
  out = []
  for s_draw, c_draw in zip(seeds, picks):
    cols = [i for c in c_draw for i in members[labels[c]]]
    cells_a = [a[s, i] for s in s_draw for i in cols]
    cells_b = [b[s, i] for s in s_draw for i in cols]
    out.append(np.nanmean(cells_a) - np.nanmean(cells_b))
  return np.array(out)


def test_cluster_bootstrap_equals_the_written_out_resampling():
  rng = np.random.default_rng(3)
  clusters = [f"prompt{c}" for c in rng.integers(0, 9, 40)]
  a = (rng.uniform(size=(3, 40)) < 0.7).astype(float)
  b = (rng.uniform(size=(3, 40)) < 0.6).astype(float)
  a[0, 5] = b[2, 7] = np.nan   # a pair one side does not count
  r = cluster_bootstrap(a, b, clusters, num_resamples=300, seed=4)
  ref = np_cluster_bootstrap_diffs(a, b, clusters, num_resamples=300, seed=4)
  low, high = np.quantile(ref, [0.025, 0.975])
  assert r["diff"] == pytest.approx(np.nanmean(a) - np.nanmean(b))
  assert (r["low"], r["high"]) == (pytest.approx(low), pytest.approx(high))
  assert r["p"] == pytest.approx(min(1.0, 2 * np.mean(ref <= 0 if r["diff"] > 0 else ref >= 0)))
  assert r["num_clusters"] == len(set(clusters))


def test_cluster_bootstrap_counts_a_prompt_once_however_many_pairs_it_has():
  # 30 prompts, each with 40 copies of one pair: the evidence is 30 pairs, not 1,200.
  rng = np.random.default_rng(0)
  per_prompt_a = (rng.uniform(size=30) < 0.75).astype(float)
  per_prompt_b = (rng.uniform(size=30) < 0.55).astype(float)
  a, b = np.repeat(per_prompt_a, 40)[None], np.repeat(per_prompt_b, 40)[None]
  clusters = np.repeat(np.arange(30), 40)
  clustered = cluster_bootstrap(a, b, clusters, num_resamples=4000)
  collapsed = cluster_bootstrap(per_prompt_a[None], per_prompt_b[None], np.arange(30),
                                num_resamples=4000, seed=1)
  by_pair = paired_bootstrap(a, b, num_resamples=500)
  width = clustered["high"] - clustered["low"]
  # the normal approximation over prompts: 1.96 standard errors of the mean difference
  expected = 2 * 1.96 * np.std(per_prompt_a - per_prompt_b) / np.sqrt(30)
  assert width == pytest.approx(expected, rel=0.15)
  assert width == pytest.approx(collapsed["high"] - collapsed["low"], rel=0.15)
  assert by_pair["high"] - by_pair["low"] < width / 4   # drawing pairs: far too sure


def test_cluster_bootstrap_p_below_its_resolution_and_shape_errors():
  a, b = np.ones((2, 50)), np.zeros((2, 50))
  r = cluster_bootstrap(a, b, np.arange(50) // 5, num_resamples=200)
  assert r["p"] == 0.0 and r["p_text"] == "< 1/200"
  assert format_p(0.0, 200, multiplier=5) == "< 5/200" and format_p(0.0123, 200) == "0.012"
  same = cluster_bootstrap(a, a, np.arange(50), num_resamples=20)
  assert same["diff"] == 0 and same["p"] == 1.0
  with pytest.raises(ValueError, match="one cluster label a pair"):
    cluster_bootstrap(a, b, np.arange(49))
  with pytest.raises(ValueError, match="differ in shape"):
    cluster_bootstrap(a, b[:, :3], np.arange(50))
  with pytest.raises(ValueError, match="dimension"):
    cluster_bootstrap(a[0], b[0], np.arange(50))


def np_holm(p):
  """Holm's step-down rule, written out as in the textbook."""
  k, order = len(p), sorted(range(len(p)), key=lambda i: p[i])
  out, running = [0.0] * k, 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (k - rank) * p[i]))
    out[i] = running
  return out


def test_experiment_tables_say_p_below_the_resolution_and_holm_scales_it():
  """``experiments.stats``: a difference no resample crosses reads "p < 1/B", and its
  Holm-adjusted p in a family of K reads "< K/B"; a null difference keeps its p."""
  from experiments import stats as table
  rng = np.random.default_rng(0)
  base = rng.normal(size=(3, 200))
  result, text = table.compare(base + 1.0, base, 1.0)
  assert result["p"] == 0 and text.endswith(f"p < 1/{table.RESAMPLES}")
  assert table.holm_verdict(result, 0.0, "the 6 tests", num_tests=6) == \
      f"holds [< 6/{table.RESAMPLES}]"
  null, text = table.compare(base + rng.normal(size=base.shape) * 0.01, base, 1.0)
  assert null["p"] > 0.05 and text.endswith(f"p={null['p']:.3f}")
  assert table.fmt_ci([0.5, 0.7]) == "60.00 ± 127.06"   # t(0.975, 1) = 12.706
  assert table.fmt_ci([0.575]) == "57.50 (1 seed)"


def test_hh_report_pairs_each_row_with_the_base_only_on_seeds_that_have_one():
  """A seed's RM(human 100%) may run in a session before its base RM: the report shows it and
  its difference from the base over the seeds that have both, saying how many."""
  from experiments.west_of_n_hh import report
  rng = np.random.default_rng(0)
  stage = lambda correct: {"correct": correct.tolist(), "accuracy": correct.mean(), "loss": 0.6,
                           "best_validation_loss": 0.65, "best_step": 10}
  human = {s: rng.integers(0, 2, 200) for s in "012"}
  base = {s: np.where(rng.random(200) < 0.8, human[s], 1 - human[s]) for s in "12"}
  res = {"seeds": {"0": {"human_100": stage(human["0"])}}}
  only = report(res)
  assert "| RM(human 100%) | 1 |" in only and "| RM(human 50%) (base) | 0 | not run |" in only
  res["seeds"].update({s: {"human_100": stage(human[s]), "base_rm": stage(base[s])}
                       for s in "12"})
  row = next(line for line in report(res).splitlines() if line.startswith("| RM(human 100%)"))
  cells = [c.strip() for c in row.strip("|").split("|")]
  assert cells[1] == "3" and cells[4].endswith("(2 seeds)")
  diff = 100 * np.mean([(human[s] - base[s]).mean() for s in "12"])
  assert cells[4].startswith(f"{diff:+.2f}")


def test_holm_matches_the_step_down_rule():
  for p in ([0.01, 0.04, 0.03, 0.005], [0.042, 0.2, 0.6, 0.08, 0.3], [0.5], [0.02, 0.02]):
    np.testing.assert_allclose(holm(p), np_holm(p))
  # worked example: 0.005*4, max(0.01*3, .02), max(0.03*2, .03), max(0.04, .06)
  np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
  with pytest.raises(ValueError, match="in \\[0, 1\\]"):
    holm([0.5, 1.5])
  with pytest.raises(ValueError, match="dimension"):
    holm(np.ones((2, 2)))


def test_pair_equivalents_interpolates_in_log_size():
  sizes, acc = [100, 400, 1600], [0.60, 0.70, 0.80]
  assert pair_equivalents(0.70, sizes, acc) == pytest.approx(400)
  assert pair_equivalents(0.65, sizes, acc) == pytest.approx(200)   # geometric midpoint
  assert pair_equivalents(0.50, sizes, acc) == 100 and pair_equivalents(0.9, sizes, acc) == 1600
  # a noisy dip is flattened by the running maximum: one answer, at the first crossing
  assert pair_equivalents(0.70, sizes, [0.60, 0.72, 0.71]) < 400
  with pytest.raises(ValueError, match="increasing"):
    pair_equivalents(0.7, [400, 100], [0.6, 0.7])


def test_sorting_task_gold_reward():
  p = sorting_task.make_prompt(["d", "a", "c"])
  assert sorting_task.parse_prompt(p) == ["d", "a", "c"]
  assert sorting_task.gold_reward(p, " a c d") == pytest.approx(3.0)        # sorted, complete
  assert sorting_task.gold_reward(p, " d c a") == pytest.approx(1.0)        # reversed
  assert sorting_task.gold_reward(p, " a d") == pytest.approx(2 / 3 * 3)    # a letter missing
  assert sorting_task.gold_reward(p, " a c d d x") == pytest.approx(3.0 - 0.8)   # 2 extras
  assert sorting_task.gold_reward(p, "") == 0.0
  with pytest.raises(ValueError, match="sorting-task prompt"):
    sorting_task.parse_prompt("Q: Ada needs 3 letters, mostly 'a'.\nA:")


@pytest.mark.parametrize("task", sorted(gold_tasks.TASKS))
def test_gold_tasks_give_noisy_labels_that_follow_the_gold_reward(task):
  module = gold_tasks.get_task(task)
  pairs = gold_tasks.make_pairs(module, 2000, seed=1)
  assert all(p.gold_chosen == pytest.approx(module.gold_reward(p.prompt, p.chosen)) and
             p.gold_rejected == pytest.approx(module.gold_reward(p.prompt, p.rejected))
             for p in pairs[:200])
  acc = gold_tasks.label_gold_accuracy(pairs)
  assert 0.65 < acc < 0.95   # informative, and noisy as human labels are
  # the behaviour policy spans good and bad responses
  golds = np.array([p.gold_chosen for p in pairs] + [p.gold_rejected for p in pairs])
  assert golds.std() > 0.4


def test_default_task_pairs_are_unchanged_by_the_gold_fields():
  pairs = default_task.make_default_pairs(50, seed=0)
  assert default_task.gold_agreement(pairs) == gold_tasks.label_agreement(pairs)
  assert pairs[0].source == "default_task:0" and pairs[0].gold_chosen is not None
  with pytest.raises(ValueError, match="unknown embedded task"):
    gold_tasks.get_task("chess")


def test_gold_fields_are_read_and_validated(tmp_path):
  row = {"prompt": "p", "chosen": "a", "rejected": "b"}
  path = tmp_path / "g.jsonl"
  path.write_text(json.dumps({**row, "gold_chosen": 1.5, "gold_rejected": -1}) + "\n"
                  + json.dumps(row) + "\n")
  pairs, _ = read_preference_file(str(path))
  assert (pairs[0].gold_chosen, pairs[0].gold_rejected) == (1.5, -1.0)
  assert pairs[1].gold_chosen is None
  for bad, field in (({"gold_chosen": 1.0}, "gold_rejected"),
                     ({"gold_chosen": "high", "gold_rejected": 0}, "gold_chosen"),
                     ({"gold_chosen": 1.0, "gold_rejected": float("nan")}, "gold_rejected")):
    path.write_text(json.dumps(row) + "\n" + json.dumps({**row, **bad}) + "\n")
    with pytest.raises(DataError, match=rf"g.jsonl:2: {field}:"):
      read_preference_file(str(path))
