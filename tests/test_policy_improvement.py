"""The rest, dpo, hir and c_rlft stages end to end on the embedded default task: ReST raises the
policy's gold reward above the SFT policy's, rejection sampling keeps the best sample per
prompt, a killed improve step resumes to the identical policy, DPO trains from its cached
reference, and the iterative West-of-N loop samples round 2 from the improved policy; HIR's
policy asked for the best outcome outscores the same policy asked for the worst and a killed
round resumes to the identical policy; C-RLFT weighs its classes by their rewards and raises
the gold reward and the RM's reward when conditioned on the best class."""

import dataclasses
import functools
import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

import policies.dpo
import policies.hindsight
import policies.sft
from policies.conditioning import ConditionedPolicy
from policies.core.stage_dir import StageRecord
from policies.transformer import TransformerConfig
from rm import tasks
from rm.training import make_optimizer
from westofn import pipeline, stages
from westofn.policy_measures import reward_scale
from westofn.settings import (Batching, CRlft, DataSource, Dpo, Hir, PolicySft, Rest,
                              RewardModelRecipe)
from westofn.stages.policy_improvement import measure_on_heldout
from test_train import SMALL_WEST_OF_N, run_main   # the CLI in this process

pytestmark = pytest.mark.slow   # end-to-end or real models: see pytest.ini

SMALL = functools.partial(TransformerConfig, d_model=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, ffn_dim=192)
SFT = PolicySft(num_steps=150, rows=8, row_len=256, max_sequences_per_row=8,
                max_response_len=24, num_samples=2, num_prompts=8, max_new_tokens=24)
IMPROVE_OPT = functools.partial(make_optimizer, warmup_steps=5, weight_decay=0.0)
REST = Rest(reward_model="base_rm", improve_thresholds=(0.5, 0.8), num_prompts=200,
            steps_per_improve=30, max_new_tokens=24, eval_prompts=128, eval_samples=4)
HIR = Hir(reward_model="base_rm", rounds=2, num_samples=4, num_prompts=200, steps_per_round=60,
          batch=8, max_new_tokens=24, row_len=96, max_response_len=24, eval_prompts=128,
          eval_samples=4)
C_RLFT = CRlft(reward_model="base_rm", num_samples=4, num_prompts=200, num_steps=60,
               max_new_tokens=24, eval_prompts=128, eval_samples=4)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("improve"))
  vocab = tasks.byte_vocabulary()
  data = pipeline.load_preference_data(
      source=DataSource(default_num_pairs=1500, task_name="improve_test",
                        split={"train": 0.4, "unlabeled": 0.4, "heldout": 0.2}),
      vocabulary=vocab)
  run = stages.RunContext(model_dir=os.path.join(root, "run"), vocabulary=vocab, seed=0,
                          save_every=10, log_every=10, progress=False)
  recipe = RewardModelRecipe(
      make_optimizer=functools.partial(make_optimizer, learning_rate=2e-3, warmup_steps=20),
      batching=Batching(rows=8, row_len=256, pairs_per_row=8, max_response_len=32),
      num_steps=120, model_config=SMALL)
  base = stages.base_rm(data=data, run=run, recipe=recipe)
  sft = stages.policy_sft(data=data, run=run, settings=SFT, model_config=SMALL,
                          make_optimizer=functools.partial(make_optimizer, learning_rate=3e-3,
                                                           warmup_steps=20, weight_decay=0.0))
  rest = stages.rest(data=data, run=run, settings=REST, policy=sft, reward_model=base,
                     sft_settings=SFT, make_optimizer=IMPROVE_OPT)
  return dict(root=root, data=data, run=run, base=base, sft=sft, rest=rest)


def params(model):
  return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_rest_raises_the_gold_reward_above_the_sft_policy(setup):
  rest = setup["rest"]
  steps = rest.metrics["steps"]
  assert [s["label"] for s in steps] == ["start", "grow 1 improve 1", "grow 1 improve 2"]
  # The same held-out prompts and sampling seed for both: a paired comparison per prompt.
  with np.load(os.path.join(rest.metrics["directory"], "gold_per_prompt.npz")) as f:
    gain = f["grow 1 improve 2"] - f["start"]
  assert gain.mean() > 2 * gain.std(ddof=1) / np.sqrt(len(gain)), gain.mean()
  assert steps[-1]["proxy_reward_normalised"] > steps[0]["proxy_reward_normalised"]
  assert steps[0]["kl_from_sft"] == pytest.approx(0.0, abs=1e-3)   # the SFT policy itself
  assert steps[-1]["kl_from_sft"] > 0.05
  # the SFT policy the stage started from is untouched
  assert params(setup["sft"].model.model)[0] is not None
  assert not np.allclose(params(setup["sft"].model.model)[0], params(rest.model.model)[0])


