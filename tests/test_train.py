"""westofn/train.py and the gin configs: every config parses, flags, logging, and the pipeline end
to end (demo, policy, West-of-N with the RM and the pairwise judge, the protocol, the SmolLM2 HH
config on a slice)."""

import glob
import json
import os

import gin
import numpy as np
import pytest

from westofn import train as train_pipeline
from westofn import train as train_cli
from westofn.cli.common import configure_logging
from policies.core.stage_dir import StageMismatch
from westofn.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIN_FILES = sorted(glob.glob(os.path.join(REPO, "gin", "*.gin")))


def test_gin_dir_holds_only_gin_files():
  assert not os.path.exists(os.path.join(REPO, "gin", "__init__.py"))
  assert GIN_FILES


@pytest.mark.parametrize("path", GIN_FILES, ids=os.path.basename)
def test_every_gin_file_parses(path):
  gin.clear_config()
  try:
    gin.add_config_file_search_path(os.path.join(REPO, "gin"))
    gin.configurable(train_pipeline.train)
    gin.parse_config_files_and_bindings([path], ["MODEL_DIR = '/tmp/x'", "DATA_PATH = '/tmp/y'",
                                                 "HF_RM = '/tmp/z'"],
                                        skip_unknown=False)
  finally:
    gin.clear_config()


# A policy and West-of-N rounds small enough for a test.
SMALL_WEST_OF_N = ["--gin.PolicySft.num_steps=20", "--gin.PolicySft.num_prompts=4",
                   "--gin.PolicySft.num_samples=2", "--gin.WestOfNSampling.num_samples=4",
                   "--gin.train.best_of_n=4"]


def run_main(argv):
  """``python -m westofn.train ARGV`` from the repository root, in this process."""
  cwd = os.getcwd()
  os.chdir(REPO)
  try:
    gin.clear_config()
    return train_cli.main(argv)
  finally:
    gin.clear_config()
    os.chdir(cwd)


def test_flag_parsing_quotes_bare_strings_only():
  files, bindings, paths, _ = train_cli.parse_flags([
      "--gin_file=demo.gin", "--gin.MODEL_DIR=/tmp/a b", "--gin.RewardModelRecipe.num_steps=5",
      "--gin.X=@foo()", "--gin.Y='quoted'", "--gin_search_paths=a,b"])
  assert files == ["demo.gin"] and paths == ["a", "b"]
  assert bindings == ["MODEL_DIR = '/tmp/a b'", "RewardModelRecipe.num_steps = 5",
                      "X = @foo()", "Y = 'quoted'"]
  with pytest.raises(SystemExit):
    train_cli.parse_flags(["--bogus=1"])


@pytest.mark.parametrize("old,new", [("won", "train.west_of_n"), ("policy", "PolicyRecipe.sft")])
def test_a_renamed_train_parameter_is_an_error_that_names_the_new_one(tmp_path, old, new):
  with pytest.raises(ConfigError, match=rf"train\.{old} is now {new}"):
    run_main(["--gin_file=demo.gin", f"--gin.MODEL_DIR={tmp_path}", f"--gin.train.{old}=None"])
  assert not os.listdir(tmp_path)   # refused before anything was written


@pytest.mark.parametrize("old,new", [("num_steps", "RewardModelRecipe.num_steps"),
                                     ("rm_backbone", "RewardModelRecipe.backbone"),
                                     ("seed", "RunSettings.seed"),
                                     ("policy_optimizer", "PolicyRecipe.make_optimizer")])
def test_a_flat_parameter_that_became_a_group_is_an_error_that_names_it(tmp_path, old, new):
  with pytest.raises(ConfigError, match=rf"train\.{old} is now {new}: --gin\.{new}="):
    run_main(["--gin_file=demo.gin", f"--gin.MODEL_DIR={tmp_path}", f"--gin.train.{old}=None"])
  assert not os.listdir(tmp_path)   # refused before anything was written


def test_a_scoring_field_that_became_scoring_rows_is_an_error_that_names_it(tmp_path):
  with pytest.raises(ConfigError, match=r"WestOfN\.score_row_len is now ScoringRows\.row_len"):
    run_main(["--gin_file=demo.gin", f"--gin.MODEL_DIR={tmp_path}",
              "--gin.WestOfN.score_row_len=512"])
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize("old, new", [("num_samples", "WestOfNSampling.num_samples"),
                                      ("judge_ensemble", "WestOfNJudge.ensemble"),
                                      ("confidence_quantile", "WestOfNFilters.confidence_quantile"),
                                      ("student_start", "WestOfNStudent.start")])
