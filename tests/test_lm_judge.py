"""rm/lm_judge.py, westofn/ai_feedback.py and westofn/label.py: the LM judge's pure parts
against numpy, its score against teacher-forced log-probabilities, exact order swapping,
clear template errors, the label command (output read back as training data, resume after
a kill) and West-of-N with ``WestOfNJudge.kind='lm'``."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from policies.policy import FileBackedPolicy
from policies.sampling import score_tokens
from policies.transformer import Decoder, TransformerConfig
from rm import tasks
from rm.data import read_preference_file
from rm.lm_judge import JudgePrompt, LMJudge, debiased_logit, position_flips, read_principles
from westofn import selection
from westofn import label as label_cmd
from westofn.errors import ConfigError
from westofn.judges import make_judge
from westofn.west_of_n import generate_synthetic_pairs, settings_record
from westofn.settings import LMJudgeSettings, ScoringRows, WestOfN, WestOfNJudge

CONVERSATION = "\n\nHuman: Which is the largest planet?\n\nAssistant:"


@pytest.fixture(scope="module")
def judge():
  cfg = TransformerConfig(vocab_size=259, d_model=32, num_layers=2, num_heads=2, num_kv_heads=1,
                          ffn_dim=64)
  return LMJudge(Decoder(cfg, rngs=nnx.Rngs(3)), tasks.byte_vocabulary(), batch_size=4,
                 bucket=32, max_len=512)


def _numpy_debiased(ab, ba):
  return (np.asarray(ab, np.float64) - np.asarray(ba, np.float64)) / 2


@pytest.mark.parametrize("jit", [False, True])
def test_debiased_logit_and_position_flips_against_numpy(jit):
  rng = np.random.default_rng(0)
  ab, ba = rng.normal(size=17).astype(np.float32), rng.normal(size=17).astype(np.float32)
  ab[0], ba[0] = 1.0, 1.0     # a wins first, b wins first: flipped
  ab[1], ba[1] = 2.0, -1.0    # a wins in both orders
  ab[2], ba[2] = 0.0, -0.5    # a tie counts for the second position (b), then a wins
  f, g = (jax.jit(debiased_logit), jax.jit(position_flips)) if jit else (debiased_logit,
                                                                         position_flips)
  np.testing.assert_allclose(f(ab, ba), _numpy_debiased(ab, ba), rtol=1e-6)
  want_flips = (ab > 0) != (ba < 0)
  np.testing.assert_array_equal(g(ab, ba), want_flips)
  assert bool(g(ab, ba)[0]) and not bool(g(ab, ba)[1]) and bool(g(ab, ba)[2])
  # A judge that adds the same first-position bonus c to both orders is debiased exactly.
  np.testing.assert_allclose(f(ab + 3.0, ba + 3.0), f(ab, ba), atol=1e-5)
  for fn in (debiased_logit, position_flips):
    with pytest.raises(ValueError, match="shape"):
      fn(ab, ba[:-1])


def test_judge_score_equals_teacher_forced_log_probabilities(judge):
  a, b = "Jupiter is the largest planet.", "Saturn."
  verdicts = judge.judge([CONVERSATION], [a], [b])
  for (first, second), got in (((a, b), verdicts.logit_ab[0]), ((b, a), verdicts.logit_ba[0])):
    ids, cut = judge.context_ids(CONVERSATION, first, second)
    assert not cut
    text = judge.text(CONVERSATION, first, second)
    assert "Response A:\n" + first in text and "Response B:\n" + second in text
    assert list(ids) == judge.vocabulary.encode(text)
    logp = score_tokens(judge.model, [ids, ids], [judge.label_ids[:1], judge.label_ids[1:]])
    np.testing.assert_allclose(got, logp[0][0] - logp[1][0], atol=2e-5)
  assert verdicts.probability[0] == pytest.approx(
      1 / (1 + np.exp(-(verdicts.logit_ab[0] - verdicts.logit_ba[0]) / 2)), rel=1e-9)


def test_swapping_the_order_is_exact_and_batches_do_not_change_verdicts(judge):
  rng = np.random.default_rng(1)
  words = ["yes", "no", "maybe later", "the answer is 42", "I cannot help with that", "sure"]
  convs = [CONVERSATION, "Sort: c a b", "\n\nHuman: hi\n\nAssistant:"] * 3
  a = [" ".join(rng.choice(words, 3)) for _ in convs]
  b = [" ".join(rng.choice(words, 2)) + "!" for _ in convs]
  forward, backward = judge.judge(convs, a, b), judge.judge(convs, b, a)
  np.testing.assert_array_equal(forward.logit_ab, backward.logit_ba)
  np.testing.assert_array_equal(forward.logit_ba, backward.logit_ab)
  np.testing.assert_array_equal(forward.logit, -backward.logit)
  np.testing.assert_array_equal(forward.flips, backward.flips)
  # One pair alone (another batch and bucket of rows) gives the same numbers.
  alone = judge.judge(convs[4:5], a[4:5], b[4:5])
  np.testing.assert_allclose(alone.logit_ab, forward.logit_ab[4:5], atol=1e-5)


def test_templates_without_the_answer_tokens_are_clear_errors(judge):
  model, vocab = judge.model, judge.vocabulary
  with pytest.raises(ValueError, match=r"lacks \{response_b\}"):
    LMJudge(model, vocab, prompt=JudgePrompt(instruction="{conversation} A: {response_a} B?"))
  with pytest.raises(ValueError, match="never names the answer label 'C'"):
    LMJudge(model, vocab, prompt=JudgePrompt(labels=("A", "C")))
  with pytest.raises(ValueError, match="'First' is 5 tokens"):
    LMJudge(model, vocab, prompt=JudgePrompt(
        labels=("First", "Second"),
        instruction="{conversation} First: {response_a} Second: {response_b}"))
  with pytest.raises(ValueError, match="two different labels"):
    JudgePrompt(labels=("A", "A")).check()


def test_principles_and_truncation(judge, tmp_path):
  path = tmp_path / "principles.txt"
  path.write_text("# Constitutional principles\n- Be honest.\n\n2. Be harmless.\n")
  assert read_principles(str(path)) == ["Be honest.", "Be harmless."]
  (tmp_path / "empty.txt").write_text("# nothing\n\n")
  with pytest.raises(ValueError, match="holds no principles"):
    read_principles(str(tmp_path / "empty.txt"))
  with pytest.raises(FileNotFoundError, match="no such principles file"):
    read_principles(str(tmp_path / "missing.txt"))
  with_principles = LMJudge(judge.model, judge.vocabulary, principles=read_principles(str(path)))
  text = with_principles.text("hi", "x", "y")
  quoted = judge.text("hi", "I write {response_b} literally", "y")
  assert "Response A:\nI write {response_b} literally" in quoted
  assert "1. Be honest.\n2. Be harmless.\n" in text and "principles" not in judge.text("hi", "x",
                                                                                          "y")
  short = LMJudge(judge.model, judge.vocabulary, max_len=400)
  long_conversation = "\n\nHuman: " + "blah " * 300 + "the end?\n\nAssistant:"
  ids, cut = short.context_ids(long_conversation, "one", "two")
  assert cut and len(ids) <= 400
  text = judge.vocabulary.decode(ids.tolist())
  assert "the end?" in text and "one" in text and "two" in text   # the start went first
  verdicts = short.judge([long_conversation, "hi"], ["one", "x"], ["two", "y"])
  assert verdicts.truncated == 1


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _unlabeled_rows():
  return ([{"prompt": f"Say something about {w}.", "response_a": f"{w} is fine.",
            "response_b": f"I refuse to talk about {w}."} for w in ("cats", "rain", "tea")]
          + [{"prompt": "Count to three.", "responses": ["1 2 3", "3 2 1"]}]
          + [{"chosen": "\n\nHuman: hi\n\nAssistant: Hello! How can I help?",
              "rejected": "\n\nHuman: hi\n\nAssistant: go away"}])


@pytest.fixture()
def tiny_judge_settings(judge, monkeypatch):
  """The label command's judge is the tiny one (a GGUF needs a real model file)."""
  calls = []

  def build(settings):
    calls.append(settings)
    return judge
  monkeypatch.setattr(label_cmd, "build_lm_judge", build)
  return calls


