"""RewardBench 2 and RM-Bench scoring: the rules of rm/leaderboard_rules.py against hand-worked
numbers and against ports of the reference code, and westofn/leaderboards.py's readers,
figures and per-completion records."""

import collections
import json
import math

import jax
import numpy as np
import pytest

from rm.leaderboard_rules import (best_of_n_credit, rmbench_accuracies, rmbench_matrix,
                                  ties_prompt_stats, ties_score)
from rm.row_sources import DataError
from westofn import leaderboards as lb


# --- ports of the reference code, the numpy references -------------------------------------

def reroll_result(scores):
  """allenai/reward-bench rewardbench/utils.py, reroll_and_score_dataset (one row)."""
  scores = np.asarray(scores)
  max_val = np.max(scores)
  return (1 / np.sum(scores == max_val)) if scores[0] == max_val else 0


def process_single_model(rows):
  """allenai/reward-bench rewardbench/utils.py, _compute_prompt_stats + process_single_model
  (rows: dicts with id, scores, num_correct); returns the overall score."""
  grouped = collections.defaultdict(list)
  for sample in rows:
    kind, pid = sample["id"].split(":")
    for i, score in enumerate(sample["scores"]):
      grouped[(kind, int(pid))].append((i < sample["num_correct"], score))
  ref_stats, tied_stats = {}, {}
  for (kind, pid), samples in grouped.items():
    correct = [s for c, s in samples if c]
    incorrect = [s for c, s in samples if not c]
    diff = max(correct) - min(correct) if len(correct) > 1 else None
    gap = min(correct) - max(incorrect)
    (ref_stats if kind == "ref" else tied_stats)[pid] = (gap > 0, diff, gap)
  ref_accuracy = np.mean([s[0] for s in ref_stats.values()]) if ref_stats else 0.0
  tied_accuracy = np.mean([s[0] for s in tied_stats.values()]) if tied_stats else 0.0
  both = set(ref_stats) & set(tied_stats)
  diff = np.array([tied_stats[p][1] for p in both])
  gap_t = np.array([tied_stats[p][2] for p in both])
  gap_r = np.array([ref_stats[p][2] for p in both])
  pref = np.mean(gap_t > diff)
  hard = np.mean(np.minimum(gap_r, gap_t) > diff)
  with np.errstate(divide="ignore"):
    margin = np.nan_to_num(np.tanh(np.minimum(gap_r, gap_t) / diff - 1), nan=0.0)
  return (0.30 * tied_accuracy + 0.30 * ref_accuracy + 0.20 * pref + 0.20 * hard
          + 0.01 * float(np.mean(margin)))


def compute_accuracy(results):
  """THU-KEG/RM-Bench scripts/utils.py, compute_accuracy (one domain)."""
  acc = np.zeros((3, 3))
  for r in results:
    for i in range(3):
      for j in range(3):
        if r["score_chosen"][i] > r["score_rejected"][j]:
          acc[i][j] += 1
  acc /= len(results)
  return {"hard_acc": np.sum(np.triu(acc, 1)) / 3, "normal_acc": np.mean(np.diag(acc)),
          "easy_acc": np.sum(np.tril(acc, -1)) / 3}


# --- the rules -------------------------------------------------------------------------------

@pytest.mark.parametrize("jit", [False, True])
def test_best_of_n_credit_by_hand_and_against_the_reference(jit):
  f = jax.jit(best_of_n_credit) if jit else best_of_n_credit
  scores = np.array([[3., 1., 2., 0.],     # chosen alone on top: 1
                     [3., 3., 1., 0.],     # 2-way tie at the top: 1/2
                     [3., 3., 3., 0.],     # 3-way tie: 1/3
                     [1., 3., 2., 0.],     # chosen not on top: 0
                     [2., 1., 9., 9.]])    # padding (9s) never counts: 1
  valid = np.ones_like(scores, bool)
  valid[4, 2:] = False
  np.testing.assert_allclose(f(scores, valid), [1, 1 / 2, 1 / 3, 0, 1], rtol=1e-6)
  rng = np.random.default_rng(0)
  rand = rng.integers(0, 4, (200, 4)).astype(np.float32)   # many ties
  np.testing.assert_allclose(f(rand, np.ones_like(rand, bool)),
                             [reroll_result(r) for r in rand], rtol=1e-6)