def test_rest_provenance_records_every_sample_and_the_rising_filter(setup):
  grow = os.path.join(setup["rest"].metrics["directory"], "grow1")
  kept = []
  for i, threshold in ((1, 0.5), (2, 0.8)):
    rows = [json.loads(l) for l in open(os.path.join(grow, f"improve{i}", "provenance.jsonl"))]
    assert {r["threshold"] for r in rows} == {threshold}
    assert all(r["kept"] == (r["normalised_reward"] >= threshold) for r in rows)
    assert len({r["prompt"] for r in rows}) == REST.num_prompts
    kept.append(sum(r["kept"] for r in rows))
    assert all(set(r) == {"prompt", "response", "reward", "normalised_reward", "threshold",
                          "kept"} for r in rows)
  assert 0 < kept[1] < kept[0]
  assert setup["rest"].metrics["steps"][2]["kept"] == kept[1]
  root = setup["rest"].metrics["directory"]
  assert open(os.path.join(root, "improvement.png"), "rb").read(4) == b"\x89PNG"
  table = open(os.path.join(root, "before_after.md")).read().splitlines()
  assert table[2] == "| prompt | before | after |" and len(table) == 4 + 10
  assert all(" gold " in line for line in table[4:])


def test_rejection_sampling_keeps_the_best_sample_of_each_prompt(setup):
  s = setup
  settings = Rest(reward_model="base_rm", keep="best", improve_thresholds=(0.0,),
                  num_prompts=60, steps_per_improve=5, max_new_tokens=24, eval_prompts=16,
                  eval_samples=2)
  result = stages.rest(data=s["data"], run=s["run"], settings=settings, policy=s["sft"],
                       reward_model=s["base"], sft_settings=SFT, make_optimizer=IMPROVE_OPT,
                       name="rs_ft")
  path = os.path.join(result.metrics["directory"], "grow1", "improve1", "provenance.jsonl")
  by_prompt = {}
  for row in map(json.loads, open(path)):
    by_prompt.setdefault(row["prompt"], []).append(row)
  assert len(by_prompt) == 60
  for rows in by_prompt.values():
    assert sum(r["kept"] for r in rows) == 1
    assert next(r for r in rows if r["kept"])["reward"] == max(r["reward"] for r in rows)


class Killed(Exception):
  pass


def killing(step_fn, after: int):
  calls = {"n": 0}

  def step(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] > after:
      raise Killed()
    return step_fn(*args, **kwargs)
  return step


def test_a_killed_improve_step_resumes_to_the_identical_policy(setup, monkeypatch):
  s = setup
  run = dataclasses.replace(s["run"], model_dir=os.path.join(s["root"], "killed"))
  kw = dict(data=s["data"], run=run, settings=REST, policy=s["sft"], reward_model=s["base"],
            sft_settings=SFT, make_optimizer=IMPROVE_OPT)
  # killed in the second improve step, after its checkpoint at step 20
  monkeypatch.setattr(policies.sft, "sft_step", killing(policies.sft.sft_step, after=30 + 25))
  with pytest.raises(Killed):
    stages.rest(**kw)
  monkeypatch.undo()
  step2 = os.path.join(run.model_dir, "rest")
  assert any("improve2" in d for d, _, _ in os.walk(step2))
  resumed = stages.rest(**kw)
  for a, b in zip(params(resumed.model.model), params(s["rest"].model.model)):
    np.testing.assert_array_equal(a, b)
  assert resumed.metrics["steps"] == s["rest"].metrics["steps"]