def test_label_command_output_reads_back_as_training_data(tmp_path, judge, tiny_judge_settings):
  src = _write_jsonl(tmp_path / "pairs.jsonl", _unlabeled_rows())
  out = str(tmp_path / "labelled.jsonl")
  label_cmd.main([f"--input={src}", f"--output={out}", "--no_progress"])
  rows = [json.loads(line) for line in open(out)]
  assert len(rows) == 5 and not os.path.exists(out + ".partial")
  pairs, _ = read_preference_file(out)
  assert [p.prompt for p in pairs][:4] == [r["prompt"] for r in _unlabeled_rows()[:4]]
  direct = judge.judge([r["prompt"] for r in rows[:3]], [r["response_a"] for r in
                                                         _unlabeled_rows()[:3]],
                       [r["response_b"] for r in _unlabeled_rows()[:3]])
  for row, p_a, src_row in zip(rows, direct.probability, _unlabeled_rows()):
    assert row["judge_probability"] == pytest.approx(max(p_a, 1 - p_a), rel=1e-9)
    assert row["chosen"] == (src_row["response_a"] if p_a >= 0.5 else src_row["response_b"])
    assert row["judge_probability"] >= 0.5 and isinstance(row["position_flip"], bool)
  assert "agrees_with_input" in rows[4] and "agrees_with_input" not in rows[0]
  assert rows[4]["source"] == f"{src}:5"


