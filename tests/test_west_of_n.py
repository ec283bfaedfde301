"""westofn/west_of_n.py: the mix of human and synthetic pairs, a round's selection, filters and
files, shared samples across variants, settings validation, the ensemble judge."""

import dataclasses
import json
import types

import numpy as np
import pytest

from policies.policy import Sample
from policies.transformer import TransformerConfig
from rm import tasks
from rm.data import read_preference_file
from rm.model import make_reward_model
from rm.response_rewards import score_responses
from westofn import west_of_n
from westofn.judges import RewardModelJudge
from westofn.west_of_n import mix_pairs, run_round
from westofn.settings import (LMJudgeSettings, ScoringRows, WestOfN, WestOfNFilters,
                              WestOfNJudge, WestOfNSampling, WestOfNStudent)


class FakePolicy:
  """Fixed samples per prompt; counts calls so a test can see whether it was asked."""

  def __init__(self, samples):
    self.samples, self.calls, self.batch_sizes = samples, 0, []

  def sample(self, prompts, n, *, seed=0, batch_size=8):
    self.calls += 1
    self.batch_sizes.append(batch_size)
    return [[Sample(t, (), np.full(max(len(t), 1), ll, np.float32), True)
             for t, ll in self.samples[p][:n]] for p in prompts]


PROMPTS = ["Q: one?\nA:", "Q: two?\nA:", "Q: three?\nA:", "Q: same?\nA:"]
SAMPLES = {
    PROMPTS[0]: [(" a", -0.5), (" bb", -1.0), (" ccc", -0.2), (" dddd", -2.0)],
    PROMPTS[1]: [(" x", -0.1), (" yy", -0.3), (" x", -0.1), (" zzz", -0.4)],
    PROMPTS[2]: [(" p", -3.0), (" qq", -0.1), (" rrr", -0.2), (" s", -0.3)],
    PROMPTS[3]: [(" same", -0.1)] * 4,  # one distinct sample: no pair
}


@pytest.fixture(scope="module")
def rm_and_vocab():
  vocab = tasks.byte_vocabulary()
  model = make_reward_model(TransformerConfig(vocab_size=vocab.vocab_size, d_model=32,
                                              num_layers=1, num_heads=2, num_kv_heads=1,
                                              ffn_dim=64), seed=0)
  return model, vocab


def test_mix_ratio_and_determinism():
  human, synthetic = list(range(10)), [f"s{i}" for i in range(30)]
  mix = mix_pairs(human, synthetic, 1.0, seed=0)
  assert mix[:10] == human and len(mix) == 20 and set(mix[10:]) <= set(synthetic)
  assert mix == mix_pairs(human, synthetic, 1.0, seed=0)
  assert len(mix_pairs(human, synthetic, 0.5, seed=0)) == 15
  assert len(mix_pairs(human, synthetic[:4], 1.0, seed=0)) == 14  # fewer synthetic: all of them
  with pytest.raises(ValueError):
    mix_pairs(human, synthetic, -1.0, seed=0)


def test_round_selects_best_and_worst_filters_and_writes_trainer_format(rm_and_vocab, tmp_path):
  model, vocab = rm_and_vocab
  policy = FakePolicy(SAMPLES)
  settings = WestOfN.build(num_samples=4)
  fp = {"v": 1}
  result = run_round(round_dir=str(tmp_path), judge=RewardModelJudge([model], vocab), policy=policy,
                     vocabulary=vocab, prompts=PROMPTS, settings=settings, round_index=1, seed=0,
                     fingerprint=fp)
  assert result.counts["fewer_than_2_distinct"] == 1 and result.counts["usable"] == 3
  assert result.counts["kept"] == 3
  # best and worst agree with the base model's own scores of the distinct samples
  rows = [json.loads(l) for l in open(tmp_path / "candidates.jsonl")]
  for row in rows:
    texts = [t for t, _ in SAMPLES[row["prompt"]]]
    distinct = [t for i, t in enumerate(texts) if t not in texts[:i]]
    scores = score_responses(model, [(np.asarray(vocab.encode(row["prompt"])),
                                      [np.asarray(vocab.encode(t)) for t in distinct])],
                             eos_id=vocab.eos_id)[0]
    assert row["chosen"] == distinct[int(np.argmax(scores))]
    assert row["rejected"] == distinct[int(np.argmin(scores))]
    assert row["confidence"] == pytest.approx(1 / (1 + np.exp(-(scores.max() - scores.min()))),
                                              rel=1e-5)
  # the synthetic file is valid RM training data
  pairs, stats = read_preference_file(str(tmp_path / "synthetic_pairs.jsonl"))
  assert len(pairs) == 3 and stats.kept == 3
  # same fingerprint: reused without asking the policy; new settings: regenerated
  again = run_round(round_dir=str(tmp_path), judge=RewardModelJudge([model], vocab),
                    policy=policy, vocabulary=vocab,
                    prompts=PROMPTS, settings=settings, round_index=1, seed=0, fingerprint=fp)
  assert policy.calls == 1 and len(again.pairs) == 3
  strict = WestOfN.build(num_samples=4, likelihood_threshold=-0.35)
  filtered = run_round(round_dir=str(tmp_path), judge=RewardModelJudge([model], vocab),
                       policy=policy,
                       vocabulary=vocab, prompts=PROMPTS, settings=strict, round_index=1, seed=0,
                       fingerprint={"v": 2})
  assert policy.calls == 2
  for row in [json.loads(l) for l in open(tmp_path / "candidates.jsonl")]:
    both_in = row["loglik_chosen"] >= -0.35 and row["loglik_rejected"] >= -0.35
    assert row["passed"]["likelihood"] == both_in and row["kept"] == both_in
  assert filtered.counts["kept"] == filtered.counts["pass_likelihood"] < 3