def test_dpo_trains_from_the_cached_reference_and_resumes(setup, monkeypatch):
  s = setup
  settings = Dpo(pairs="human", beta=0.1, num_steps=30, pairs_per_batch=16, row_len=96,
                 max_response_len=24, eval_prompts=32, eval_samples=2)
  kw = dict(data=s["data"], run=s["run"], settings=settings, policy=s["sft"],
            pairs=s["data"].tokenized["train"], pairs_name="human", reward_model=s["base"],
            make_optimizer=IMPROVE_OPT)
  monkeypatch.setattr(policies.dpo, "dpo_step", killing(policies.dpo.dpo_step, after=25))
  with pytest.raises(Killed):
    stages.dpo(**kw)
  monkeypatch.undo()
  result = stages.dpo(**kw)
  stage_dir = result.metrics["directory"]
  assert os.path.exists(os.path.join(stage_dir, "reference_logprobs.npz"))
  rows = [json.loads(l) for l in open(os.path.join(stage_dir, "metrics.jsonl"))]
  train = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train] == [10, 20, 30]   # resumed: no step logged twice
  # The policy starts as its own reference (loss log 2) and learns the human preferences.
  assert train[-1]["loss"] < np.log(2) - 0.02
  assert result.metrics["heldout_pairs_implied_reward_accuracy"] > 0.55
  assert result.metrics["kl_from_sft"] > 0
  again = stages.dpo(**kw)   # finished: restored, not retrained
  assert again.metrics["gold_reward"] == result.metrics["gold_reward"]
  for a, b in zip(params(again.model.model), params(result.model.model)):
    np.testing.assert_array_equal(a, b)


def test_iterative_west_of_n_samples_round_two_from_the_improved_policy(tmp_path):
  """gin/policy_improvement_demo.gin with WestOfN.policy='improved': round 1's student
  improves the policy by ReST, round 2 samples from that policy; then the rest and dpo stages
  improve the SFT policy with the last student and its synthetic pairs."""
  model_dir = tmp_path / "loop"
  argv = ["--gin_file=gin/policy_improvement_demo.gin", f"--gin.MODEL_DIR={model_dir}",
          "--gin.RunSettings.progress=False", "--gin.DataSource.default_num_pairs=400",
          "--gin.RewardModelRecipe.num_steps=20", "--gin.WestOfNSampling.max_new_tokens=12",
          "--gin.WestOfN.rounds=2",
          "--gin.WestOfNSampling.policy='improved'", "--gin.Rest.num_prompts=40",
          "--gin.Rest.steps_per_improve=4", "--gin.Rest.improve_thresholds=(0.0, 0.6)",
          "--gin.Rest.eval_prompts=8", "--gin.Rest.eval_samples=2", "--gin.Dpo.num_steps=4",
          "--gin.Dpo.eval_prompts=8", "--gin.Dpo.eval_samples=2"] + SMALL_WEST_OF_N
  metrics = run_main(argv)
  (variant,) = os.listdir(model_dir / "west_of_n")
  rounds = model_dir / "west_of_n" / variant
  fingerprint = StageRecord(str(rounds / "round2")).result_key
  assert fingerprint["policy"]["kind"] == "rest"          # sampled from the improved policy
  assert StageRecord(str(rounds / "round1")).result_key["policy"]["kind"] == (
      "policy")                                            # round 1: the SFT policy
  assert len(os.listdir(model_dir / "west_of_n_samples")) == 2
  loop = metrics["rest_west_of_n_round1"]
  assert [s["label"] for s in loop["steps"]] == ["start", "grow 1 improve 1", "grow 1 improve 2"]
  assert loop["trained_on"] == "west_of_n_round1 rewards"
  assert metrics["rest (west_of_n)"]["trained_on"] == "west_of_n_round2 rewards"
  assert metrics["dpo (west_of_n pairs)"]["trained_on"].endswith("west_of_n pairs")
  report = open(model_dir / "report.md").read()
  for row in ("| rest_west_of_n_round1 | grow 1 improve 2 |", "| rest (west_of_n) | start |",
              "| dpo (west_of_n pairs) | dpo |", "Policy improvement"):
    assert row in report, row
  assert open(os.path.join(loop["directory"], "improvement.png"), "rb").read(4) == b"\x89PNG"


def _measured(s, policy, settings):
  return measure_on_heldout(s["data"], s["run"], policy=policy, reference=s["sft"].model,
                            reward_model=s["base"], scale=reward_scale(s["base"]),
                            settings=settings)[0]


def test_hir_relabels_every_sample_and_learns_to_follow_the_outcome(setup):
  s = setup
  result = stages.hir(data=s["data"], run=s["run"], settings=HIR, policy=s["sft"],
                      reward_model=s["base"], make_optimizer=IMPROVE_OPT)
  steps = result.metrics["steps"]
  assert [st["label"] for st in steps] == ["start", "round 1", "round 2"]
  for r, st in enumerate(steps[1:], start=1):
    rows = [json.loads(line) for line in open(os.path.join(
        result.metrics["directory"], f"round{r}", "provenance.jsonl"))]
    assert len(rows) == st["kept"] == sum(st["outcomes"])
    for row in rows:   # the relabeled instruction is the bin the sample's reward reached
      assert row["outcome"] == min(int(row["normalised_reward"] * HIR.num_bins), 3)
  assert isinstance(result.model, ConditionedPolicy)
  assert result.model.condition == "outcome 4 of 4"
  best = steps[-1]
  worst = _measured(s, ConditionedPolicy(result.model.policy, "outcome 1 of 4"), HIR)
  print(f"asked for the best outcome: RM {best['proxy_reward_normalised']:.3f}, gold "
        f"{best['gold_reward']:.3f}; the worst: RM {worst['proxy_reward_normalised']:.3f}, gold "
        f"{worst['gold_reward']:.3f}")
  assert best["proxy_reward_normalised"] > worst["proxy_reward_normalised"] + 0.1
  assert best["gold_reward"] > worst["gold_reward"] + 0.3