def test_a_west_of_n_field_that_moved_into_a_group_is_an_error_that_names_it(tmp_path, old,
                                                                               new):
  with pytest.raises(ConfigError, match=rf"WestOfN\.{old} is now {new}: --gin\.{new}="):
    run_main(["--gin_file=demo.gin", f"--gin.MODEL_DIR={tmp_path}",
              f"--gin.WestOfN.{old}=1"])
  assert not os.listdir(tmp_path)


def test_a_group_flag_reaches_train_whatever_the_file_binds(tmp_path):
  """Every run binds each group first (``westofn.train.GROUPS``): demo.gin names neither
  ``Rest`` nor ``PolicyRecipe``, and the flags' values still reach train() and its record."""
  from policies.core.stage_dir import StageRecord
  from westofn.restore import load_run
  model_dir = str(tmp_path / "run")
  run_main(["--gin_file=demo.gin", f"--gin.MODEL_DIR={model_dir}", "--gin.RunSettings.seed=7",
            "--gin.Rest.num_prompts=3", "--gin.PolicySft.num_steps=11",
            "--gin.RewardModelRecipe.num_steps=2", "--gin.RunSettings.progress=False",
            "--gin.DataSource.default_num_pairs=100", "--gin.TransformerConfig.num_layers=1"])
  run = load_run(model_dir)
  assert run.bindings["run_settings"].seed == 7 and run.bindings["rest"].num_prompts == 3
  assert run.bindings["policy_recipe"].sft.num_steps == 11
  record = json.load(open(StageRecord.file_in(os.path.join(model_dir, "base_rm"))))
  assert record["identity"]["seed"] == 7


def test_a_gin_file_binding_a_settings_class_by_its_old_home_names_the_new_one(tmp_path):
  """A hand-written .gin file of an earlier version (``westofn.compat.OLD_HOMES``)."""
  old = tmp_path / "old.gin"
  old.write_text("include 'demo.gin'\nimport westofn.pipeline\n"
                 "westofn.pipeline.Batching.row_len = 64\n")
  with pytest.raises(ConfigError, match=r"Batching.*are now westofn\.settings's"):
    run_main([f"--gin_file={old}", f"--gin.MODEL_DIR={tmp_path / 'run'}"])
  assert not os.path.exists(tmp_path / "run")


def test_logging_reaches_stderr_at_info_despite_handlers_set_by_imports(capsys):
  import logging
  root = logging.getLogger()
  saved = (root.handlers[:], root.level)
  try:
    root.addHandler(logging.StreamHandler())   # what absl leaves behind on import
    root.setLevel(logging.WARNING)
    configure_logging()
    logging.getLogger("westofn").info("base_rm: 1 parameters")
    logging.getLogger("gin").info("Path not found: x.gin")
    logging.info("system_path_file_exists:x.gin")
    err = capsys.readouterr().err
    assert "westofn: base_rm: 1 parameters" in err
    assert "Path not found" not in err and "system_path" not in err
  finally:
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_main_runs_demo_config_end_to_end_and_resumes(tmp_path):
  model_dir = str(tmp_path / "run")
  argv = ["--gin_file=gin/demo.gin", f"--gin.MODEL_DIR={model_dir}",
          "--gin.RewardModelRecipe.num_steps=30", "--gin.RunSettings.progress=False",
          "--gin.DataSource.default_num_pairs=600",
          "--gin.TransformerConfig.num_layers=1"]
  metrics = run_main(argv)
  operative = open(os.path.join(model_dir, "config.gin")).read()
  assert "num_steps = 30" in operative and "TransformerConfig.num_layers = 1" in operative
  report = open(os.path.join(model_dir, "report.md")).read()
  assert "| base_rm |" in report and "Label ceiling" in report
  assert 0.0 <= metrics["base_rm"]["accuracy"] <= 1.0
  rows = [json.loads(l) for l in open(os.path.join(model_dir, "base_rm", "metrics.jsonl"))]
  assert rows[-1]["split"] == "eval" and rows[-1]["step"] == 30
  # Re-running finds the finished checkpoint and its evaluation: no training, no evaluation.
  again = run_main(argv)
  assert again["base_rm"] == metrics["base_rm"]
  rows2 = [json.loads(l) for l in open(os.path.join(model_dir, "base_rm", "metrics.jsonl"))]
  assert rows2 == rows
  # Other data in the same MODEL_DIR would resume another run's checkpoint: refused.
  with pytest.raises(StageMismatch, match="train_pairs"):
    run_main(argv[:4] + ["--gin.DataSource.default_num_pairs=500"] + argv[5:])
  # So would another learning rate: the finished run would be reused as if trained with it.
  with pytest.raises(StageMismatch, match="optimizer"):
    run_main(argv + ["--gin.rm.training.make_optimizer.learning_rate=5e-3"])
  # More steps resume the finished run and evaluate again.
  more = run_main(argv[:2] + ["--gin.RewardModelRecipe.num_steps=35"] + argv[3:])
  rows3 = [json.loads(l) for l in open(os.path.join(model_dir, "base_rm", "metrics.jsonl"))]
  assert [r["step"] for r in rows3[len(rows):] if r["split"] == "eval"] == [35]
  assert more["base_rm"]["num_pairs"] == metrics["base_rm"]["num_pairs"]