def test_label_command_resumes_after_a_kill(tmp_path, judge, tiny_judge_settings, monkeypatch):
  src = _write_jsonl(tmp_path / "pairs.jsonl", _unlabeled_rows() * 3)   # 15 pairs
  whole = str(tmp_path / "whole.jsonl")
  label_cmd.label(input_path=src, output_path=whole, settings=LMJudgeSettings(),
                  chunk=4, progress=False)
  out = str(tmp_path / "labelled.jsonl")
  real, calls = judge.judge, []

  def dies_on_third_chunk(*args, **kwargs):
    calls.append(len(args[0]))
    if len(calls) == 3:
      raise KeyboardInterrupt   # as a kill mid-run
    return real(*args, **kwargs)
  monkeypatch.setattr(judge, "judge", dies_on_third_chunk)
  with pytest.raises(KeyboardInterrupt):
    label_cmd.label(input_path=src, output_path=out, settings=LMJudgeSettings(),
                    chunk=4, progress=False)
  assert not os.path.exists(out)
  with open(out + ".partial", "a") as f:
    f.write('{"prompt": "torn')   # a line cut by the kill
  calls.clear()
  monkeypatch.setattr(judge, "judge", lambda *a, **k: (calls.append(len(a[0])), real(*a, **k))[1])
  label_cmd.label(input_path=src, output_path=out, settings=LMJudgeSettings(),
                  chunk=4, progress=False)
  assert calls == [4, 3]   # the 8 labelled pairs were not judged again
  assert open(out).read() == open(whole).read()
  # A partial file of other input is refused, not mixed in.
  other = _write_jsonl(tmp_path / "other.jsonl", list(reversed(_unlabeled_rows())))
  with open(out + ".partial", "w") as f:
    f.write(open(whole).readline())
  with pytest.raises(ConfigError, match=r"labelled\.jsonl\.partial: line 1: input_key"):
    label_cmd.label(input_path=other, output_path=out, settings=LMJudgeSettings(),
                    progress=False)
  with open(out + ".partial", "w") as f:   # the same input, another judge
    f.write(open(whole).readline())
  with pytest.raises(ConfigError, match=r"line 1: judge: was labelled by"):
    label_cmd.label(input_path=src, output_path=out, progress=False,
                    settings=LMJudgeSettings(principles_file="p.txt"))