def test_variants_with_the_same_sampling_judge_the_same_samples_sampled_once(rm_and_vocab,
                                                                            tmp_path):
  from policies.policy import FileBackedPolicy
  model, vocab = rm_and_vocab
  policy = FakePolicy(SAMPLES)
  cache = str(tmp_path / "samples" / "abc.jsonl")
  common = dict(judge=RewardModelJudge([model], vocab),
                policy=policy, vocabulary=vocab, prompts=PROMPTS,
                round_index=1, seed=0, samples_path=cache)
  plain = run_round(round_dir=str(tmp_path / "plain"), settings=WestOfN.build(num_samples=4),
                    fingerprint={"v": 1}, **common)
  strict = run_round(round_dir=str(tmp_path / "strict"),
                     settings=WestOfN.build(num_samples=4, confidence_quantile=0.5),
                     fingerprint={"v": 2}, **common)
  assert policy.calls == 1
  assert strict.counts["kept"] < plain.counts["kept"] == 3
  rows = lambda d: [json.loads(l) for l in open(tmp_path / d / "candidates.jsonl")]
  same = ("prompt", "chosen", "rejected", "base_scores", "confidence", "loglik_chosen",
          "loglik_rejected")
  assert [[r[k] for k in same] for r in rows("plain")] == [[r[k] for k in same]
                                                           for r in rows("strict")]
  # the kept samples are a sample file that a FileBackedPolicy serves
  served = FileBackedPolicy(cache).sample(PROMPTS, 4)
  assert [[s.text for s in row] for row in served] == [[t for t, _ in SAMPLES[p]]
                                                       for p in PROMPTS]


def test_confidence_quantile_keeps_the_more_confident_half(rm_and_vocab, tmp_path):
  model, vocab = rm_and_vocab
  prompts = [f"Q: item {i}?\nA:" for i in range(20)]
  rng = np.random.default_rng(0)
  samples = {p: [("".join(rng.choice(list("abcdef"), rng.integers(1, 9))), -0.5)
                 for _ in range(6)] for p in prompts}
  result, rows = west_of_n.generate_synthetic_pairs(
      judge=RewardModelJudge([model], vocab),
                             policy=FakePolicy(samples), vocabulary=vocab, prompts=prompts,
      settings=WestOfN.build(num_samples=6, confidence_quantile=0.5), round_index=1, seed=0)
  conf = np.array([r["confidence"] for r in rows])
  kept = np.array([r["kept"] for r in rows])
  assert kept.sum() == result.counts["kept"] and 0 < kept.sum() < len(rows)
  assert conf[kept].min() >= conf[~kept].max()


def test_settings_are_validated():
  with pytest.raises(ValueError, match="selection"):
    WestOfNJudge(selection="worst")
  with pytest.raises(ValueError, match="num_samples"):
    WestOfNSampling(num_samples=1)
  with pytest.raises(ValueError,
                     match=r"rejected_rank must be in \[2, WestOfNSampling\.num_samples=16\]"):
    WestOfN(judge=WestOfNJudge(rejected_rank=17))
  with pytest.raises(ValueError, match="ensemble must be >= 1"):
    WestOfNJudge(ensemble=0)
  with pytest.raises(ValueError, match="apply to selection='best_worst', not 'tournament'"):
    WestOfNJudge(selection="tournament", ensemble=3)
  with pytest.raises(ValueError, match="disagreement_quantile must be in"):
    WestOfNFilters(disagreement_quantile=1.0)
  with pytest.raises(ValueError, match="needs WestOfNJudge.ensemble >= 2, got 1"):
    WestOfN(filters=WestOfNFilters(disagreement_quantile=0.25))
  with pytest.raises(ValueError, match="disagreement_measure must be 'std' or 'relative'"):
    WestOfNFilters(disagreement_measure="var")
  with pytest.raises(ValueError, match="members must be 'same' or 'bootstrap'"):
    WestOfNJudge(ensemble=3, members="bagging")
  with pytest.raises(ValueError, match="members='bootstrap' .* needs ensemble >= 2"):
    WestOfNJudge(members="bootstrap")
  with pytest.raises(ValueError, match="WestOfNSampling.policy must be 'sft' or 'improved'"):
    WestOfNSampling(policy="rest")
  with pytest.raises(ValueError, match="batch_prompts must be >= 1"):
    WestOfNSampling(batch_prompts=0)
  with pytest.raises(ValueError, match="rounds must be >= 1"):
    WestOfN.build(rounds=0)
  with pytest.raises(ValueError, match="synthetic_per_human=0 puts no synthetic pair"):
    WestOfNStudent(synthetic_per_human=0.0)
  with pytest.raises(ValueError, match="synthetic_per_human must be >= 0"):
    WestOfNStudent(synthetic_per_human=-1.0, unlabeled_pairs=True)
  for other in (dict(kind="lm"), dict(selection="tournament")):
    with pytest.raises(ValueError, match="unlabeled_pairs labels pairs with the trained RM "
                                         "judge: it needs WestOfNJudge.kind='rm' and "
                                         "selection='best_worst'"):
      WestOfN.build(unlabeled_pairs=True, **other)