@pytest.mark.slow
def test_policy_stage_end_to_end_writes_samples_a_file_policy_can_serve(tmp_path):
  from policies.policy import FileBackedPolicy
  model_dir = str(tmp_path / "policy")
  argv = ["--gin_file=gin/policy_demo.gin", f"--gin.MODEL_DIR={model_dir}",
          "--gin.RunSettings.progress=False", "--gin.DataSource.default_num_pairs=400",
          "--gin.PolicySft.num_steps=30", "--gin.PolicySft.num_prompts=4",
          "--gin.PolicySft.num_samples=3", "--gin.PolicySft.max_new_tokens=12"]
  metrics = run_main(argv)["policy_sft"]
  assert metrics["heldout_perplexity"] > 1.0 and "gold_reward_policy" in metrics
  served = FileBackedPolicy(os.path.join(model_dir, "policy_sft", "samples.jsonl"))
  assert len(served.samples) == 4 and all(len(v) == 3 for v in served.samples.values())
  assert "| policy_sft |" in open(os.path.join(model_dir, "report.md")).read()


@pytest.mark.slow
def test_west_of_n_pipeline_end_to_end_and_rerun_reuses_the_round(tmp_path):
  model_dir = str(tmp_path / "won")
  argv = ["--gin_file=gin/west_of_n_demo.gin", f"--gin.MODEL_DIR={model_dir}",
          "--gin.RunSettings.progress=False", "--gin.DataSource.default_num_pairs=300",
          "--gin.RewardModelRecipe.num_steps=20",
          "--gin.WestOfNSampling.max_new_tokens=12"] + SMALL_WEST_OF_N
  metrics = run_main(argv)
  report = open(os.path.join(model_dir, "report.md")).read()
  for row in ("| base_rm |", "| west_of_n_round1 |", "| human_100 |", "| West-of-N round |",
              "best-of-4"):
    assert row in report
  (variant,) = os.listdir(os.path.join(model_dir, "west_of_n"))
  round_dir = os.path.join(model_dir, "west_of_n", variant, "round1")
  counts = json.load(open(os.path.join(round_dir, "eval.json")))
  assert counts["kept"] > 0
  assert "synthetic" in metrics["west_of_n_round1"]["trained_on"]
  outputs = [os.path.join(round_dir, "synthetic_pairs.jsonl"),
             os.path.join(model_dir, "policy_sft", "samples.jsonl"),
             os.path.join(round_dir, "student", "eval.npz")]
  before = [os.path.getmtime(p) for p in outputs]
  again = run_main(argv)
  # Every stage is skipped: the round, the policy's samples, the student's evaluation.
  assert [os.path.getmtime(p) for p in outputs] == before
  for stage in ("base_rm", "policy_sft", "west_of_n_round1", "human_100"):
    assert again[stage] == metrics[stage], stage
  # A variant that only filters differently judges the same samples, not sampled again.
  (samples,) = os.listdir(os.path.join(model_dir, "west_of_n_samples"))
  samples = os.path.join(model_dir, "west_of_n_samples", samples)
  sampled_at = os.path.getmtime(samples)
  run_main(argv + ["--gin.WestOfNFilters.confidence_quantile=0.5"])
  assert os.path.getmtime(samples) == sampled_at
  variants = os.listdir(os.path.join(model_dir, "west_of_n"))
  assert len(variants) == 2
  judged = [[(r["prompt"], r["chosen"], r["rejected"], r["loglik_chosen"]) for r in
             map(json.loads, open(os.path.join(model_dir, "west_of_n", v, "round1",
                                               "candidates.jsonl")))] for v in variants]
  assert judged[0] == judged[1]
  # Beyond the paper: an ensemble judge (the base RM and one more, another seed) and
  # near-boundary pairs judge the same samples; the extra RM is in the report.
  ensemble = run_main(argv + ["--gin.WestOfNJudge.ensemble=2",
                              "--gin.WestOfNJudge.rejected_rank=2"])
  assert os.path.getmtime(samples) == sampled_at
  assert ensemble["judge_member1"]["trained_on"].endswith("(seed 1000)")
  (member_dir,) = glob.glob(os.path.join(model_dir, "west_of_n_judges", "*", "member1"))
  saved = json.load(open(os.path.join(member_dir, "eval.json")))
  assert saved["accuracy"] == ensemble["judge_member1"]["accuracy"]
  assert "| judge_member1 |" in open(os.path.join(model_dir, "report.md")).read()
  (new_variant,) = set(os.listdir(os.path.join(model_dir, "west_of_n"))) - set(variants)
  rows = [json.loads(l) for l in open(os.path.join(model_dir, "west_of_n", new_variant,
                                                   "round1", "candidates.jsonl"))]
  for row in rows:   # the mean picks best and runner-up; the mean probability is the confidence
    members = np.asarray(row["member_scores"])
    assert members.shape == (2, row["distinct_samples"])
    np.testing.assert_allclose(members.mean(0), row["base_scores"], atol=1e-6)
    best, runner_up = np.argsort(-members.mean(0), kind="stable")[:2]
    want = np.mean(1 / (1 + np.exp(-(members[:, best] - members[:, runner_up]))))
    assert row["confidence"] == pytest.approx(want, rel=1e-5)
  # The unlabeled part's own pairs judged too: the same samples; every pair the judge tells
  # apart joins the student's data with its soft label, written beside the round's pairs.
  judged = run_main(argv + ["--gin.WestOfNStudent.unlabeled_pairs=True"])
  assert os.path.getmtime(samples) == sampled_at
  (pairs_file,) = glob.glob(os.path.join(model_dir, "west_of_n", "*", "round1",
                                         "unlabeled_pairs.jsonl"))
  rows = [json.loads(l) for l in open(pairs_file)]
  assert rows and all(0.5 <= r["label"] == r["confidence"] <= 1.0 for r in rows)
  assert judged["west_of_n_round1"]["trained_on"].endswith(f" + judged unlabeled {len(rows)}")
  # The judged pairs alone (no synthetic pair in the mix): the policy is neither sampled nor
  # judged, so a filter that would keep no synthetic pair changes nothing.
  alone = run_main(argv + ["--gin.WestOfNStudent.unlabeled_pairs=True",
                           "--gin.WestOfNStudent.synthetic_per_human=0.0",
                           "--gin.WestOfNFilters.likelihood_threshold=1e9"])
  assert alone["west_of_n_round1"]["trained_on"].endswith(
      f" + synthetic 0 + judged unlabeled {len(rows)}")
  (alone_round,) = [d for d in glob.glob(os.path.join(model_dir, "west_of_n", "*", "round1"))
                    if not os.path.exists(os.path.join(d, "candidates.jsonl"))]
  assert os.path.exists(os.path.join(alone_round, "unlabeled_pairs.jsonl"))
  # Nothing to learn from: a clear error naming the counts and the knobs, no empty student.
  with pytest.raises(ConfigError, match=r"round 1 kept no synthetic pair from \d+ prompts .*"
                                        r"WestOfNSampling.max_prompts"):
    run_main(argv + ["--gin.WestOfNFilters.likelihood_threshold=1e9"])
  with pytest.raises(ConfigError, match=r"0 unlabeled prompts \(WestOfNSampling.max_prompts=0\)"):
    run_main(argv + ["--gin.WestOfNSampling.max_prompts=0"])