def test_rules_reject_wrong_shapes():
  with pytest.raises(ValueError, match="prompts, completions"):
    best_of_n_credit(np.zeros(4), np.ones(4, bool))
  with pytest.raises(ValueError, match="prompts, completions"):
    best_of_n_credit(np.zeros((2, 4)), np.ones((2, 3), bool))
  with pytest.raises(ValueError, match="num_correct"):
    ties_prompt_stats(np.zeros((2, 4)), np.ones(3, np.int32), np.ones((2, 4), bool))
  with pytest.raises(ValueError, match="one shape"):
    rmbench_matrix(np.zeros((2, 3)), np.zeros((2, 2)))
  with pytest.raises(ValueError, match="square"):
    rmbench_accuracies(np.zeros((3, 2)))
  with pytest.raises(ValueError, match="one length"):
    ties_score(["ref"], [0, 1], [True], [np.nan], [1.0])


def _ties_rows():
  return [{"id": "ref:0", "scores": [5., 2., 1.], "num_correct": 1},
          {"id": "tied:0", "scores": [6., 5.5, 3.], "num_correct": 2},
          {"id": "ref:1", "scores": [1., 2.], "num_correct": 1},
          {"id": "tied:1", "scores": [5., 4.5, 4.8], "num_correct": 2}]


@pytest.mark.parametrize("jit", [False, True])
def test_ties_composite_worked_out_by_hand(jit):
  rows = _ties_rows()
  scores = np.full((4, 3), -np.inf)
  valid = np.zeros((4, 3), bool)
  for i, r in enumerate(rows):
    scores[i, :len(r["scores"])], valid[i, :len(r["scores"])] = r["scores"], True
  stats = jax.jit(ties_prompt_stats) if jit else ties_prompt_stats
  accurate, spread, gap = map(np.asarray, stats(scores, np.array([1, 2, 1, 2]), valid))
  np.testing.assert_array_equal(accurate, [True, True, False, False])
  np.testing.assert_allclose(gap, [3, 2.5, -1, -0.3], atol=1e-6)
  assert np.isnan(spread[0]) and np.isnan(spread[2])
  np.testing.assert_allclose(spread[[1, 3]], [0.5, 0.5], atol=1e-6)
  got = ties_score(["ref", "tied", "ref", "tied"], [0, 0, 1, 1], accurate, spread, gap)
  # By hand: accuracy 1/2 for ref and tied prompts; prompt 0's correct answers (spread 0.5)
  # are closer to each other than to the incorrect ones (gaps 2.5 tied, 3 ref) and prompt
  # 1's are not (gaps -0.3, -1): preferred 1/2, preferred-hard 1/2; margin term
  # mean(tanh(2.5 / 0.5 - 1), tanh(-1 / 0.5 - 1)) = (tanh 4 + tanh -3) / 2.
  margin = (math.tanh(4) + math.tanh(-3)) / 2
  assert got["ref_accuracy"] == 0.5 and got["tied_accuracy"] == 0.5
  assert got["correctness_preferred"] == 0.5 and got["correctness_preferred_hard"] == 0.5
  assert got["correctness_margin_score"] == pytest.approx(margin, abs=1e-6)
  assert got["score"] == pytest.approx(0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.2 * 0.5
                                       + 0.01 * margin, abs=1e-7)
  assert got["score"] == pytest.approx(process_single_model(rows), abs=1e-7)


def test_ties_against_the_reference_on_random_prompts():
  rng = np.random.default_rng(1)
  rows = []
  for pid in range(40):
    for kind, correct in (("ref", 1), ("tied", int(rng.integers(2, 5)))):
      n = correct + int(rng.integers(1, 4))
      rows.append({"id": f"{kind}:{pid}", "scores": list(rng.normal(size=n).round(1)),
                   "num_correct": correct})
  width = max(len(r["scores"]) for r in rows)
  scores = np.full((len(rows), width), -np.inf)
  valid = np.zeros(scores.shape, bool)
  for i, r in enumerate(rows):
    scores[i, :len(r["scores"])], valid[i, :len(r["scores"])] = r["scores"], True
  stats = ties_prompt_stats(scores, np.array([r["num_correct"] for r in rows]), valid)
  kinds, ids = zip(*(r["id"].split(":") for r in rows))
  got = ties_score(kinds, [int(i) for i in ids], *stats)
  assert got["score"] == pytest.approx(process_single_model(rows), abs=1e-6)