def test_build_routes_each_field_to_its_group():
  settings = WestOfN.build(rounds=2, num_samples=8, batch_prompts=3, ensemble=5,
                           members="bootstrap", confidence_quantile=0.5, soft_labels=False,
                           start="teacher")
  assert settings == WestOfN(
      rounds=2, sampling=WestOfNSampling(num_samples=8, batch_prompts=3),
      judge=WestOfNJudge(ensemble=5, members="bootstrap"),
      filters=WestOfNFilters(confidence_quantile=0.5),
      student=WestOfNStudent(soft_labels=False, start="teacher"))
  assert WestOfN.build() == WestOfN()
  with pytest.raises(ValueError, match="WestOfN has no setting named 'judge_ensemble'; the "
                                       "groups' fields: sampling: num_samples"):
    WestOfN.build(judge_ensemble=5)


def test_the_record_keeps_the_names_and_digests_of_rounds_made_before_the_groups():
  """A round's directory is named by ``short_digest`` of ``settings_record``: the digests below
  are what 7c4d5af (flat ``WestOfN``) named these settings, so its rounds are reused."""
  from policies.core.stage_dir import short_digest
  cases = [({}, "e0152e3d"), (dict(soft_labels=False), "443a73f7"),
           (dict(ensemble=5, prompt_repeats=3, synthetic_per_human=4.0, unlabeled_pairs=True,
                 num_samples=8, max_new_tokens=24, batch_prompts=32), "7876889b"),
           (dict(kind="lm", lm=LMJudgeSettings(), num_samples=4), "26acd1ec"),
           (dict(selection="tournament", confidence_quantile=0.5), "2bc9db12"),
           (dict(ensemble=3, members="bootstrap", disagreement_quantile=0.25,
                 disagreement_measure="relative", rejected_rank=4, start="teacher",
                 policy="improved", rounds=2, scoring=ScoringRows(rows=4, row_len=512)),
            "a22a95b2")]
  for fields, digest in cases:
    assert short_digest(west_of_n.settings_record(WestOfN.build(**fields)), 8) == digest, fields
  # options added later, at the value runs had before they existed, leave the record (and
  # run directories) as before, whatever today's default: soft labels are now the default and
  # enter the record, hard labels (every earlier run) do not; the judge's ScoringRows keep the
  # fields they had before their group
  before = WestOfN.build(soft_labels=False)
  assert west_of_n.settings_record(before) == {
      "rounds": 1, "num_samples": 16, "max_new_tokens": 32, "temperature": 1.0, "top_p": 1.0,
      "max_prompts": None, "selection": "best_worst", "confidence_quantile": 0.0,
      "likelihood_quantile": 0.0, "likelihood_threshold": None, "synthetic_per_human": 1.0,
      "score_rows": 8, "score_row_len": 256, "max_response_len": 64}
  assert west_of_n.settings_record(WestOfN()) == {**west_of_n.settings_record(before),
                                                  "soft_labels": True}
  # a speed setting: the same variant, whatever its value
  assert (west_of_n.settings_record(WestOfN.build(batch_prompts=64))
          == west_of_n.settings_record(WestOfN()))
  policy = FakePolicy(SAMPLES)
  west_of_n.sample_candidates(policy=policy, prompts=PROMPTS, seed=0,
                              settings=WestOfNSampling(num_samples=2, batch_prompts=3),
                              samples_path=None)
  assert policy.batch_sizes == [3]
  assert west_of_n.settings_record(WestOfN.build(ensemble=3))["judge_ensemble"] == 3
  assert west_of_n.settings_record(WestOfN.build(ensemble=3, members="bootstrap"))[
      "judge_members"] == "bootstrap"
  assert west_of_n.settings_record(WestOfN.build(policy="improved"))["policy"] == "improved"
  assert west_of_n.settings_record(WestOfN.build(unlabeled_pairs=True))["unlabeled_pairs"]