@pytest.mark.slow
def test_protocol_config_selects_on_validation_and_reports_gold_accuracy(tmp_path):
  """gin/west_of_n_protocol.gin on the sorting task: every RM keeps its best checkpoint on
  the validation part; the report adds gold accuracy and the pseudo-labels' gold accuracy."""
  model_dir = str(tmp_path / "protocol")
  argv = ["--gin_file=gin/west_of_n_protocol.gin", f"--gin.MODEL_DIR={model_dir}",
          "--gin.DataSource.task='sorting'", "--gin.RunSettings.progress=False",
          "--gin.DataSource.default_num_pairs=500", "--gin.RewardModelRecipe.num_steps=60",
          "--gin.RunSettings.eval_every=20", "--gin.Selection.min_steps=0",
          "--gin.Selection.patience=1", "--gin.WestOfNSampling.max_new_tokens=16",
          "--gin.WestOfNSampling.max_prompts=30"] + SMALL_WEST_OF_N
  metrics = run_main(argv)
  report = open(os.path.join(model_dir, "report.md")).read()
  assert "embedded sorting task" in report
  assert "| gold accuracy | kept step (stopped at) |" in report
  for stage in ("base_rm", "west_of_n_round1", "human_100"):
    m = metrics[stage]
    assert 0.0 <= m["gold_accuracy"] <= 1.0 and m["gold_pairs"] > 0
    assert m["best_step"] % 20 == 0 and m["best_step"] <= m["stopped_at"] <= 60
  saved = json.load(open(os.path.join(model_dir, "base_rm", "eval.json")))
  assert saved["best_step"] == metrics["base_rm"]["best_step"]
  counts = json.load(open(glob.glob(os.path.join(
      model_dir, "west_of_n", "*", "round1", "eval.json"))[0]))
  assert 0.0 <= counts["pseudo_label_gold_accuracy"] <= 1.0
  pairs = [json.loads(l) for l in open(glob.glob(os.path.join(
      model_dir, "west_of_n", "*", "round1", "synthetic_pairs.jsonl"))[0])]
  assert all(isinstance(p["gold_chosen"], float) for p in pairs)
  # a re-run restores each stage's selected checkpoint and its evaluation
  again = run_main(argv)
  for stage in ("base_rm", "west_of_n_round1", "human_100"):
    assert again[stage] == metrics[stage], stage


