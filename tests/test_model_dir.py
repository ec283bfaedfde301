"""``westofn.model_dir.ModelDir`` (every path of a run's MODEL_DIR) and the one way a stage
resumes (``policies.core.stage_dir.StageDir.reuse`` / ``save_result``), West-of-N rounds
included, with rounds written before they had a ``StageRecord``."""

import json
import os

import numpy as np
import pytest
from flax import nnx

from policies.core.atomic import write_jsonl_atomic
from policies.core.stage_dir import StageDir, StageMismatch, StageRecord, model_identity
from westofn import west_of_n
from westofn.model_dir import ModelDir
from westofn.restore import default_stage
from westofn.settings import WestOfN

# demo.gin before train() took setting groups, as a run of that version wrote its config.gin
BEFORE_GROUPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                             "demo_before_groups.gin")


def _before_groups(model_dir) -> str:
  """``BEFORE_GROUPS``' text as a run in ``model_dir`` of that version wrote it."""
  return open(BEFORE_GROUPS).read().replace("MODEL_DIR = %gin.REQUIRED",
                                            f"MODEL_DIR = '{model_dir}'")


def test_every_path_lies_under_the_root_and_is_named_by_what_it_holds(tmp_path):
  layout = ModelDir(str(tmp_path))
  paths = [layout.config_gin, layout.report, layout.costs, layout.heldout_rewards_plot,
           layout.evaluate_output, layout.lock, layout.stage("base_rm"),
           layout.stage("policy_sft"), layout.west_of_n_round("abc", 2),
           layout.west_of_n_student("abc", 2), layout.west_of_n_samples("d1"),
           layout.judge_member("h1", 3), layout.rest("u1"), layout.rest_step("u1", 1, 2),
           layout.rest_samples("s1"), layout.dpo("human", "i1"),
           layout.eval_sets_cache("west_of_n round1 (a/b)")]
  assert len(set(paths)) == len(paths)
  assert all(os.path.commonpath([p, str(tmp_path)]) == str(tmp_path) for p in paths)
  assert layout.west_of_n_student("abc", 2) == os.path.join(
      layout.west_of_n_round("abc", 2), "student")
  assert layout.rest_step("u1", 1, 2) == os.path.join(layout.rest("u1"), "grow1", "improve2")
  # a name with spaces and slashes stays one file directly under eval_sets/
  assert os.path.dirname(layout.eval_sets_cache("west_of_n round1 (a/b)")) == str(
      tmp_path / "eval_sets")
  with pytest.raises(ValueError, match="no stage directory 'west_of_n'"):
    layout.stage("west_of_n")


def _stage(path, kind, with_checkpoints=True):
  os.makedirs(os.path.join(path, "checkpoints") if with_checkpoints else path, exist_ok=True)
  StageRecord(path).check_identity({"kind": kind})


def test_reward_model_stages_are_found_by_their_record_wherever_they_lie(tmp_path):
  layout = ModelDir(str(tmp_path))
  _stage(layout.stage("base_rm"), "pointwise")
  _stage(layout.stage("pairwise_pm"), "pairwise")
  _stage(layout.stage("policy_sft"), "policy")                     # not a reward model
  _stage(layout.stage("human_100"), "pointwise", with_checkpoints=False)   # nothing saved
  _stage(layout.west_of_n_student("v1", 1), "pointwise")
  _stage(layout.judge_member("h", 1), "pointwise")
  os.makedirs(layout.west_of_n_round("v1", 1), exist_ok=True)
  with open(os.path.join(layout.west_of_n_round("v1", 1), "stage.json"), "w") as f:
    f.write("{not json")                                           # unreadable: skipped
  found = layout.reward_model_stages()
  assert sorted(found) == sorted(["base_rm", "pairwise_pm",
                                  os.path.join("west_of_n", "v1", "round1", "student"),
                                  os.path.join("west_of_n_judges", "h", "member1")])
  assert [s for s in found if layout.is_west_of_n_student(s)] == [
      os.path.join("west_of_n", "v1", "round1", "student")]
  assert default_stage(str(tmp_path)) == os.path.join("west_of_n", "v1", "round1", "student")


def _linear(seed):
  return nnx.Linear(3, 2, rngs=nnx.Rngs(seed))