@pytest.mark.parametrize("jit", [False, True])
def test_rmbench_matrix_with_ties_by_hand_and_against_the_reference(jit):
  f = jax.jit(rmbench_matrix) if jit else rmbench_matrix
  m = np.asarray(f(np.array([[1., 2., 3.]]), np.array([[1., 0., 3.]])))
  # chosen 1 ties rejected 1 and chosen 3 ties rejected 3: both wrong
  np.testing.assert_array_equal(m, [[0, 1, 0], [1, 1, 0], [1, 1, 0]])
  acc = rmbench_accuracies(m)
  assert acc == pytest.approx({"hard": 1 / 3, "normal": 1 / 3, "easy": 1.0})
  rng = np.random.default_rng(2)
  c, r = rng.integers(0, 3, (50, 3)).astype(float), rng.integers(0, 3, (50, 3)).astype(float)
  ours = rmbench_accuracies(f(c, r))
  ref = compute_accuracy([{"score_chosen": a, "score_rejected": b} for a, b in zip(c, r)])
  assert ours == pytest.approx({"hard": ref["hard_acc"], "normal": ref["normal_acc"],
                                "easy": ref["easy_acc"]}, abs=1e-6)


# --- files in the datasets' real schemas ------------------------------------------------------

def rb2_row(i, subset, chosen, rejected, row_id=None):
  """A row as allenai/reward-bench-2 ships it."""
  return {"id": row_id or str(i), "prompt": f"Question {i}?", "chosen": chosen,
          "rejected": rejected, "num_correct": len(chosen), "num_rejected": len(rejected),
          "total_completions": len(chosen) + len(rejected), "models": ["m"] * (
              len(chosen) + len(rejected)), "subset": subset, "additional_metadata": {}}


def rmbench_row(i, domain):
  """A row as THU-KEG/RM-Bench's total_dataset.json holds it."""
  return {"id": i, "prompt": f"Prompt {i}", "domain": domain,
          "chosen": [f"c{i} concise", f"c{i} detailed", f"**c{i}** markdown"],
          "rejected": [f"r{i} concise", f"r{i} detailed", f"**r{i}** markdown"]}


def _write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def test_formats_are_recognised_and_rows_validated(tmp_path):
  rb2 = _write_jsonl(tmp_path / "rb2.jsonl", [
      rb2_row(0, "Math", ["a"], ["b", "c", "d"]),
      rb2_row(1, "Ties", ["a", "a2"], ["b"], row_id="tied:3")])
  rmb = tmp_path / "total_dataset.json"   # RM-Bench ships one JSON array
  rmb.write_text(json.dumps([rmbench_row(0, "chat"), rmbench_row(1, "safety-refuse")]))
  pairs = _write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "a",
                                                   "rejected": "b"}])
  assert lb.detect_format(rb2) == "rewardbench2"
  assert lb.detect_format(str(rmb)) == "rmbench"
  assert lb.detect_format(pairs) == "pairs"
  rows = lb.read_completions_rows(rb2, "rewardbench2")
  assert rows[1].completions == ("a", "a2", "b") and rows[1].num_correct == 2
  assert [r.group for r in lb.read_completions_rows(str(rmb), "rmbench")] == ["chat", "safety"]

  def error(rows, fmt="rewardbench2", name="bad.jsonl"):
    path = _write_jsonl(tmp_path / name, rows)
    with pytest.raises(DataError) as e:
      lb.read_completions_rows(path, fmt)
    return str(e.value)

  assert error([rb2_row(0, "Math", "a", ["b"])]).startswith(f"{tmp_path}/bad.jsonl:1: chosen:")
  assert ":2: rejected:" in error([rb2_row(0, "Math", ["a"], ["b"]),
                                   rb2_row(1, "Math", ["a"], [])])
  assert "id: a Ties row's id" in error([rb2_row(0, "Ties", ["a"], ["b"], row_id="7")])
  bad_count = rb2_row(0, "Math", ["a"], ["b"])
  bad_count["num_correct"] = 2
  assert "num_correct: is 2" in error([bad_count])
  assert "domain: 'poetry'" in error([rmbench_row(0, "poetry")], "rmbench")
  short = rmbench_row(0, "chat")
  short["rejected"] = short["rejected"][:2]
  assert ":1: rejected: RM-Bench rows" in error([short], "rmbench")
  (tmp_path / "broken.json").write_text("[{\"id\": 1,")
  with pytest.raises(DataError, match="broken.json:1: <file>: malformed JSON array"):
    lb.read_completions_rows(str(tmp_path / "broken.json"), "rmbench")