def test_an_empty_part_of_the_split_is_a_clear_error(tmp_path):
  rows = [{"prompt": "one prompt", "chosen": f"a{i}", "rejected": f"b{i}"} for i in range(6)]
  path = tmp_path / "one_prompt.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with pytest.raises(ValueError, match=r"left \['heldout'\] empty|left \['train'\] empty"):
    run_main(["--gin_file=gin/demo.gin", f"--gin.MODEL_DIR={tmp_path / 'm'}",
              f"--gin.DataSource.paths=['{path}']", "--gin.RunSettings.progress=False"])


@pytest.mark.slow
def test_west_of_n_with_a_pairwise_judge_and_tournament_end_to_end(tmp_path):
  from westofn import default_task
  model_dir = str(tmp_path / "won_pairwise")
  prompt_file = tmp_path / "prompts.jsonl"   # the user's own unlabeled prompts
  prompts = sorted({p.prompt for p in default_task.make_default_pairs(40, seed=7)})[:6]
  prompt_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
  argv = [f"--gin.DataSource.unlabeled_prompts={prompt_file}", "--gin_file=gin/west_of_n_demo.gin",
          f"--gin.MODEL_DIR={model_dir}",
          "--gin.RunSettings.progress=False", "--gin.DataSource.default_num_pairs=300",
          "--gin.RewardModelRecipe.num_steps=20", "--gin.PolicySft.num_steps=20",
          "--gin.PolicySft.num_prompts=4", "--gin.PolicySft.num_samples=2",
          "--gin.WestOfNSampling.num_samples=5", "--gin.WestOfNSampling.max_new_tokens=12",
          "--gin.WestOfNJudge.selection=tournament",
          "--gin.WestOfNFilters.confidence_quantile=0.5",
          "--gin.train.best_of_n=4", "--gin.train.stages=['base_rm', 'policy_sft', 'west_of_n']"]
  metrics = run_main(argv)
  assert 0.0 <= metrics["pairwise_pm"]["accuracy"] <= 1.0
  report = open(os.path.join(model_dir, "report.md")).read()
  assert "| pairwise_pm |" in report and "| west_of_n_round1 |" in report
  (variant,) = os.listdir(os.path.join(model_dir, "west_of_n"))
  round_dir = os.path.join(model_dir, "west_of_n", variant, "round1")
  counts = json.load(open(os.path.join(round_dir, "eval.json")))
  assert counts["prompts"] == 6
  # Two knockouts over <= 5 distinct samples (<= 4 comparisons each) + one P(best ≻ worst).
  assert 0 < counts["pairwise_comparisons"] <= counts["prompts"] * 9
  assert 0 < counts["pass_confidence"] < counts["usable"]
  rows = [json.loads(l) for l in open(os.path.join(round_dir, "candidates.jsonl"))]
  assert all(r["base_scores"] is None and 0.0 <= r["confidence"] <= 1.0 for r in rows)
  for png in (os.path.join(round_dir, "filters.png"),
              os.path.join(model_dir, "heldout_rewards.png")):
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_smollm2_hh_hir_and_c_rlft_configs_on_a_tiny_slice(tmp_path, hh_dir):
  """gin/smollm2_hh_hir.gin and gin/smollm2_hh_c_rlft.gin in one run, shrunk: SmolLM2 as the
  policy, improved by each with the SmolLM2-initialised RM, measured against where it
  started."""
  model_dir = str(tmp_path / "hh")
  metrics = run_main([
      "--gin_file=gin/smollm2_hh_hir.gin", "--gin_file=gin/smollm2_hh_c_rlft.gin",
      f"--gin.MODEL_DIR={model_dir}", f"--gin.DATA_PATH={hh_dir}/harmless-base-test.jsonl.gz",
      "--gin.train.stages=['base_rm', 'policy_sft', 'hir', 'c_rlft']",
      "--gin.RunSettings.progress=False", "--gin.RewardModelRecipe.num_steps=2",
      "--gin.DataSource.max_per_part={'train': 8, 'heldout': 4}",
      "--gin.PolicySft.num_prompts=2", "--gin.PolicySft.max_new_tokens=8",
      "--gin.PolicySft.max_eval_examples=4",
      "--gin.Hir.rounds=1", "--gin.Hir.num_bins=2", "--gin.Hir.batch=1",
      "--gin.Hir.row_len=256", "--gin.Hir.steps_per_round=2", "--gin.Hir.num_prompts=2",
      "--gin.Hir.num_samples=2", "--gin.Hir.eval_prompts=2", "--gin.Hir.eval_samples=1",
      "--gin.Hir.max_new_tokens=8", "--gin.CRlft.num_steps=2", "--gin.CRlft.num_prompts=2",
      "--gin.CRlft.num_samples=2", "--gin.CRlft.eval_prompts=2", "--gin.CRlft.eval_samples=1",
      "--gin.CRlft.max_new_tokens=8"])
  report = open(os.path.join(model_dir, "report.md")).read()
  for stage, steps in (("hir", 2), ("c_rlft", 2)):
    result = metrics[f"{stage} (base_rm)"]
    assert [st["label"] for st in result["steps"]][0] == "start" and len(result["steps"]) == steps
    assert abs(result["steps"][0]["kl_from_sft"]) < 1e-2   # the start is SmolLM2 itself
    assert all(np.isfinite(st["proxy_reward"]) and st["response_tokens"] > 0
               for st in result["steps"])
    assert os.path.exists(os.path.join(result["directory"], "before_after.md"))
    assert f"{stage} (base_rm)" in report
  classes = metrics["c_rlft (base_rm)"]["classes"]
  assert [c["class"] for c in classes] == ["human chosen", "human rejected", "policy sample"]
  assert [c["responses"] for c in classes] == [2, 2, 4]   # 2 pairs, 2 prompts x 2 samples