def np_label_response_pairs(r_KxBx2):
  mean = r_KxBx2.mean(0)
  first = np.where(mean[:, 1] > mean[:, 0], 1, 0)
  margin = r_KxBx2[:, np.arange(len(first)), first] - r_KxBx2[:, np.arange(len(first)), 1 - first]
  return first, np.mean(1 / (1 + np.exp(-margin)), axis=0), mean[:, 0] != mean[:, 1]


@pytest.mark.parametrize("use_jit", [False, True])
def test_label_response_pairs_matches_numpy(use_jit):
  import jax
  import jax.numpy as jnp
  rng = np.random.default_rng(4)
  r = rng.normal(size=(3, 9, 2)).astype(np.float32)
  r[:, 2, 1] = r[:, 2, 0]                  # the judge cannot tell these two apart
  r[:, 3] = [[2.0, 0.0], [0.0, 1.0], [0.0, 0.5]]   # members disagree; the mean decides
  f = jax.jit(west_of_n.label_response_pairs) if use_jit else west_of_n.label_response_pairs
  got = [np.asarray(x) for x in f(jnp.asarray(r))]
  want = np_label_response_pairs(r)
  assert got[0].tolist() == want[0].tolist() and got[2].tolist() == want[2].tolist()
  np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
  assert got[0][3] == 0 and not got[2][2] and (got[1][got[2]] >= 0.5).all()
  one = [np.asarray(x) for x in west_of_n.label_response_pairs(jnp.asarray(r[:1]))]
  np.testing.assert_allclose(one[1], 1 / (1 + np.exp(-np.abs(r[0, :, 0] - r[0, :, 1]))),
                             rtol=1e-5)
  for bad, match in ((r[0], "3 dimensions"), (np.zeros((2, 4, 3), np.float32), "2 responses")):
    with pytest.raises(ValueError, match=match):
      west_of_n.label_response_pairs(jnp.asarray(bad))


def test_judge_response_pairs_orders_and_labels_without_reading_the_human_label(rm_and_vocab):
  """The unlabeled part's pairs, judged by two RMs: the mean reward puts a response first, the
  mean probability is its soft label, the human order (chosen first) changes nothing, a pair
  the judge cannot tell apart is dropped, and the labels' gold accuracy is counted."""
  from rm.data import PreferencePair
  model, vocab = rm_and_vocab
  other = make_reward_model(TransformerConfig(vocab_size=vocab.vocab_size, d_model=32,
                                              num_layers=1, num_heads=2, num_kv_heads=1,
                                              ffn_dim=64), seed=1)
  rng = np.random.default_rng(3)
  word = lambda: " " + "".join(rng.choice(list("abcdefgh"), rng.integers(1, 8)))
  pairs = [PreferencePair(f"Q: item {i}?\nA:", word(), word(), 0.0, f"unlabeled.jsonl:{i + 1}",
                          float(i % 3), float((i + 1) % 3)) for i in range(10)]
  pairs.append(PreferencePair("Q: same?\nA:", " tie", " tie", 0.0, "unlabeled.jsonl:11",
                              1.0, 0.0))
  kept, rows, counts = west_of_n.judge_response_pairs(
      judge=RewardModelJudge([model, other], vocab), pairs=pairs,
      soft_labels=True, round_index=2)
  assert counts["unlabeled_pairs"] == 11 and counts["unlabeled_pairs_kept"] == len(kept) == 10
  assert all(p.source.startswith("west_of_n:round2:unlabeled.jsonl:") for p in kept)
  firsts = []
  for pair, row, p in zip(pairs, rows, kept):
    texts = [pair.chosen, pair.rejected]
    member = np.array([score_responses(m, [(np.asarray(vocab.encode(pair.prompt)),
                                            [np.asarray(vocab.encode(t)) for t in texts])],
                                       eos_id=vocab.eos_id)[0] for m in (model, other)])
    f = int(member.mean(0)[1] > member.mean(0)[0])
    firsts.append(f)
    assert (p.chosen, p.rejected) == (texts[f], texts[1 - f])
    assert (p.gold_chosen, p.gold_rejected) == ((pair.gold_chosen, pair.gold_rejected)[f],
                                                (pair.gold_chosen, pair.gold_rejected)[1 - f])
    want = np.mean(1 / (1 + np.exp(-(member[:, f] - member[:, 1 - f]))))
    assert p.label == row["label"] == pytest.approx(want, rel=1e-5)
  assert 0 < sum(firsts) < len(firsts)   # the judge reverses some human orders, not all
  g = np.array([(p.gold_chosen, p.gold_rejected) for p in kept])
  right = g[:, 0] > g[:, 1]
  assert counts["unlabeled_pairs_gold_accuracy"] == pytest.approx(
      right[g[:, 0] != g[:, 1]].mean())
  swapped = [dataclasses.replace(p, chosen=p.rejected, rejected=p.chosen,
                                 gold_chosen=p.gold_rejected, gold_rejected=p.gold_chosen)
             for p in pairs]
  again, _, _ = west_of_n.judge_response_pairs(
      judge=RewardModelJudge([model, other], vocab), pairs=swapped,
      soft_labels=True, round_index=2)
  assert [(p.chosen, p.rejected, p.label) for p in again] == [
      (p.chosen, p.rejected, pytest.approx(p.label, rel=1e-6)) for p in kept]
  hard, _, _ = west_of_n.judge_response_pairs(
      judge=RewardModelJudge([model], vocab), pairs=pairs,
      soft_labels=False, round_index=1)
  assert hard and all(p.label == 1.0 for p in hard)