def test_reuse_restores_a_finished_stage_and_nothing_else(tmp_path):
  stage = StageDir(str(tmp_path / "s"))
  stage.record.check_identity({"kind": "pointwise"})
  trained = _linear(0)
  checkpoints = stage.checkpoints(1)
  checkpoints.save(4, trained)
  checkpoints.close()
  key = {"step": 4, "heldout": "abc"}
  assert stage.reuse(key) is None                      # no result saved yet
  stage.save_result(key, {"accuracy": 0.75})
  assert json.load(open(stage.file("eval.json"))) == {"accuracy": 0.75}
  assert StageDir(stage.path).record.result_key == key

  again = StageDir(stage.path)
  assert again.reuse({"step": 4, "heldout": "other"}) is None      # other held-out data
  assert again.reuse(key, finished=False) is None                  # more steps asked for
  assert again.reuse(key, files=("samples.jsonl",)) is None        # an output is missing
  open(again.file("samples.jsonl"), "w").close()
  model, checkpoints = _linear(1), again.checkpoints(1)
  assert not np.allclose(model.kernel[...], trained.kernel[...])
  assert again.reuse(key, checkpoints=checkpoints, model=model,
                     files=("samples.jsonl",)) == {"accuracy": 0.75}
  np.testing.assert_array_equal(model.kernel[...], trained.kernel[...])


def test_a_round_recorded_in_round_json_is_reused_without_recomputing(tmp_path, monkeypatch):
  """A MODEL_DIR written before rounds had a StageRecord: its round is read, not redone;
  a round of other settings is computed and recorded."""
  round_dir = str(tmp_path / "round1")
  os.makedirs(round_dir)
  write_jsonl_atomic(os.path.join(round_dir, "synthetic_pairs.jsonl"), [
      {"prompt": "p", "chosen": "good", "rejected": "bad", "kept": True}])
  fingerprint = {"settings": {"num_samples": 4}, "round": 1, "teacher_accuracy": 0.8}
  counts = {"prompts": 3, "kept": 1}
  with open(os.path.join(round_dir, "round.json"), "w") as f:
    json.dump({"fingerprint": fingerprint, "counts": counts}, f)
  computed = []

  def generate(**kw):
    computed.append(kw["round_index"])
    return west_of_n.RoundResult([], {"prompts": 1, "kept": 0}), []

  monkeypatch.setattr(west_of_n, "generate_synthetic_pairs", generate)
  kw = dict(round_dir=round_dir, judge=None, policy=None, vocabulary=None, prompts=["p"],
            settings=WestOfN(), round_index=1, seed=0)
  result = west_of_n.run_round(fingerprint=fingerprint, **kw)
  assert computed == []
  assert result.counts == counts
  assert [(p.prompt, p.chosen, p.rejected) for p in result.pairs] == [("p", "good", "bad")]
  assert StageRecord(round_dir).result_key == fingerprint

  other = {**fingerprint, "teacher_accuracy": 0.9}
  assert west_of_n.run_round(fingerprint=other, **kw).counts == {"prompts": 1, "kept": 0}
  assert computed == [1]
  assert StageRecord(round_dir).result_key == other
  reused = west_of_n.run_round(fingerprint=other, **kw)
  assert computed == [1] and reused.pairs == [] and reused.counts == {"prompts": 1, "kept": 0}


def test_a_config_gin_written_before_the_settings_moved_reads_back(tmp_path):
  """Runs made before ``westofn.settings`` bound ``westofn.pipeline.Batching`` and friends,
  and train()'s ``won`` and ``policy``, now ``west_of_n`` and ``policy_sft``."""
  from westofn.restore import load_run
  from westofn.settings import Batching, DataSource, PolicySft, WestOfN
  old = (_before_groups(tmp_path).replace("import westofn.settings\n",
                                         "import westofn.pipeline\nimport westofn.west_of_n\n")
         .replace("westofn.settings.", "westofn.pipeline.")
         + "train_script.train.won = @westofn.west_of_n.WestOfN()\n"
         + "westofn.west_of_n.WestOfN.num_samples = 4\n"
         + "train_script.train.policy = @westofn.pipeline.PolicySft()\n"
         + "westofn.pipeline.PolicySft.num_steps = 7\n")
  assert "westofn.settings" not in old and "westofn.pipeline.Batching.row_len = 256" in old
  (tmp_path / "config.gin").write_text(old)
  run = load_run(str(tmp_path))
  assert isinstance(run.batching, Batching) and run.batching.row_len == 256
  assert isinstance(run.data, DataSource) and run.data.default_num_pairs == 6000
  assert run.bindings["west_of_n"] == WestOfN.build(num_samples=4)
  assert run.bindings["policy_recipe"].sft == PolicySft(num_steps=7)
  assert not {"won", "policy", "policy_sft"} & set(run.bindings)