def test_label_command_input_errors_name_file_row_and_field(tmp_path, tiny_judge_settings):
  cases = [({"prompt": "p", "response_a": "x"}, "bad.jsonl:1: response_b: must be a non-empty"),
           ({"prompt": "p", "responses": ["x"]}, "bad.jsonl:1: responses: must be a list of two"),
           ({"prompt": "p", "response_a": "x", "response_b": "x"}, "is identical to"),
           ({"prompt": "p", "chosen": "x"}, "bad.jsonl:1: rejected: .*give response_a")]
  for row, message in cases:
    src = _write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(Exception, match=message) as e:
      label_cmd.label(input_path=src, output_path=str(tmp_path / "o.jsonl"),
                      settings=LMJudgeSettings(), progress=False)
    assert "bad.jsonl" in str(e.value)
  assert not tiny_judge_settings   # no model was loaded for bad input


def test_label_settings_from_flags_and_gin(tmp_path):
  settings = label_cmd.settings_from_flags(
      judge="/m.gguf", principles=None, max_len=None, batch_size=2, matmul_dtype="bfloat16",
      bindings=["JudgePrompt.labels = ('1', '2')",
                "JudgePrompt.instruction = '{conversation} 1: {response_a} 2: {response_b}'",
                "LMJudgeSettings.max_len = 300"])
  assert settings.pretrained.path == "/m.gguf" and settings.pretrained.matmul_dtype == "bfloat16"
  assert (settings.max_len, settings.batch_size, settings.prompt.labels) == (300, 2, ("1", "2"))
  with pytest.raises(ConfigError, match="lacks"):
    label_cmd.settings_from_flags(judge=None, principles=None, max_len=None, batch_size=None,
                                  matmul_dtype=None,
                                  bindings=["JudgePrompt.instruction = 'A or B?'"])


def test_west_of_n_with_the_lm_judge_picks_knockout_winners(tmp_path, judge):
  prompts = ["Sort: b a", "Name a color.", "Say hi."]
  texts = [["a b", "b a", "a a b", "ab"], ["red", "blue", "green"], ["hi", "hello there"]]
  path = tmp_path / "samples.jsonl"
  # four samples each; repeats are judged once
  _write_jsonl(path, [{"prompt": p, "samples": [{"text": t, "token_logprobs": [-1.0] * 3}
                                                for t in (ts * 2)[:4]]}
                      for p, ts in zip(prompts, texts)])
  settings = WestOfN.build(num_samples=4, kind="lm",
                           scoring=ScoringRows(max_response_len=32, row_len=64))
  result, provenance = generate_synthetic_pairs(
      judge=make_judge(settings=settings.judge, vocabulary=tasks.byte_vocabulary(),
                       make_lm_judge=lambda: judge),
      policy=FileBackedPolicy(str(path)), vocabulary=tasks.byte_vocabulary(),
      prompts=prompts, settings=settings, round_index=1, seed=0)
  compare = judge.comparator(prompts, texts)
  best, _ = selection.knockout([len(t) for t in texts], compare, find="best")
  worst, _ = selection.knockout([len(t) for t in texts], compare, find="worst")
  assert [r["chosen"] for r in provenance] == [t[i] for t, i in zip(texts, best)]
  assert [r["rejected"] for r in provenance] == [t[i] for t, i in zip(texts, worst)]
  for row, t, b, w in zip(provenance, texts, best, worst):
    want = judge.judge([row["prompt"]], [t[b]], [t[w]]).probability[0]
    assert row["confidence"] == pytest.approx(want, rel=1e-6)
    assert row["selection"] == "lm_tournament"
  assert result.counts["pairwise_comparisons"] == (3 + 2 + 1) * 2 + 3
  record = settings_record(settings)
  assert record["judge"] == "lm" and "judge" not in settings_record(WestOfN())
  with pytest.raises(ConfigError, match="kind must be 'rm'"):
    WestOfNJudge(kind="gpt")
  with pytest.raises(ConfigError, match="knockout"):
    WestOfNJudge(kind="lm", selection="best_random")
  with pytest.raises(ConfigError, match="WestOfNJudge.lm is set"):
    WestOfNJudge(lm=LMJudgeSettings())


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
  from tests.test_serve import _tiny_causal_lm
  return _tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.mark.slow