def test_ensemble_judge_and_near_boundary_pairs(rm_and_vocab):
  """Two RMs judge together: the mean score picks the pair, the mean probability is its
  confidence; ``rejected_rank=2`` takes the runner-up instead of the worst."""
  model, vocab = rm_and_vocab
  other = make_reward_model(TransformerConfig(vocab_size=vocab.vocab_size, d_model=32,
                                              num_layers=1, num_heads=2, num_kv_heads=1,
                                              ffn_dim=64), seed=1)
  rng = np.random.default_rng(2)
  prompts = [f"Q: item {i}?\nA:" for i in range(8)]
  samples = {p: [("".join(rng.choice(list("abcdef"), rng.integers(1, 9))), -0.5)
                 for _ in range(5)] for p in prompts}
  for rank in (None, 2):
    _, rows = west_of_n.generate_synthetic_pairs(
        judge=RewardModelJudge([model, other], vocab), policy=FakePolicy(samples), vocabulary=vocab,
        prompts=prompts, settings=WestOfN.build(num_samples=5, rejected_rank=rank, ensemble=2),
        round_index=1, seed=0)
    assert len(rows) == len(prompts)
    for row in rows:
      texts = [t for t, _ in samples[row["prompt"]]]
      distinct = [t for i, t in enumerate(texts) if t not in texts[:i]]
      member = np.array([score_responses(m, [(np.asarray(vocab.encode(row["prompt"])),
                                              [np.asarray(vocab.encode(t)) for t in distinct])],
                                         eos_id=vocab.eos_id)[0] for m in (model, other)])
      np.testing.assert_allclose(row["member_scores"], member, rtol=1e-5, atol=1e-6)
      order = np.argsort(-member.mean(0), kind="stable")
      b, w = order[0], order[-1] if rank is None else order[1]
      assert (row["chosen"], row["rejected"]) == (distinct[b], distinct[w])
      want = np.mean(1 / (1 + np.exp(-(member[:, b] - member[:, w]))))
      assert row["confidence"] == pytest.approx(want, rel=1e-5)
      assert row["disagreement"] == pytest.approx(np.std(member[:, b] - member[:, w]),
                                                  rel=1e-4, abs=1e-6)
      margins = member[:, b] - member[:, w]
      assert row["relative_disagreement"] == pytest.approx(
          np.std(margins) / max(abs(np.mean(margins)), 1e-6), rel=1e-3, abs=1e-6)
  # the disagreement filter drops the half of the pairs whose judges disagree most, by the
  # measure it is told
  kept_by = {}
  prompts = [f"Q: item {i}?\nA:" for i in range(24)]
  samples = {p: [("".join(rng.choice(list("abcdef"), rng.integers(1, 9))), -0.5)
                 for _ in range(5)] for p in prompts}
  for measure, key in (("std", "disagreement"), ("relative", "relative_disagreement")):
    result, rows = west_of_n.generate_synthetic_pairs(
        judge=RewardModelJudge([model, other], vocab), policy=FakePolicy(samples), vocabulary=vocab,
        prompts=prompts, settings=WestOfN.build(num_samples=5, ensemble=2,
                                          disagreement_quantile=0.5,
                                          disagreement_measure=measure),
        round_index=1, seed=0)
    dis = np.array([r[key] for r in rows])
    kept = np.array([r["kept"] for r in rows])
    assert kept.tolist() == [r["passed"]["disagreement"] for r in rows]
    assert 0 < kept.sum() < len(rows) and dis[kept].max() <= dis[~kept].min()
    assert result.counts["kept"] == result.counts["pass_disagreement"] == kept.sum()
    assert result.counts["disagreement_threshold"] == pytest.approx(np.quantile(dis, 0.5),
                                                                    rel=1e-5)
    kept_by[measure] = kept.tolist()
  assert kept_by["std"] != kept_by["relative"]   # the two measures keep other pairs here