def test_a_config_gin_written_before_the_setting_groups_reads_back(tmp_path):
  """Runs made before train() took groups bound its flat parameters (``train.num_steps``,
  ``train.seed``, ``train.rm_backbone``, ...): they bind the groups now."""
  from westofn.compat import upgrade_config
  from westofn.restore import load_run
  from westofn.settings import Batching, PolicyRecipe, PolicySft, RunSettings
  old = (_before_groups(tmp_path)
         + "train_script.train.min_steps = 7\ntrain_script.train.epochs = 2.5\n"
         + "train_script.train.policy_sft = @westofn.settings.PolicySft()\n"
         + "westofn.settings.PolicySft.num_steps = 9\n"
         + "train_script.train.policy_optimizer = @rm.training.make_optimizer\n")
  assert "train_script.train.num_steps = 400" in old and "RewardModelRecipe" not in old
  assert upgrade_config(upgrade_config(old)) == upgrade_config(old)   # today's text: unchanged
  (tmp_path / "config.gin").write_text(old)
  run = load_run(str(tmp_path))
  recipe = run.rm_recipe
  assert (recipe.num_steps, recipe.min_steps, recipe.epochs, recipe.backbone) == (400, 7, 2.5, None)
  assert run.batching == Batching(rows=8, row_len=256, pairs_per_row=8, max_response_len=32)
  assert recipe.model_config(vocab_size=300).d_model == 128   # TransformerConfig, as bound
  assert recipe.make_optimizer.__name__ == "make_optimizer"
  assert run.bindings["run_settings"] == RunSettings(seed=0, log_every=50, eval_every=100,
                                                     save_every=100, keep_checkpoints=2)
  policy = run.bindings["policy_recipe"]
  assert isinstance(policy, PolicyRecipe) and policy.sft == PolicySft(num_steps=9)
  assert policy.make_optimizer is not None and policy.improve_optimizer is None


def test_a_config_gin_written_before_scoring_rows_reads_back_and_keeps_its_records(tmp_path):
  """Each settings class had its own scoring fields (``WestOfN.score_row_len``,
  ``Rest.score_max_response_len``) until ``ScoringRows``: an old config.gin binds the group,
  and the records that name rounds and stages are those the old fields gave."""
  from westofn.compat import improvement_record, upgrade_config
  from westofn.restore import load_run
  from westofn.settings import Rest, ScoringRows
  from westofn.west_of_n import settings_record
  old = (_before_groups(tmp_path)
         + "train_script.train.west_of_n = @westofn.settings.WestOfN()\n"
         + "westofn.settings.WestOfN.score_rows = 4\n"
         + "westofn.settings.WestOfN.score_row_len = 512\n"
         + "westofn.settings.WestOfN.max_response_len = 96\n"
         + "train_script.train.rest = @westofn.settings.Rest()\n"
         + "westofn.settings.Rest.score_row_len = 384\n")
  assert upgrade_config(upgrade_config(old)) == upgrade_config(old)
  (tmp_path / "config.gin").write_text(old)
  run = load_run(str(tmp_path))
  # each class keeps its own old values (a scoped group each); the others, the defaults
  assert run.bindings["west_of_n"].judge.scoring == ScoringRows(rows=4, row_len=512,
                                                                max_response_len=96)
  assert run.bindings["rest"].scoring == ScoringRows(row_len=384)
  assert run.bindings["dpo"].scoring == ScoringRows()
  # the record a round of that version was named by (its digest), field for field
  record = settings_record(run.bindings["west_of_n"])
  assert {k: record[k] for k in ("score_rows", "score_row_len", "max_response_len")} == \
      {"score_rows": 4, "score_row_len": 512, "max_response_len": 96}
  assert "scoring" not in record and "score_max_per_row" not in record
  # ReST's identity left its scoring fields out at their old defaults, and names them else
  assert not {"scoring", "score_row_len", "score_max_response_len"} & set(
      improvement_record(Rest()))
  wide = improvement_record(Rest(scoring=ScoringRows(row_len=384, max_per_row=4)))
  assert (wide["score_row_len"], wide["score_max_per_row"]) == (384, 4)
  assert "score_max_response_len" not in wide and "score_rows" not in wide


def test_a_config_gin_with_west_of_n_flat_fields_reads_back_into_its_groups(tmp_path):
  """``WestOfN`` had flat fields until its groups (7c4d5af wrote ``WestOfN.judge_ensemble``
  and bound ``WestOfN.scoring``): an old config.gin binds the groups, and the round's record
  (its directory's name) is the one that version gave."""
  from policies.core.stage_dir import short_digest
  from westofn.compat import upgrade_config
  from westofn.restore import load_run
  from westofn.settings import ScoringRows
  from westofn.west_of_n import settings_record
  old = (_before_groups(tmp_path)
         + "train_script.train.west_of_n = @westofn.settings.WestOfN()\n"
         + "westofn.settings.WestOfN.scoring = @westofn.settings.ScoringRows()\n"
         + "westofn.settings.ScoringRows.row_len = 512\n"
         + "westofn.settings.WestOfN.num_samples = 8\n"
         + "westofn.settings.WestOfN.judge_ensemble = 3\n"
         + "westofn.settings.WestOfN.sample_batch_prompts = 32\n"
         + "westofn.settings.WestOfN.soft_labels = False\n"
         + "westofn.settings.WestOfN.student_start = 'teacher'\n"
         + "westofn.settings.WestOfN.rounds = 2\n")
  assert upgrade_config(upgrade_config(old)) == upgrade_config(old)
  (tmp_path / "config.gin").write_text(old)
  settings = load_run(str(tmp_path)).bindings["west_of_n"]
  assert settings == WestOfN.build(rounds=2, num_samples=8, ensemble=3, batch_prompts=32,
                                   soft_labels=False, start="teacher",
                                   scoring=ScoringRows(row_len=512))
  # the digest 7c4d5af named this round by (flat WestOfN(num_samples=8, judge_ensemble=3, ...))
  assert short_digest(settings_record(settings), 8) == "a54eb5ac"