def _killed_and_resumed(s, monkeypatch, stage_fn, step_owner, step_name: str, after: int,
                        **kw):
  """``stage_fn`` run whole, and run again in another directory killed after ``after`` calls
  of ``step_owner.step_name`` (a training step), then resumed: both results."""
  name = stage_fn.__name__
  whole = stage_fn(run=dataclasses.replace(
      s["run"], model_dir=os.path.join(s["root"], f"{name}_whole")), **kw)
  run = dataclasses.replace(s["run"], model_dir=os.path.join(s["root"], f"{name}_killed"))
  monkeypatch.setattr(step_owner, step_name, killing(getattr(step_owner, step_name), after))
  with pytest.raises(Killed):
    stage_fn(run=run, **kw)
  monkeypatch.undo()
  resumed = stage_fn(run=run, **kw)
  for a, b in zip(params(resumed.model.model), params(whole.model.model)):
    np.testing.assert_array_equal(a, b)
  assert resumed.metrics["steps"] == whole.metrics["steps"]


def test_a_killed_hir_round_resumes_to_the_identical_policy(setup, monkeypatch):
  s = setup
  # killed in round 2 of 20 steps, after its checkpoint at step 10
  _killed_and_resumed(s, monkeypatch, stages.hir, policies.hindsight, "hindsight_step",
                      after=20 + 15, data=s["data"],
                      settings=dataclasses.replace(HIR, steps_per_round=20), policy=s["sft"],
                      reward_model=s["base"], make_optimizer=IMPROVE_OPT)


def test_c_rlft_weighs_classes_by_reward_and_conditions_on_the_best(setup):
  s = setup
  result = stages.c_rlft(data=s["data"], run=s["run"], settings=C_RLFT, policy=s["sft"],
                         reward_model=s["base"], sft_settings=SFT, make_optimizer=IMPROVE_OPT)
  classes = result.metrics["classes"]
  rewards = np.array([c["mean_normalised_reward"] for c in classes])
  weights = np.array([c["weight"] for c in classes])
  np.testing.assert_allclose(weights, np.exp((rewards - rewards.max()) / C_RLFT.beta), rtol=1e-5)
  assert result.model.condition == classes[int(np.argmax(rewards))]["class"] == "quality 4 of 4"
  rows = [json.loads(line) for line in open(os.path.join(result.metrics["directory"],
                                                         "provenance.jsonl"))]
  train_pairs = s["data"].raw["train"][:C_RLFT.num_prompts]
  assert sum(r["source"] == "human chosen" for r in rows) == len(train_pairs)
  assert sum(c["responses"] for c in classes) == len(rows) == result.metrics["kept"]
  # (the lowest classes weigh under 1%: the policy barely learns them, so it is measured
  # against where it started, not against itself conditioned on them)
  start, after = result.metrics["steps"][0], result.metrics["steps"][-1]
  print(f"C-RLFT gold {start['gold_reward']:.3f} -> {after['gold_reward']:.3f}, RM "
        f"{start['proxy_reward_normalised']:.3f} -> {after['proxy_reward_normalised']:.3f}")
  assert after["gold_reward"] > start["gold_reward"] + 0.15
  assert after["proxy_reward_normalised"] > start["proxy_reward_normalised"] + 0.05


def test_a_killed_c_rlft_run_resumes_to_the_identical_policy(setup, monkeypatch):
  s = setup
  # killed after its checkpoint at step 20 of 30
  _killed_and_resumed(s, monkeypatch, stages.c_rlft, policies.sft, "sft_step", after=25,
                      data=s["data"], settings=dataclasses.replace(C_RLFT, num_steps=30),
                      policy=s["sft"], reward_model=s["base"], sft_settings=SFT,
                      make_optimizer=IMPROVE_OPT)