@pytest.mark.slow
def test_smollm2_hh_config_end_to_end_on_a_tiny_slice(tmp_path, hh_dir):
  """The README's SmolLM2 command, shrunk: RM from SmolLM2 with LoRA, the policy samples."""
  model_dir = str(tmp_path / "smollm2")
  argv = ["--gin_file=gin/smollm2_hh.gin", f"--gin.MODEL_DIR={model_dir}",
          f"--gin.DATA_PATH={hh_dir}/harmless-base-test.jsonl.gz",
          "--gin.RunSettings.progress=False",
          "--gin.RewardModelRecipe.num_steps=2",
          "--gin.DataSource.max_per_part={'train': 8, 'heldout': 4}",
          "--gin.rm/PretrainedLM.lora_rank=4", "--gin.Trainable.lora_only=True",
          "--gin.Trainable.frozen_layers=0", "--gin.PolicySft.num_prompts=2",
          "--gin.PolicySft.max_new_tokens=8", "--gin.PolicySft.max_eval_examples=4"]
  metrics = run_main(argv)
  assert metrics["base_rm"]["num_pairs"] == 4
  assert 1.0 < metrics["policy_sft"]["heldout_perplexity"] < 100.0   # a real LM, not random
  rows = [json.loads(l) for l in open(os.path.join(model_dir, "policy_sft", "samples.jsonl"))]
  assert len(rows) == 2 and all(r["samples"][0]["text"].strip() for r in rows)
  operative = open(os.path.join(model_dir, "config.gin")).read()
  assert "lora_only = True" in operative