def test_a_config_gin_binding_a_module_that_is_gone_under_an_alias_reads_back(tmp_path):
  """``westofn.improve`` (removed; it only re-exported ``Rest`` and ``Dpo``), imported under
  an alias as gin writes a module whose name clashes, and ``westofn.ai_feedback``'s
  ``LMJudgeSettings``: ``westofn.compat.upgrade_config`` binds today's classes."""
  from westofn.compat import upgrade_config
  from westofn.restore import load_run
  from westofn.settings import Dpo, LMJudgeSettings, Rest
  old = (_before_groups(tmp_path)
         + "import westofn.improve as improve2\nimport westofn.ai_feedback\n"
         + "train_script.train.rest = @improve2.Rest()\nimprove2.Rest.num_prompts = 3\n"
         + "train_script.train.dpo = @improve2.Dpo()\n"
         + "train_script.train.west_of_n = @westofn.settings.WestOfN()\n"
         + "westofn.settings.WestOfN.judge = 'lm'\n"
         + "westofn.settings.WestOfN.lm_judge = @westofn.ai_feedback.LMJudgeSettings()\n"
         + "westofn.ai_feedback.LMJudgeSettings.max_len = 77\n")
  assert "improve2.Rest" not in upgrade_config(old) and "westofn.improve" not in upgrade_config(old)
  assert upgrade_config(upgrade_config(old)) == upgrade_config(old)   # today's text: unchanged
  (tmp_path / "config.gin").write_text(old)
  run = load_run(str(tmp_path))
  assert run.bindings["rest"] == Rest(num_prompts=3) and run.bindings["dpo"] == Dpo()
  assert run.bindings["west_of_n"].judge.lm == LMJudgeSettings(max_len=77)
  assert run.bindings["west_of_n"].judge.kind == "lm"


def test_identity_keys_added_later_are_compared_only_where_recorded(tmp_path):
  old = StageRecord(str(tmp_path / "old"))
  os.makedirs(tmp_path / "old")
  old.check_identity({"kind": "pointwise"})   # a record from before "optimizer" existed
  old.check_identity({"kind": "pointwise", "optimizer": {"learning_rate": 1e-3}},
                     added_later=("optimizer",))
  with pytest.raises(StageMismatch, match="kind"):   # the other keys still count
    old.check_identity({"kind": "pairwise", "optimizer": {}}, added_later=("optimizer",))
  new = StageRecord(str(tmp_path / "new"))
  os.makedirs(tmp_path / "new")
  new.check_identity({"kind": "pointwise", "optimizer": {"learning_rate": 1e-3}},
                     added_later=("optimizer",))
  new.check_identity({"kind": "pointwise", "optimizer": {"learning_rate": 1e-3}},
                     added_later=("optimizer",))
  with pytest.raises(StageMismatch, match="optimizer"):   # recorded: compared
    new.check_identity({"kind": "pointwise", "optimizer": {"learning_rate": 2e-3}},
                       added_later=("optimizer",))
  with pytest.raises(StageMismatch, match="optimizer"):   # only for keys named added later
    old.check_identity({"kind": "pointwise", "optimizer": {}})


def test_model_identity_leaves_out_speed_options_and_unset_precisions():
  import dataclasses
  from policies.transformer import TransformerConfig
  cfg = TransformerConfig(vocab_size=10)
  ident = model_identity(cfg)
  # unset precisions are left out (records from before they existed still match) ...
  assert "attention_dtype" not in ident and "matmul_dtype" not in ident
  assert "attention_block" not in ident and "remat" not in ident and ident["d_model"] == 128
  assert model_identity(dataclasses.replace(cfg, attention_block=0, remat=True)) == ident
  # ... and set ones change the math, so they count
  mixed = model_identity(dataclasses.replace(cfg, attention_dtype="bfloat16"))
  assert mixed != ident and mixed["attention_dtype"] == "bfloat16"