def test_label_command_loads_a_hugging_face_judge(tmp_path, tiny_lm_dir):
  import subprocess
  import sys
  src = _write_jsonl(tmp_path / "pairs.jsonl", _unlabeled_rows())
  out = tmp_path / "labelled.jsonl"
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-m", "westofn.label", f"--judge={tiny_lm_dir}",
                         f"--input={src}", f"--output={out}", "--batch_size=2"], cwd=repo,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "labelled 5 pairs" in proc.stderr and "agrees with the input's labels" in proc.stderr
  rows = [json.loads(line) for line in open(out)]
  assert all(r["judge"] == tiny_lm_dir for r in rows)
  pairs, _ = read_preference_file(str(out))
  assert len(pairs) == 5
  bad = subprocess.run([sys.executable, "-m", "westofn.label", f"--judge={tiny_lm_dir}",
                        f"--input={src}", f"--output={out}",
                        "--gin.JudgePrompt.labels=('Alpha', 'Beta')",
                        "--gin.JudgePrompt.instruction='{conversation} Alpha: {response_a} "
                        "Beta: {response_b}'"], cwd=repo, capture_output=True, text=True)
  assert bad.returncode == 2 and "the answer label 'Alpha' is 5 tokens" in bad.stderr


@pytest.mark.slow
def test_west_of_n_with_an_lm_judge_end_to_end(tmp_path, tiny_lm_dir):
  from tests.test_train import run_main
  config = tmp_path / "won_lm.gin"
  config.write_text(
      "from __gin__ import dynamic_registration\n"
      "import policies.pretrained\nimport westofn.settings\n"
      "include 'west_of_n_demo.gin'\n"
      "westofn.settings.WestOfNJudge.kind = 'lm'\n"
      "westofn.settings.WestOfNJudge.lm = @westofn.settings.LMJudgeSettings()\n"
      "westofn.settings.LMJudgeSettings.pretrained = @policies.pretrained.PretrainedLM()\n"
      f"policies.pretrained.PretrainedLM.path = '{tiny_lm_dir}'\n"
      "westofn.settings.LMJudgeSettings.principles_file = "
      "'gin/principles/helpful_harmless.txt'\n")
  model_dir = str(tmp_path / "won_lm")
  metrics = run_main([f"--gin_file={config}", f"--gin.MODEL_DIR={model_dir}",
                      "--gin.RunSettings.progress=False", "--gin.DataSource.default_num_pairs=200",
                      "--gin.RewardModelRecipe.num_steps=10", "--gin.PolicySft.num_steps=10",
                      "--gin.PolicySft.num_prompts=4", "--gin.PolicySft.num_samples=2",
                      "--gin.WestOfNSampling.num_samples=4",
                      "--gin.WestOfNSampling.max_new_tokens=8",
                      "--gin.WestOfNSampling.max_prompts=6", "--gin.train.best_of_n=4",
                      "--gin.train.stages=['base_rm', 'policy_sft', 'west_of_n']"])
  assert "west_of_n_round1" in metrics and "pairwise_pm" not in metrics
  (variant,) = os.listdir(os.path.join(model_dir, "west_of_n"))
  round_dir = os.path.join(model_dir, "west_of_n", variant, "round1")
  counts = json.load(open(os.path.join(round_dir, "eval.json")))
  assert counts["prompts"] == 6 and 0 < counts["pairwise_comparisons"] <= 6 * 7
  rows = [json.loads(line) for line in open(os.path.join(round_dir, "candidates.jsonl"))]
  assert rows and all(r["selection"] == "lm_tournament" and r["base_scores"] is None
                      and 0.0 <= r["confidence"] <= 1.0 for r in rows)