def test_round_samples_with_its_own_sampling_settings(rm_and_vocab, tmp_path):
  from flax import nnx
  from policies.policy import Policy
  from policies.transformer import Decoder
  model, vocab = rm_and_vocab
  lm = Decoder(TransformerConfig(vocab_size=vocab.vocab_size, d_model=32, num_layers=1,
                                 num_heads=2, num_kv_heads=1, ffn_dim=64), rngs=nnx.Rngs(0))
  policy = Policy(lm, vocab, max_new_tokens=40)   # the policy stage's own settings
  settings = WestOfN.build(num_samples=3, max_new_tokens=5, temperature=1.0)
  run_round(round_dir=str(tmp_path), judge=RewardModelJudge([model], vocab),
            policy=policy, vocabulary=vocab,
            prompts=PROMPTS[:2], settings=settings, round_index=1, seed=0, fingerprint={})
  rows = [json.loads(l) for l in open(tmp_path / "candidates.jsonl")]
  assert rows and all(len(vocab.encode(r[k])) <= 5 for r in rows for k in ("chosen", "rejected"))


class SeededFakePolicy(FakePolicy):
  """Another seed, other samples: the pool of each prompt is drawn in another order."""

  def sample(self, prompts, n, *, seed=0, batch_size=8):
    self.calls += 1
    rng = np.random.default_rng(seed)
    return [[Sample(t, (), np.full(max(len(t), 1), ll, np.float32), True)
             for t, ll in [self.samples[p][i] for i in rng.permutation(len(self.samples[p]))][:n]]
            for p in prompts]


def test_soft_labels_and_prompt_repeats(rm_and_vocab, tmp_path):
  """soft_labels: each kept pair's label is the judge's confidence, in the candidates, in the
  pairs file and in the tokenized and packed pairs the student trains on. Repeated prompts:
  each pass judges its own samples (its own samples file) as more prompts."""
  from rm.packing import pack_pairs
  model, vocab = rm_and_vocab
  pool = {p: [(" " + "abcdefgh"[i] * (1 + (i + j) % 5), -0.1 * i) for i in range(8)]
          for j, p in enumerate(PROMPTS[:3])}
  policy = SeededFakePolicy(pool)
  paths = [str(tmp_path / "samples" / f"pass{j}.jsonl") for j in range(3)]
  kw = dict(judge=RewardModelJudge([model], vocab),
            policy=policy, vocabulary=vocab, prompts=PROMPTS[:3],
            round_index=1, seed=5, samples_path=paths[0],
            repeat_samples=[(11, paths[1]), (17, paths[2])])
  settings = WestOfN.build(num_samples=4, soft_labels=True, prompt_repeats=3)
  result = run_round(round_dir=str(tmp_path / "round"), settings=settings,
                     fingerprint={"v": 1}, **kw)
  rows = [json.loads(l) for l in open(tmp_path / "round" / "candidates.jsonl")]
  assert policy.calls == 3 and len(rows) == 9 == result.counts["kept"]
  assert [r["prompt"] for r in rows] == PROMPTS[:3] * 3
  for j, seed in enumerate((5, 11, 17)):   # each pass's pair comes from its own samples
    drawn = [[s.text for s in row] for row in policy.__class__(pool).sample(PROMPTS[:3], 4,
                                                                          seed=seed)]
    for row, texts in zip(rows[3 * j:3 * j + 3], drawn):
      assert {row["chosen"], row["rejected"]} <= set(texts)
  assert all(0.5 <= r["label"] == r["confidence"] <= 1.0 for r in rows)
  assert [p.label for p in result.pairs] == pytest.approx([r["confidence"] for r in rows])
  read, _ = read_preference_file(str(tmp_path / "round" / "synthetic_pairs.jsonl"))
  assert [p.label for p in read] == [p.label for p in result.pairs]
  tokenized = tasks.tokenized_pairs(
      tasks.register_preference_task("soft_label_test", {"train": read}, vocab), "train")
  assert [t.label for t in tokenized] == pytest.approx([p.label for p in read])
  batch = pack_pairs(tokenized, rows=4, row_len=64, pairs_per_row=4, max_response_len=16,
                     eos_id=vocab.eos_id)[0]
  placed = batch.weight > 0
  np.testing.assert_allclose(batch.label[placed],
                             np.asarray([tokenized[i].label for i in batch.index[placed]]))
  assert (batch.label[~placed] == 1).all()
  # reused: no sampling; hard labels (the default) write no label and read back as 1
  run_round(round_dir=str(tmp_path / "round"), settings=settings, fingerprint={"v": 1}, **kw)
  assert policy.calls == 3
  hard = run_round(round_dir=str(tmp_path / "hard"),
                   settings=WestOfN.build(num_samples=4, soft_labels=False),
                   fingerprint={"v": 2}, **kw)
  assert policy.calls == 3 and all(p.label == 1.0 for p in hard.pairs)
  assert "label" not in open(tmp_path / "hard" / "synthetic_pairs.jsonl").readline()
  with pytest.raises(Exception, match="prompt_repeats"):
    WestOfN.build(prompt_repeats=0)