def test_figures_records_and_rescoring_agree():
  rng = np.random.default_rng(3)
  rows, rewards = [], []
  for i, subset in enumerate(["Factuality", "Math", "Math", "Focus"]):
    rows.append(lb.CompletionsRow(str(i), "p", ("a", "b", "c", "d"), 1, subset))
    rewards.append(rng.integers(0, 3, 4).astype(float))
  for pid, (kind, scores, k) in enumerate([("ref", [5., 2., 1.], 1),
                                           ("tied", [6., 5.5, 3.], 2)]):
    rows.append(lb.CompletionsRow(f"{kind}:0", "p", tuple("abc"), k, "Ties"))
    rewards.append(np.array(scores))
  f = lb.rewardbench2_figures(rows, rewards)
  want_math = np.mean([reroll_result(rewards[1]), reroll_result(rewards[2])])
  assert f["sections"]["Math"] == pytest.approx(want_math)
  assert f["sections_present"] == 4   # an empty section (Precise IF, Safety) is left out
  assert f["overall"] == pytest.approx(np.mean(list(f["sections"].values())))
  assert f["per_prompt"][4] is None and f["per_prompt"][0] == reroll_result(rewards[0])
  table = lb.format_table("rewardbench2", {"rm": f})
  assert "| Model | Score | Factuality | Math | Focus | Ties |" in table
  assert "mean of the 4 sections present" in table
  records = lb.completion_records("rm", "set", "rewardbench2", rows, rewards)
  assert len(records) == sum(len(r.completions) for r in rows)
  back_rows, back_rewards = lb.rows_from_records(records)
  again = lb.rewardbench2_figures(back_rows, back_rewards)
  assert lb.json_figures(again) == lb.json_figures(f)

  rm_rows = [lb.CompletionsRow(str(i), "p", tuple("abcdef"), 3, d)
             for i, d in enumerate(["chat", "chat", "math", "code", "safety"])]
  rm_rewards = [rng.normal(size=6) for _ in rm_rows]
  g = lb.rmbench_figures(rm_rows, rm_rewards)
  chat = compute_accuracy([{"score_chosen": r[:3], "score_rejected": r[3:]}
                           for r in rm_rewards[:2]])
  assert g["domains"]["chat"]["hard"] == pytest.approx(chat["hard_acc"])
  assert g["domains"]["chat"]["score"] == pytest.approx(np.mean(list(chat.values())))
  assert g["overall"] == pytest.approx(np.mean([d["score"] for d in g["domains"].values()]))
  assert "| Model | Chat | Math | Code | Safety | Easy | Normal | Hard | Avg |" in (
      lb.format_table("rmbench", {"rm": g}))


def test_identical_completions_get_one_score_and_batching_changes_none():
  """score_rows shares a reward between identical completions of a prompt; the RM's packing
  gives every completion the same reward whatever else is in its batch."""
  from flax import nnx  # noqa: F401
  from policies.transformer import TransformerConfig
  from rm.model import make_reward_model
  from rm.tasks import byte_vocabulary
  from westofn.samples import score_texts
  vocab = byte_vocabulary()
  model = make_reward_model(TransformerConfig(vocab_size=vocab.vocab_size, d_model=32,
                                              num_layers=2, num_heads=4, num_kv_heads=2,
                                              ffn_dim=48), seed=0)
  calls = []

  def scorer(prompts, texts):
    calls.append(texts)
    return score_texts(model, vocab, prompts, texts, rows=2, row_len=64, max_response_len=16,
                       max_per_row=3)

  rows = [lb.CompletionsRow(str(i), f"Q{i}: spell", ("abc", "abd", "abc", f"x{i}"), 1, "Math")
          for i in range(7)]
  rewards = lb.score_rows(scorer, rows)
  assert all(len(t) == 3 for t in calls[0])            # "abc" scored once per prompt
  assert all(r[0] == r[2] for r in rewards)
  shuffled = lb.score_rows(scorer, rows[::-1][:4])     # other neighbours, another batch count
  for a, b in zip(rewards[::-1][:4], shuffled):
    np.testing.assert_array_equal(a, b)
