"""The RM outside training: named evaluation sets in a run's report, and the evaluate,
score and export commands on a trained MODEL_DIR; Hugging Face export and import checked
against transformers."""

import dataclasses
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import torch  # the test extra installs the CPU build
import transformers
from flax import nnx

from policies.hf_export import ExportError, export_reward_model
from policies.pretrained import PretrainedLM
from policies.transformer import LoRAParam, TransformerConfig
from rm.model import make_reward_model
from rm.response_rewards import score_responses
from rm.tasks import byte_vocabulary
from westofn import evaluate as evaluate_cmd
from westofn import export as export_cmd
from westofn import gold_tasks
from westofn import score as score_cmd
from westofn.cli.common import run_cli
from westofn.errors import ConfigError
from westofn.restore import load_run, restore_reward_model, reward_model_stages
from westofn.stages.reward_model import build_reward_model
from tests.test_train import SMALL_WEST_OF_N, run_main

SUBSETS = ("alpacaeval-easy", "mt-bench-hard", "donotanswer")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A tiny trained run on the default task with a named evaluation set ('ood': another
  draw of the task, with RewardBench subsets and gold rewards)."""
  root = tmp_path_factory.mktemp("commands")
  pairs = gold_tasks.make_pairs(gold_tasks.get_task("letters"), 90, seed=11, beta=2.0)
  ood = root / "ood.jsonl"
  ood.write_text("".join(json.dumps(
      {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected,
       "subset": SUBSETS[i % 3], "gold_chosen": p.gold_chosen,
       "gold_rejected": p.gold_rejected}) + "\n" for i, p in enumerate(pairs)))
  model_dir = str(root / "run")
  argv = ["--gin_file=gin/demo.gin", f"--gin.MODEL_DIR={model_dir}",
          "--gin.RewardModelRecipe.num_steps=30", "--gin.RunSettings.eval_every=0",
          "--gin.DataSource.default_num_pairs=400",
          f"--gin.DataSource.eval_paths={{'ood': '{ood}'}}"]
  metrics = run_main(argv)
  return dict(model_dir=model_dir, ood=str(ood), pairs=pairs, metrics=metrics, argv=argv)


def test_named_eval_sets_are_reported_and_evaluate_reproduces_them(trained, monkeypatch):
  model_dir = trained["model_dir"]
  in_run = trained["metrics"]["base_rm"]["eval_sets"]["ood"]
  assert in_run["num_pairs"] == 90 and 0.0 <= in_run["accuracy"] <= 1.0
  assert set(in_run["subsets"]) == set(SUBSETS) and {"Chat", "Chat Hard", "Safety"} == set(
      in_run["sections"])
  report = open(os.path.join(model_dir, "report.md")).read()
  assert "Named evaluation sets" in report and "ood: accuracy ± s.e." in report
  assert f"{in_run['accuracy']:.4f} ± {in_run['accuracy_se']:.4f}" in report
  assert os.path.exists(os.path.join(model_dir, "eval_sets", "base_rm.json"))
  # a re-run restores the finished stage and reads the cached figures instead of evaluating
  import westofn.eval_sets
  monkeypatch.setattr(westofn.eval_sets, "evaluate_on_set",
                      lambda *a, **k: pytest.fail("evaluated again"))
  again = run_main(trained["argv"])
  assert again["base_rm"]["eval_sets"]["ood"] == in_run
  monkeypatch.undo()
  # the evaluate command restores the stage from MODEL_DIR alone and gets the same figures
  out = os.path.join(model_dir, "eval_out.json")
  results = evaluate_cmd.main([f"--model_dir={model_dir}", f"--data=ood={trained['ood']}",
                               f"--output={out}"])
  assert results["base_rm"]["ood"] == in_run
  assert json.load(open(out))["results"]["base_rm"]["ood"]["accuracy"] == in_run["accuracy"]


def test_score_command_rewards_agree_with_evaluation(trained, tmp_path):
  model_dir, pairs = trained["model_dir"], trained["pairs"]
  rows = [{"prompt": p.prompt, "responses": [p.chosen, p.rejected], "id": i}
          for i, p in enumerate(pairs)]
  rows.append({"prompt": pairs[0].prompt, "response": pairs[0].chosen})
  src = tmp_path / "in.jsonl"
  src.write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = tmp_path / "out.jsonl"
  score_cmd.main([f"--model_dir={model_dir}", f"--input={src}", f"--output={out}",
                  "--normalize"])
  scored = [json.loads(line) for line in open(out)]
  assert [r.get("id") for r in scored] == [r.get("id") for r in rows]   # rows kept, in order
  rewards = np.array([r["rewards"] for r in scored[:-1]])
  accuracy = float(np.mean(rewards[:, 0] > rewards[:, 1]))
  ood = trained["metrics"]["base_rm"]["eval_sets"]["ood"]
  assert accuracy == pytest.approx(ood["accuracy"])
  assert float(np.mean(rewards[:, 0] - rewards[:, 1])) == pytest.approx(ood["margin_mean"],
                                                                        abs=1e-5)
  assert scored[-1]["reward"] == pytest.approx(rewards[0, 0], abs=1e-5)
  meta = restore_reward_model(load_run(model_dir), "base_rm").metadata
  np.testing.assert_allclose(scored[1]["rewards_normalized"],
                             (rewards[1] - meta["reward_mean"]) / meta["reward_std"], rtol=1e-6)


def test_label_with_the_runs_reward_model_agrees_with_score(trained, tmp_path):
  """``label --model_dir``: the judge interface's reward-model judge labels each pair by
  σ(r_a − r_b) with the rewards ``score`` gives, a labelled input pair is compared with its
  label, and a partial file of another judge is refused."""
  from westofn import label as label_cmd
  model_dir, pairs = trained["model_dir"], trained["pairs"][:24]
  rows = [{"prompt": p.prompt, "response_a": p.rejected, "response_b": p.chosen}
          for p in pairs[:12]]
  rows += [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs[12:]]
  src = tmp_path / "in.jsonl"
  src.write_text("".join(json.dumps(r) + "\n" for r in rows))
  scored_in = tmp_path / "score_in.jsonl"
  scored_in.write_text("".join(json.dumps({"prompt": p.prompt,
                                           "responses": [p.rejected, p.chosen]}) + "\n"
                               for p in pairs[:12]) + "".join(
      json.dumps({"prompt": p.prompt, "responses": [p.chosen, p.rejected]}) + "\n"
      for p in pairs[12:]))
  score_cmd.main([f"--model_dir={model_dir}", f"--input={scored_in}",
                  f"--output={tmp_path / 'scored.jsonl'}"])
  rewards = np.array([json.loads(line)["rewards"] for line in open(tmp_path / "scored.jsonl")])
  out = tmp_path / "labelled.jsonl"
  label_cmd.main([f"--model_dir={model_dir}", "--stage=base_rm", f"--input={src}",
                  f"--output={out}", "--no_progress"])
  labelled = [json.loads(line) for line in open(out)]
  assert len(labelled) == 24
  for row, (r_a, r_b), given in zip(labelled, rewards, rows):
    a = given.get("response_a", given.get("chosen"))
    b = given.get("response_b", given.get("rejected"))
    assert (row["chosen"], row["rejected"]) == ((a, b) if r_a >= r_b else (b, a))
    assert row["judge_reward_a"] == pytest.approx(r_a, abs=1e-5)
    assert row["judge_probability"] == pytest.approx(1 / (1 + np.exp(-abs(r_a - r_b))),
                                                     abs=1e-5)
    assert row["judge"].startswith("reward model base_rm of ") and "position_flip" not in row
  agree = [r["agrees_with_input"] for r in labelled[12:]]
  assert np.mean(agree) == pytest.approx(np.mean(rewards[12:, 0] >= rewards[12:, 1]))
  # a partial file by the LM judge is refused; LM flags with --model_dir are an error
  with open(str(out) + ".partial", "w") as f:
    f.write(json.dumps({**labelled[0], "judge": "SmolLM2"}) + "\n")
  with pytest.raises(ConfigError, match=r"line 1: judge: was labelled by 'SmolLM2'"):
    label_cmd.main([f"--model_dir={model_dir}", f"--input={src}", f"--output={out}",
                    "--no_progress", "--stage=base_rm"])
  with pytest.raises(SystemExit):
    label_cmd.main([f"--model_dir={model_dir}", "--principles=p.txt", f"--input={src}",
                    f"--output={out}"])


def test_commands_give_one_line_errors(trained, tmp_path, capsys):
  model_dir = trained["model_dir"]
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n"
                 + json.dumps({"prompt": "a"}) + "\n")
  no_prompt = tmp_path / "no_prompt.jsonl"
  no_prompt.write_text(json.dumps({"prompt": [{"role": "user"}], "response": "b"}) + "\n")
  cases = [
      (score_cmd.main, [f"--model_dir={model_dir}", f"--input={bad}", "--output=x.jsonl"], 3,
       "bad.jsonl:2: response: missing"),
      (score_cmd.main, [f"--model_dir={model_dir}", f"--input={no_prompt}",
                        "--output=x.jsonl"], 3, "no_prompt.jsonl:1: prompt[0].content"),
      (score_cmd.main, [f"--model_dir={model_dir}", f"--input={bad}", "--output=x.jsonl",
                        "--stage=nope"], 2, "no trained reward model stage 'nope'; the run has "
       "['base_rm']"),
      (evaluate_cmd.main, [f"--model_dir={tmp_path}", f"--data={bad}"], 2, "no config.gin"),
  ]
  for main, argv, code, message in cases:
    with pytest.raises(SystemExit) as e:
      run_cli(main, argv)
    assert e.value.code == code
    assert message in capsys.readouterr().err


def _hf_rewards(hf_dir, sequences):
  """transformers' rewards: right-padded with the exported pad token, read at the last
  non-pad token (its own rule)."""
  model = transformers.AutoModelForSequenceClassification.from_pretrained(
      hf_dir, dtype=torch.float32).eval()
  pad = model.config.pad_token_id
  ids = torch.full((len(sequences), max(map(len, sequences))), pad)
  mask = torch.zeros_like(ids)
  for i, s in enumerate(sequences):
    ids[i, :len(s)], mask[i, :len(s)] = torch.tensor(np.asarray(s)), 1
  with torch.no_grad():
    return model(input_ids=ids, attention_mask=mask).logits[:, 0].numpy()


def _ours(reward_model, items, vocab):
  scores = score_responses(reward_model, items, eos_id=vocab.eos_id, pad_id=vocab.pad_id,
                           row_len=256, max_response_len=64)
  return np.concatenate(scores)


def _items(vocab, pairs):
  from westofn.samples import scoring_items
  return scoring_items(vocab, [p.prompt for p in pairs], [[p.chosen, p.rejected] for p in pairs])


def _sequences(items, eos_id):
  return [np.concatenate([p, r, [eos_id]]) for p, rs in items for r in rs]


def test_export_command_equals_transformers(trained, tmp_path):
  out = str(tmp_path / "hf")
  config = export_cmd.main([f"--model_dir={trained['model_dir']}", f"--out={out}"])
  assert config["architectures"] == ["LlamaForSequenceClassification"]
  vocab = byte_vocabulary()
  rm = restore_reward_model(load_run(trained["model_dir"]), "base_rm")
  items = _items(vocab, trained["pairs"][:8])
  ours, theirs = _ours(rm.model, items, vocab), _hf_rewards(out, _sequences(items, vocab.eos_id))
  print(f"max |reward difference| = {np.abs(ours - theirs).max():.1e}")
  np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("qkv_bias", [False, True], ids=["llama", "qwen2"])
def test_export_merges_lora_and_keeps_qwen2_biases(tmp_path, qkv_bias):
  vocab = byte_vocabulary()
  cfg = TransformerConfig(vocab_size=vocab.vocab_size, d_model=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, ffn_dim=96, qkv_bias=qkv_bias, lora_rank=2,
                          tie_embeddings=False)
  model = make_reward_model(cfg, seed=3)
  rng = np.random.default_rng(0)
  for block in model.backbone.blocks:   # adapters and biases that change the output
    for lora in (block.attn.lora_q, block.attn.lora_o, block.mlp.lora_down):
      lora.b[...] = jnp.asarray(rng.normal(0, 0.3, lora.b.shape), jnp.float32)
    if qkv_bias:
      block.attn.bq[...] = jnp.asarray(rng.normal(0, 0.5, block.attn.bq.shape), jnp.float32)
  export_reward_model(model, vocab, str(tmp_path))
  arch = json.load(open(tmp_path / "config.json"))["architectures"][0]
  assert arch == ("Qwen2ForSequenceClassification" if qkv_bias else
                  "LlamaForSequenceClassification")
  pairs = gold_tasks.make_pairs(gold_tasks.get_task("letters"), 6, seed=1, beta=2.0)
  items = _items(vocab, pairs)
  np.testing.assert_allclose(_hf_rewards(str(tmp_path), _sequences(items, vocab.eos_id)),
                             _ours(model, items, vocab), atol=1e-5, rtol=1e-5)
  model.head_b[...] = jnp.float32(0.5)
  with pytest.raises(ExportError, match="bias"):
    export_reward_model(model, vocab, str(tmp_path / "b"))


@pytest.mark.slow
def test_import_a_transformers_reward_model_as_base_rm_and_judge(tmp_path):
  torch.manual_seed(0)
  vocab = byte_vocabulary()
  hf_cfg = transformers.LlamaConfig(
      vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, intermediate_size=96, rms_norm_eps=1e-5,
      max_position_embeddings=512, num_labels=1, pad_token_id=0)
  transformers.LlamaForSequenceClassification(hf_cfg).save_pretrained(str(tmp_path / "rm"))
  backbone = PretrainedLM(path=str(tmp_path / "rm"))
  model = build_reward_model(model_config=None, backbone=backbone, vocabulary=vocab, seed=0)
  pairs = gold_tasks.make_pairs(gold_tasks.get_task("letters"), 6, seed=2, beta=2.0)
  items = _items(vocab, pairs)
  np.testing.assert_allclose(_ours(model, items, vocab),
                             _hf_rewards(str(tmp_path / "rm"), _sequences(items, vocab.eos_id)),
                             atol=1e-5, rtol=1e-5)
  # in a run: the imported RM is the base RM as it is (0 steps) and judges West-of-N
  gin_file = tmp_path / "import.gin"
  gin_file.write_text(
      "from __gin__ import dynamic_registration\nimport policies.pretrained\n"
      "import westofn.settings\nimport westofn.train as train_script\n"
      "include 'west_of_n_demo.gin'\n"
      "westofn.settings.RewardModelRecipe.model_config = None\n"
      "westofn.settings.RewardModelRecipe.backbone = @policies.pretrained.PretrainedLM()\n"
      f"policies.pretrained.PretrainedLM.path = '{tmp_path / 'rm'}'\n")
  model_dir = str(tmp_path / "run")
  metrics = run_main([f"--gin_file={gin_file}", f"--gin.MODEL_DIR={model_dir}",
                      "--gin.RewardModelRecipe.base_rm_steps=0",
                      "--gin.RewardModelRecipe.num_steps=10",
                      "--gin.PretrainedLM.lora_rank=2",   # the students train LoRA adapters
                      "--gin.DataSource.default_num_pairs=300",
                      "--gin.train.stages=['base_rm', 'policy_sft', 'west_of_n']",
                      "--gin.WestOfNSampling.max_prompts=12",
                      "--gin.WestOfNSampling.max_new_tokens=8"]
                     + SMALL_WEST_OF_N + ["--gin.PolicySft.num_steps=5"])
  run = load_run(model_dir)
  base = restore_reward_model(run, "base_rm")
  assert base.step == 0   # the imported RM as it is: its rewards, its held-out accuracy
  np.testing.assert_allclose(_ours(base.model, items, vocab), _ours(model, items, vocab),
                             atol=1e-6)
  assert metrics["base_rm"]["accuracy"] == _heldout_accuracy(run, model)
  # the student (LoRA on the imported RM) restored by the evaluate command, on the run's own
  # held-out pairs, gives the accuracy the run reported
  student_name = next(k for k in metrics if "west_of_n" in k)
  (student_stage,) = [s for s in reward_model_stages(model_dir) if s.endswith("student")]
  heldout = _write_heldout(run, tmp_path / "heldout.jsonl")
  results = evaluate_cmd.evaluate(model_dir=model_dir, data=[f"heldout={heldout}"],
                                  stages=[student_stage])
  student = restore_reward_model(run, student_stage)
  assert any(isinstance(v, LoRAParam) for _, v in nnx.iter_graph(student.model))
  assert results[student_stage]["heldout"]["accuracy"] == pytest.approx(
      metrics[student_name]["accuracy"])


def _write_heldout(run, path):
  from westofn import pipeline
  parts = pipeline.load_preference_data(source=run.data, vocabulary=run.vocabulary).raw
  path.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen,
                                      "rejected": p.rejected}) + "\n"
                          for p in parts["heldout"]))
  return str(path)


def _heldout_accuracy(run, model):
  from westofn import pipeline
  from westofn.eval_sets import EvalSet, evaluate_on_set
  data = pipeline.load_preference_data(source=run.data, vocabulary=run.vocabulary)
  s = EvalSet("heldout", data.raw["heldout"], data.tokenized["heldout"])
  return evaluate_on_set(model, s, batching=run.batching, vocabulary=run.vocabulary,
                         pairwise=False)["accuracy"]


def test_evaluate_scores_rewardbench2_and_rmbench_as_the_leaderboards_and_rescores(
    trained, tmp_path):
  """RewardBench-2- and RM-Bench-format files made from the task's pairs: every completion
  scored on its own (rewards equal the score command's), the sections as the reference code
  computes them, and --rescore recomputes every figure from the completions file alone."""
  from tests.test_leaderboards import compute_accuracy, process_single_model, rb2_row, reroll_result
  pairs = trained["pairs"]
  rb2 = []
  for i, p in enumerate(pairs[:40]):
    others = [q.rejected for q in pairs[i + 1:i + 3]]
    rb2.append({**rb2_row(i, ("Factuality", "Math", "Focus")[i % 3], [p.chosen],
                          [p.rejected] + others), "prompt": p.prompt})
  for pid in range(6):   # Ties: a reference prompt (1 correct) and a tied one (2 correct)
    p, q = pairs[40 + 2 * pid], pairs[41 + 2 * pid]
    rb2.append({**rb2_row(100 + pid, "Ties", [p.chosen], [p.rejected, q.rejected],
                          row_id=f"ref:{pid}"), "prompt": p.prompt})
    rb2.append({**rb2_row(200 + pid, "Ties", [p.chosen, q.chosen], [p.rejected],
                          row_id=f"tied:{pid}"), "prompt": p.prompt})
  rmb = [{"id": i, "prompt": p.prompt, "domain": ("chat", "math", "code", "safety-refuse")[i % 4],
          "chosen": [p.chosen, p.chosen + "a", p.chosen + "ab"],
          "rejected": [p.rejected, p.rejected + "a", p.rejected + "ab"]}
         for i, p in enumerate(pairs[60:84])]
  (tmp_path / "rb2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rb2))
  (tmp_path / "rmb.json").write_text(json.dumps(rmb))
  out = str(tmp_path / "ev.json")
  live = evaluate_cmd.main([f"--model_dir={trained['model_dir']}", f"--data=rb2={tmp_path}/rb2.jsonl",
                            f"--data=rmb={tmp_path}/rmb.json", f"--data=ood={trained['ood']}",
                            "--stage=base_rm", f"--output={out}"])["base_rm"]
  # every completion's reward, from the score command's path (rm.response_rewards)
  rm = restore_reward_model(load_run(trained["model_dir"]), "base_rm")
  run = load_run(trained["model_dir"])
  b = run.batching
  from westofn.samples import score_texts
  reward = lambda rows: score_texts(rm.model, run.vocabulary, [r["prompt"] for r in rows],
                                    [r["chosen"] + r["rejected"] for r in rows],
                                    rows=b.eval_rows or b.rows, row_len=b.row_len,
                                    max_response_len=b.max_response_len,
                                    max_per_row=max(2, 2 * b.pairs_per_row))
  rb2_rewards = reward(rb2)
  for section in ("Factuality", "Math", "Focus"):
    want = np.mean([reroll_result(r) for row, r in zip(rb2, rb2_rewards)
                    if row["subset"] == section])
    assert live["rb2"]["sections"][section] == pytest.approx(want, abs=1e-6)
  ties = [{"id": row["id"], "scores": list(r), "num_correct": len(row["chosen"])}
          for row, r in zip(rb2, rb2_rewards) if row["subset"] == "Ties"]
  assert live["rb2"]["sections"]["Ties"] == pytest.approx(process_single_model(ties), abs=1e-6)
  assert live["rb2"]["overall"] == pytest.approx(np.mean(list(live["rb2"]["sections"].values())))
  rmb_rewards = reward(rmb)
  for domain in ("chat", "math", "code", "safety"):
    ref = compute_accuracy([{"score_chosen": r[:3], "score_rejected": r[3:]}
                            for row, r in zip(rmb, rmb_rewards)
                            if row["domain"].startswith(domain)])
    got = live["rmb"]["domains"][domain]
    assert (got["hard"], got["normal"], got["easy"]) == pytest.approx(
        (ref["hard_acc"], ref["normal_acc"], ref["easy_acc"]), abs=1e-6)
  # the completions file holds every completion; --rescore gives every figure again
  completions = str(tmp_path / "ev.completions.jsonl")
  lines = [json.loads(x) for x in open(completions)]
  assert len([x for x in lines if x["set"] == "rb2"]) == sum(
      len(r["chosen"]) + len(r["rejected"]) for r in rb2)
  again = evaluate_cmd.main([f"--rescore={completions}"])["base_rm"]
  from westofn.leaderboards import json_figures
  for name in ("rb2", "rmb"):
    assert json_figures(again[name]) == json_figures(live[name])
  assert again["ood"] == live["ood"] == trained["metrics"]["base_rm"]["eval_sets"]["ood"]


def test_evaluate_restores_a_pairwise_model(trained, tmp_path):
  import shutil
  from westofn import pipeline
  from westofn import stages as stages_lib
  model_dir = str(tmp_path / "run")
  shutil.copytree(trained["model_dir"], model_dir)
  run = load_run(model_dir)
  data = pipeline.load_preference_data(source=run.data, vocabulary=run.vocabulary)
  judge = stages_lib.pairwise_judge(
      data=data, run=stages_lib.RunContext(model_dir=model_dir, vocabulary=run.vocabulary,
                                           progress=False),
      recipe=dataclasses.replace(run.rm_recipe, num_steps=8))
  results = evaluate_cmd.evaluate(model_dir=model_dir, data=[f"ood={trained['ood']}"])
  assert set(results) == {"base_rm", "pairwise_pm"}
  from westofn.eval_sets import evaluate_on_set
  want = evaluate_on_set(judge.model, data.eval_sets["ood"], batching=run.batching,
                         vocabulary=run.vocabulary, pairwise=True,
                         sections=run.data.eval_sections,
                         count_overrides=run.data.eval_count_overrides)
  assert results["pairwise_pm"]["ood"] == want and "margin_mean" not in want
  assert results["base_rm"]["ood"] == trained["metrics"]["base_rm"]["eval_sets"]["ood"]


@pytest.mark.slow
def test_smollm2_export_equals_transformers_on_real_hh_pairs(hh_dir, tmp_path):
  """SmolLM2-135M as a reward model (a seeded head on the pretrained decoder), exported with
  its tokenizer and chat template: transformers' tokenizer gives westofn's token ids and
  its model westofn's rewards on real HH pairs."""
  from rm.bpe_vocabulary import pretrained_vocabulary
  from rm.data import read_preference_files
  vocab = pretrained_vocabulary()
  model = build_reward_model(model_config=None, backbone=PretrainedLM(), vocabulary=vocab,
                             seed=0)
  export_reward_model(model, vocab, str(tmp_path))
  pairs, _ = read_preference_files(os.path.join(hh_dir, "helpful-base-test.jsonl.gz"),
                                   max_pairs=40)
  pairs = sorted(pairs, key=lambda p: len(p.prompt) + len(p.chosen) + len(p.rejected))[:4]
  items = _items(vocab, pairs)
  sequences = _sequences(items, vocab.eos_id)
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  from rm.bpe_vocabulary import hh_to_messages
  for i, p in enumerate(pairs):
    text = tokenizer.apply_chat_template(hh_to_messages(p.prompt), add_generation_prompt=True,
                                         tokenize=False)
    ids = tokenizer(text + p.chosen.lstrip() + tokenizer.eos_token,
                    add_special_tokens=False)["input_ids"]
    assert ids == sequences[2 * i].tolist()
  ours, theirs = _ours(model, items, vocab), _hf_rewards(str(tmp_path), sequences)
  print(f"SmolLM2 on HH: max |reward difference| = {np.abs(ours - theirs).max():.1e} "
        f"(rewards {ours.min():+.3f} .. {ours.max():+.3f})")
  np.testing.assert_allclose(theirs, ours, atol=2e-4, rtol=1e-4)