def test_unlabeled_pairs_need_an_unlabeled_part():
  import importlib
  stage = importlib.import_module("westofn.stages.west_of_n")   # the module, not the stage
  with pytest.raises(ValueError, match="labels the 'unlabeled' part's pairs, and this data has "
                                       "none: add an 'unlabeled' part to DataSource.split"):
    stage.west_of_n(data=types.SimpleNamespace(raw={"train": [], "unlabeled": []}),
                    source=None, run=None, recipe=None,
                    settings=WestOfN.build(unlabeled_pairs=True), base=None, policy=None)


def test_bootstrap_members_train_on_their_own_resamples(monkeypatch):
  """``judge_members='bootstrap'``: member m trains on a resample of the human pairs drawn by
  its seed (bagging), in a directory named by those pairs; 'same' keeps the pairs as they are."""
  import importlib
  stage = importlib.import_module("westofn.stages.west_of_n")   # the module, not the stage
  assert stage.bootstrap_resample(list(range(5)), seed=3) == stage.bootstrap_resample(
      list(range(5)), seed=3)
  big = stage.bootstrap_resample(list(range(2000)), seed=0)
  assert len(big) == 2000 and set(big) <= set(range(2000))
  assert 0.60 < len(set(big)) / 2000 < 0.66   # 1 - 1/e of them distinct
  assert big != stage.bootstrap_resample(list(range(2000)), seed=1)
  with pytest.raises(ValueError, match="empty"):
    stage.bootstrap_resample([], seed=0)

  trained = []

  def fake_stage(*, name, stage_dir, train_pairs, run, recipe):
    trained.append((name, stage_dir, list(train_pairs), run.seed))
    return types.SimpleNamespace(metrics={})

  @dataclasses.dataclass
  class Run:
    seed: int
    layout: object = dataclasses.field(default_factory=lambda: types.SimpleNamespace(
        judge_member=lambda digest, m: f"{digest}/member{m}"))

  monkeypatch.setattr(stage, "reward_model_stage", fake_stage)
  monkeypatch.setattr(stage, "evaluation_parts", lambda data: {})
  human = [tasks.TokenizedPair(np.asarray([i + 3]), np.asarray([1]), np.asarray([2]))
           for i in range(50)]
  ids = lambda pairs: [int(p.prompt[0]) - 3 for p in pairs]
  members = stage.ensemble_members(human=human, run=Run(7), recipe=None, data=None, count=2,
                                   bootstrap=True)
  assert [m.metrics["trained_on"] for m in members] == [
      "human 50, resampled (seed 1007)", "human 50, resampled (seed 2007)"]
  (_, dir1, pairs1, seed1), (_, dir2, pairs2, seed2) = trained
  assert ids(pairs1) == stage.bootstrap_resample(list(range(50)), seed=1007) and seed1 == 1007
  assert ids(pairs2) == stage.bootstrap_resample(list(range(50)), seed=2007)
  assert ids(pairs1) != ids(pairs2)
  assert dir1 != dir2 and dir1.split("/")[0] != dir2.split("/")[0]
  trained.clear()
  stage.ensemble_members(human=human, run=Run(7), recipe=None, data=None, count=2)
  assert [ids(t[2]) for t in trained] == [list(range(50))] * 2
  assert trained[0][1].split("/")[0] == trained[1][1].split("/")[0]   # one pair set, one name


def test_make_judge_builds_the_judge_the_settings_name(rm_and_vocab):
  from westofn.judges import TournamentJudge, make_judge
  model, vocab = rm_and_vocab
  judge = make_judge(settings=WestOfNJudge(), vocabulary=vocab, reward_models=[model, model])
  assert isinstance(judge, RewardModelJudge) and len(judge.members) == 2
  pairwise = make_judge(settings=WestOfNJudge(selection="tournament"), vocabulary=vocab,
                        preference_model=object())
  lm = make_judge(settings=WestOfNJudge(kind="lm"), vocabulary=vocab, make_lm_judge=object)
  assert isinstance(pairwise, TournamentJudge) and isinstance(lm, TournamentJudge)
  with pytest.raises(ValueError, match="pairwise preference model"):
    make_judge(settings=WestOfNJudge(selection="tournament"), vocabulary=vocab)
  with pytest.raises(ValueError, match="LM judge"):
    make_judge(settings=WestOfNJudge(kind="lm"), vocabulary=vocab)
  with pytest.raises(ValueError, match="at least one reward model"):
    make_judge(settings=WestOfNJudge(), vocabulary=vocab)


def test_the_judges_verdicts_against_a_numpy_reference(rm_and_vocab):
  """An ensemble's verdicts from its members' rewards, and a tournament's from a comparator
  that knows each candidate's score: the best and worst, P(best ≻ worst)."""
  from westofn.judges import TournamentJudge
  model, vocab = rm_and_vocab
  other = make_reward_model(TransformerConfig(vocab_size=vocab.vocab_size, d_model=32,
                                              num_layers=1, num_heads=2, num_kv_heads=1,
                                              ffn_dim=64), seed=7)
  prompts = PROMPTS[:3]
  texts = [[" a", " bb", " ccc"], [" x", " yy"], [" p", " qq", " rrr", " s"]]
  valid = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], bool)
  judge = RewardModelJudge([model, other], vocab)
  v = judge.verdicts(prompts=prompts, texts=texts, valid_BxN=valid, settings=WestOfNJudge(),
                     seed=0)
  r = v.rewards_KxBxN.astype(np.float64)
  assert r.shape == (2, 3, 4)
  mean = np.where(valid, r.mean(0), -np.inf)
  np.testing.assert_array_equal(v.best_B, mean.argmax(1))
  np.testing.assert_array_equal(v.worst_B, np.where(valid, r.mean(0), np.inf).argmin(1))
  b, w = v.best_B, v.worst_B
  rows = np.arange(3)
  p = (1 / (1 + np.exp(-(r[:, rows, b] - r[:, rows, w])))).mean(0)
  np.testing.assert_allclose(v.confidence_B, p, rtol=1e-5)
  assert v.selection == "best_worst" and v.usable_B.all()
  # best-of-N picks as the verdicts do, a prompt's missing candidates never
  np.testing.assert_array_equal(judge.best(prompts=prompts, texts=texts), mean.argmax(1))
  # the rows it reads are its ScoringRows': a response cut to 2 tokens scores as its start
  short = RewardModelJudge([model], vocab, scoring=ScoringRows(max_response_len=2))
  cut = short.rewards(prompts=prompts, texts=[[" ccc", " cc"]] * 3)[0]
  np.testing.assert_allclose(cut[:, 0], cut[:, 1], rtol=1e-6)
  full = RewardModelJudge([model], vocab).rewards(prompts=prompts, texts=[[" ccc", " cc"]] * 3)
  assert not np.allclose(full[0, :, 0], full[0, :, 1])
  # given pairs (the label command): P(a ≻ b) is the members' mean σ(r_a − r_b)
  a_texts, b_texts = [t[0] for t in texts], [t[1] for t in texts]
  done = []
  pv = judge.compare_pairs(prompts=prompts, responses_a=a_texts, responses_b=b_texts,
                           progress=done.append)
  r_ab = judge.rewards(prompts=prompts, texts=[[a, b] for a, b in zip(a_texts, b_texts)])
  r_ab = r_ab.astype(np.float64)
  np.testing.assert_allclose(pv.probability_B,
                             (1 / (1 + np.exp(-(r_ab[..., 0] - r_ab[..., 1])))).mean(0),
                             rtol=1e-5)
  np.testing.assert_array_equal(pv.prefers_a_B, r_ab.mean(0)[:, 0] >= r_ab.mean(0)[:, 1])
  np.testing.assert_allclose(pv.details["judge_reward_b"], r_ab.mean(0)[:, 1], rtol=1e-5)
  assert done == [3]

  scores = [[0.3, 2.0, -1.0], [1.0, 1.5], [0.0, -2.0, 3.0, 1.0]]
  calls = []

  def comparator(prompts_, texts_):
    if len(texts_[0]) == 2 and texts_ != texts:   # compare_pairs: each pair is (a, b)
      return lambda matches: np.array([1 / (1 + np.exp(-(len(texts_[m][i]) - len(texts_[m][j]))))
                                       for m, i, j in matches])
    assert texts_ == texts

    def compare(matches):
      calls.append(len(matches))
      return np.array([1 / (1 + np.exp(-(scores[m][i] - scores[m][j]))) for m, i, j in matches])
    return compare
  t = TournamentJudge(comparator, "tournament").verdicts(
      prompts=prompts, texts=texts, valid_BxN=valid, settings=WestOfNJudge(), seed=0)
  assert list(t.best_B) == [int(np.argmax(s)) for s in scores]
  assert list(t.worst_B) == [int(np.argmin(s)) for s in scores]
  np.testing.assert_allclose(t.confidence_B, [1 / (1 + np.exp(-(max(s) - min(s))))
                                              for s in scores], rtol=1e-6)
  assert t.rewards_KxBxN is None and t.comparisons == sum(calls)
  pv = TournamentJudge(comparator, "tournament").compare_pairs(
      prompts=prompts, responses_a=[" a", " yy", " p"], responses_b=[" bb", " x", " p"])
  np.testing.assert_allclose(pv.probability_B, 1 / (1 + np.exp(-np.array([-1.0, 1.0, 0.0]))))
  assert list(pv.prefers_a_B) == [False, True, True] and pv.details == {}
